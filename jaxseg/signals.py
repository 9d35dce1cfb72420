"""SIGTERM during a command's start-up (imports, flag parsing): nothing has been written
yet, so the command ends at once with status 143 and one line. Light on purpose: the
command-line modules install it before importing anything heavy; `jaxseg.cli` later
replaces it with a handler that unwinds cleanly, and the training loop with one that
checkpoints first."""
import os
import signal
import threading

MESSAGE = b"jaxseg: stopped by SIGTERM during start-up; nothing was written\n"


def exit_now(signum, frame):
  del signum, frame
  os.write(2, MESSAGE)
  os._exit(128 + signal.SIGTERM)  # pylint: disable=protected-access


def exit_on_sigterm() -> None:
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)):
    signal.signal(signal.SIGTERM, exit_now)
