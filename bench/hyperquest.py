"""Epoch time and accuracy of HyperQuest games (jaxseg.hyperquest) on this machine.

./launch.sh bench hyperquest [--settings=64x4,128x8] [--epochs=3] [--lr=0.01] [--dropout=0]
Plays one game per setting (width x depth) with Continue only, the baseline off; prints per
epoch the wall time (the first includes compilation), the process's CPU time (all threads;
on a shared machine, CPU time / cores bounds the wall time without other load), the load
average and train / validation accuracy.
"""
import json
import os
import platform
import tempfile
import time

from absl import app, flags

from jaxseg import cli

flags.DEFINE_string("config", "experiments/hyperquest/game.py", "Game config file[:tiny].")
flags.DEFINE_string("settings", "64x4,128x8", "Comma-separated WIDTHxDEPTH.")
flags.DEFINE_integer("epochs", 3, "Epochs per game.")
flags.DEFINE_float("lr", 0.01, "Stage-1 learning rate.")
flags.DEFINE_float("dropout", 0.0, "Stage-1 dropout.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's).")
FLAGS = flags.FLAGS


def main(argv):
  cli.no_positional_arguments(argv)
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = FLAGS.config.partition(":")
  spec = importlib.util.spec_from_file_location("game_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  with config.unlocked():
    config.baseline.enabled = False
    config.dataset.data_dir = FLAGS.data_dir
  from jaxseg.hyperquest import HyperQuest  # pylint: disable=g-import-not-at-top
  print(json.dumps({"machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()}), flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    hq = HyperQuest(config, workdir)
    for setting in FLAGS.settings.split(","):
      width, depth = map(int, setting.split("x"))
      game_id = hq.new_game("bench", seed=0, kind="bench")["id"]
      for epoch in range(1, FLAGS.epochs + 1):
        t, cpu = time.perf_counter(), time.process_time()
        if epoch == 1:
          state = hq.start(game_id, {"width": width, "lr": FLAGS.lr, "depth": depth,
                                     "dropout": FLAGS.dropout})
        else:
          state = hq.act(game_id, "continue")
        print(json.dumps({"width": width, "depth": depth, "epoch": epoch,
                          "seconds": round(time.perf_counter() - t, 2),
                          "cpu_seconds": round(time.process_time() - cpu, 2),
                          "train_acc": round(state["train_acc"], 4),
                          "val_acc": round(state["val_acc"], 4),
                          "load_average": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
  cli.run(main)
