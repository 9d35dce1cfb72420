"""Command line: `python -m jaxseg.main --config=experiments/.../x.py --workdir=runs/x`.

Any config key can be overridden (`--config.optimizer.lr=3e-3`), flags can come from a
file (`--flagfile=x.flags`). User errors print one line and exit with status 2.
"""
from __future__ import annotations

import json
import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go "
                    "(default: runs/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes from the workdir's "
                  "latest checkpoint) or eval (evaluates it only).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first "
                  "(multi-process runs; coordinator from the environment).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  try:
    config = FLAGS.config
    _ = config.task  # a config file that failed to load raises only when first used
  except OSError as e:
    _fail(f"cannot load --config: {e}")
  try:
    import jax  # pylint: disable=g-import-not-at-top
    enable_compilation_cache()
    if FLAGS.distributed:
      jax.distributed.initialize()
    from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
    workdir = FLAGS.workdir or default_workdir(FLAGS["config"].config_filename)
    summary = loop.train_and_evaluate(config, workdir, train=FLAGS.mode == "train")
  except JaxsegError as e:
    _fail(str(e))
  if jax.process_index() == 0:
    _report(summary)
  if summary["interrupted"]:
    sys.exit(128 + 15)


def enable_compilation_cache() -> None:
  """Persist compiled XLA programs, so re-running or resuming a config skips compilation
  ($JAXSEG_CACHE_DIR, default ~/.cache/jaxseg/xla; set it empty to disable)."""
  import jax  # pylint: disable=g-import-not-at-top
  path = os.environ.get("JAXSEG_CACHE_DIR", os.path.expanduser("~/.cache/jaxseg/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _report(summary: dict) -> None:
  metrics = summary.get("eval", {})
  headline = {k: round(v, 4) for k, v in metrics.items() if "/" not in k}
  print(f"final step {summary['final_step']}: {json.dumps(headline)}")
  print(f"checkpoints: {summary['checkpoints']}")
  print(f"metrics:     {summary['metrics']}")
  if "picture" in summary:
    print(f"picture:     {summary['picture']}")


def _quiet_libraries(record) -> bool:
  """Keep INFO lines of jaxseg; only warnings and errors of libraries (orbax is chatty)."""
  return record.levelno >= pylogging.WARNING or "/jaxseg/" in record.pathname


def _fail(message: str):
  """Report a user error in one line and exit with status 2."""
  print(f"jaxseg: error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's parser, with bad flags and config overrides reported in one line (a mistyped
  key in a locked config raises AttributeError deep inside ml_collections)."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError)
      e = e.args[0]
    message = str(e.args[0] if len(e.args) == 1 else e)
    if "Traceback (most recent call last)" in message:  # an error raised by get_config
      message = message.strip().splitlines()[-1]
    _fail(f"bad flag or config override: {message}")


def run():
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
