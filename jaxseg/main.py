"""Command line: `python -m jaxseg.main --config=experiments/.../x.py --workdir=runs/x`.

Any config key can be overridden (`--config.optimizer.lr=3e-3`), flags can come from a
file (`--flagfile=x.flags`). User errors print one line and exit with status 2.
"""
from __future__ import annotations

from jaxseg import signals  # first: SIGTERM during start-up ends the command cleanly

if __name__ == "__main__":
  signals.exit_on_sigterm()

import json
import os
import sys

from absl import flags, logging

from jaxseg import cli

from jaxseg.train import multihost  # light: no jax, no TensorFlow

if __name__ == "__main__" and not multihost.is_local_launcher(sys.argv):
  cli.quiet_startup()  # a library import (tests) leaves the process's hooks alone
cli.define_config_file("config", "Experiment config file (get_config).")
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go "
                    "(default: runs/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes from the workdir's "
                  "latest checkpoint) or eval (evaluates it only).")
flags.DEFINE_bool("distributed", False, "Join a multi-process job first (one process per "
                  "host: SLURM, Cloud TPU VM, Kubernetes; coordinator from the environment, "
                  "see docs/multihost.md).")
flags.DEFINE_integer("num_processes", None, "Start this many local processes (CPU devices) "
                     "that train as one multi-process job (docs/multihost.md).")
flags.DEFINE_integer("devices_per_process", 1, "With --num_processes: forced CPU devices "
                     "per process.")
flags.DEFINE_integer("fsdp", 1, "Shard parameters and optimizer state over this many "
                     "devices (a second mesh axis; 1: replicated). A deployment choice like "
                     "the device count: results agree within float rounding.")
flags.DEFINE_integer("init_timeout", 300, "Multi-process: seconds to wait for every process "
                     "to join the job.")
flags.DEFINE_integer("heartbeat_timeout", 60, "Multi-process: seconds after which a silent "
                     "process counts as dead and the job stops.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
  config = cli.loaded_config(argv)
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  if multihost.CHILD_MARK not in os.environ:
    for name in ("num_processes", "devices_per_process"):  # CPU only: not on a GPU / TPU
      if FLAGS[name].present:
        try:
          multihost.check_forced_cpu_devices(f"--{name}={FLAGS[name].value}")
        except JaxsegError as e:
          cli.fail(str(e))
  if FLAGS.num_processes is not None and multihost.CHILD_MARK not in os.environ:
    try:
      multihost.check_local_launch(FLAGS.num_processes, FLAGS.devices_per_process, config)
    except JaxsegError as e:
      cli.fail(str(e))
    sys.exit(multihost.launch_local(sys.argv[1:], FLAGS.num_processes,
                                    FLAGS.devices_per_process))
  try:
    import jax  # pylint: disable=g-import-not-at-top
    cli.enable_compilation_cache()
    if FLAGS.distributed:
      try:
        multihost.initialize(FLAGS.init_timeout, FLAGS.heartbeat_timeout)
      except (ValueError, RuntimeError) as e:
        cli.fail(f"--distributed: cannot join a multi-process job ({str(e).splitlines()[0]}); "
                 f"expected a cluster environment (SLURM, Cloud TPU VM, Kubernetes) or "
                 f"JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
      if jax.process_index() > 0:  # one copy of the progress lines: process 0's
        logging.set_verbosity(logging.WARNING)
    from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
    workdir = FLAGS.workdir or cli.default_workdir(FLAGS["config"].config_filename)
    mesh = loop.make_mesh(fsdp=FLAGS.fsdp) if FLAGS.fsdp != 1 else None
    summary = loop.train_and_evaluate(config, workdir, mesh=mesh, train=FLAGS.mode == "train")
  except JaxsegError as e:
    if FLAGS.distributed and jax.process_count() > 1:  # perhaps this process alone
      multihost.exit_now(str(e), 2)
    cli.fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    if FLAGS.distributed and multihost.is_peer_failure(e):
      multihost.exit_after_peer_failure(e)
    raise
  if jax.process_index() == 0:
    _report(summary)
  if summary["interrupted"]:
    sys.exit(128 + 15)


def _report(summary: dict) -> None:
  metrics = summary.get("eval", {})
  headline = {k: round(v, 4) for k, v in metrics.items() if "/" not in k}
  print(f"final step {summary['final_step']}: {json.dumps(headline)}")
  print(f"checkpoints: {summary['checkpoints']}")
  print(f"metrics:     {summary['metrics']}")
  if "picture" in summary:
    print(f"picture:     {summary['picture']}")
  if "results" in summary:
    print(f"results:     {summary['results']} (COCO JSON: ground truth, detections)")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
