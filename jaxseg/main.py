"""Command line: `python -m jaxseg.main --config=experiments/.../x.py --workdir=runs/x`.

Any config key can be overridden (`--config.optimizer.lr=3e-3`), flags can come from a
file (`--flagfile=x.flags`). User errors print one line and exit with status 2.
"""
from __future__ import annotations

from jaxseg import signals  # first: SIGTERM during start-up ends the command cleanly

if __name__ == "__main__":
  signals.exit_on_sigterm()

import json
import sys

from absl import flags

from jaxseg import cli

if __name__ == "__main__":  # a library import (tests) leaves the process's hooks alone
  cli.quiet_startup()
cli.define_config_file("config", "Experiment config file (get_config).")
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go "
                    "(default: runs/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes from the workdir's "
                  "latest checkpoint) or eval (evaluates it only).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first "
                  "(multi-process runs; coordinator from the environment).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
  config = cli.loaded_config(argv)
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  try:
    import jax  # pylint: disable=g-import-not-at-top
    cli.enable_compilation_cache()
    if FLAGS.distributed:
      try:
        jax.distributed.initialize()
      except (ValueError, RuntimeError) as e:
        cli.fail(f"--distributed: cannot join a multi-process job ({str(e).splitlines()[0]}); "
                 f"expected a cluster environment (SLURM, Cloud TPU VM, Kubernetes) or "
                 f"JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
    from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
    workdir = FLAGS.workdir or cli.default_workdir(FLAGS["config"].config_filename)
    summary = loop.train_and_evaluate(config, workdir, train=FLAGS.mode == "train")
  except JaxsegError as e:
    cli.fail(str(e))
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
