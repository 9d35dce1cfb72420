"""What every jaxseg command line shares: one-line user errors, flag parsing that reports
bad config overrides in one line, the persistent compilation cache, quiet library logs.

Exit status: 0 done; 2 a user error (one `jaxseg: error:` line); 143 stopped by SIGTERM
(a training run saves a checkpoint first and resumes when run again).
"""
from __future__ import annotations

import contextlib
import logging as pylogging
import os
import signal
import sys

from absl import app, flags, logging

VERBOSE = "--verbose" in sys.argv or "--verbose=true" in sys.argv
flags.DEFINE_bool("verbose", False, "Show the start-up and library logs that jaxseg hides "
                  "(TensorFlow/XLA start-up lines, orbax INFO).")


def default_workdir(config_path: str) -> str:
  """runs/<config file name>: where a run of `config_path` goes without --workdir."""
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", name)


def no_positional_arguments(argv) -> None:
  if len(argv) > 1:
    fail(f"unexpected argument(s) {' '.join(argv[1:])!r}; flags are --name=value "
         f"(see --help)")


def loaded_config(argv, name: str = "config"):
  """The experiment config of flag --`name` (no positional arguments allowed); a file that
  cannot be loaded or has a syntax error is one error line."""
  no_positional_arguments(argv)
  try:
    config = flags.FLAGS[name].value
    _ = config.task  # a config file that failed to load raises only when first used
  except OSError as e:
    fail(f"cannot load --{name}: {e}")
  except SyntaxError as e:
    fail(_syntax_error(e))
  return config


def _syntax_error(e: SyntaxError) -> str:
  return f"the config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}"


def fail(message: str):
  """Report a user error in one line and exit with status 2 (in the local launcher's
  processes: one line per job, multihost.print_user_error)."""
  from jaxseg.train import multihost  # pylint: disable=g-import-not-at-top
  multihost.print_user_error(f"jaxseg: error: {' '.join(message.split())}")
  _quiet_teardown()
  sys.exit(2)


def _quiet_teardown() -> None:
  """After the last line a command means to print: hide what libraries log while the
  interpreter shuts down (TensorFlow's partially-read cache notices, orbax threads)."""
  if VERBOSE:
    return
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


def enable_compilation_cache() -> None:
  """Persist compiled XLA programs, so re-running or resuming a config skips compilation
  ($JAXSEG_CACHE_DIR, default ~/.cache/jaxseg/xla; set it empty to disable)."""
  import jax  # pylint: disable=g-import-not-at-top
  path = os.environ.get("JAXSEG_CACHE_DIR", os.path.expanduser("~/.cache/jaxseg/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Library warnings that are expected in normal runs (orbax: a checkpoint saved between
# evals has no metrics; eval opens the checkpoints read-only).
_EXPECTED_WARNINGS = ("Requested `tracked_metric`", "did not provide metrics",
                      "Given directory is read only", "read_only=True, setting",
                      "Metadata file does not exist")


def _quiet_libraries(record) -> bool:
  """Keep INFO lines of jaxseg; only unexpected warnings and errors of libraries."""
  if "/jaxseg/" in record.pathname or VERBOSE:
    return True
  if record.exc_info and _closed_loop(record.exc_info[1]):
    return False
  if record.name == "asyncio":  # orbax's I/O tasks whose failure jaxseg already reported
    return False  # ("Task exception was never retrieved" after a damaged checkpoint)
  if "/orbax/" in record.pathname and (record.exc_info or "failed" in str(record.msg)):
    return False  # a failed background save: it surfaces in the main thread as one error
  return (record.levelno >= pylogging.WARNING
          and not any(m in str(record.msg) for m in _EXPECTED_WARNINGS))


@contextlib.contextmanager
def _silenced_stderr():
  """Send file descriptor 2 to /dev/null (C++ start-up lines bypass Python's sys.stderr)."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


_STARTED = False


def quiet_startup() -> None:
  """Import TensorFlow and JAX with their start-up lines (absl::InitializeLog, oneDNN
  notices) hidden, unless --verbose. Call first in a command-line module: it also makes
  SIGTERM from here on end the command with status 143 (the training loop, once running,
  handles SIGTERM itself by saving a checkpoint)."""
  global _STARTED
  _stop_on_sigterm()
  if VERBOSE or _STARTED:
    return
  _STARTED = True
  _drop_closed_loop_callbacks()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    with _silenced_stderr():
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
      import jax  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass  # imported again where needed, with its error visible
  except Stopped:
    _exit_stopped()


def _closed_loop(value) -> bool:
  return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def _drop_closed_loop_callbacks():
  """tensorstore reports each I/O callback that finds orbax's event loop already closed
  (after a failed checkpoint read or write) as a full traceback, from whichever thread
  runs it; the failure itself is reported once, as a jaxseg warning or error."""
  import threading  # pylint: disable=g-import-not-at-top
  excepthook, thread_hook, unraisable = sys.excepthook, threading.excepthook, sys.unraisablehook

  def on_exception(kind, value, tb):
    if not _closed_loop(value):
      excepthook(kind, value, tb)

  def on_thread_exception(args):
    if not _closed_loop(args.exc_value):
      thread_hook(args)

  def on_unraisable(args):
    if not _closed_loop(args.exc_value):
      unraisable(args)

  sys.excepthook, threading.excepthook = on_exception, on_thread_exception
  sys.unraisablehook = on_unraisable


def define_config_file(name: str, help_text: str, lock_config: bool = True) -> None:
  """ml_collections' DEFINE_config_file, which reads --flagfile files when it is defined:
  a missing flag file is one error line, not a traceback."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  try:
    config_flags.DEFINE_config_file(name, None, help_text, lock_config=lock_config)
  except flags.Error as e:
    fail(f"bad flag: {_flag_message(e)}")


def _flag_message(e: BaseException) -> str:
  message = str(e)
  return message.replace("ERROR:: ", "").strip()


class Stopped(BaseException):
  """SIGTERM arrived outside the training loop (which handles it itself)."""


def _stop(signum, frame):
  del signum, frame
  raise Stopped()


def _stop_on_sigterm():
  from jaxseg import signals  # pylint: disable=g-import-not-at-top
  if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None, signals.exit_now):
    signal.signal(signal.SIGTERM, _stop)


def parse_flags(argv):
  """absl's parser, with bad flags and config overrides reported in one line (a mistyped
  key in a locked config raises AttributeError deep inside ml_collections)."""
  try:
    return flags.FLAGS(argv)
  except SyntaxError as e:
    fail(_syntax_error(e))
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError)
      e = e.args[0]
    message = str(e.args[0] if len(e.args) == 1 else e)
    if "Traceback (most recent call last)" in message:  # an error raised by get_config
      message = message.strip().splitlines()[-1]
    fail(f"bad flag or config override: {_flag_message(message)}")


def run(main, frameworks: bool = True):
  """app.run(main) with INFO logs of jaxseg only, one-line flag errors, and SIGTERM
  before training (or after it) ending the command with status 143."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  if frameworks:  # TensorFlow / JAX imported quietly (a no-op when done at import)
    quiet_startup()
  else:
    _stop_on_sigterm()
  try:
    app.run(main, flags_parser=parse_flags)
  except Stopped:
    _exit_stopped()


def _exit_stopped():
  print("jaxseg: stopped by SIGTERM outside the training loop; no checkpoint was written "
        "by this command", file=sys.stderr)
  _quiet_teardown()
  sys.exit(128 + signal.SIGTERM)
