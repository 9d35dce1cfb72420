"""What every jaxseg command line shares: one-line user errors, flag parsing that reports
bad config overrides in one line, the persistent compilation cache, quiet library logs."""
from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging


def fail(message: str):
  """Report a user error in one line and exit with status 2."""
  print(f"jaxseg: error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def enable_compilation_cache() -> None:
  """Persist compiled XLA programs, so re-running or resuming a config skips compilation
  ($JAXSEG_CACHE_DIR, default ~/.cache/jaxseg/xla; set it empty to disable)."""
  import jax  # pylint: disable=g-import-not-at-top
  path = os.environ.get("JAXSEG_CACHE_DIR", os.path.expanduser("~/.cache/jaxseg/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _quiet_libraries(record) -> bool:
  """Keep INFO lines of jaxseg; only warnings and errors of libraries (orbax is chatty)."""
  return record.levelno >= pylogging.WARNING or "/jaxseg/" in record.pathname


def parse_flags(argv):
  """absl's parser, with bad flags and config overrides reported in one line (a mistyped
  key in a locked config raises AttributeError deep inside ml_collections)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError)
      e = e.args[0]
    message = str(e.args[0] if len(e.args) == 1 else e)
    if "Traceback (most recent call last)" in message:  # an error raised by get_config
      message = message.strip().splitlines()[-1]
    fail(f"bad flag or config override: {message}")


def run(main):
  """app.run(main) with INFO logs of jaxseg only and one-line flag errors."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(main, flags_parser=parse_flags)
