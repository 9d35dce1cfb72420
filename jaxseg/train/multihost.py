"""Multi-process runs: joining one `jax.distributed` job, and the local launcher.

A process joins a job with `initialize()`: the coordinator comes from
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID when they are set (the local
launcher and the Kubernetes manifest set them), else from JAX's cluster detection (SLURM,
Cloud TPU VMs, Open MPI; Kubernetes with the `jax[k8s]` extra). Every process of the job
runs the same program; only process 0 writes files other than checkpoints (loop.py).

`launch_local()` is `--num_processes=N`: N processes of this machine, each with
`devices_per_process` forced CPU devices, in one job over 127.0.0.1. The launcher waits
for all of them and forwards SIGTERM/SIGINT (JAX's preemption service makes every process
stop at the same step and save it, also when only one of them got SIGTERM). When one dies
the others cannot go on (every step is a collective), so it kills them at once and
reports the first one in one line. A user error (`jaxseg: error: ...`, exit 2) that every
process hits alike (a config value, the data) is printed once: the first process to meet
it records it in the launcher's error file and prints it, the others stay quiet, and the
launcher stops them all (`print_user_error`).
Exit status: 0 all finished; 2 a user error (a process printed it); 1 a process died
(then run the same command to resume from the last checkpoint); 143/130 stopped by
SIGTERM/SIGINT.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from jaxseg.errors import ConfigError

ENV_ADDRESS, ENV_COUNT, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
CHILD_MARK = "JAXSEG_LAUNCHED_BY"  # set in the launcher's children: run, do not launch
ERROR_FILE = "JAXSEG_ERROR_FILE"  # the launcher's children: where the first user error goes
USER_ERROR_WAIT_S = 30  # how long a child that reported a user error waits to be stopped
STOP_GRACE_S = 120  # after a forwarded SIGTERM/SIGINT, how long before SIGKILL
STOPPED = 128 + signal.SIGTERM  # a process that saved a checkpoint and stopped


def is_local_launcher(argv) -> bool:
  """Whether this command only launches local processes (then it never imports jax or
  TensorFlow, which its processes do)."""
  return (CHILD_MARK not in os.environ
          and any(a.startswith(("--num_processes", "-num_processes")) for a in argv[1:]))


def initialize(init_timeout_s: int, heartbeat_timeout_s: int) -> None:
  """Join the job (before anything touches a jax backend).

  `init_timeout_s`: how long to wait for the coordinator and every process to connect;
  `heartbeat_timeout_s`: how long a silent process counts as alive before the
  coordination service stops the job. Bad settings raise ConfigError; a job that cannot
  be joined raises RuntimeError.
  """
  import jax  # pylint: disable=g-import-not-at-top
  count, index = os.environ.get(ENV_COUNT), os.environ.get(ENV_ID)
  kwargs = {}
  if count is not None or index is not None:
    if count is None or index is None or not os.environ.get(ENV_ADDRESS):
      raise ConfigError(f"{ENV_ADDRESS}, {ENV_COUNT} and {ENV_ID} must be set together "
                        f"(got {ENV_ADDRESS}={os.environ.get(ENV_ADDRESS)!r}, "
                        f"{ENV_COUNT}={count!r}, {ENV_ID}={index!r})")
    try:
      kwargs = {"num_processes": int(count), "process_id": int(index)}
    except ValueError:
      raise ConfigError(f"{ENV_COUNT}={count!r} and {ENV_ID}={index!r}; expected integers"
                        ) from None
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise ConfigError(f"{ENV_ID}={index} with {ENV_COUNT}={count}; expected 0 <= "
                        f"{ENV_ID} < {ENV_COUNT}")
  address = os.environ.get(ENV_ADDRESS)
  if address and kwargs.get("process_id"):
    wait_for_coordinator(address, init_timeout_s)
  jax.distributed.initialize(initialization_timeout=init_timeout_s,
                             heartbeat_timeout_seconds=heartbeat_timeout_s, **kwargs)


_PEER_FAILURE_SIGNS = ("Gloo", "Connection closed by peer", "heartbeat", "coordination service")


def is_peer_failure(e: BaseException) -> bool:
  """A runtime error of a collective or of the coordination service: in a multi-process
  job, the mark of another process that died."""
  import jax  # pylint: disable=g-import-not-at-top
  return (isinstance(e, jax.errors.JaxRuntimeError) and jax.process_count() > 1
          and any(sign in str(e) for sign in _PEER_FAILURE_SIGNS))


def exit_after_peer_failure(e: BaseException):
  """One error line and exit status 1 at once: the job cannot go on."""
  import jax  # pylint: disable=g-import-not-at-top
  first = " ".join(str(e).split())[:200]
  exit_now(f"process {jax.process_index()} of {jax.process_count()}: the multi-process job "
           f"broke ({first}); another process has probably died (see its log); run the "
           f"same command to resume from the last checkpoint", 1)


def exit_now(message: str, status: int):
  """`jaxseg: error: <message>` and exit with `status` at once. In a multi-process job a
  normal exit would run jax.distributed's shutdown barrier, which waits (5 minutes) for
  processes that may themselves be blocked in a collective waiting for this one."""
  line = f"jaxseg: error: {' '.join(message.split())}"
  if status == 2:
    print_user_error(line)
  else:
    print(line, file=sys.stderr)
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(status)  # pylint: disable=protected-access


def print_user_error(line: str) -> None:
  """Print a user error's `jaxseg: error:` line to stderr; in a process of the local
  launcher, once per job.

  The launcher's processes run the same command, so a user error usually strikes them
  all alike. The first to report a line records it in the launcher's error file
  (atomically: a hard link) and prints it; a process with the same line stays quiet (a
  different line is printed). Then the process waits for the launcher, which sees the file,
  stops every process and exits 2: exiting at once would make the coordination service
  abort the other processes, each with a page of jaxlib logs.
  """
  path = os.environ.get(ERROR_FILE) if CHILD_MARK in os.environ else None
  if not path:
    print(line, file=sys.stderr)
    return
  mine = f"{path}.{os.getpid()}"
  with open(mine, "w") as f:
    f.write(line)
  try:
    os.link(mine, path)
    first = True
  except FileExistsError:
    with open(path) as f:
      first = f.read() != line
  finally:
    os.remove(mine)
  if first:
    print(line, file=sys.stderr)
  sys.stderr.flush()
  time.sleep(USER_ERROR_WAIT_S)  # the launcher stops this process within its poll interval


@contextlib.contextmanager
def primary_first(name: str):
  """Process 0 runs the block first and the others after it (e.g. opening a generated
  dataset that process 0 builds on first use and the others then read); one process:
  nothing changes."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  many = jax.process_count() > 1
  if many and jax.process_index() > 0:
    multihost_utils.sync_global_devices(name)
  yield
  if many and jax.process_index() == 0:
    multihost_utils.sync_global_devices(name)


def preemption_sync_available() -> bool:
  """Whether this is a multi-process job with JAX's preemption service (on by default):
  it catches SIGTERM (in C++) and agrees on one step at which every process stops."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return (jax.process_count() > 1
          and getattr(distributed.global_state, "preemption_sync_manager", None) is not None)


def reached_preemption_sync_point(step: int) -> bool:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.reached_preemption_sync_point(step)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Until `address` (host:port) accepts a TCP connection; RuntimeError after `timeout_s`
  (jaxlib would abort the process instead of raising)."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
        return
    except (OSError, ValueError) as e:
      if time.monotonic() >= deadline:
        raise RuntimeError(f"the coordinator {address} did not answer within {timeout_s} s "
                           f"({e})") from None
      time.sleep(0.5)


def check_forced_cpu_devices(flag: str) -> None:
  """The local launcher runs its processes on forced CPU devices (JAX_PLATFORMS=cpu): where
  jax would run on a GPU or TPU, asking for it is a ConfigError rather than a silent switch
  to the CPU."""
  from jaxseg import platform  # pylint: disable=g-import-not-at-top
  backend = platform.default_backend()
  if backend != "cpu":
    raise ConfigError(f"{flag} starts local processes on forced CPU devices, but jax here "
                      f"runs on {backend}; on GPUs and TPUs start one process per GPU or "
                      f"host with --distributed (docs/multihost.md), or set "
                      f"JAX_PLATFORMS=cpu to run the local job on the CPU")


def check_local_launch(num_processes: int, devices_per_process: int, config) -> None:
  """Launcher flags and the config's batch sizes, checked before any process starts."""
  if num_processes < 1:
    raise ConfigError(f"--num_processes={num_processes}; expected 1 or more")
  if devices_per_process < 1:
    raise ConfigError(f"--devices_per_process={devices_per_process}; expected 1 or more")
  devices = num_processes * devices_per_process
  for key in ("batch_size", "eval_batch_size"):
    value = config.get(key)
    if isinstance(value, int) and (value <= 0 or value % devices):
      raise ConfigError(f"config.{key}={value} is not divisible by {num_processes} processes "
                        f"x {devices_per_process} devices; expected a positive multiple of "
                        f"{devices}")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(index: int, num_processes: int, devices_per_process: int, port: int,
              error_file: str | None = None) -> dict:
  """The environment of local process `index`: CPU only, its device count, where a user
  error goes, and (N > 1) the coordinator over 127.0.0.1."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices_per_process),
             **{CHILD_MARK: str(os.getpid())})
  env.pop(ERROR_FILE, None)
  if error_file:
    env[ERROR_FILE] = error_file
  if num_processes > 1:
    env.update({ENV_ADDRESS: f"127.0.0.1:{port}", ENV_COUNT: str(num_processes),
                ENV_ID: str(index)})
  else:
    for key in (ENV_ADDRESS, ENV_COUNT, ENV_ID):
      env.pop(key, None)
  return env


def _die_with_parent():  # runs in the child before exec: SIGKILL when the launcher dies
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def describe_exit(code: int) -> str:
  if code < 0:
    try:
      return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
      return f"was killed by signal {-code}"
  return f"exited with status {code}"


def launch_local(argv: list[str], num_processes: int, devices_per_process: int,
                 poll_s: float = 0.1) -> int:
  """Run `python -m jaxseg.main ARGV` as `num_processes` local processes of one job;
  returns the exit status for the launcher (see the module docstring)."""
  port = free_port()
  extra = ["--distributed"] if num_processes > 1 else []
  error_dir = tempfile.mkdtemp(prefix="jaxseg-launch-")
  error_file = os.path.join(error_dir, "error")
  procs = [subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
      [sys.executable, "-m", "jaxseg.main", *argv, *extra],
      env=child_env(i, num_processes, devices_per_process, port, error_file),
      preexec_fn=_die_with_parent)
      for i in range(num_processes)]
  stop = {"signal": None, "at": None}

  def forward(signum, frame):
    del frame
    stop["signal"], stop["at"] = signum, stop["at"] or time.monotonic()
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while True:
      if os.path.exists(error_file):  # a user error, printed by a process (print_user_error)
        _kill(procs)
        return 2
      codes = [p.poll() for p in procs]
      if all(c == 0 for c in codes):
        return 0
      if stop["signal"] is not None:
        if all(c is not None for c in codes):
          return 128 + stop["signal"]
        if time.monotonic() - stop["at"] > STOP_GRACE_S:
          _kill(procs)
          print(f"jaxseg: error: stopped by {signal.Signals(stop['signal']).name}; "
                f"{sum(c is None for c in codes)} process(es) did not stop within "
                f"{STOP_GRACE_S} s and were killed", file=sys.stderr)
          return 128 + stop["signal"]
      elif STOPPED in codes:  # one process got SIGTERM itself: all stop at one step
        stop["signal"], stop["at"] = signal.SIGTERM, time.monotonic()
        continue
      else:
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
          _kill(procs)
          if any(c == 2 for _, c in failed):
            return 2  # a user error: the process printed its one line; the others broke after
          # A process killed by a signal (e.g. the OOM killer) is the cause; the others
          # fail after it (a broken collective).
          index, code = min(failed, key=lambda f: (f[1] >= 0, f[0]))
          print(f"jaxseg: error: process {index} of {num_processes} (pid {procs[index].pid}) "
                f"{describe_exit(code)}; stopped the other processes; run the same command "
                f"to resume from the last checkpoint", file=sys.stderr)
          return 1
      time.sleep(poll_s)
  finally:
    _kill(procs)
    shutil.rmtree(error_dir, ignore_errors=True)
    for s, handler in previous.items():
      signal.signal(s, handler)


def _kill(procs) -> None:
  # The coordinator (process 0) last: the others then do not see it vanish first.
  for p in reversed(procs):
    if p.poll() is None:
      p.kill()
  for p in procs:
    p.wait()
