"""Transfer learning: initialize (part of) a model from another run or a weights file.

Fine-tuning features learned on one task for another (Yosinski et al., "How transferable
are features in deep neural networks?", NeurIPS 2014; FCN, Long et al. CVPR 2015, starts
its segmentation nets from ImageNet classifiers). `config.init_from` (`default_config()`)
names the source -- a run's orbax checkpoint or a `.npz` / `.safetensors` file -- and how
its arrays map onto the new model; `freeze` keeps them fixed for the whole run.

Names are '/'-joined flax paths with the collection first:
`params/backbone/stage1_block1/ConvNormAct_0/Conv_0/kernel`, `batch_stats/.../mean`.
Each source name goes through, in order:
  1. `source_prefix`: only names whose path (after the collection) lies under it are
     taken, with the prefix removed (a name without '/' has no collection: it passes
     only when source_prefix is "");
  2. `rename`: "regex=>replacement" rules applied in order with `re.sub` to the whole
     name (collection included); a name renamed to "" is dropped;
  3. `target_prefix`: inserted after the collection;
  4. `layout="torch"`: 4-D arrays OIHW -> HWIO, 2-D [out, in] -> [in, out].
Every mapped name must exist in the model with the same shape (dtypes are cast), and
every model parameter under `target_prefix` must receive a value (so must every entry of
another collection, e.g. batch_stats, when the source has any of that collection).
The trainer, at a fresh start only (a resumed run restores its own checkpoint), calls
`load(config)` before building the model and `apply(source, state)` after;
`make_optimizer(frozen=frozen_mask(config))` freezes what `apply` fills. User guide:
docs/transfer.md.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxseg.errors import CheckpointError, ConfigError, DataError

LAYOUTS = ("flax", "torch")
WEIGHT_EXTENSIONS = (".npz", ".safetensors")
_SHOW = 5  # paths listed in an error message


def default_config() -> ml_collections.ConfigDict:
  """`config.init_from`: nothing is loaded unless `checkpoint` or `weights` is set."""
  placeholder = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(dict(
      checkpoint=placeholder(str),  # a run's workdir or its checkpoints/ dir (latest step)
      weights=placeholder(str),  # a .npz or .safetensors file
      source_prefix="",  # take only the source arrays under this path, e.g. "backbone"
      target_prefix="",  # put them under this path of the new model
      rename=(),  # "regex=>replacement" rules, applied in order to each source name
      layout="flax",  # or "torch": OIHW conv kernels, [out, in] linear weights
      freeze=False,  # the initialized parameters get zero updates for the whole run
  ))


def _settings(config):
  """`config.init_from` checked, or None when the config has none or loads nothing."""
  c = config.get("init_from")
  if c is None:
    return None
  if c.checkpoint and c.weights:
    raise ConfigError(f"config.init_from sets both checkpoint={c.checkpoint!r} and "
                      f"weights={c.weights!r}; expected at most one")
  if c.layout not in LAYOUTS:
    raise ConfigError(f"unknown config.init_from.layout {c.layout!r}; expected one of "
                      f"{LAYOUTS}")
  _rules(c.rename)
  if not (c.checkpoint or c.weights):
    if c.freeze:
      raise ConfigError("config.init_from.freeze=True but nothing is loaded; expected "
                        "config.init_from.checkpoint or config.init_from.weights")
    return None
  return c


def _rules(rename) -> list[tuple[re.Pattern, str]]:
  rules = [rename] if isinstance(rename, str) else list(rename or ())
  compiled = []
  for rule in rules:
    pattern, sep, replacement = str(rule).partition("=>")
    if not sep:
      raise ConfigError(f"config.init_from.rename rule {rule!r} has no '=>'; expected "
                        f"'regex=>replacement'")
    try:
      compiled.append((re.compile(pattern), replacement))
    except re.error as e:
      raise ConfigError(f"config.init_from.rename rule {rule!r}: bad regex ({e})") from None
  return compiled


def _prefix(path: str) -> str:
  return path.strip("/")


def is_under(path: str, prefix: str) -> bool:
  """Whether '/'-joined `path` is `prefix` or lies below it ("" holds everything)."""
  return not prefix or path == prefix or path.startswith(prefix + "/")


def path_name(path) -> str:
  """A pytree key path as a '/'-joined name."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def params_first(names) -> list[str]:
  """Names sorted with the params collection first (for examples in messages)."""
  return sorted(names, key=lambda n: (not n.startswith("params/"), n))


def flatten(tree) -> dict:
  """{'/'-joined path: leaf} of a nested dict."""
  return {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def frozen_mask(config) -> Callable | None:
  """For `make_optimizer(frozen=...)`: params -> pytree of bools, True for every parameter
  under `init_from.target_prefix` (exactly what `apply` fills), when `freeze` is set;
  else None. Computed from paths only, so the optimizer can be built before loading."""
  c = _settings(config)
  if c is None or not c.freeze:
    return None
  prefix = _prefix(c.target_prefix)
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda p, _: is_under(path_name(p), prefix), params)


def map_names(arrays: dict, c) -> dict:
  """Source {name: array} -> model {name: array} through source_prefix, rename,
  target_prefix and layout (see the module docstring)."""
  source_prefix, target_prefix = _prefix(c.source_prefix), _prefix(c.target_prefix)
  rules = _rules(c.rename)
  mapped, origin, selected = {}, {}, 0
  for source_name, value in arrays.items():
    name = source_name
    if source_prefix:
      collection, _, rest = name.partition("/")
      if not rest or not is_under(rest, source_prefix):
        continue
      name = "/".join(filter(None, [collection, rest[len(source_prefix):].strip("/")]))
    selected += 1
    for pattern, replacement in rules:
      try:
        name = pattern.sub(replacement, name)
      except re.error as e:  # e.g. a replacement naming a group the regex lacks
        raise ConfigError(f"config.init_from.rename rule '{pattern.pattern}=>{replacement}' "
                          f"on {source_name!r}: {e}") from None
      if not name:
        break  # dropped
    if not name:
      continue
    collection, _, rest = name.partition("/")
    new = "/".join(filter(None, [collection, target_prefix, rest]))
    if new in mapped:
      raise ConfigError(f"config.init_from: source arrays {origin[new]!r} and {source_name!r} both "
                        f"map to {new!r}; expected one source per model path (check "
                        f"rename)")
    value = np.asarray(value)
    if c.layout == "torch" and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif c.layout == "torch" and value.ndim == 2:
      value = value.T  # Linear [out, in] -> Dense [in, out]
    mapped[new], origin[new] = value, source_name
  if not selected:
    some = ", ".join(params_first(arrays)[:3])
    raise ConfigError(f"config.init_from.source_prefix={c.source_prefix!r} selects none of "
                      f"the {len(arrays)} source arrays (e.g. {some}); expected a path "
                      f"after the collection, e.g. 'backbone' for params/backbone/...")
  return mapped


def _listing(items: list[str]) -> str:
  more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
  return ", ".join(items[:_SHOW]) + more


def check_fits(mapped: dict, model: dict, target_prefix: str, source: str) -> None:
  """Every mapped name is a model path of the same shape; every model parameter under
  `target_prefix` (and every entry of a collection the source provides) gets a value."""
  unknown = params_first(n for n in mapped if n not in model)
  if unknown:
    ordered = params_first(model)
    example = next((n for n in ordered if is_under(n.partition("/")[2], target_prefix)),
                   ordered[0] if ordered else "none")
    raise ConfigError(f"config.init_from: {len(unknown)} arrays of {source} have no place in "
                      f"the model after source_prefix/rename/target_prefix: "
                      f"{_listing(unknown)}; model paths look like {example}")
  wrong = [(n, tuple(mapped[n].shape), tuple(model[n].shape)) for n in params_first(mapped)
           if tuple(mapped[n].shape) != tuple(model[n].shape)]
  if wrong:
    transposed = any(sorted(have) == sorted(want) for _, have, want in wrong)
    hint = ("; transposed? layout='torch' converts OIHW kernels and [out, in] weights"
            if transposed else "")
    listed = _listing([f"{n} {have} in source vs {want} in model" for n, have, want in wrong])
    raise ConfigError(f"config.init_from: {len(wrong)} arrays of {source} do not fit the "
                      f"model's shapes: {listed}{hint}")
  provided = {n.partition("/")[0] for n in mapped} | {"params"}
  missing = params_first(n for n in model if n not in mapped and n.partition("/")[0] in provided
                         and is_under(n.partition("/")[2], target_prefix))
  if missing:
    where = f" under target_prefix {target_prefix!r}" if target_prefix else ""
    raise ConfigError(f"config.init_from: {len(missing)} model arrays{where} receive nothing "
                      f"from {source}: {_listing(missing)}; expected the source to cover "
                      f"them (narrow target_prefix or fix source_prefix/rename)")


@dataclasses.dataclass(frozen=True)
class Source:
  """Arrays read and renamed for the model: {model path: array}, and where from."""
  arrays: dict
  description: str
  target_prefix: str
  freeze: bool


def load(config) -> Source | None:
  """Read `config.init_from`'s source and map its names (no model needed: a bad path or
  rule fails before the model is built); None when nothing is to be loaded."""
  c = _settings(config)
  if c is None:
    return None
  if c.checkpoint:
    arrays, step = read_checkpoint(c.checkpoint, label="config.init_from.checkpoint")
    description = f"checkpoint {c.checkpoint} (step {step})"
  else:
    arrays = read_weights(c.weights, label="config.init_from.weights")
    description = f"weights file {c.weights}"
  if not arrays:
    raise DataError(f"config.init_from: {description} holds no arrays; expected params/...")
  return Source(map_names(arrays, c), description, _prefix(c.target_prefix), bool(c.freeze))


def apply(source: Source | None, state):
  """`state` with `source`'s arrays in its params and model_state, after `check_fits`
  (cast to the model's dtypes, placed like the arrays they replace); `state` itself when
  `source` is None. The optimizer state is kept: optax states of fresh parameters do not
  depend on their values."""
  if source is None:
    return state
  variables = {"params": state.params, **state.model_state}
  check_fits(source.arrays, flatten(variables), source.target_prefix, source.description)

  def replace(path, old):
    value = source.arrays.get(path_name(path))
    if value is None:
      return old
    value = np.ascontiguousarray(value, dtype=old.dtype)
    return jax.device_put(value, old.sharding) if isinstance(old, jax.Array) else value

  variables = jax.tree_util.tree_map_with_path(replace, variables)
  params = variables.pop("params")
  counts = collections.Counter(name.partition("/")[0] for name in source.arrays)
  logging.info("init_from: loaded %d arrays (%s) from %s into %s%s", len(source.arrays),
               ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), source.description,
               f"'{source.target_prefix}'" if source.target_prefix else "the whole model",
               "; frozen for the whole run" if source.freeze else "")
  return state.replace(params=params, model_state=variables)


def initialize(config, state):
  """`apply(load(config), state)`: `state` initialized as `config.init_from` says."""
  return apply(load(config), state)


def checkpoint_directory(path: str) -> str:
  """A run's workdir -> its checkpoints/ directory; a checkpoints/ directory itself."""
  nested = os.path.join(path, "checkpoints")
  return nested if os.path.isdir(nested) else path


def read_checkpoint(path: str, step: int | None = None,
                    label: str = "checkpoint") -> tuple[dict, int]:
  """{name: np.ndarray} of the params and model_state (e.g. batch_stats) of a run's
  checkpoint (latest step by default), and the step. Reads only those two subtrees,
  never touches the run's directory, and needs no devices of the run's shape."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise CheckpointError(f"{label}={path!r} is not a directory; expected a run's workdir "
                          f"or its checkpoints/ directory")
  directory = os.path.abspath(checkpoint_directory(path))
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(
                                      read_only=True, create=False, save_interval_steps=0))
  try:
    steps = manager.all_steps()
    if not steps:
      raise CheckpointError(f"{label}={path!r} holds no checkpoint; expected a run's workdir "
                            f"or its checkpoints/ directory")
    step = max(steps) if step is None else step
    if step not in steps:
      raise CheckpointError(f"{label}={path!r} has no step {step}; it has steps "
                            f"{sorted(steps)}")
    tree = manager.item_metadata(step)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict) or "params" not in tree:
      raise CheckpointError(f"{directory}/{step} is not a jaxseg TrainState checkpoint "
                            f"(no params); expected a run's checkpoint")
    target = {k: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree[k])
              for k in ("params", "model_state") if tree.get(k)}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True))
  finally:
    manager.close()
  return flatten({"params": restored["params"], **(restored.get("model_state") or {})}), step


def _check_weights_path(path: str, label: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in WEIGHT_EXTENSIONS:
    raise ConfigError(f"{label}={path!r} has extension {ext or 'none'!r}; expected one of "
                      f"{WEIGHT_EXTENSIONS}")
  return ext


def read_weights(path: str, label: str = "weights file") -> dict:
  """{name: np.ndarray} of a `.npz` or `.safetensors` file."""
  ext = _check_weights_path(path, label)
  if not os.path.isfile(path):
    raise ConfigError(f"{label}={path!r} does not exist; expected a {ext} file")
  try:
    if ext == ".npz":
      with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"{label}={path!r} is not a readable {ext} file "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def write_weights(path: str, arrays: dict) -> None:
  """Write {name: array} as `.npz` or `.safetensors` (by extension), atomically: a
  temporary file in the same directory, then a rename."""
  ext = _check_weights_path(path, "output file")
  arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  try:
    with open(tmp, "wb") as f:
      if ext == ".npz":
        np.savez(f, **arrays)
      else:
        from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
        f.write(save(arrays))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_arrays(path: str) -> tuple[dict, str]:
  """{name: array} of a weights file or of a run's latest checkpoint, and a description."""
  if os.path.isdir(path):
    arrays, step = read_checkpoint(path)
    return arrays, f"checkpoint {path} (step {step})"
  return read_weights(path), f"weights file {path}"
