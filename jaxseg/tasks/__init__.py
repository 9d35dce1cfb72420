"""Task registry. A task is a class whose methods are the pure functions the trainer
calls (DESIGN.md's task contract); an instance holds only the static config and model,
so every method is a pure function of its array arguments and can be jitted.

Why a class rather than bare module functions: `loss_fn(variables, batch, rng, train)` and
friends need the model and config; binding them once in an instance keeps the contract's
signatures exactly as specified (as in scenic's base model classes).

Contract:
  task = get_task(config)  # the class registered under config.task, built from config
  task.init(rng, batch) -> variables
  task.loss_fn(variables, batch, rng, train) -> (loss, (aux_metrics, new_model_state))
  task.eval_stats(variables, batch, predictions=None) -> pytree of sums over examples
      (`predictions` of `predict` on the same batch, so the forward pass runs once)
  task.accumulate(total, stats) -> total   (optional; default: a sum, total None at the
      first batch; host-side numpy, so a task may keep per-image results, e.g. detections)
  task.summarize(total) -> dict[str, float]
  task.predict(variables, images) -> predictions pytree
  task.predict_batch(variables, batch) -> the same from a batch (default: `predict` of
      batch["image"]; detectors fed precomputed proposals read them from the batch)
  task.visualize(batch, predictions) -> uint8 image [H, W, 3], or {name: image} with
      "" the main picture (saved as pictures/eval_<step>[_<name>].png)
  task.train_data(start_step) / task.eval_data() -> iterators of numpy batches
  task.validate_batch(batch) -> raises DataError on bad values
  task.workdir_files() -> {file name: text} (optional) written into the run's workdir
      with its config (e.g. dense captioning's vocabulary); such a task has
      `uses_workdir = True` and reads them back when built with that workdir
"""
from __future__ import annotations

from jaxseg.errors import ConfigError


def get_task(config, workdir: str | None = None):
  """The task of config.task. `workdir`: the run's, for tasks that keep files with their
  checkpoints (`uses_workdir`, e.g. dense captioning's vocabulary); None: none yet."""
  # pylint: disable=g-import-not-at-top
  from jaxseg.tasks.classification import ClassificationTask, LocalizationTask
  from jaxseg.tasks.dense_captioning import DenseCaptioningTask
  from jaxseg.tasks.detection import DetectionTask
  from jaxseg.tasks.pose import PoseTask
  from jaxseg.tasks.segmentation import SegmentationTask
  tasks = {"segmentation": SegmentationTask, "classification": ClassificationTask,
           "localization": LocalizationTask, "pose": PoseTask, "detection": DetectionTask,
           # Mask R-CNN / keypoint R-CNN: the detection task with the model's mask and
           # keypoint heads (config.model.mask_head / .keypoint_head)
           "instance_segmentation": DetectionTask,
           "dense_captioning": DenseCaptioningTask}
  if config.task not in tasks:
    raise ConfigError(f"unknown task {config.task!r} in config.task; expected one of "
                      f"{sorted(tasks)}")
  cls = tasks[config.task]
  return cls(config, workdir) if getattr(cls, "uses_workdir", False) else cls(config)
