"""Precomputed region proposals (R-CNN, Fast R-CNN): selective search run once per image
of a split on the host, cached on disk, and attached to the split's examples as
`proposals` [P, 4] (source pixels, xyxy, best-ranked first, padded with -1) and
`proposal_valid` [P] before any augmentation, so they move with the image
(`jaxseg.data.detection`).

Settings (`config.proposals`): method 'selective_search' (Uijlings et al. 2013; mode
'fast' as in R-CNN, or 'quality') or 'sliding_windows' (multi-scale windows, no image
content), `max_proposals` P, `min_box_size` (px), `cache_dir` (default: the dataset's
data_dir, else ~/.cache/jaxseg). The cache file is named by the dataset, split and every
setting, so a change of settings never reads a stale cache. Its wall time is recorded
in the file and returned: the proposal cost of a detector that needs them.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import time

import numpy as np
from absl import logging

from jaxseg.errors import ConfigError, DataError
from jaxseg.ops import proposals as proposal_ops

METHODS = ("selective_search", "sliding_windows")


def settings_of(c) -> dict:
  """The proposal settings as a plain dict (checked)."""
  get = (lambda k, d: c.get(k, d)) if hasattr(c, "get") else (lambda k, d: getattr(c, k, d))
  s = {"method": get("method", "selective_search"), "mode": get("mode", "fast"),
       "max_proposals": int(get("max_proposals", 300)),
       "min_box_size": int(get("min_box_size", 0)), "cache_dir": get("cache_dir", None)}
  if s["method"] not in METHODS:
    raise ConfigError(f"config.proposals.method={s['method']!r}; expected one of {METHODS}")
  if s["max_proposals"] < 1:
    raise ConfigError(f"config.proposals.max_proposals={s['max_proposals']}; expected >= 1")
  if s["method"] == "sliding_windows":
    s["scales"] = tuple(float(x) for x in get("scales", (16.0, 32.0, 64.0)))
    s["aspect_ratios"] = tuple(float(x) for x in get("aspect_ratios", (0.5, 1.0, 2.0)))
    s["stride_fraction"] = float(get("stride_fraction", 0.5))
  return s


def default_config(max_proposals: int = 300, method: str = "selective_search", **fields):
  """config.proposals as a ConfigDict (R-CNN's selective search 'fast' mode by default;
  the sliding-windows fields only with that method)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = dict(method=method, mode="fast", max_proposals=max_proposals, min_box_size=0,
           cache_dir=ml_collections.config_dict.placeholder(str))
  if method == "sliding_windows":
    c.update(scales=(16.0, 32.0, 64.0), aspect_ratios=(0.5, 1.0, 2.0), stride_fraction=0.5)
  c.update(fields)
  return ml_collections.ConfigDict(c)


def propose(image: np.ndarray, settings: dict) -> np.ndarray:
  """Boxes [<= P, 4] float32 of one uint8 image."""
  if settings["method"] == "selective_search":
    return proposal_ops.selective_search(image, settings["mode"],
                                         max_proposals=settings["max_proposals"],
                                         min_box_size=settings["min_box_size"])
  h, w = image.shape[:2]
  boxes = proposal_ops.sliding_windows(h, w, settings["scales"], settings["aspect_ratios"],
                                       settings["stride_fraction"])
  return np.asarray(boxes, np.float32)[:settings["max_proposals"]]


def propose_padded(image: np.ndarray, settings: dict):
  """(boxes [P, 4] padded with -1, count) of one uint8 image."""
  boxes = propose(image, settings)
  p = settings["max_proposals"]
  out = np.full((p, 4), -1.0, np.float32)
  out[:len(boxes)] = boxes[:p]
  return out, min(len(boxes), p)


def _propose_padded(args):
  return propose_padded(*args)


def cache_path(dataset_config, split_name: str, settings: dict, num_examples: int) -> str:
  c = dataset_config
  root = (settings.get("cache_dir") or c.get("data_dir")
          or os.path.expanduser("~/.cache/jaxseg"))
  identity = json.dumps({"dataset": c.name, "image_size": c.get("image_size"),
                         "generator": c.get("generator").to_dict()
                         if c.get("generator") is not None else None,
                         "split": split_name, "n": num_examples,
                         **{k: v for k, v in settings.items() if k != "cache_dir"}},
                        sort_keys=True)
  digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
  name = c.name.replace("/", "_")
  return os.path.join(root, "proposals", f"{name}-{split_name}-{settings['method']}-{digest}.npz")


def compute(ds, num_examples: int, settings: dict, workers: int | None = None):
  """(boxes [N, P, 4], counts [N], seconds) for the examples of `ds` (a tf.data.Dataset)
  in order. Worker processes are spawned, never forked (JAX's threads and fork do not mix)."""
  workers = workers or max(1, min(os.cpu_count() or 1, 8))
  if settings["method"] == "sliding_windows":
    workers = 1  # no image content: cheaper than starting worker processes
  t0 = time.time()
  images = (e["image"] for e in ds.map(lambda e: {"image": e["image"]}).as_numpy_iterator())
  if workers == 1:
    results = [propose_padded(im, settings) for im in images]
  else:
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
      results = list(pool.map(_propose_padded, ((im, settings) for im in images),
                              chunksize=8))
  if len(results) != num_examples:
    raise DataError(f"computed proposals for {len(results)} examples; the split has "
                    f"{num_examples}")
  boxes = np.stack([r[0] for r in results]) if results else np.zeros(
      (0, settings["max_proposals"], 4), np.float32)
  counts = np.array([r[1] for r in results], np.int32)
  return boxes, counts, time.time() - t0


def load_or_compute(dataset_config, split_name: str, ds, num_examples: int, settings: dict):
  """The cached proposals of a split, computing (and caching atomically) when missing."""
  path = cache_path(dataset_config, split_name, settings, num_examples)
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        return f["boxes"], f["counts"], float(f["seconds"])
    except (OSError, ValueError, KeyError) as e:
      logging.warning("proposal cache %s is unreadable (%s); computing it again", path, e)
  logging.info("computing %s proposals for %d images of %s/%s (cached in %s)",
               settings["method"], num_examples, dataset_config.name, split_name, path)
  boxes, counts, seconds = compute(ds, num_examples, settings)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"  # two processes computing at once never mix
  np.savez(tmp, boxes=boxes, counts=counts, seconds=np.float64(seconds))
  os.replace(tmp, path)
  return boxes, counts, seconds


def attach(ds, boxes: np.ndarray, counts: np.ndarray):
  """`ds` (a tf.data.Dataset, in the order the proposals were computed) with `proposals` /
  `proposal_valid`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  valid = np.arange(boxes.shape[1])[None, :] < counts[:, None]
  extra = tf.data.Dataset.from_tensor_slices({"proposals": boxes, "proposal_valid": valid})
  return tf.data.Dataset.zip(ds, extra).map(lambda e, p: {**e, **p})
