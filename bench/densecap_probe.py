"""What a trained DenseCap's region codes encode: linear probes per caption part.

Not part of the tests (a smoke test runs it on the tiny run). For a dense-captioning run on
`shapes_captions`, restores the workdir's last checkpoint, computes what the language
model reads for each ground-truth box (`DenseCap.region_codes`: the region code, with
model.object_context its context too) on --train_images training images and on the whole
validation split, and fits one linear softmax probe per part of the caption grammar
(size, colour, shape, relation direction or none, the other object's colour, its shape,
both) on half of the training boxes. Prints each probe's accuracy on the training half it
was fit on, on the other training half (images the network trained on, the probe did
not) and on validation:

  ./launch.sh bench densecap_probe --workdir=runs/densecap_shapes

Reading the table: a part that validation gets much worse than the held-out training half
is memorised by the network (more data or regularisation); one that both get wrong is not
in the codes (the recognition network's input or capacity); one the probe gets right but
the captions get wrong (`python -m jaxseg.tasks.dense_captioning WORKDIR`) is the language
model's.

`--by_part` fits the probes on each part of what the LM reads too (`code_parts`: the
region code, with object_context its context, the caption geometry, the partner), so
it shows which part holds what.
"""
import json
import os

from absl import app, flags

from jaxseg import cli

FLAGS = flags.FLAGS


def _define_flags():  # when run as a script only: tests import this module
  flags.DEFINE_string("workdir", None, "A dense-captioning run's workdir.", required=True)
  flags.DEFINE_integer("train_images", 2000, "Training images whose gt boxes are probed.")
  flags.DEFINE_integer("probe_steps", 500, "Adam steps of each probe (full batch).")
  flags.DEFINE_bool("by_part", False, "Also probe each part of the LM's input alone.")

PARTS = ("size", "colour", "shape", "direction", "other colour", "other shape", "other")


def part_labels(caption: str) -> dict:
  """A shapes_captions caption -> its part per PARTS (strings; "none" for no clause)."""
  from jaxseg.tasks.dense_captioning import caption_parts  # pylint: disable=g-import-not-at-top
  parts = caption_parts(caption)
  if parts is None:
    raise ValueError(f"caption {caption!r} does not follow the shapes_captions grammar")
  size, colour, shape, direction, other = parts
  other = other or ("none", "none")
  return dict(zip(PARTS, (size, colour, shape, direction or "none", other[0], other[1],
                          " ".join(other))))


def fit_probe(x, y, steps: int, l2: float = 1e-3):
  """A softmax probe on standardised features x [N, D], labels y [N] (ints) -> predict(x)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  mean, std = x.mean(0), x.std(0) + 1e-6
  a = jnp.asarray((x - mean) / std)
  classes = int(y.max()) + 1
  params = (jnp.zeros((x.shape[1], classes)), jnp.zeros(classes))
  opt = optax.adam(1e-2)

  def loss(p):
    logits = a @ p[0] + p[1]
    return (optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()
            + l2 * jnp.sum(p[0] ** 2))

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return lambda z: np.asarray(jnp.argmax(((z - mean) / std) @ params[0] + params[1], -1))


def code_parts(model) -> list:
  """[(name, slice)] of what DenseCap's LM reads (`DenseCap._caption_codes`' order): the
  region code (with object_context its context), then with caption_geometry the
  geometry, then with partner_context the partner (its width and the found flag)."""
  widths = [("region code", model.recognition_widths[-1] + model.object_context)]
  if model.caption_geometry:
    widths.append(("caption geometry", model.caption_geometry))
  if model.partner_context:
    widths.append(("partner", model.partner_context + 1))
  parts, start = [], 0
  for name, width in widths:
    parts.append((name, slice(start, start + width)))
    start += width
  return parts


def collect(task, variables, batches, max_images: int):
  """(codes [N, D], captions [N]) of the valid gt boxes of up to max_images images."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxseg.models.densecap import DenseCap  # pylint: disable=g-import-not-at-top
  codes_of = jax.jit(lambda v, x, b, m: task.model.apply(v, x, b, m,
                                                         method=DenseCap.region_codes)[0])
  codes, captions, seen = [], [], 0
  for batch in batches:
    keep = batch["valid"] & batch.get("example_mask", np.ones(len(batch["valid"]), bool))[:, None]
    c = np.asarray(codes_of(variables, batch["image"], batch["boxes"], batch["valid"]))
    codes.append(c[keep])
    captions += [task.vocab.decode(t) for t in batch["tokens"][keep]]
    seen += len(batch["image"])
    if seen >= max_images:
      break
  return np.concatenate(codes), captions


def probe_table(train_codes, train_captions, val_codes, val_captions, steps: int) -> list:
  """Rows (part, classes, fit-half accuracy, other training half, validation)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  train = [part_labels(c) for c in train_captions]
  val = [part_labels(c) for c in val_captions]
  half = len(train) // 2
  rows = []
  for part in PARTS:
    names = sorted({t[part] for t in train} | {v[part] for v in val})
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[t[part]] for t in train])
    y_val = np.array([index[v[part]] for v in val])
    predict = fit_probe(train_codes[:half], y[:half], steps)
    rows.append((part, len(names), float(np.mean(predict(train_codes[:half]) == y[:half])),
                 float(np.mean(predict(train_codes[half:]) == y[half:])),
                 float(np.mean(predict(val_codes) == y_val))))
  return rows


def main(argv):
  cli.no_positional_arguments(argv)
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxseg import predict  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(FLAGS.workdir, "config.json")
  if not os.path.exists(config_path):
    cli.fail(f"--workdir={FLAGS.workdir}: no config.json (expected a dense-captioning run)")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.get("task") != "dense_captioning" or config.dataset.name != "shapes_captions":
    cli.fail(f"--workdir={FLAGS.workdir}: a {config.get('task')} run on "
             f"{config.dataset.get('name')}; expected dense_captioning on shapes_captions")
  task, state = predict.restore(config, FLAGS.workdir)
  variables = state.variables
  train = collect(task, variables, task.train_data(0), FLAGS.train_images)
  val = collect(task, variables, task.eval_data(), 1 << 30)
  print(f"{FLAGS.workdir}: {len(train[1])} training boxes (probes fit on half), "
        f"{len(val[1])} validation boxes; codes of width {train[0].shape[1]}")
  parts = [("all", slice(None))]
  if FLAGS.by_part:
    parts += code_parts(task.model)
  for name, part in parts:
    if FLAGS.by_part:
      print(f"-- {name} (columns {part.start or 0}:{part.stop or train[0].shape[1]})")
    print(f"{'part':<14}{'classes':>8}{'fit half':>10}{'other half':>12}{'validation':>12}")
    for row in probe_table(train[0][:, part], train[1], val[0][:, part], val[1],
                           FLAGS.probe_steps):
      print("{:<14}{:>8}{:>10.3f}{:>12.3f}{:>12.3f}".format(*row))


if __name__ == "__main__":
  _define_flags()
  cli.quiet_startup()
  app.run(main)
