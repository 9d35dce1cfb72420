"""Per-process reading (config.dataset.shard_by_process): N processes simulated in this one
by patching jax.process_count / jax.process_index as the data code sees them."""
import hashlib
import itertools

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg import config_schema
from jaxseg.data import detection, pipeline, sources
from jaxseg.errors import ConfigError, DataError


def _as_process(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_count", lambda: count)
  monkeypatch.setattr(jax, "process_index", lambda: index)


def _key(image) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _config(tiny_config, **dataset):
  with tiny_config.unlocked():
    tiny_config.dataset.shard_by_process = True
    tiny_config.dataset.update(dataset)
  return tiny_config.dataset


def _images(ds):
  return [_key(ex["image"]) for ex in tfds.as_numpy(ds)]


def _shares(monkeypatch, dataset_config, which, count):
  """[(dataset, size)] of every simulated process."""
  out = []
  for p in range(count):
    _as_process(monkeypatch, p, count)
    out.append(sources.load_split(dataset_config, which))
  return out


def test_each_process_reads_only_its_even_share(tiny_config, monkeypatch):
  whole_ds, whole_n = sources.load_split(tiny_config.dataset, "train")  # one process
  whole = _images(whole_ds.take(15))
  assert len(set(whole)) == 15 and whole_n == 16
  config = _config(tiny_config, train_split="train[:15]")
  shares = _shares(monkeypatch, config, "train", 2)
  read = [_images(ds) for ds, _ in shares]
  for p, (_, n) in enumerate(shares):
    assert isinstance(n, pipeline.SplitShares)
    assert (int(n), n.shares, n.index, n.offset) == (15, (8, 7), p, 8 * p)
  assert [len(r) for r in read] == [8, 7]
  assert not set(read[0]) & set(read[1])
  assert read[0] + read[1] == whole  # contiguous shares, in the split's order
  # The option on with one process: the whole split, its size a plain int.
  _as_process(monkeypatch, 0, 1)
  ds, n = sources.load_split(config, "train")
  assert type(n) is int and n == 15 and _images(ds) == whole


def _identity(example, seed):
  return {"image": example["image"], "seed": seed}


def test_training_reads_own_share_same_steps_and_resumes(tiny_config, monkeypatch):
  config = _config(tiny_config, train_split="train[:15]")
  shares = _shares(monkeypatch, config, "train", 2)  # 8 and 7 examples
  seed, steps = 5, 3  # global batch 4, local 2: the smaller share fills 3 steps
  runs = []
  for p, (ds, n) in enumerate(shares):
    _as_process(monkeypatch, p, 2)
    runs.append(list(itertools.islice(
        pipeline.train_batches(ds, n, _identity, 4, seed, cache=False), 2 * steps)))
    resumed = list(itertools.islice(
        pipeline.train_batches(ds, n, _identity, 4, seed, start_step=4, cache=False), 2))
    for a, b in zip(runs[p][4:], resumed):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["seed"], b["seed"])
  own = [set(_images(ds)) for ds, _ in shares]
  for epoch in range(2):
    seen = []
    for p in range(2):
      batches = runs[p][epoch * steps:(epoch + 1) * steps]
      # Every process: the same steps per epoch (its seeds name the epoch).
      assert all((b["seed"][:, 0] == pipeline.epoch_seed(seed, epoch)).all() for b in batches)
      images = [_key(im) for b in batches for im in b["image"]]
      assert len(images) == 2 * steps == len(set(images)) and set(images) <= own[p]
      seen += images
    # Both processes: 12 distinct examples of 15, at most the remainder left out; the
    # augmentation positions are those of one global order (distinct).
    assert len(set(seen)) == 12
    positions = [s for p in range(2) for b in runs[p][epoch * steps:(epoch + 1) * steps]
                 for s in b["seed"][:, 1]]
    assert sorted(positions) == list(range(12))
  assert [_key(im) for im in runs[0][0]["image"]] != [_key(im) for im in runs[0][3]["image"]]


def test_training_share_smaller_than_recorded_is_an_error(tiny_config, monkeypatch):
  config = _config(tiny_config, train_split="train[:15]")
  (ds, n), _ = _shares(monkeypatch, config, "train", 2)
  _as_process(monkeypatch, 0, 2)
  with pytest.raises(DataError, match=r"epoch 0 gave 2 batches of 2 on process 0, expected 3"):
    list(pipeline.train_batches(ds.take(5), n, _identity, 4, 0, cache=False))
  with pytest.raises(DataError, match=r"read as share 0 of 2, but this is process 1 of 2"):
    _as_process(monkeypatch, 1, 2)
    next(pipeline.train_batches(ds, n, _identity, 4, 0))


@pytest.mark.parametrize("count,batch", [(2, 4), (3, 6)])
def test_eval_counts_every_example_once(tiny_config, monkeypatch, count, batch):
  whole = _images(sources.load_split(tiny_config.dataset, "eval")[0].take(7))
  config = _config(tiny_config, eval_split="validation[:7]")
  seen, lengths = [], []
  for p, (ds, n) in enumerate(_shares(monkeypatch, config, "eval", count)):
    _as_process(monkeypatch, p, count)
    batches = list(pipeline.eval_batches(ds, n, lambda ex: {"image": ex["image"]}, batch))
    lengths.append(len(batches))
    assert all(len(b["example_mask"]) == batch // count for b in batches)
    seen += [_key(im) for b in batches for im in b["image"][b["example_mask"]]]
  assert lengths == [2] * count  # ceil(7 / batch) on every process
  assert seen == whole


def test_detection_image_ids_are_positions_in_the_split(data_dir, monkeypatch):
  config = ml_collections.ConfigDict(dict(
      name="shapes", data_dir=data_dir, image_size=32, train_split="", eval_split="",
      crowd_max_area=0, shard_by_process=True, generator=dict(
          num_train=16, num_validation=8, min_objects=1, max_objects=4, class_probs=None)))
  ids = []
  for p in range(2):
    _as_process(monkeypatch, p, 2)
    ds, n = detection.load_split(config, "eval", require=())
    ids.append([int(ex["image_id"]) for ex in tfds.as_numpy(ds)])
    assert n.shares == (4, 4)
  _as_process(monkeypatch, 0, 1)
  whole = [int(ex["image_id"]) for ex in
           tfds.as_numpy(detection.load_split(config, "eval", require=())[0])]
  assert ids[0] + ids[1] == whole == list(range(8))


def test_bad_values_are_config_errors(tiny_config, monkeypatch):
  assert config_schema.errors(tiny_config) == []
  assert tiny_config.dataset.shard_by_process is False  # the default
  with pytest.raises(ConfigError, match=r"config.dataset.shard_by_process='yes' is out of "
                                        r"range; expected True or False"):
    config_schema.validate({"dataset": {"shard_by_process": "yes"}})
  config = ml_collections.ConfigDict(tiny_config.dataset.to_dict())
  del config["shard_by_process"]
  config.shard_by_process = 1
  with pytest.raises(ConfigError, match=r"config.dataset.shard_by_process=1; expected True"):
    sources.load_split(config, "train")
  _as_process(monkeypatch, 0, 2)
  with pytest.raises(ConfigError, match=r"not a sum of splits"):
    sources.load_split(_config(tiny_config, train_split="train[:4]+train[8:]"), "train")
