"""METEOR 1.5 (Denkowski & Lavie, "Meteor Universal: Language Specific Translation
Evaluation for Any Target Language", WMT 2014) from the reference jar.

The jar and its English paraphrase table ship inside the ``pycocoevalcap`` package
(``pycocoevalcap/meteor/meteor-1.5.jar``, ``data/paraphrase-en.gz``). `Meteor` runs it the
way pycocoevalcap's and DenseCap's wrappers do (eval/meteor_bridge.py): ONE persistent
``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`` process, a
``SCORE ||| ref 1 ||| ... ||| ref n ||| candidate`` line per pair (answered by one line of
sufficient statistics), then ``EVAL ||| stats 1 ||| ... ||| stats N`` (answered by N
segment scores and the corpus score). `score` returns the N segment scores; a segment's
score does not depend on the other segments of the EVAL line, so it is the number
DenseCap's bridge got from one SCORE/EVAL round per record.

What pycocoevalcap's wrapper gets wrong, and this one avoids:
- it never reads the jar's stderr (a PIPE): once 64 KiB of Java warnings pile up there the
  jar blocks and so does Python. Here stderr goes to a temporary file, whose tail is quoted
  when the jar dies;
- a dead jar gives ``float('')`` errors (or a hang) and leaves its lock held, so the
  ``__del__`` at exit deadlocks. Here every read checks for end of file and every write for
  a broken pipe, and raises `MeteorError` (with the exit status and stderr tail); the lock
  is a ``with`` block; `close` is idempotent and never waits forever;
- it writes SCORE lines without reading the answers in bounded batches (pycocoevalcap
  reads each answer before the next line; that is kept: the answers are read in batches
  of at most `_BATCH` lines, far below a pipe's 64 KiB, so neither side can block);
- the jar answers an EVAL line of N statistics with N + 1 lines (segment scores, then the
  corpus score; also for N = 1: two equal lines). pycocoevalcap's ``_score`` reads both
  (but writes ``str`` to a binary pipe, so it fails on Python 3, and never flushes);
  DenseCap's meteor_bridge.py reads one ("I don't know why we were reading out twice?
  That doesn't work"), which with this jar would leave the second line to be read as the
  next record's statistics. Its per-record score is in either case the one segment's
  score, which is what `score` returns; here exactly N + 1 lines are read per EVAL;
- only the candidate is cleaned of ``|||``: here references are too, and newlines (which
  would end the protocol line) become spaces in both. The candidate's cleaning is
  otherwise the reference's: ``.replace('|||', '').replace('  ', ' ')``.

Edge cases: an empty candidate scores 0.0 (the jar's answer); an empty reference list is
sent as one empty reference, exactly what DenseCap's bridge sends
(``' ||| '.join([]) == ''``), and the jar scores it 0.0. An identical candidate scores 1.0.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Sequence

import numpy as np

from jaxseg.errors import ConfigError

JAR_NAME = "meteor-1.5.jar"
PARAPHRASE = os.path.join("data", "paraphrase-en.gz")
JAVA_HINT = ("install a Java runtime: apt-get install -y default-jre-headless "
             "(./launch.sh setup does)")
_BATCH = 64  # SCORE lines in flight before their answers are read (each answer ~100 bytes)


class MeteorError(RuntimeError):
  """The METEOR jar died or answered something that is not METEOR's protocol."""


def default_jar() -> str:
  """Path of pycocoevalcap's meteor-1.5.jar ('' when pycocoevalcap is not installed)."""
  spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __file__
  if spec is None or not spec.submodule_search_locations:
    return ""
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "meteor", JAR_NAME)
    if os.path.isfile(path):
      return path
  return os.path.join(list(spec.submodule_search_locations)[0], "meteor", JAR_NAME)


def _clean(text: str) -> str:
  return str(text).replace("\r", " ").replace("\n", " ").replace("|||", "")


class Meteor:
  """One persistent METEOR 1.5 process; ``score(pairs)`` gives one METEOR per
  ``(candidate, references)`` pair. Thread-safe; a context manager; `close` when done."""

  def __init__(self, jar: str | None = None, java: str = "java", memory: str = "2G"):
    java_path = shutil.which(java)
    if java_path is None:
      raise ConfigError(f"METEOR needs Java and {java!r} is not on PATH: {JAVA_HINT}")
    jar = jar or default_jar()
    if not jar or not os.path.isfile(jar):
      raise ConfigError(f"METEOR's jar {jar or JAR_NAME!r} is missing: pip install "
                        "pycocoevalcap (it ships meteor-1.5.jar; ./launch.sh setup does)")
    jar_dir = os.path.dirname(os.path.abspath(jar))
    if not os.path.isfile(os.path.join(jar_dir, PARAPHRASE)):
      raise ConfigError(f"METEOR's paraphrase table {os.path.join(jar_dir, PARAPHRASE)!r} "
                        "is missing: reinstall pycocoevalcap (pip install --force-reinstall "
                        "pycocoevalcap)")
    self._lock = threading.Lock()
    self._error: str | None = None
    self._stderr = tempfile.TemporaryFile()
    self.command = [java_path, "-jar", f"-Xmx{memory}", os.path.abspath(jar), "-", "-",
                    "-stdio", "-l", "en", "-norm"]
    self._process = subprocess.Popen(self.command, cwd=jar_dir, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr)

  # -- protocol ---------------------------------------------------------------------------
  def _fail(self, what: str) -> MeteorError:
    process = self._process
    try:
      code = process.wait(timeout=5) if process.poll() is None else process.returncode
    except subprocess.TimeoutExpired:
      code = None
    tail = ""
    try:
      self._stderr.seek(0)
      lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
      tail = " | ".join(lines[-5:])
    except (OSError, ValueError):
      pass
    status = "still running" if code is None else f"exit status {code}"
    self._error = (f"the METEOR jar ({' '.join(self.command)}) {what} ({status}); "
                   f"its stderr ends: {tail or '(empty)'}")
    if code is None:
      process.kill()
    return MeteorError(self._error)

  def _write(self, lines: Sequence[str]) -> None:
    try:
      self._process.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
      self._process.stdin.flush()
    except (BrokenPipeError, OSError, ValueError) as e:
      raise self._fail(f"stopped reading its input ({type(e).__name__})") from None

  def _read(self) -> str:
    try:
      line = self._process.stdout.readline()
    except (OSError, ValueError):
      line = b""
    if not line:
      raise self._fail("died")
    return line.decode("utf-8", "replace").strip()

  def _read_float(self) -> float:
    line = self._read()
    try:
      return float(line)
    except ValueError:
      raise self._fail(f"answered {line[:200]!r} where a score was expected") from None

  # -- API --------------------------------------------------------------------------------
  def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray:
    """float64 ``[N]``: the METEOR segment score of each ``(candidate, references)``."""
    pairs = list(pairs)
    with self._lock:
      if self._error is not None:
        raise MeteorError(self._error)
      if self._process.poll() is not None:
        raise self._fail("is not running")
      if not pairs:
        return np.zeros((0,), np.float64)
      stats = []
      for start in range(0, len(pairs), _BATCH):
        lines = []
        for candidate, references in pairs[start:start + _BATCH]:
          if isinstance(references, str):
            raise TypeError(f"references of {candidate!r} must be a list of strings, "
                            f"not the string {references!r}")
          candidate = _clean(candidate).replace("  ", " ")
          refs = " ||| ".join(_clean(r) for r in references)
          lines.append(" ||| ".join(("SCORE", refs, candidate)))
        self._write(lines)
        for _ in lines:
          line = self._read()
          if not line or not all(_is_number(x) for x in line.split()):
            raise self._fail(f"answered {line[:200]!r} where statistics were expected")
          stats.append(line)
      self._write(["EVAL ||| " + " ||| ".join(stats)])
      scores = np.array([self._read_float() for _ in stats], np.float64)
      self._read_float()  # the corpus score of the EVAL line
      return scores

  def close(self) -> None:
    """Ends the jar (closing its input; killed after 10 s). Idempotent."""
    process = getattr(self, "_process", None)
    if process is None:
      return
    with self._lock:
      if process.poll() is None:
        try:
          process.stdin.close()
        except OSError:
          pass
        try:
          process.wait(timeout=10)
        except subprocess.TimeoutExpired:
          process.kill()
          process.wait()
      for stream in (process.stdin, process.stdout):
        try:
          stream.close()
        except OSError:
          pass
      self._stderr.close()
      self._error = self._error or "this Meteor was closed"
      self._process = None

  def __enter__(self) -> "Meteor":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # noqa: BLE001 -- never raise from a finalizer
      pass


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True
