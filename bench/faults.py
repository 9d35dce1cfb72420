"""The fault table of issue 20: what the README's commands do under kill -9, SIGTERM,
corrupt checkpoints, malformed inputs, divergence and a full disk.

Not part of the tests (a `--fast` subset is: tests/test_faults.py). Every row runs the
user-facing commands (`./launch.sh train|eval CONFIG ...`, and the README's
`python -m jaxseg.data.coco_format` for COCO-format data) as subprocesses on the tiny U-Net
config, watches the workdir to time a fault (a checkpoint folder appearing, a record in
metrics.jsonl, orbax's temporary folder of a checkpoint being written), injects it, and
checks the outcome against an uninterrupted reference run:

  R0  the uninterrupted reference run (8 steps, checkpoint every 2, eval every 4)
  R1  kill -9 at a moment -> rerun until exit 0 -> final checkpoint bit-identical (every
      array of the TrainState, np.array_equal), the same checkpoint steps kept, one
      metrics.jsonl record per (step, split)
  R2  SIGTERM at the same moments -> exit 143 with a checkpoint of the last step (0 when
      the run had finished), then the same exact resume
  R3  a corrupt latest checkpoint -> rerun -> warning, fallback, bit-identical end, the bad
      step kept under checkpoints/corrupt/<step>; `eval` on a corrupt latest checkpoint
  R4  malformed inputs (CLI, config values, TFDS and COCO-format datasets, weights files,
      checkpoints) -> exit 2 and one `jaxseg: error:` line, no traceback, no workdir
      changed (file tree + mtimes), no new workdir left behind
  R5  divergence (lr=1e6, a checkpoint every step) -> the divergence message, every
      floating leaf of every kept checkpoint finite
  R6  a full disk (a size-limited tmpfs; skipped where mount fails) while a checkpoint is
      written -> one error line, the previous checkpoint intact and restorable, and an
      exact resume once space is freed
  R7  many processes (issue 18; not in --fast): 2 local processes x 2 devices killed
      (kill -9 of one), SIGTERM to one, a coordinator that never answers, a run saved by
      2 processes resumed by 1 -> the launcher's one line and exit status, exact resume

  .venv/bin/python bench/faults.py --output=docs/faults.md          # full table, ~10-15 min
  .venv/bin/python bench/faults.py --only=R7 --direct --output=docs/faults_multihost.md
  .venv/bin/python bench/faults.py --fast                           # subset, ~1-2 min

Prints one Markdown table (also written to --output) and exits 1 if any row FAILs.
Compiled programs are shared through $JAXSEG_CACHE_DIR (default: a fixed folder under the
system temp dir, kept between invocations). `--direct` runs `.venv/bin/python -m
jaxseg.main --mode=...` instead of `./launch.sh` (the table still shows the launch.sh form,
which execs exactly that).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/segmentation/unet_shapes.py:tiny"
LOCALIZE = "experiments/localization/localize_shapes.py:tiny"
DETECT = "experiments/detection/faster_rcnn_shapes.py:tiny"
# The reference run: 8 steps; checkpoints 2 4 6 8; evals 4 and 8 (the best mIoU is step 4's,
# so the best-N policy keeps an older step next to the latest two); a record every step.
RUN = ("--config.num_steps=8", "--config.checkpoint_every=2", "--config.eval_every=4",
       "--config.log_every=1", "--config.keep_checkpoints=2")
LAST = 8
# Malformed inputs pointed at R0's workdir ask it to train on (to 12 steps), so a resumed
# run would read the training data: every check must fire before anything is written.
MORE = RUN[1:] + ("--config.num_steps=12",)
TMP_RE = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
ERROR = "jaxseg: error:"


# ----------------------------------------------------------------------------- helpers

@dataclasses.dataclass
class Result:
  rc: int
  stdout: str
  stderr: str
  seconds: float

  @property
  def text(self):
    return self.stdout + self.stderr

  def error_lines(self, prefix=ERROR):
    return [l for l in self.stderr.splitlines() + self.stdout.splitlines()
            if l.startswith(prefix)]


@dataclasses.dataclass
class Row:
  id: str
  what: str
  command: str
  expected: str
  observed: str
  ok: bool | None  # None: skipped


@dataclasses.dataclass
class State:
  """What the workdir shows at one moment."""
  exists: bool
  config: bool
  committed: list
  tmp: list
  records: list

  def describe(self):
    if not self.exists:
      return "no workdir"
    text = f"checkpoints {self.committed}" + (f" + writing {self.tmp}" if self.tmp else "")
    if self.records:
      step, split = self.records[-1]
      return f"{text}, last record {step}/{split}"
    return f"{text}, no record"


def records(workdir):
  out = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          r = json.loads(line)
          out.append((int(r["step"]), r["split"]))
        except (ValueError, KeyError, TypeError):
          pass  # a line being written
  except OSError:
    pass
  return out


def probe(workdir) -> State:
  try:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
  except OSError:
    names = []
  committed = sorted(int(n) for n in names if n.isdigit())
  tmp = sorted(int(m.group(1)) for m in map(TMP_RE.match, names) if m)
  return State(os.path.isdir(workdir), os.path.exists(os.path.join(workdir, "config.json")),
               committed, tmp, records(workdir))


def kept(workdir):
  return probe(workdir).committed


def snapshot(path):
  """Every file and folder under `path` with its size and mtime (None: no such path)."""
  if not os.path.lexists(path):
    return None
  out = {}
  for root, dirs, files in os.walk(path):
    for name in [""] + dirs + files:
      p = os.path.join(root, name) if name else root
      st = os.lstat(p)
      out[os.path.relpath(p, path)] = (st.st_size if name in files else -1, st.st_mtime_ns)
  return out


def diff(before, after):
  if before == after:
    return ""
  if after is None:
    return "the workdir was removed"
  if before is None:
    return f"a new workdir was left behind ({len(after)} entries)"
  added = sorted(set(after) - set(before))
  removed = sorted(set(before) - set(after))
  changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
  parts = [f"{label} {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
           for label, v in (("added", added), ("removed", removed), ("changed", changed)) if v]
  return "; ".join(parts)


_ORBAX_LOCK = threading.Lock()


def read_state(workdir, step):
  """{path: np.ndarray} of every leaf of the TrainState saved at `step`."""
  with _ORBAX_LOCK:
    import jax  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    path = os.path.join(workdir, "checkpoints", str(step), "default")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata
    tree = getattr(tree, "tree", tree)
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    flat = jax.tree_util.tree_flatten_with_path(restored)[0]
    return {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v)
            for k, v in flat}


def non_finite(arrays):
  return [k for k, v in arrays.items()
          if np.issubdtype(v.dtype, np.inexact) and not np.all(np.isfinite(v))]


def png_bytes(width, height):
  """A grey RGB PNG (no image library needed)."""
  raw = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def short(text, n=220):
  text = " ".join(text.split())
  return text if len(text) <= n else text[:n - 3] + "..."


def traceback_of(text):
  """'N traceback(s), the last ending in `Error: message`' (or '' when there is none)."""
  count = text.count("Traceback (most recent call last)")
  if not count:
    return ""
  tail = text[text.rfind("Traceback (most recent call last)"):].splitlines()[1:]
  last = next((l for l in tail if l and not l.startswith((" ", "\t"))), "?")
  return f"{count} traceback{'s' * (count > 1)} on stderr (the last: `{short(last, 120)}`)"


def cell(text):
  return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- the bench

class Bench:

  def __init__(self, root, cache_dir, direct, jobs):
    self.root = root
    self.direct = direct
    self.jobs = jobs
    self.env = dict(os.environ, JAXSEG_CACHE_DIR=cache_dir, PYTHONUNBUFFERED="1")
    self.env.pop("JAX_PLATFORMS", None)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   self.env.get("XLA_FLAGS", "")).strip()
    if flags:
      self.env["XLA_FLAGS"] = flags
    else:
      self.env.pop("XLA_FLAGS", None)
    self.base = None  # the reference run: dict(workdir, kept, arrays, records, eval)
    self.mounts = []
    self._lock = threading.Lock()

  # commands ------------------------------------------------------------------
  def path(self, *parts):
    return os.path.join(self.root, *parts)

  def cmd(self, mode, *flags, config=CONFIG):
    return ["./launch.sh", mode, config, *flags]

  def show(self, argv):
    text = " ".join(shlex.quote(a) for a in argv)
    return text.replace(self.root, "$T")

  def _exec_argv(self, argv):
    if self.direct and argv[:1] == ["./launch.sh"] and len(argv) >= 3 and argv[1] in (
        "train", "eval") and not argv[2].startswith("-"):
      return [os.path.join(REPO, ".venv", "bin", "python"), "-m", "jaxseg.main",
              f"--mode={argv[1]}", f"--config={argv[2]}", *argv[3:]]
    if argv[:1] == ["python"]:
      return [os.path.join(REPO, ".venv", "bin", "python"), *argv[1:]]
    return argv

  def run(self, argv, timeout=300, env=None) -> Result:
    t0 = time.monotonic()
    try:
      p = subprocess.run(self._exec_argv(argv), cwd=REPO, env=env or self.env, capture_output=True,
                         text=True, timeout=timeout, check=False)
      return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    except subprocess.TimeoutExpired as e:
      return Result(-999, str(e.stdout or ""), f"TIMEOUT after {timeout}s " + str(e.stderr or ""),
                    time.monotonic() - t0)

  def start(self, argv):
    out = tempfile.TemporaryFile(mode="w+")
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(self._exec_argv(argv), cwd=REPO, env=self.env, stdout=out, stderr=err,
                         text=True)
    return p, out, err

  @staticmethod
  def finish(p, out, err, t0, timeout=300) -> Result:
    try:
      p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
    out.seek(0)
    err.seek(0)
    return Result(p.returncode, out.read(), err.read(), time.monotonic() - t0)

  # the reference run -----------------------------------------------------------
  def reference(self):
    workdir = self.path("reference")
    argv = self.cmd("train", *RUN, f"--workdir={workdir}")
    r = self.run(argv)
    recs = records(workdir)
    ok = r.rc == 0 and len(recs) == len(set(recs)) and kept(workdir) and kept(workdir)[-1] == LAST
    if ok:
      evals = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
      evals = {rec["step"]: rec["mIoU"] for rec in evals if rec["split"] == "eval"}
      self.base = dict(workdir=workdir, kept=kept(workdir), arrays=read_state(workdir, LAST),
                       records=recs, evals=evals)
      observed = (f"exit 0 in {r.seconds:.0f} s; checkpoints kept {self.base['kept']} (eval "
                  f"mIoU {evals}); {len(self.base['arrays'])} arrays in the final state; "
                  f"{len(recs)} records, one per (step, split)")
    else:
      observed = f"exit {r.rc}; kept {kept(workdir)}; {short(r.stderr[-400:])}"
    return [Row("R0", "uninterrupted reference run", self.show(argv),
                "exit 0; checkpoints of the last 2 steps + the best; one record per (step, split)",
                observed, bool(ok))]

  def compare(self, workdir):
    """(ok, text): the end state of `workdir` against the reference run."""
    problems, notes = [], []
    have = kept(workdir)
    if have != self.base["kept"]:
      problems.append(f"kept {have} != {self.base['kept']}")
    else:
      notes.append(f"kept {have}")
    if LAST not in have:
      problems.append(f"no final checkpoint {LAST}")
    else:
      try:
        arrays = read_state(workdir, LAST)
      except Exception as e:  # pylint: disable=broad-except
        arrays = None
        problems.append(f"final checkpoint unreadable: {short(str(e), 120)}")
      if arrays is not None:
        ref = self.base["arrays"]
        if set(arrays) != set(ref):
          problems.append(f"tree differs: {sorted(set(arrays) ^ set(ref))[:3]}")
        else:
          bad = [k for k in ref if not (arrays[k].dtype == ref[k].dtype
                                        and np.array_equal(arrays[k], ref[k]))]
          if bad:
            problems.append(f"{len(bad)}/{len(ref)} arrays differ (e.g. {bad[0]})")
          else:
            notes.append(f"final state bit-identical ({len(ref)}/{len(ref)} arrays)")
    recs = records(workdir)
    dups = sorted({r for r in recs if recs.count(r) > 1})
    if dups:
      problems.append(f"duplicate records {dups}")
    if sorted(recs) != sorted(self.base["records"]):
      missing = sorted(set(self.base["records"]) - set(recs))
      extra = sorted(set(recs) - set(self.base["records"]))
      problems.append(f"records differ from the reference (missing {missing}, extra {extra})")
    elif not dups:
      notes.append(f"{len(recs)} records, one per (step, split)")
    return not problems, "; ".join(problems + notes)

  # R1 / R2 ---------------------------------------------------------------------
  MOMENTS = {
      # name: (trigger(state, seconds since launch), hit(state at signal, state after exit
      #        [kill -9 only]), description)
      "start-up": (
          lambda s, t: t >= 1.0,
          lambda s, a: not a.exists,
          "1 s after launch (Python importing TensorFlow/JAX; no workdir yet)"),
      "before-first-checkpoint": (
          lambda s, t: s.config and not s.committed and not s.tmp,
          lambda s, a: not a.committed,
          "config.json written, no checkpoint yet (compiling / running step 1)"),
      "mid-step": (
          lambda s, t: 4 in s.committed and not s.tmp and s.records[-1:] == [(4, "eval")],
          lambda s, a: a.records[-1:] == [(4, "eval")] and max(a.committed) == 4,
          "during step 5 (checkpoint 4 committed, step 5 not yet recorded)"),
      "after-record": (
          lambda s, t: s.records[-1:] == [(3, "train")],
          lambda s, a: a.records[-1:] == [(3, "train")] and 4 not in a.committed + a.tmp,
          "right after step 3's metrics record (step 3 is not a checkpoint step)"),
      "checkpoint-write": (
          lambda s, t: 4 in s.tmp,
          lambda s, a: 4 in a.tmp and 4 not in a.committed,
          "while checkpoint 4 is written (orbax's 4.orbax-checkpoint-tmp folder exists)"),
      "eval": (
          lambda s, t: (4, "train") in s.records and (4, "eval") not in s.records,
          lambda s, a: (4, "eval") not in a.records,
          "during the eval at step 4 (step 4 recorded, its eval not yet)"),
      "final-save": (
          lambda s, t: LAST in s.tmp,
          lambda s, a: LAST not in a.committed,
          f"during the final save (the {LAST}.orbax-checkpoint-tmp folder exists)"),
  }

  def interrupt(self, argv, workdir, moment, sig, attempts=3):
    """Start `argv`, send `sig` when `moment` is reached; retried when the moment was
    missed. Returns (attempt, state at the signal, state after exit, result) or None."""
    trigger, hit, _ = self.MOMENTS[moment]
    for attempt in range(1, attempts + 1):
      shutil.rmtree(workdir, ignore_errors=True)
      t0 = time.monotonic()
      p, out, err = self.start(argv)
      fired = None
      while p.poll() is None and time.monotonic() - t0 < 300:
        state = probe(workdir)
        if trigger(state, time.monotonic() - t0):
          os.kill(p.pid, sig)
          fired = state
          break
        time.sleep(0.002)
      result = self.finish(p, out, err, t0)
      after = probe(workdir)
      if fired is not None and (sig != signal.SIGKILL or hit(fired, after)):
        return attempt, fired, after, result
    return None

  def rerun_until_done(self, argv, limit=4):
    codes, results = [], []
    for _ in range(limit):
      r = self.run(argv)
      codes.append(r.rc)
      results.append(r)
      if r.rc != 0:
        if r.rc != 143 and r.rc != -9:
          break  # an error, not an interruption
        continue
      break
    return codes, results

  def r1(self, moment, index):
    rid = f"R1.{index}"
    workdir = self.path(f"r1_{moment}")
    argv = self.cmd("train", *RUN, f"--workdir={workdir}")
    what = f"kill -9 {self.MOMENTS[moment][2]}; rerun until done"
    expected = ("rerun(s) exit 0; final state bit-identical to R0; same checkpoints kept; "
                "one record per (step, split); no traceback")
    got = self.interrupt(argv, workdir, moment, signal.SIGKILL)
    if got is None:
      return [Row(rid, what, self.show(argv), expected,
                  "the moment was missed 3 times (the run passed it before the signal)", False)]
    attempt, fired, after, first = got
    codes, results = self.rerun_until_done(argv)
    ok, text = self.compare(workdir)
    tb = "; ".join(traceback_of(r.text) for r in results if "Traceback" in r.text)
    ok = ok and codes[-1] == 0 and not tb
    observed = (f"killed at: {fired.describe()} (try {attempt}); left: {after.describe()}; "
                f"exit codes {[first.rc] + codes}; {text}"
                + (f"; rerun: {tb}" if tb else "")
                + ("" if codes[-1] == 0 else f"; last rerun: {short(results[-1].stderr[-300:])}"))
    return [Row(rid, what, self.show(argv) + "  (then the same command again)", expected,
                observed, ok)]

  def r2(self, moment, index):
    rid = f"R2.{index}"
    workdir = self.path(f"r2_{moment}")
    argv = self.cmd("train", *RUN, f"--workdir={workdir}")
    what = f"SIGTERM {self.MOMENTS[moment][2]}; rerun until done"
    if moment == "start-up":
      expected = ("exit 143 with a message (nothing to save: no checkpoint, no workdir); "
                  "rerun exit 0; bit-identical end")
    elif moment == "final-save":
      expected = (f"the run finishes: exit 0, checkpoint {LAST} committed; state "
                  "bit-identical to R0")
    else:
      expected = ("exit 143, a checkpoint of the last finished step saved; rerun exit 0; "
                  "bit-identical end; same checkpoints kept; one record per (step, split)")
    got = self.interrupt(argv, workdir, moment, signal.SIGTERM)
    if got is None:
      return [Row(rid, what, self.show(argv), expected, "the moment was missed 3 times", False)]
    attempt, fired, after, first = got
    problems = []
    notes = [f"signalled at: {fired.describe()} (try {attempt})"]
    if "Traceback" in first.text:
      problems.append(traceback_of(first.text))
    if moment == "final-save":
      if first.rc != 0:
        problems.append(f"exit {first.rc} (expected 0): {short(first.stderr[-300:])}")
      else:
        notes.append("exit 0 (finished)")
    elif first.rc != 143:
      problems.append(f"exit {first.rc} (expected 143)"
                      + (" -- killed by the signal's default action, no handler, no message"
                         if first.rc == -signal.SIGTERM else "")
                      + f"; stderr: {short(first.stderr[-200:], 200) or '(empty)'}")
    else:
      notes.append("exit 143")
    if moment == "start-up":
      if first.rc == 143:
        msg = [l for l in first.stderr.splitlines() if l.startswith("jaxseg:")]
        notes.append(f"`{short(msg[-1], 120)}`" if msg else "no message")
      if after.exists:
        problems.append(f"a workdir was left: {after.describe()}")
    elif moment != "final-save":
      said = [re.sub(r"^.*?\] ", "", l) for l in first.stderr.splitlines()
              if "stopped" in l and "SIGTERM" in l]
      said = f"`{short(said[-1], 150)}`" if said else "no 'stopped' message"
      trained = max([s for s, split in after.records if split == "train"] or [0])
      latest = after.committed[-1] if after.committed else 0  # 0: nothing trained, none due
      if latest != trained:
        problems.append(f"the last trained step ({trained}, recorded in metrics.jsonl) was "
                        f"not saved: checkpoints {after.committed}; the run said {said}")
      else:
        notes.append(f"checkpoint {latest} = the last trained step; the run said {said}")
    codes, results = ([], []) if first.rc == 0 else self.rerun_until_done(argv)
    ok_end, text = self.compare(workdir)
    if codes and codes[-1] != 0:
      problems.append(f"rerun exit {codes[-1]}: {short(results[-1].stderr[-300:])}")
    problems += [f"rerun: {traceback_of(r.text)}" for r in results if "Traceback" in r.text]
    if codes:
      notes.append(f"reruns exit {codes}")
    ok = ok_end and not problems
    observed = "; ".join(problems + notes + [text])
    return [Row(rid, what, self.show(argv) + "  (then the same command again)", expected,
                observed, ok)]

  # R3 ----------------------------------------------------------------------------
  CORRUPTIONS = {
      "truncated": "truncated array file(s) (default/d/*, cut to half)",
      "truncated-ocdbt": "truncated array data (default/ocdbt.process_0/d/*, cut to half)",
      "manifest": "deleted default/manifest.ocdbt",
      "empty": "empty step folder",
      "metadata": "deleted default/_METADATA",
  }

  @staticmethod
  def corrupt(step_dir, kind):
    item = os.path.join(step_dir, "default")
    if kind in ("truncated", "truncated-ocdbt"):
      pattern = "d/*" if kind == "truncated" else "ocdbt.process_0/d/*"
      files = glob.glob(os.path.join(item, pattern))
      assert files, f"nothing to truncate under {item}/{pattern}"
      for path in files:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
    elif kind == "manifest":
      os.remove(os.path.join(item, "manifest.ocdbt"))
    elif kind == "empty":
      shutil.rmtree(step_dir)
      os.makedirs(step_dir)
    elif kind == "metadata":
      os.remove(os.path.join(item, "_METADATA"))
    else:
      raise ValueError(kind)

  def copy_reference(self, name):
    dst = self.path(name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(self.base["workdir"], dst, symlinks=True)
    return dst

  def r3(self, kind, index, with_eval):
    rows = []
    workdir = self.copy_reference(f"r3_{kind}")
    self.corrupt(os.path.join(workdir, "checkpoints", str(LAST)), kind)
    argv = self.cmd("train", *RUN, f"--workdir={workdir}")
    r = self.run(argv)
    problems, notes = [], []
    warn = [l for l in r.stderr.splitlines() if re.search(rf"checkpoints/{LAST}\b.*unreadable", l)]
    if r.rc != 0:
      problems.append(f"exit {r.rc}: {short(r.stderr[-300:])}")
    if "Traceback" in r.text:
      problems.append(traceback_of(r.text))
    if not warn:
      problems.append(f"no warning naming checkpoint {LAST}")
    else:
      notes.append(f"warning: `{short(re.sub(r'^.*?] ', '', warn[0]), 200)}`")
    m = re.search(r"resumed from step (\d+)", r.stderr)
    notes.append(f"resumed from step {m.group(1)}" if m else "no 'resumed' line")
    aside = os.path.join(workdir, "checkpoints", "corrupt", str(LAST))
    if not os.path.isdir(aside):
      problems.append(f"checkpoints/corrupt/{LAST} missing")
    else:
      notes.append(f"bad step kept as checkpoints/corrupt/{LAST} ({len(os.listdir(aside))} entries)")
    ok_end, text = self.compare(workdir)
    rows.append(Row(f"R3.{index}", f"corrupt the latest checkpoint ({LAST}) of R0's workdir: "
                    f"{self.CORRUPTIONS[kind]}; rerun train", self.show(argv),
                    f"warning naming step {LAST}, fallback to {LAST - 2}, exit 0, bit-identical "
                    f"end, bad step under checkpoints/corrupt/{LAST}",
                    "; ".join(problems + notes + [text]), ok_end and not problems))
    if with_eval:
      workdir = self.copy_reference(f"r3_{kind}_eval")
      self.corrupt(os.path.join(workdir, "checkpoints", str(LAST)), kind)
      argv = self.cmd("eval", *RUN, f"--workdir={workdir}")
      before = snapshot(os.path.join(workdir, "checkpoints"))
      r = self.run(argv)
      problems, notes = [], []
      if r.rc != 0:
        problems.append(f"exit {r.rc}: {short(r.stderr[-300:])}")
      if "Traceback" in r.text:
        problems.append(traceback_of(r.text))
      warn = [l for l in r.stderr.splitlines()
              if re.search(rf"checkpoints/{LAST}\b.*unreadable", l)]
      if not warn:
        problems.append(f"no warning naming checkpoint {LAST}")
      else:
        notes.append(f"warning: `{short(re.sub(r'^.*?] ', '', warn[0]), 160)}`")
      m = re.search(r"final step (\d+): (\{.*\})", r.stdout)
      if not m or int(m.group(1)) != LAST - 2:
        problems.append(f"evaluated {m.group(1) if m else 'nothing'}; expected step {LAST - 2}")
      else:
        notes.append(f"evaluated step {m.group(1)}: {m.group(2)}")
      aside = os.path.join(workdir, "checkpoints", "corrupt", str(LAST))
      if os.path.isdir(aside):
        notes.append(f"the bad step moved to checkpoints/corrupt/{LAST}")
      else:
        change = diff(before, snapshot(os.path.join(workdir, "checkpoints")))
        notes.append(f"checkpoints/ changed: {change}" if change else
                     "checkpoints/ untouched (the bad step stays in place)")
      rows.append(Row(f"R3.{index}e", f"`eval` with the latest checkpoint corrupt: "
                      f"{self.CORRUPTIONS[kind]}", self.show(argv),
                      f"warning naming step {LAST}, evaluates step {LAST - 2}, exit 0, "
                      "no traceback", "; ".join(problems + notes), not problems))
    return rows

  # R4 ----------------------------------------------------------------------------
  def r4_inputs(self):
    """(id, group, what, argv-maker, workdir kind, regex the message must match, prefix)."""
    T = self.path
    new = lambda i: T("r4", i, "new")  # noqa: E731
    train = lambda i, *f, config=CONFIG: self.cmd(  # noqa: E731
        "train", *MORE, *f, f"--workdir={T('r4', i, 'trained')}", config=config)
    train_new = lambda i, *f, config=CONFIG: self.cmd(  # noqa: E731
        "train", *f, f"--workdir={new(i)}", config=config)
    coco = lambda i, ann, images=None: [  # noqa: E731
        "python", "-m", "jaxseg.data.coco_format", "--name", "mydata", "--data_dir",
        T("r4", i, "data"), "--images", images or T("coco", "images"), "--annotations",
        f"train={ann}"]
    I = []  # noqa: E741

    def add(group, what, make, kind, want, prefix=ERROR):
      I.append((f"R4.{len(I) + 1:02d}", group, what, make, kind, want, prefix))

    # -- command line
    add("CLI", "no CONFIG", lambda i: ["./launch.sh", "train"], None,
        r"usage: \./launch\.sh train CONFIG", "usage:")
    add("CLI", "unknown command", lambda i: ["./launch.sh", "trian", CONFIG], None,
        r"unknown command 'trian'", "launch.sh:")
    add("CLI", "config file that does not exist",
        lambda i: train_new(i, config="experiments/segmentation/no_such.py"), "new", r"no_such")
    add("CLI", "unknown config variant", lambda i: train_new(
        i, config="experiments/segmentation/unet_shapes.py:huge"), "new", r"huge")
    add("CLI", "config file with a syntax error",
        lambda i: train_new(i, config=T("inputs", "syntax_error.py")), "new",
        r"syntax error.*line 2")
    add("CLI", "config file without get_config",
        lambda i: train_new(i, config=T("inputs", "no_get_config.py")), "new", r"get_config")
    add("CLI", "unknown flag", lambda i: train(i, "--learning_rate=1e-3"), "trained",
        r"learning_rate")
    add("CLI", "mistyped config key", lambda i: train(i, "--config.optimizer.lrr=1e-3"),
        "trained", r"lrr")
    add("CLI", "config value of the wrong type", lambda i: train(i, "--config.num_steps=ten"),
        "trained", r"num_steps|ten")
    add("CLI", "flag file that does not exist",
        lambda i: train(i, f"--flagfile={T('inputs', 'missing.flags')}"), "trained",
        r"missing\.flags")
    add("CLI", "flag file with a mistyped key",
        lambda i: train(i, f"--flagfile={T('inputs', 'bad.flags')}"), "trained", r"nope")
    add("CLI", "--workdir naming a file",
        lambda i: self.cmd("train", f"--workdir={T('inputs', 'a_file')}"), None, r"is a file")
    add("CLI", "--workdir under a file",
        lambda i: self.cmd("train", f"--workdir={T('inputs', 'a_file', 'run')}"), None,
        r"a_file.*file|not a directory")
    add("CLI", "train: --workdir on a read-only file system",
        lambda i: self.cmd("train", *RUN, f"--workdir={T('ro', 'trained')}"), "readonly",
        r"cannot be written|read-only|writable")
    add("CLI", "eval: --workdir that does not exist", lambda i: self.cmd(
        "eval", f"--workdir={T('r4', i, 'none')}"), "new-at-none", r"no checkpoint")
    add("CLI", "eval: --workdir without checkpoints", lambda i: self.cmd(
        "eval", f"--workdir={T('inputs', 'empty_dir')}"), None, r"no checkpoint")
    add("CLI", "eval: --workdir naming a file", lambda i: self.cmd(
        "eval", f"--workdir={T('inputs', 'a_file')}"), None, r"is a file|no checkpoint")
    add("CLI", "--distributed outside a cluster", lambda i: train(i, "--distributed"),
        "trained", r"distributed")
    add("CLI", "an extra positional argument", lambda i: train(i, "extra"), "trained",
        r"unexpected.*extra|extra")
    # -- config values (each pointed at a trained workdir, which must stay unchanged)
    for key, value, want in [
        ("optimizer.lr", "-1.0", r"optimizer\.lr=-1\.0.*> 0"),
        ("optimizer.lr", "nan", r"optimizer\.lr=nan"),
        ("num_steps", "-5", r"num_steps=-5.*>= 0"),
        ("batch_size", "0", r"batch_size=0"),
        ("eval_every", "0", r"eval_every=0.*>= 1"),
        ("checkpoint_every", "0", r"checkpoint_every=0.*>= 1"),
        ("log_every", "0", r"log_every=0"),
        ("keep_checkpoints", "0", r"keep_checkpoints=0"),
        ("model.dropout_rate", "1.5", r"dropout_rate=1\.5.*\[0, 1\)"),
        ("best_metric", "no_such_metric", r"best_metric='no_such_metric'.*mIoU"),
        ("best_mode", "median", r"best_mode.*median"),
        ("model.name", "segnet", r"segnet"),
        ("task", "captioning", r"captioning"),
        ("optimizer.name", "adamx", r"adamx"),
        ("model.upsample", "magic", r"magic"),
        ("model.dtype", "float16", r"dtype.*float16"),
        ("dataset.image_size", "30", r"image_size|30"),
        ("seed", "-1", r"seed=-1"),
        ("optimizer.b2", "1.0", r"b2=1\.0"),
    ]:
      add("config", f"config.{key}={value}",
          lambda i, key=key, value=value: train(i, f"--config.{key}={value}"), "trained", want)
    add("config", "min_scale > max_scale", lambda i: train(
        i, "--config.dataset.augment.min_scale=2.0", "--config.dataset.augment.max_scale=1.0"),
        "trained", r"min_scale=2\.0.*max_scale=1\.0")
    add("config", "both loss weights 0", lambda i: train(
        i, "--config.loss.ce_weight=0.0", "--config.loss.dice_weight=0.0"), "trained",
        r"ce_weight.*dice_weight")
    add("config", "generator min_objects > max_objects", lambda i: train(
        i, "--config.dataset.generator.min_objects=5", "--config.dataset.generator.max_objects=2"),
        "trained", r"min_objects.*max_objects")
    # -- datasets: TFDS
    add("TFDS", "unknown dataset name", lambda i: train(i, "--config.dataset.name=imagenet_seg"),
        "trained", r"imagenet_seg")
    add("TFDS", "data_dir naming a file", lambda i: train(
        i, f"--config.dataset.data_dir={T('inputs', 'a_file')}"), "trained", r"data_dir")
    add("TFDS", "data_dir naming a file, re-running R0's finished workdir (train = eval only)",
        lambda i: self.cmd("train", *RUN, f"--config.dataset.data_dir={T('inputs', 'a_file')}",
                           f"--workdir={T('r4', i, 'trained')}"), "trained", r"data_dir")
    add("TFDS", "catalog dataset not prepared in data_dir", lambda i: train_new(
        i, "--config.dataset.name=oxford_iiit_pet",
        f"--config.dataset.data_dir={T('inputs', 'empty_dir')}"), "new",
        r"oxford_iiit_pet")
    add("TFDS", "truncated TFRecord (train split)", lambda i: train_new(
        i, f"--config.dataset.data_dir={T('inputs', 'tfds_truncated')}"), "new",
        r"(?i)tfrecord|truncat|corrupt|shapes")
    add("TFDS", "split that does not exist", lambda i: train(
        i, "--config.dataset.train_split=nosuch"), "trained", r"nosuch")
    # -- datasets: COCO format (README: python -m jaxseg.data.coco_format, then
    #    config.dataset.name=coco_format/NAME)
    add("COCO", "segmentation with dataset.name=coco_format/mydata", lambda i: train(
        i, "--config.dataset.name=coco_format/mydata"), "trained",
        r"coco_format/mydata.*detection")
    add("COCO", "localization with dataset.name=coco_format/mydata", lambda i: train_new(
        i, "--config.dataset.name=coco_format/mydata", config=LOCALIZE), "new",
        r"coco_format/mydata.*detection")
    if os.path.exists(os.path.join(REPO, DETECT.split(":")[0])):
      add("COCO", "detection on coco_format/mydata not built in data_dir", lambda i: train_new(
          i, "--config.dataset.name=coco_format/mydata",
          f"--config.dataset.data_dir={T('inputs', 'empty_dir')}", config=DETECT), "new",
          r"mydata.*coco_format|coco_format.*mydata")
    for name, want in [("not_json", r"(?i)json"), ("missing_image_id", r"image_id"),
                       ("unknown_category", r"category"), ("bbox_3_numbers", r"bbox"),
                       ("negative_size", r"bbox|negative"),
                       ("missing_image_file", r"missing\.png|missing|exist"),
                       ("size_differs", r"size|width|height"),
                       ("no_annotations_key", r"annotations")]:
      add("COCO", f"builder: {name.replace('_', ' ')}",
          lambda i, name=name: coco(i, T("coco", f"{name}.json")), None, want)
    add("COCO", "builder: annotations file that does not exist",
        lambda i: coco(i, T("coco", "nope.json")), None, r"nope\.json")
    # -- weights files (config.init_from; a fresh workdir, where init_from applies)
    for name, want in [("missing.npz", r"missing\.npz.*exist"),
                       ("weights.txt", r"extension"),
                       ("garbage.npz", r"garbage\.npz.*not a readable"),
                       ("truncated.safetensors", r"truncated\.safetensors"),
                       ("wrong_shape.npz", r"classifier.*shape|shape.*classifier"),
                       ("no_match.npz", r"no_such_layer")]:
      add("weights", f"init_from.weights: {name}", lambda i, name=name: train_new(
          i, f"--config.init_from.weights={T('inputs', name)}"), "new", want)
    add("weights", "init_from.checkpoint: a folder that does not exist", lambda i: train_new(
        i, f"--config.init_from.checkpoint={T('inputs', 'no_run')}"), "new", r"no_run")
    add("weights", "init_from.checkpoint: a folder without checkpoints", lambda i: train_new(
        i, f"--config.init_from.checkpoint={T('inputs', 'empty_dir')}"), "new",
        r"no checkpoint|holds no")
    add("weights", "both init_from.checkpoint and init_from.weights", lambda i: train_new(
        i, f"--config.init_from.checkpoint={self.base['workdir']}",
        f"--config.init_from.weights={T('inputs', 'wrong_shape.npz')}"), "new",
        r"checkpoint.*weights|weights.*checkpoint")
    # -- checkpoints
    add("checkpoint", "train: checkpoint of an incompatible config (base_width 8)",
        lambda i: train(i, "--config.model.base_width=8"), "trained",
        r"incompatible config")
    add("checkpoint", "eval: checkpoint of an incompatible config (base_width 8)",
        lambda i: self.cmd("eval", "--config.model.base_width=8",
                           f"--workdir={T('r4', i, 'trained')}"), "trained",
        r"incompatible config")
    add("checkpoint", "eval: every checkpoint corrupt (empty step folders)",
        lambda i: self.cmd("eval", f"--workdir={T('r4', i, 'trained')}"), "trained-all-corrupt",
        r"no readable checkpoint|unreadable")
    add("checkpoint", "train: workdir/checkpoints is a file",
        lambda i: self.cmd("train", *MORE, f"--workdir={T('r4', i, 'trained')}"),
        "trained-ckpt-file", r"checkpoints")
    return I

  FAST_R4 = ("config file with a syntax error", "flag file that does not exist",
             "--workdir naming a file", "config.optimizer.lr=-1.0", "config.eval_every=0",
             "truncated TFRecord (train split)", "init_from.weights: missing.npz",
             "train: checkpoint of an incompatible config (base_width 8)")

  def make_inputs(self):
    """The files the malformed inputs point at."""
    T = self.path
    os.makedirs(T("inputs", "empty_dir"), exist_ok=True)
    with open(T("inputs", "a_file"), "w") as f:
      f.write("not a directory\n")
    with open(T("inputs", "syntax_error.py"), "w") as f:
      f.write("def get_config(arg=None):\n  return {'task': 'segmentation'\n")
    with open(T("inputs", "no_get_config.py"), "w") as f:
      f.write("CONFIG = 1\n")
    with open(T("inputs", "bad.flags"), "w") as f:
      f.write("--config.nope=1\n")
    with open(T("inputs", "weights.txt"), "w") as f:
      f.write("weights\n")
    with open(T("inputs", "garbage.npz"), "wb") as f:
      f.write(b"this is not a zip file" * 10)
    header = json.dumps({"params/classifier/kernel": {
        "dtype": "F32", "shape": [1, 1, 4, 4], "data_offsets": [0, 64]}}).encode()
    with open(T("inputs", "truncated.safetensors"), "wb") as f:
      f.write(struct.pack("<Q", len(header)) + header + b"\0" * 10)
    np.savez(T("inputs", "wrong_shape.npz"),
             **{"params/classifier/kernel": np.zeros((3, 3), np.float32)})
    np.savez(T("inputs", "no_match.npz"),
             **{"params/no_such_layer/kernel": np.zeros((3, 3), np.float32)})
    # A truncated TFRecord: a copy of the tiny shapes dataset with its train file cut.
    src = glob.glob(os.path.expanduser("~/tensorflow_datasets/shapes/s32_n16-8_o1-4"))
    dst = T("inputs", "tfds_truncated", "shapes", "s32_n16-8_o1-4")
    if src:
      shutil.copytree(src[0], dst, dirs_exist_ok=True)
    else:  # build it there first with the ordinary command (then cut it)
      self.run(self.cmd("train", "--config.num_steps=0",
                        f"--config.dataset.data_dir={T('inputs', 'tfds_truncated')}",
                        f"--workdir={T('inputs', 'tfds_build_run')}"))
    cut = glob.glob(os.path.join(dst, "**", "*train.tfrecord*"), recursive=True)
    assert cut, f"no train TFRecord under {dst}"
    for path in cut:
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 2 // 3)
    # COCO-format inputs: one good image and a JSON per defect.
    os.makedirs(T("coco", "images"), exist_ok=True)
    with open(T("coco", "images", "a.png"), "wb") as f:
      f.write(png_bytes(16, 16))
    good = {"images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8]}]}

    def variant(name, edit):
      data = json.loads(json.dumps(good))
      edit(data)
      with open(T("coco", f"{name}.json"), "w") as f:
        json.dump(data, f)
    with open(T("coco", "not_json.json"), "w") as f:
      f.write("{'images': [")
    variant("missing_image_id", lambda d: d["annotations"][0].update(image_id=7))
    variant("unknown_category", lambda d: d["annotations"][0].update(category_id=9))
    variant("bbox_3_numbers", lambda d: d["annotations"][0].update(bbox=[1, 2, 3]))
    variant("negative_size", lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]))
    variant("missing_image_file", lambda d: d["images"][0].update(file_name="missing.png"))
    variant("size_differs", lambda d: d["images"][0].update(width=20))
    variant("no_annotations_key", lambda d: d.pop("annotations"))

  def mount_tmpfs(self, path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True, check=False)
    if p.returncode:
      return (p.stderr or p.stdout).strip() or f"mount exited {p.returncode}"
    with self._lock:
      self.mounts.append(path)
    return None

  def unmount_all(self):
    for path in reversed(self.mounts):
      subprocess.run(["umount", "-l", path], capture_output=True, check=False)
    self.mounts = []

  def r4(self, spec):
    rid, group, what, make, kind, want, prefix = spec
    T = self.path
    os.makedirs(T("r4", rid), exist_ok=True)
    workdir = None
    if kind and kind.startswith("trained"):
      workdir = self.copy_reference(os.path.join("r4", rid, "trained"))
      if kind == "trained-all-corrupt":
        for step in kept(workdir):
          self.corrupt(os.path.join(workdir, "checkpoints", str(step)), "empty")
      elif kind == "trained-ckpt-file":
        shutil.rmtree(os.path.join(workdir, "checkpoints"))
        with open(os.path.join(workdir, "checkpoints"), "w") as f:
          f.write("not a folder\n")
    elif kind == "readonly":
      why = self.mount_tmpfs(T("ro"), "16m")
      argv = make(rid)
      if why:
        return [Row(rid, f"[{group}] {what}", self.show(argv), "exit 2, one error line",
                    f"SKIPPED: cannot mount a tmpfs ({why})", None)]
      shutil.copytree(self.base["workdir"], T("ro", "trained"))
      subprocess.run(["mount", "-o", "remount,ro", T("ro")], check=True)
      workdir = T("ro", "trained")
    elif kind in ("new", "new-at-none"):
      workdir = T("r4", rid, "new" if kind == "new" else "none")
    argv = make(rid)
    before = snapshot(workdir) if workdir else None
    r = self.run(argv, timeout=240)
    after = snapshot(workdir) if workdir else None
    lines = r.error_lines(prefix)
    problems, note = [], ""
    if r.rc != 2:
      problems.append(f"exit {r.rc}")
    if "Traceback" in r.text:
      problems.append(traceback_of(r.text))
    if len(lines) != 1:
      problems.append(f"{len(lines)} `{prefix}` lines")
    elif not re.search(want, lines[0]):
      problems.append(f"the message does not match /{want}/")
    change = diff(before, after)
    if change and kind == "trained-all-corrupt" and before is not None and after is not None:
      moved = {re.sub(r"^checkpoints/(\d+)", r"checkpoints/corrupt/\1", k): v
               for k, v in before.items()}
      rest = {k for k in set(moved) ^ set(after) if k not in ("checkpoints/corrupt",)}
      rest |= {k for k in set(moved) & set(after) if moved[k] != after[k]
               and k not in ("checkpoints", "checkpoints/corrupt")}
      if not rest:  # documented: unreadable steps are moved aside, never deleted
        change = ""
        note = "; the unreadable steps moved to checkpoints/corrupt/ (documented), nothing else"
    if change:
      problems.append(f"workdir changed: {change}")
    others = [l for l in r.stderr.splitlines() if l.strip() and l not in lines]
    message = lines[0] if lines else short(r.stderr[-300:] or r.stdout[-300:]) or "(no output)"
    observed = f"exit {r.rc}: `{short(message, 300)}`"
    if others:
      observed += f" (+{len(others)} other stderr line{'s' * (len(others) > 1)}: " \
                  f"`{short(others[0], 100)}`)"
    if problems:
      observed = "; ".join(problems) + " -- " + observed
    if workdir and not change:
      observed += note or ("; workdir unchanged" if before is not None else "; no workdir left")
    expected = (f"exit 2, one `{prefix}` line naming the input" if prefix == ERROR else
                f"exit 2, launch.sh's one-line `{prefix}` message (before any Python)")
    return [Row(rid, f"[{group}] {what}", self.show(argv), expected, observed, not problems)]

  # R5 ----------------------------------------------------------------------------
  def r5(self, with_eval):
    workdir = self.path("r5")
    argv = self.cmd("train", "--config.optimizer.lr=1e6", "--config.checkpoint_every=1",
                    f"--workdir={workdir}")
    r = self.run(argv)
    problems, notes = [], []
    lines = r.error_lines()
    if r.rc != 2 or len(lines) != 1 or "diverged" not in lines[0]:
      problems.append(f"exit {r.rc}; {short(r.stderr[-300:])}")
    else:
      notes.append(f"exit 2: `{short(lines[0], 260)}`")
      if "grad_clip_norm" in lines[0]:
        problems.append("suggests grad_clip_norm although the config sets it (1.0)")
    if "Traceback" in r.text:
      problems.append(traceback_of(r.text))
    steps = kept(workdir)
    m = re.search(r"last good checkpoint \(step (\d+)\)", r.stderr)
    if not steps:
      problems.append("no checkpoint kept")
    elif m and int(m.group(1)) != steps[-1]:
      problems.append(f"message names step {m.group(1)}, the latest kept is {steps[-1]}")
    for step in steps:
      try:
        bad = non_finite(read_state(workdir, step))
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f"checkpoint {step} unreadable: {short(str(e), 100)}")
        continue
      if bad:
        problems.append(f"checkpoint {step}: {len(bad)} non-finite leaves (e.g. {bad[0]})")
    if steps and not any(p.startswith("checkpoint") for p in problems):
      notes.append(f"checkpoints {steps}: every floating leaf finite")
    if with_eval and steps:
      e = self.run(self.cmd("eval", "--config.optimizer.lr=1e6", "--config.checkpoint_every=1",
                            f"--workdir={workdir}"))
      m = re.search(r"final step (\d+): (\{.*\})", e.stdout)
      if e.rc != 0 or not m:
        problems.append(f"eval of the last good checkpoint: exit {e.rc} {short(e.stderr[-200:])}")
      else:
        values = json.loads(m.group(2))
        # checkerboard_score is NaN by definition (0/0) when the logits are spatially
        # constant (jaxseg/metrics/segmentation.py); the other metrics must be finite.
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for k, v in values.items()
                   if k != "checkerboard_score"):
          problems.append(f"eval of step {m.group(1)} not finite: {values}")
        else:
          notes.append(f"then `eval`: step {m.group(1)} {values}")
    return [Row("R5", "divergence: lr=1e6, a checkpoint every step (tiny config)", self.show(argv),
                "exit 2 with the divergence message (no grad_clip_norm advice: it is set); "
                "every floating leaf of the kept checkpoints finite" +
                ("; `eval` of it finite" if with_eval else ""),
                "; ".join(problems + notes), not problems)]

  # R6 ----------------------------------------------------------------------------
  def r6(self):
    mount = self.path("r6_disk")
    workdir = os.path.join(mount, "run")
    argv = self.cmd("train", *RUN, f"--workdir={workdir}")
    what = ("disk full while checkpoint 4 is written: workdir on a 16 MB tmpfs, filled (to "
            "96 KB free) while the run is paused right after checkpoint 2 is committed")
    expected = ("exit 2, one `jaxseg: error:` line (no space left), no traceback, no temporary "
                "folder left; checkpoint 2 intact and restorable; after freeing space the same "
                "command resumes to a bit-identical end")
    why = self.mount_tmpfs(mount, "16m")
    if why:
      return [Row("R6", what, self.show(argv), expected,
                  f"SKIPPED: cannot mount a size-limited tmpfs here ({why})", None)]
    filler = os.path.join(mount, "filler")
    t0 = time.monotonic()
    p, out, err = self.start(argv)
    filled = False
    while p.poll() is None and time.monotonic() - t0 < 300:
      if 2 in probe(workdir).committed:
        os.kill(p.pid, signal.SIGSTOP)
        st = os.statvfs(mount)
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as f:
          f.write(b"\0" * max(free - 96 * 1024, 0))
        os.kill(p.pid, signal.SIGCONT)
        filled = True
        break
      time.sleep(0.002)
    r = self.finish(p, out, err, t0)
    problems, notes = [], []
    lines = r.error_lines()
    if not filled:
      problems.append("checkpoint 2 never appeared")
    if r.rc != 2 or len(lines) != 1:
      problems.append(f"exit {r.rc}, {len(lines)} error lines: {short(r.stderr[-400:])}")
    else:
      notes.append(f"exit 2: `{short(lines[0], 260)}`")
      if not re.search(r"(?i)no space|disk|full", lines[0]):
        problems.append("the message does not say the disk is full")
    if "Traceback" in r.text:
      problems.append(traceback_of(r.text))
    state = probe(workdir)
    if state.tmp:
      problems.append(f"temporary folders left: {state.tmp}")
    if 2 not in state.committed:
      problems.append(f"checkpoint 2 gone: {state.committed}")
    else:
      try:
        arrays = read_state(workdir, 2)
        bad = non_finite(arrays)
        notes.append(f"checkpoints left {state.committed}; 2 restorable ({len(arrays)} arrays"
                     f"{', non-finite: ' + bad[0] if bad else ', all finite'})")
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f"checkpoint 2 unreadable: {short(str(e), 160)}")
    if filled:
      os.remove(filler)
      codes, results = self.rerun_until_done(argv)
      ok_end, text = self.compare(workdir)
      if codes[-1] != 0:
        problems.append(f"rerun after freeing space: exit {codes[-1]} "
                        f"{short(results[-1].stderr[-200:])}")
      elif not ok_end:
        problems.append(f"rerun after freeing space: {text}")
      else:
        notes.append(f"rerun after freeing space: exit 0, {text}")
    return [Row("R6", what, self.show(argv) + "  (then, space freed, the same command again)",
                expected, "; ".join(problems + notes), not problems)]


# ----------------------------------------------------------------------------- main

# ----------------------------------------------------------------------------- R7: many processes
MP = ("--num_processes=2", "--devices_per_process=2")


def _launcher_child(launcher_pid, index):
  """The pid of the local launcher's process with JAX_PROCESS_ID=index (None: not yet)."""
  try:
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as f:
      children = [int(c) for c in f.read().split()]
    for pid in children:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if f"JAX_PROCESS_ID={index}".encode() in f.read().split(b"\0"):
          return pid
  except OSError:
    pass
  return None


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class MultiProcessRows:
  """R7 (issue 18): the local launcher (`--num_processes=2 --devices_per_process=2`) under
  kill -9 of one process, SIGTERM to one process, a coordinator that never answers, and a
  run saved by 2 processes resumed by 1. Rows run one after another (they share R7.0)."""

  def __init__(self, bench: "Bench"):
    self.b = bench
    self.base = None  # R7.0's final state {path: array}

  def rows(self):
    out = [self.reference()]
    if self.base is None:
      return out + [Row("R7.1-4", "(needs R7.0)", "", "", "R7.0 failed", False)]
    killed_copy = self.b.path("r7_saved_by_2")
    out.append(self.kill_one(killed_copy))
    out.append(self.sigterm_one())
    out.append(self.no_coordinator())
    out.append(self.n_to_m(killed_copy))
    return out

  def argv(self, workdir, *extra):
    return self.b.cmd("train", *RUN, *MP, f"--workdir={workdir}", *extra)

  def reference(self):
    workdir = self.b.path("r7_reference")
    argv = self.argv(workdir)
    r = self.b.run(argv)
    recs = records(workdir)
    ok = r.rc == 0 and kept(workdir)[-1:] == [LAST] and len(recs) == len(set(recs))
    if ok:
      self.base = read_state(workdir, LAST)
    observed = (f"exit {r.rc} in {r.seconds:.0f} s; checkpoints kept {kept(workdir)}; "
                f"{len(recs)} records ({len(set(recs))} distinct (step, split))")
    return Row("R7.0", "2 processes x 2 devices, uninterrupted (the R7 reference)",
               self.b.show(argv), "exit 0; one record per (step, split), written by process 0",
               observed, bool(ok))

  def exact(self, workdir):
    """(ok, text): the final state of `workdir` against R7.0's, array by array."""
    if LAST not in kept(workdir):
      return False, f"no checkpoint {LAST} (kept {kept(workdir)})"
    got = read_state(workdir, LAST)
    differ = [k for k in self.base if k not in got or not np.array_equal(self.base[k], got[k])]
    recs = records(workdir)
    dup = len(recs) - len(set(recs))
    ok = not differ and not dup
    return ok, (f"final state {'bit-identical to R7.0' if not differ else f'differs in {differ[:3]}'}"
                f"; {dup} duplicate records")

  def watch(self, argv, ready, timeout=240):
    """Start `argv`, wait until `ready()` (True) or the launcher exits first (False)."""
    p, out, err = self.b.start(argv)
    deadline = time.monotonic() + timeout
    while not ready():
      if p.poll() is not None or time.monotonic() > deadline:
        return p, out, err, False
      time.sleep(0.05)
    return p, out, err, True

  def kill_one(self, copy_to):
    workdir = self.b.path("r7_kill")
    argv = self.argv(workdir)
    what = "kill -9 process 1 of 2 once checkpoint 2 is committed; then the same command"
    expected = ("the launcher stops process 0 and exits 1 within 15 s with one line naming "
                "process 1 and SIGKILL; the rerun exits 0 with R7.0's final state bit for bit")
    p, out, err, ready = self.watch(argv, lambda: 2 in kept(workdir))
    victim = _launcher_child(p.pid, 1) if ready else None
    if victim is None:
      first = Bench.finish(p, out, err, time.monotonic())
      return Row("R7.1", what, self.b.show(argv), expected,
                 f"never reached checkpoint 2 with 2 processes (exit {first.rc}): "
                 f"{short(first.stderr[-300:])}", False)
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    first = Bench.finish(p, out, err, t0, timeout=120)
    line = (f"{ERROR} process 1 of 2 (pid {victim}) was killed by signal 9 (SIGKILL); stopped "
            f"the other processes; run the same command to resume from the last checkpoint")
    left = kept(workdir)
    shutil.copytree(workdir, copy_to)
    again = self.b.run(argv)
    ok_state, text = self.exact(workdir)
    ok = (first.rc == 1 and first.seconds < 15 and line in first.error_lines()
          and again.rc == 0 and ok_state and "Traceback" not in again.text)
    observed = (f"launcher exit {first.rc} {first.seconds:.1f} s after the kill, error lines "
                f"{[short(l, 90) for l in first.error_lines()]}; checkpoints left {left}; "
                f"rerun exit {again.rc} ({again.seconds:.0f} s); {text}")
    return Row("R7.1", what, self.b.show(argv) + "  (then the same command again)", expected,
               observed, ok)

  def sigterm_one(self):
    workdir = self.b.path("r7_sigterm")
    argv = self.argv(workdir)
    what = "SIGTERM to process 0 alone (a preemption notice) after step 3; then the same command"
    expected = ("both processes save the same step and exit; launcher exit 143; the rerun "
                "exits 0 with R7.0's final state bit for bit")
    p, out, err, ready = self.watch(argv, lambda: any(s >= 3 for s, _ in records(workdir)))
    target = _launcher_child(p.pid, 0) if ready else None
    if target is None:
      first = Bench.finish(p, out, err, time.monotonic())
      return Row("R7.2", what, self.b.show(argv), expected,
                 f"never reached step 3 (exit {first.rc}): {short(first.stderr[-300:])}", False)
    os.kill(target, signal.SIGTERM)
    first = Bench.finish(p, out, err, time.monotonic(), timeout=120)
    saved = [l.split("saved checkpoint at step ")[1].split()[0]
             for l in first.stderr.splitlines() if "stopped by SIGTERM: saved" in l]
    again = self.b.run(argv)
    ok_state, text = self.exact(workdir)
    ok = (first.rc == 143 and len(saved) == 2 and len(set(saved)) == 1 and again.rc == 0
          and ok_state and "Traceback" not in first.text + again.text)
    observed = (f"launcher exit {first.rc} {first.seconds:.1f} s after the signal; steps saved "
                f"by the processes: {saved}; rerun exit {again.rc}; {text}")
    return Row("R7.2", what, self.b.show(argv) + "  (then the same command again)", expected,
               observed, ok)

  def no_coordinator(self):
    workdir = self.b.path("r7_no_coordinator")
    address = f"127.0.0.1:{_free_port()}"
    env = dict(self.b.env, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID="1")
    argv = self.b.cmd("train", *RUN, f"--workdir={workdir}", "--distributed",
                      "--init_timeout=10")
    r = self.b.run(argv, env=env)
    lines = r.error_lines()
    ok = (r.rc == 2 and len(lines) == 1 and "did not answer within 10 s" in lines[0]
          and not os.path.exists(workdir) and "Traceback" not in r.text)
    return Row("R7.3", "process 1 of 2 whose coordinator never comes up (nothing listens)",
               f"JAX_COORDINATOR_ADDRESS={address} JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 "
               + self.b.show(argv),
               "exit 2 with one error line after --init_timeout (no hang, no abort), no workdir",
               f"exit {r.rc} after {r.seconds:.0f} s; {[short(l, 160) for l in lines]}; workdir "
               f"{'left' if os.path.exists(workdir) else 'not created'}", ok)

  def n_to_m(self, workdir):
    argv = self.b.cmd("train", *RUN, "--num_processes=1", "--devices_per_process=4",
                      f"--workdir={workdir}")
    what = "R7.1's workdir as the kill left it (saved by 2 processes), resumed by 1 process x 4 devices"
    expected = ("exit 0; final parameters equal R7.0's within 1e-5 (gloo's cross-process "
                "all-reduce sums in another order than XLA:CPU's in-process one)")
    if not os.path.isdir(workdir):
      return Row("R7.4", what, self.b.show(argv), expected, "R7.1 left no workdir", False)
    start = kept(workdir)
    r = self.b.run(argv)
    if r.rc != 0 or LAST not in kept(workdir):
      return Row("R7.4", what, self.b.show(argv), expected,
                 f"exit {r.rc}: {short(r.stderr[-300:])}", False)
    got = read_state(workdir, LAST)
    params = [k for k in self.base if k.startswith("params/")]
    worst = max(float(np.max(np.abs(got[k] - self.base[k]))) for k in params)
    close = all(np.allclose(got[k], self.base[k], rtol=1e-5, atol=1e-6) for k in params)
    return Row("R7.4", what, self.b.show(argv), expected,
               f"resumed from {start[-1] if start else None}; exit 0 in {r.seconds:.0f} s; "
               f"largest parameter difference {worst:.2g}", close)


LEGEND = """What the README's commands do when things go wrong (issue 20). Produced by
`bench/faults.py` (its `--fast` subset runs in tests/test_faults.py); every row runs
`./launch.sh train|eval` (or the README's `python -m jaxseg.data.coco_format`) as a
subprocess on the tiny U-Net config and checks the outcome:

- R0: the uninterrupted reference run every other row is compared with (8 steps,
  checkpoints every 2, evals at 4 and 8, best-by-mIoU + latest 2 kept).
- R1: kill -9 at a moment found by watching the workdir, then the same command until it
  exits 0: the final checkpoint must equal R0's array by array (np.array_equal over the
  whole TrainState), the same checkpoint steps kept, one metrics.jsonl record per
  (step, split).
- R2: SIGTERM at the same moments: exit 143 with the last trained step checkpointed (exit 0
  when the run had finished), then the same exact resume.
- R3: the latest checkpoint of R0's workdir damaged, then `train` (warning, fallback, the
  bad step moved to checkpoints/corrupt/<step>, bit-identical end) and `eval`.
- R4: malformed inputs: exit 2 with one `jaxseg: error:` line, no traceback, the trained
  workdir it points at unchanged (file tree, sizes, mtimes), no new workdir left.
- R5: divergence: the message, every floating leaf of every kept checkpoint finite.
- R6: a full disk (a 16 MB tmpfs) while a checkpoint is written.
- R7: many processes (issue 18): the same run as 2 local processes x 2 CPU devices
  (`--num_processes=2 --devices_per_process=2`): one process killed, SIGTERM to one
  process, a coordinator that never answers, a run saved by 2 processes resumed by 1.
"""


def table(rows):
  out = ["| id | what was done | command | expected | observed | result |",
         "|---|---|---|---|---|---|"]
  for r in rows:
    result = "SKIP" if r.ok is None else ("PASS" if r.ok else "**FAIL**")
    out.append(f"| {r.id} | {cell(r.what)} | `{cell(r.command)}` | {cell(r.expected)} | "
               f"{cell(r.observed)} | {result} |")
  return "\n".join(out)


def main(argv=None):
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes while reading checkpoints
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--fast", action="store_true",
                      help="a subset (1 R1 + 2 R2 moments, 1 R3, 8 R4 inputs, R5; no R6)")
  parser.add_argument("--output", help="also write the table (Markdown) to this file")
  parser.add_argument("--jobs", type=int, default=2, help="rows run at once (default 2)")
  parser.add_argument("--direct", action="store_true",
                      help="run .venv/bin/python -m jaxseg.main instead of ./launch.sh")
  parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
  parser.add_argument("--only", default="",
                      help="comma-separated row groups or R4 inputs, e.g. R1,R4 or R4.07,R4.12")
  parser.add_argument("--cache_dir", default=os.environ.get("JAXSEG_CACHE_DIR") or os.path.join(
      tempfile.gettempdir(), "jaxseg-faults-xla-cache"),
                      help="$JAXSEG_CACHE_DIR of the runs (shared, so each program compiles once)")
  args = parser.parse_args(argv)
  only = {g.strip().upper() for g in args.only.split(",") if g.strip()}
  want = lambda g: not only or any(o.split(".")[0] == g for o in only)  # noqa: E731
  pick = {o for o in only if "." in o}  # single R4 inputs, e.g. R4.07

  t_start = time.time()
  root = tempfile.mkdtemp(prefix="jaxseg-faults-")
  bench = Bench(root, args.cache_dir, args.direct, args.jobs)
  if not args.direct:
    setup = subprocess.run(["./launch.sh", "setup"], cwd=REPO, capture_output=True, text=True,
                           check=False)
    if setup.returncode:
      sys.exit(f"./launch.sh setup failed: {setup.stderr[-500:]}")
  moments = ["checkpoint-write"] if args.fast else list(Bench.MOMENTS)
  r2_moments = ["mid-step", "final-save"] if args.fast else list(Bench.MOMENTS)
  # (the fast subset takes the corruption whose read errors tensorstore never prints)
  corruptions = ["empty"] if args.fast else list(Bench.CORRUPTIONS)
  inputs = bench.r4_inputs()
  if args.fast:
    inputs = [spec for spec in inputs if spec[2] in Bench.FAST_R4]
  if pick:
    inputs = [spec for spec in inputs if spec[0] in pick]
  rows = []
  try:
    bench.make_inputs()
    independent, dependent = [], []  # (order key, callable); dependent rows need R0
    if want("R5"):
      independent.append(("R5", lambda: bench.r5(with_eval=not args.fast)))
    if want("R4"):
      for spec in inputs:
        (dependent if spec[4] and spec[4] != "new" and spec[4] != "new-at-none"
         or "init_from.checkpoint" in spec[2] else independent).append(
             (spec[0], lambda spec=spec: bench.r4(spec)))
    if want("R1"):
      dependent += [(f"R1.{i}", lambda m=m, i=i: bench.r1(m, i))
                    for i, m in enumerate(moments, 1)]
    if want("R2"):
      dependent += [(f"R2.{i}", lambda m=m, i=i: bench.r2(m, i))
                    for i, m in enumerate(r2_moments, 1)]
    if want("R3"):
      dependent += [(f"R3.{i}", lambda k=k, i=i: bench.r3(k, i, with_eval=not args.fast))
                    for i, k in enumerate(corruptions, 1)]
    if want("R6") and not args.fast:
      dependent.append(("R6", bench.r6))
    if want("R7") and not args.fast:
      independent.append(("R7", MultiProcessRows(bench).rows))

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
      reference = pool.submit(bench.reference)
      futures = {key: pool.submit(fn) for key, fn in independent}
      rows += reference.result()
      if bench.base is None:
        print("the reference run failed; rows that compare with it are not run",
              file=sys.stderr)
        dependent = []
      futures.update({key: pool.submit(fn) for key, fn in dependent})
      for key, future in futures.items():
        try:
          rows += future.result()
        except Exception as e:  # pylint: disable=broad-except
          rows.append(Row(key, "(the bench itself failed)", "", "", f"{type(e).__name__}: {e}",
                          False))
  finally:
    bench.unmount_all()
    if not args.keep:
      shutil.rmtree(root, ignore_errors=True)

  def order(row):
    group, _, rest = row.id.partition(".")
    num = re.match(r"\d+", rest)
    return (group, int(num.group()) if num else 0, rest)
  rows.sort(key=order)
  minutes = (time.time() - t_start) / 60
  failed = [r for r in rows if r.ok is False]
  cmdline = "bench/faults.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
  head = (f"Fault table (issue 20), made by `.venv/bin/python {cmdline}` in {minutes:.1f} min "
          f"on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs, "
          f"{'python -m jaxseg.main' if args.direct else './launch.sh'} subprocesses, "
          f"{args.jobs} at a time). `$T` is the bench's temporary folder. "
          f"{len(rows)} rows: {sum(r.ok is True for r in rows)} PASS, {len(failed)} FAIL, "
          f"{sum(r.ok is None for r in rows)} SKIP.\n\n")
  text = head + table(rows) + "\n"
  print(text)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      f.write("# Fault table\n\n" + LEGEND + "\n" + text)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
