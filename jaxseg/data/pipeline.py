"""tf.data preprocessing and batching; numpy batches to globally sharded jax.Arrays.

Determinism: the training order of epoch e is a function of (seed, e) only, and every
augmentation draw of an example is a stateless function of (seed, e, position). A run
resumed at step s therefore sees exactly the batches an uninterrupted run sees from s on.

Reading with several processes (jax.distributed), two modes:
- default: every process reads every record of the split in the same order and keeps its
  rows of each global batch (`_process_share`). The global batches are the same for any
  process count, but every host reads and decodes the whole dataset.
- per-process reading (config.dataset.shard_by_process): each process reads only its even
  share of the split's records (`sources.read_split`, tfds.even_splits), and the size
  comes as a `SplitShares` telling the batching functions so. A host reads 1/N of the
  records; the global batches then depend on the process count N (still deterministic,
  and resumable for a fixed N): process p's order is a function of (seed, e, p).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec

from jaxseg.errors import DataError

Batch = dict[str, np.ndarray]


def _options():
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  # No autotuning thread: deleting an iterator (every epoch starts a new one, every
  # evaluation too) waits for that thread to wake from its sleep, whose period grows to
  # 60 s -- measured as 25-50 s stalls at a third to half of the epoch boundaries of a
  # DenseCap run (gdb: the main thread in ~IteratorResource, the model thread in
  # Model::OptimizeLoop's timed wait). AUTOTUNE map parallelism is then the core count.
  options.autotune.enabled = False
  return options


def epoch_seed(seed: int, epoch: int) -> int:
  return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31 - 1)


class SplitShares(int):
  """The size of a split of which each process reads only its own share
  (config.dataset.shard_by_process). As an int, the whole split's size; `shares`, the
  number of examples of every process's share, in process order; `index`, this process;
  `offset`, where this process's share starts in the split.

  `train_batches` and `eval_batches` given one as `num_examples` batch this process's
  records as they come (no `_process_share`), with step counts that every process
  agrees on: the collectives of a step need every process.
  """
  shares: tuple[int, ...]
  index: int

  def __new__(cls, shares, index: int):
    self = super().__new__(cls, sum(shares))
    self.shares, self.index = tuple(int(n) for n in shares), int(index)
    return self

  @property
  def offset(self) -> int:
    return sum(self.shares[:self.index])

  def __repr__(self):
    return f"SplitShares(shares={self.shares}, index={self.index})"


def _shares(num_examples) -> SplitShares | None:
  """`num_examples` if the dataset is this process's share (checked against the process
  count), else None."""
  if not isinstance(num_examples, SplitShares):
    return None
  if len(num_examples.shares) != jax.process_count() or \
      num_examples.index != jax.process_index():
    raise DataError(f"the dataset was read as share {num_examples.index} of "
                    f"{len(num_examples.shares)}, but this is process {jax.process_index()} "
                    f"of {jax.process_count()}")
  return num_examples


def _local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise DataError(f"batch size {global_batch_size} is not divisible by the process count "
                    f"{jax.process_count()}")
  return global_batch_size // jax.process_count()


def _numpy_batches(ds: tf.data.Dataset, dataset_name: str) -> Iterator[Batch]:
  """Iterate a tf.data pipeline as numpy, turning its data errors into one-line errors."""
  it = ds.as_numpy_iterator()
  while True:
    try:
      yield next(it)
    except StopIteration:
      return
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      message = e.message.splitlines()[0]
      if "DataError: " in message:  # raised by jaxseg inside the pipeline: already complete
        raise DataError(message.split("DataError: ", 1)[1]) from None
      raise DataError(f"bad example in dataset {dataset_name!r}: {message}") from None
    except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.OutOfRangeError) as e:
      detail = e.message.split("}}")[-1].split("[Op:")[0].strip()
      raise DataError(f"cannot read dataset {dataset_name!r}: {detail}; a file of it is "
                      f"damaged or missing: rebuild it (delete its folder under the data_dir) "
                      f"or download it again") from None


def train_batches(ds: tf.data.Dataset, num_examples: int, preprocess: Callable,
                  global_batch_size: int, seed: int, start_step: int = 0,
                  shuffle_buffer: int = 4096, cache: bool = True,
                  name: str = "train") -> Iterator[Batch]:
  """Endless per-process training batches starting at global step `start_step`: this
  process's contiguous share of each global batch (make_array_from_process_local_data
  puts it on this process's devices).

  `preprocess(example, seed)` gets a stateless seed `[2] int64` per example.

  Default: `ds` is the whole split; every process shuffles it alike and keeps its rows of
  each global batch, so the global batches are those of one process. With `num_examples`
  a `SplitShares`, `ds` is this process's share: the process shuffles its own records
  (order a function of seed, epoch and process index) and batches them; an epoch is as
  many steps as the smallest share fills, the same on every process (a share's records
  beyond them sit out that epoch). The augmentation seed of an example is (epoch seed,
  its position in the global order) in both modes.
  """
  local_batch = _local_batch_size(global_batch_size)
  shares = _shares(num_examples)
  if shares is None:
    steps_per_epoch = num_examples // global_batch_size
    if steps_per_epoch == 0:
      raise DataError(f"dataset {name!r} has {num_examples} training examples, fewer than "
                      f"one batch of {global_batch_size}")
    local_examples = num_examples
  else:
    steps_per_epoch = min(shares.shares) // local_batch
    if steps_per_epoch == 0:
      raise DataError(f"dataset {name!r} read per process (config.dataset.shard_by_process): "
                      f"the smallest of its shares {list(shares.shares)} has fewer than one "
                      f"local batch of {local_batch} training examples")
    local_examples = shares.shares[shares.index]
  if cache:
    ds = ds.cache()
  ds = ds.with_options(_options())
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    e_seed = epoch_seed(seed, epoch)
    if shares is None:
      epoch_ds = ds.shuffle(min(num_examples, shuffle_buffer), seed=e_seed,
                            reshuffle_each_iteration=False)
      # (position in the epoch, example); process p keeps rows [p*local, (p+1)*local) of
      # every global batch, so the global batch (and each device's rows) is the same for
      # any process count.
      epoch_ds = epoch_ds.take(steps_per_epoch * global_batch_size).enumerate()
      epoch_ds = _process_share(epoch_ds, global_batch_size).skip(skip * local_batch)
    else:
      p = shares.index
      epoch_ds = ds.shuffle(min(local_examples, shuffle_buffer),
                            seed=epoch_seed(e_seed, p + 1), reshuffle_each_iteration=False)
      # Local position k -> its position in the global order: row p*local + k % local of
      # global batch k // local (as in the default mode).
      epoch_ds = epoch_ds.take(steps_per_epoch * local_batch).enumerate().skip(
          skip * local_batch).map(lambda k, example, p=p: (
              k // local_batch * global_batch_size + p * local_batch + k % local_batch,
              example))

    def augment(position, example, e_seed=e_seed):
      return preprocess(example, tf.stack([tf.constant(e_seed, tf.int64), position]))

    epoch_ds = epoch_ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    epoch_ds = epoch_ds.batch(local_batch, drop_remainder=True).prefetch(2)
    count = 0
    for batch in _numpy_batches(epoch_ds, name):
      count += 1
      yield batch
    if shares is not None and count < steps_per_epoch - skip:  # others would wait forever
      raise DataError(f"dataset {name!r}: epoch {epoch} gave {count} batches of "
                      f"{local_batch} on process {jax.process_index()}, expected "
                      f"{steps_per_epoch - skip}; the split holds fewer examples than its "
                      f"recorded size {int(num_examples)}")
    epoch, skip = epoch + 1, 0


def eval_batches(ds: tf.data.Dataset, num_examples: int, preprocess: Callable,
                 global_batch_size: int, name: str = "eval") -> Iterator[Batch]:
  """Every example of `ds` once, in order, in full batches; padding examples have
  `example_mask` False. Every process yields the same number of batches: by default each
  its contiguous share of a global batch (as in training); with `num_examples` a
  `SplitShares`, `ds` is this process's share and is batched in order, padded up to the
  batches the largest share fills (ceil(size / global batch) for even shares), so
  every example of the split counts exactly once over all processes."""
  local_batch = _local_batch_size(global_batch_size)
  shares = _shares(num_examples)
  if shares is None:
    num_batches = math.ceil(num_examples / global_batch_size)
    ds = _process_share(ds.enumerate(), global_batch_size).map(
        lambda _, example: preprocess(example), num_parallel_calls=tf.data.AUTOTUNE)
  else:
    num_batches = math.ceil(max(shares.shares) / local_batch)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch).prefetch(2).with_options(_options())
  template = None
  count = 0
  for batch in _numpy_batches(ds, name):
    template = batch
    yield _pad_batch(batch, local_batch)
    count += 1
  if count < num_batches and template is None:  # no example at all for this process
    template = {k: np.zeros((0,) + tuple(spec.shape[1:]), spec.dtype.as_numpy_dtype)
                for k, spec in ds.element_spec.items()}
  for _ in range(num_batches - count):  # this process's share ran out first
    yield _pad_batch({k: v[:0] for k, v in template.items()}, local_batch)


def _process_share(ds: tf.data.Dataset, global_batch_size: int) -> tf.data.Dataset:
  """Of an enumerated dataset, the elements this process feeds: rows
  [p * local, (p + 1) * local) of every global batch, p = jax.process_index(). Every
  process reads every element and keeps its share."""
  if jax.process_count() == 1:
    return ds
  local_batch, index = global_batch_size // jax.process_count(), jax.process_index()
  return ds.filter(lambda i, _: tf.math.floordiv(i % global_batch_size, local_batch) == index)


def _pad_batch(batch: Batch, size: int) -> Batch:
  """Rows n..size-1 filled with zeros (b"" in string arrays such as `captions`)."""
  n = len(next(iter(batch.values())))

  def fill(v):
    return np.full((size - n,) + v.shape[1:], b"" if v.dtype == object else 0, v.dtype)

  padded = {k: np.concatenate([v, fill(v)]) for k, v in batch.items()}
  padded["example_mask"] = np.arange(size) < n
  return padded


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over every axis of the mesh (`data`, and `fsdp` if any)."""
  names = mesh.axis_names
  return NamedSharding(mesh, PartitionSpec(names[0] if len(names) == 1 else names))


def to_global(batch: Batch, mesh) -> dict[str, jax.Array]:
  """Per-process numpy batch -> global jax.Arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
