"""DenseCap (Johnson, Karpathy & Fei-Fei 2016): the LSTM language model, the bilinear
sampler and the fully convolutional localization network, tiny sizes."""
import functools
import itertools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.errors import ConfigError
from jaxseg.models.captioning import END, PAD, START, LanguageModel
from jaxseg.models.densecap import (LOSS_TERMS, DenseCap, ObjectContext, box_geometry_features,
                                    build_densecap, caption_row_index, overlap_partner,
                                    relative_geometry)
from jaxseg.models.detection.fpn import FPN
from test_faster_rcnn import host_init


def _lm(vocab=6, max_length=3, width=16, seed=0, code_dim=5, code_every_step=False):
  lm = LanguageModel(vocab_size=vocab, embed_dim=width, hidden_dim=width, max_length=max_length,
                     code_every_step=code_every_step)
  codes = jax.random.normal(jax.random.key(seed + 1), (3, code_dim))
  tokens = jnp.zeros((3, max_length + 1), jnp.int32)
  params = jax.jit(lm.init)(jax.random.key(seed), codes, tokens)
  # larger output weights: peaked distributions make greedy != beam more likely
  params = jax.tree_util.tree_map(lambda x: 3.0 * x, params)
  return lm, params, codes


def _method(lm, name, *static):
  """A jitted `lm.apply(params, *args, method=name)` (static trailing args)."""
  fn = getattr(LanguageModel, name)
  return jax.jit(lambda p, *a: lm.apply(p, *a, *static, method=fn))


def _all_captions(vocab, max_length):
  words = range(3, vocab)
  out = []
  for k in range(max_length + 1):
    for seq in itertools.product(words, repeat=k):
      out.append(list(seq) + [END] + [PAD] * (max_length - k))
  return np.asarray(out, np.int32)


@pytest.mark.parametrize("code_every_step", [False, True], ids=["init_inject", "par_inject"])
def test_lm_teacher_forcing_is_causal_and_loss_matches_log_likelihood(code_every_step):
  lm, params, codes = _lm(code_every_step=code_every_step)
  forward, loss_fn = jax.jit(lm.apply), _method(lm, "loss")
  likelihood = _method(lm, "log_likelihood")
  tokens = jnp.asarray([[3, 4, END, PAD], [5, END, PAD, PAD], [4, 4, 5, END]], jnp.int32)
  logits = forward(params, codes, tokens)
  assert logits.shape == (3, 4, 6)
  changed = tokens.at[:, 2:].set(jnp.asarray([[5, 3], [4, 4], [3, 3]]))
  logits2 = forward(params, codes, changed)
  np.testing.assert_allclose(logits[:, :3], logits2[:, :3], rtol=1e-6, atol=1e-6)
  assert not np.allclose(logits[:, 3], logits2[:, 3])
  ll = likelihood(params, codes, tokens)
  for r in range(3):  # one sequence: loss = -log-likelihood / its token count
    weights = (jnp.arange(3) == r).astype(jnp.float32)
    loss = loss_fn(params, codes, tokens, weights)
    count = int(jnp.sum(tokens[r] != PAD))
    np.testing.assert_allclose(ll[r], -loss * count, rtol=1e-5)
  # weights: a zero-weight row does not count
  loss = loss_fn(params, codes, tokens, jnp.asarray([1.0, 0.0, 1.0]))
  np.testing.assert_allclose(loss, -(ll[0] + ll[2]) / (3 + 4), rtol=1e-5)


@pytest.mark.parametrize("code_every_step", [False, True], ids=["init_inject", "par_inject"])
def test_lm_greedy_equals_beam_one_and_beam_finds_the_best_caption(code_every_step):
  """Also with the code at every step: its per-row gate bias follows each region's beams."""
  lm, params, codes = _lm(code_every_step=code_every_step)
  likelihood = _method(lm, "log_likelihood")
  greedy, g_lp = _method(lm, "greedy")(params, codes)
  beam1, b1_lp = _method(lm, "beam_search", 1)(params, codes)
  np.testing.assert_array_equal(greedy, beam1)
  np.testing.assert_allclose(g_lp, b1_lp, rtol=1e-5)
  # decoded captions have the data's form and their logprob is their log-likelihood
  np.testing.assert_allclose(likelihood(params, codes, greedy), g_lp, rtol=1e-5)
  for row in np.asarray(greedy):
    end = list(row).index(END)
    assert all(w >= 3 for w in row[:end]) and all(w == PAD for w in row[end + 1:])
  # brute force: every caption of <= 3 words over the 3 words (40), for each region
  cands = _all_captions(6, 3)
  n = len(cands)
  lls = likelihood(params, jnp.repeat(codes, n, 0), jnp.asarray(np.tile(cands, (3, 1))))
  lls = np.asarray(lls).reshape(3, n)
  # a beam as wide as the number of captions keeps every hypothesis: exhaustive
  tokens, lp = _method(lm, "beam_search", n)(params, codes)
  for r in range(3):
    np.testing.assert_array_equal(tokens[r], cands[np.argmax(lls[r])])
    np.testing.assert_allclose(lp[r], lls[r].max(), rtol=1e-5)
  # beam 3 is never worse than greedy and its logprob is its tokens' likelihood
  t3, lp3 = _method(lm, "beam_search", 3)(params, codes)
  assert np.all(np.asarray(lp3) >= np.asarray(g_lp) - 1e-5)
  np.testing.assert_allclose(likelihood(params, codes, t3), lp3, rtol=1e-5)


def test_lm_code_every_step_adds_the_code_to_every_later_step():
  """code_every_step: with code_gates 0 the logits are the plain LM's (same parameters);
  otherwise the code biases each later step's gates by ReLU(image_encoder(code)) @
  code_gates: a single-step hand computation of the START step's logits."""
  lm, params, codes = _lm(code_every_step=True)
  plain, _, _ = _lm()
  p = params["params"]
  tokens = jnp.asarray([[3, 4, END, PAD]] * 3, jnp.int32)
  shared = {"params": {k: v for k, v in p.items() if k != "code_gates"}}
  zeroed = {"params": {**p, "code_gates": jnp.zeros_like(p["code_gates"])}}
  np.testing.assert_allclose(lm.apply(zeroed, codes, tokens), plain.apply(shared, codes, tokens),
                             rtol=1e-6)

  def cell(c, h, x, bias):
    z = x @ p["lstm_input"] + h @ p["lstm_hidden"] + bias
    i, f, g, o = np.split(np.asarray(z), 4, -1)
    sig = lambda v: 1 / (1 + np.exp(-v))
    c = sig(f) * c + sig(i) * np.tanh(g)
    return c, sig(o) * np.tanh(c)

  enc = p["image_encoder"]
  x0 = np.maximum(np.asarray(codes @ enc["kernel"] + enc["bias"]), 0)
  zero = np.zeros((3, 16), np.float32)
  c, h = cell(zero, zero, x0, p["lstm_bias"])  # the code step: the plain bias
  c, h = cell(c, h, p["embedding"][np.full(3, START)], p["lstm_bias"] + x0 @ p["code_gates"])
  want = h @ p["output_kernel"] + p["output_bias"]  # logits predicting tokens[:, 0]
  np.testing.assert_allclose(lm.apply(params, codes, tokens)[:, 0], want, rtol=1e-4, atol=1e-5)


# -- the bilinear sampler ---------------------------------------------------------------


def _densecap_reference(fmap, box, out_h, out_w, image_h, image_w):
  """NumPy transcription of densecap's BoxToAffine + stnbhwd's AffineGridGeneratorBHWD and
  BilinearSamplerBHWD (one box, map [Hf, Wf, C]); the box in jaxseg xyxy is DenseCap's
  1-based (xc, yc, w, h) = (cx + 0.5, cy + 0.5, x2 - x1, y2 - y1)."""
  x1, y1, x2, y2 = box
  xc, yc, w, h = (x1 + x2) / 2 + 0.5, (y1 + y2) / 2 + 0.5, x2 - x1, y2 - y1
  theta = np.array([[h / image_h, 0, (2 * yc - image_h - 1) / (image_h - 1)],
                    [0, w / image_w, (2 * xc - image_w - 1) / (image_w - 1)]])
  hf, wf, c = fmap.shape
  out = np.zeros((out_h, out_w, c))
  for i in range(out_h):
    for j in range(out_w):
      base = np.array([-1 + i * 2 / (out_h - 1), -1 + j * 2 / (out_w - 1), 1.0])  # (y, x, 1)
      ycoord, xcoord = theta @ base
      yf, xf = (ycoord + 1) * (hf - 1) / 2, (xcoord + 1) * (wf - 1) / 2
      yt, xt = int(np.floor(yf)), int(np.floor(xf))
      wy, wx = 1 - (yf - yt), 1 - (xf - xt)
      for yy, ay in ((yt, wy), (yt + 1, 1 - wy)):
        for xx, ax in ((xt, wx), (xt + 1, 1 - wx)):
          if 0 <= yy < hf and 0 <= xx < wf:
            out[i, j] += ay * ax * fmap[yy, xx]
  return out


def test_bilinear_sample_matches_densecap_reference_and_box_gradient():
  rng = np.random.default_rng(0)
  fmap = rng.normal(size=(2, 6, 8, 3)).astype(np.float32)  # stride 8 of a 48 x 64 image
  boxes = np.array([[[3.2, 5.1, 40.7, 30.3], [0.0, 0.0, 64.0, 48.0], [50.5, 20.2, 70.1, 60.3]],
                    [[10.3, 12.6, 22.9, 44.4], [-5.2, 2.7, 15.3, 9.9], [30.1, 1.3, 31.2, 2.6]]],
                   np.float32)
  got = ops.roi.bilinear_sample(fmap, boxes, (5, 4), 1 / 8)
  assert got.shape == (2, 3, 5, 4, 3)
  for b in range(2):
    for k in range(3):
      ref = _densecap_reference(fmap[b], boxes[b, k].astype(np.float64), 5, 4, 48, 64)
      np.testing.assert_allclose(got[b, k], ref, rtol=1e-4, atol=1e-5)
  # indexed layout and explicit image size agree with the per-image one
  flat = ops.roi.bilinear_sample(fmap, boxes.reshape(6, 4), (5, 4), 1 / 8,
                                 box_indices=np.repeat([0, 1], 3), image_size=(48, 64))
  np.testing.assert_allclose(flat.reshape(got.shape), got, rtol=1e-6)

  weights = jnp.asarray(rng.normal(size=got.shape).astype(np.float32))
  loss = jax.jit(lambda f, bx: jnp.sum(weights * ops.roi.bilinear_sample(f, bx, (5, 4), 1 / 8)))
  g_f, g_b = jax.grad(loss, (0, 1))(jnp.asarray(fmap), jnp.asarray(boxes))
  assert float(jnp.abs(g_f).sum()) > 0
  eps = 1e-2
  for idx in [(0, 0, 0), (0, 0, 3), (0, 2, 1), (1, 0, 2), (1, 1, 0), (1, 0, 1)]:
    plus, minus = boxes.copy(), boxes.copy()
    plus[idx] += eps
    minus[idx] -= eps
    fd = (loss(fmap, plus) - loss(fmap, minus)) / (2 * eps)
    np.testing.assert_allclose(g_b[idx], fd, rtol=2e-2, atol=2e-3)
  assert float(jnp.abs(g_b).sum()) > 0


# -- the model ------------------------------------------------------------------------------

T = 5  # max_length 4 + END
CAPTIONS = np.asarray([[4, 5, 6, END, PAD], [7, 8, 9, END, PAD]], np.int32)
GT_BOXES = np.asarray([[4.0, 6.0, 30.0, 28.0], [28.0, 30.0, 60.0, 62.0]], np.float32)


def _model(**fields):
  args = dict(recognition_widths=(32, 32), sampled_regions=16, detections_per_image=6,
              pool_size=4)
  args.update(fields)
  return build_densecap(
      12, backbone="resnet18", backbone_args=dict(width=4),
      rpn=dict(anchor_sizes=((16.0, 32.0),), aspect_ratios=(0.5, 1.0, 2.0),
               pre_nms_top_n_train=64, post_nms_top_n_train=32, pre_nms_top_n_test=32,
               post_nms_top_n_test=16, batch_size_per_image=32),
      lm=dict(embed_dim=16, hidden_dim=32, max_length=4), **args)


def _image(batch=1, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.uniform(0, 0.3, (batch, 64, 64, 3)).astype(np.float32)
  img[:, 6:28, 4:30, 0] += 0.6  # two coloured regions, one per caption
  img[:, 30:62, 28:60, 2] += 0.6
  return jnp.asarray(img)


def _targets(batch=1, valid=True):
  return {"boxes": jnp.asarray(np.repeat(GT_BOXES[None], batch, 0)),
          "valid": jnp.full((batch, 2), valid),
          "tokens": jnp.asarray(np.repeat(CAPTIONS[None], batch, 0))}


class _Setup:
  """One tiny model, its variables and its jitted entry points, shared by the tests (each
  compile costs seconds here)."""

  def __init__(self):
    self.model = _model()
    self.images = _image(1)
    self.variables = host_init(lambda: self.model.init({"params": jax.random.key(0)},
                                                       self.images))
    model = self.model
    self.forward = jax.jit(lambda v, x: model.apply(v, x))
    self.caption = jax.jit(lambda v, x, b, m: model.apply(v, x, b, m,
                                                          method=DenseCap.caption_regions))
    self.rank = jax.jit(lambda v, x, t: model.apply(v, x, t,
                                                    method=DenseCap.region_log_likelihood))

    def terms(params, targets, key):
      return model.apply({**self.variables, "params": params}, self.images, targets=targets,
                         rngs={"sampling": key})

    def stacked(params, targets, key):
      t = terms(params, targets, key)
      return jnp.stack([t[k] for k in LOSS_TERMS]), t

    self.jacobian = jax.jit(jax.jacrev(stacked, has_aux=True))
    self.terms = terms


@pytest.fixture(scope="module")
def setup():
  return _Setup()


def test_densecap_outputs_and_padding(setup):
  model, images, variables = setup.model, setup.images, setup.variables
  assert set(variables["params"]) == {"backbone", "rpn", "recognition_0", "recognition_1",
                                      "box_pred", "confidence", "lm"}
  assert model.loss_terms == LOSS_TERMS and model.needs_proposals is False
  out = setup.forward(variables, images)
  shapes = {k: v.shape for k, v in out.items()}
  assert shapes == {"boxes": (1, 6, 4), "scores": (1, 6), "valid": (1, 6), "tokens": (1, 6, T),
                    "caption_logprob": (1, 6), "proposals": (1, 16, 4),
                    "proposal_valid": (1, 16)}
  valid = np.asarray(out["valid"])
  assert valid.any()
  tokens = np.asarray(out["tokens"])
  assert np.all(tokens[~valid] == PAD) and np.all(np.asarray(out["boxes"])[~valid] == -1)
  assert np.all(np.asarray(out["scores"])[~valid] == 0)
  assert np.all(np.asarray(out["caption_logprob"])[~valid] == 0)
  for row in tokens[valid]:  # words, one END, then PAD
    end = list(row).index(END)
    assert all(w >= 3 for w in row[:end]) and all(w == PAD for w in row[end + 1:])
  boxes = np.asarray(out["boxes"])[valid]
  assert np.all(boxes >= 0) and np.all(boxes <= 64) and np.all(boxes[:, 2:] > boxes[:, :2])
  s = np.asarray(out["scores"])[valid]
  assert np.all((s > 0) & (s < 1))
  # the given-box entry point: an invalid row is padded
  given = setup.caption(variables, images, jnp.asarray(GT_BOXES[None]),
                        jnp.asarray([[True, False]]))
  assert given["tokens"].shape == (1, 2, T) and given["caption_logprob"].shape == (1, 2)
  assert np.all(np.asarray(given["tokens"][0, 1]) == PAD)
  assert float(given["scores"][0, 1]) == 0 and float(given["caption_logprob"][0, 1]) == 0
  assert 0 < float(given["scores"][0, 0]) < 1 and float(given["caption_logprob"][0, 0]) < 0
  ranked = setup.rank(variables, images, jnp.asarray(CAPTIONS))
  assert ranked["query_logprob"].shape == (1, 6, 2)
  q = np.asarray(ranked["query_logprob"])
  assert np.all(np.isfinite(q[valid])) and np.all(q[~valid] == -np.inf)
  np.testing.assert_array_equal(ranked["valid"], out["valid"])


def test_densecap_losses_and_their_gradients(setup):
  params = setup.variables["params"]
  jac, aux = jax.device_get(setup.jacobian(params, _targets(1), jax.random.key(1)))
  for k in LOSS_TERMS:
    assert np.isfinite(float(aux[k])) and float(aux[k]) > 0, k
  assert float(aux["positives"]) >= 2 and 0 <= float(aux["caption_accuracy"]) <= 1

  def norm(i, *path):
    sub = jac
    for p in path:
      sub = sub[p]
    return sum(float(np.abs(g[i]).sum()) for g in jax.tree_util.tree_leaves(sub))

  i = {k: n for n, k in enumerate(LOSS_TERMS)}
  # caption: the LM, the recognition FCs and the backbone; not the RPN nor the other heads
  assert norm(i["caption"], "lm") > 0 and norm(i["caption"], "recognition_1") > 0
  assert norm(i["caption"], "backbone") > 0
  assert norm(i["caption"], "rpn") == 0
  assert norm(i["caption"], "box_pred") == 0 and norm(i["caption"], "confidence") == 0
  # confidence / box: their own layer and the FCs, never the LM or the RPN
  for term, own, other in (("confidence", "confidence", "box_pred"),
                           ("box", "box_pred", "confidence")):
    assert norm(i[term], own) > 0 and norm(i[term], "recognition_0") > 0
    assert norm(i[term], other) == 0 and norm(i[term], "lm") == 0 and norm(i[term], "rpn") == 0
  # the RPN's terms: its head only (objectness -> cls_logits, box -> bbox_pred) + backbone
  assert norm(i["rpn_objectness"], "rpn", "head", "cls_logits") > 0
  assert norm(i["rpn_objectness"], "rpn", "head", "bbox_pred") == 0
  assert norm(i["rpn_box"], "rpn", "head", "bbox_pred") > 0
  for term in ("rpn_objectness", "rpn_box"):
    assert norm(i[term], "lm") == 0 and norm(i[term], "recognition_0") == 0
    assert norm(i[term], "backbone") > 0
  # all-invalid ground truth: no positives, zero box / caption terms, finite gradients
  jac, aux = jax.device_get(setup.jacobian(params, _targets(1, valid=False), jax.random.key(1)))
  assert float(aux["box"]) == 0 and float(aux["caption"]) == 0 and float(aux["positives"]) == 0
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(jac))


def test_densecap_overfits_two_captions_then_captions_and_retrieves_them(setup):
  import optax  # pylint: disable=g-import-not-at-top
  variables, images, targets = setup.variables, setup.images, _targets(1)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, key):
    def loss(p):
      t = setup.terms(p, targets, key)
      return sum(t[k] for k in LOSS_TERMS), t
    (_, t), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, t

  params = variables["params"]
  state = opt.init(params)
  first = None
  for i in range(80):  # batch norm in inference mode (train=False): one image
    params, state, t = step(params, state, jax.random.key(i))
    first = float(t["caption"]) if first is None else first
  assert float(t["caption"]) < 0.25 * first, (first, float(t["caption"]))
  trained = {**variables, "params": params}
  given = setup.caption(trained, images, targets["boxes"], targets["valid"])
  np.testing.assert_array_equal(given["tokens"][0], CAPTIONS)
  # retrieval by text: each gt box's best-overlapping detection prefers its own caption,
  # and each caption's best detection is the one on its box
  ranked = setup.rank(trained, images, jnp.asarray(CAPTIONS))
  q = np.asarray(ranked["query_logprob"][0])
  iou = np.asarray(ops.boxes.pairwise_iou(ranked["boxes"][0], jnp.asarray(GT_BOXES)))
  iou = np.where(np.asarray(ranked["valid"][0])[:, None], iou, 0.0)
  for g in range(2):
    d = int(np.argmax(iou[:, g]))
    assert iou[d, g] >= 0.5, iou
    assert q[d, g] > q[d, 1 - g], q
    assert int(np.argmax(q[:, g])) == d, q
  # beam search (decode="beam") agrees with greedy: never a lower log-probability, and on
  # this overfit model the same captions (beam 1 = greedy is tested on the LM above)
  beam = setup.model.clone(decode="beam", beam_size=2)
  out = jax.jit(lambda v, x, b, m: beam.apply(v, x, b, m, method=DenseCap.caption_regions))(
      trained, images, targets["boxes"], targets["valid"])
  np.testing.assert_array_equal(out["tokens"], given["tokens"])
  assert np.all(np.asarray(out["caption_logprob"])
                >= np.asarray(given["caption_logprob"]) - 1e-5)


def test_build_densecap_config_errors():
  with pytest.raises(ConfigError, match="bogus"):
    build_densecap(12, bogus=1)
  with pytest.raises(ConfigError, match="sampler"):
    build_densecap(12, sampler="nearest")
  with pytest.raises(ConfigError, match="decode"):
    build_densecap(12, decode="sample")
  with pytest.raises(ConfigError, match="config.model.rpn has no field nope"):
    build_densecap(12, rpn=dict(nope=1))
  with pytest.raises(ConfigError, match="config.model.lm has no field layers"):
    build_densecap(12, lm=dict(layers=2))
  with pytest.raises(ConfigError, match="vocab_size"):
    build_densecap(12, lm=dict(vocab_size=40))
  with pytest.raises(ConfigError, match="geometry_width"):
    build_densecap(12, box_geometry=True, geometry_width=-1)
  with pytest.raises(ConfigError, match="context_scale"):
    build_densecap(12, context_scale=-1.0)
  with pytest.raises(ConfigError, match="caption_rows=0"):
    build_densecap(12, caption_rows=0)
  with pytest.raises(ConfigError, match="partner_overlap=3 without partner_context"):
    build_densecap(12, partner_overlap=3)
  with pytest.raises(ConfigError, match=r"mask_head=\[8, 0\]; expected conv widths >= 1"):
    build_densecap(12, mask_head=(8, 0))
  model = build_densecap(12, sampler="roi_align", decode="beam", beam_size=2,
                         lm=dict(max_length=4), rpn=dict(nms_threshold=0.6))
  assert model.sampler == "roi_align" and model.lm.vocab_size == 12 and model.lm.max_length == 4
  assert model.rpn.nms_threshold == 0.6 and model.recognition_widths == (4096, 4096)


@pytest.mark.parametrize("fields", [dict(sampler="roi_align", box_geometry=True),
                                    dict(box_geometry=True, geometry_width=8),
                                    dict(context_scale=2.0),
                                    dict(object_context=8, object_context_heads=2),
                                    dict(fpn_levels=("stride_32",), fpn_channels=8,
                                         caption_geometry=4, object_context=8),
                                    dict(partner_context=8, caption_geometry=4,
                                         partner_overlap=2),
                                    dict(decode="beam", dtype=jnp.bfloat16)])
def test_densecap_variants_trace(fields):
  """The other sampler, the box-geometry input, beam decoding and bfloat16 compute give
  the same shapes (traced only: jax.eval_shape compiles nothing)."""
  fields = dict(fields)
  dtype = fields.pop("dtype", jnp.float32)
  model = build_densecap(
      12, dtype, backbone="resnet18", backbone_args=dict(width=4),
      rpn=dict(anchor_sizes=((16.0, 32.0),), pre_nms_top_n_test=32, post_nms_top_n_test=16,
               pre_nms_top_n_train=32, post_nms_top_n_train=16, batch_size_per_image=32),
      lm=dict(embed_dim=8, hidden_dim=8, max_length=4), recognition_widths=(16,),
      sampled_regions=8, detections_per_image=4, pool_size=3, **fields)
  images = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, images))
  out = jax.eval_shape(lambda v: model.apply(v, images), variables)
  assert out["tokens"].shape == (2, 4, T) and out["caption_logprob"].dtype == jnp.float32
  terms = jax.eval_shape(lambda v: model.apply(v, images, targets=_targets(2),
                                               rngs={"sampling": jax.random.key(1)}), variables)
  assert all(terms[k].shape == () and terms[k].dtype == jnp.float32 for k in LOSS_TERMS)
  ranked = jax.eval_shape(lambda v: model.apply(v, images, jnp.asarray(CAPTIONS),
                                                method=DenseCap.region_log_likelihood),
                          variables)
  assert ranked["query_logprob"].shape == (2, 4, 2)


def test_caption_iou_threshold_captions_only_tight_regions(setup):
  """caption_iou_threshold: the caption loss reads only positives this tight; the other
  terms are unchanged (same samples). With loose positives (IoU >= 0.3) the caption loss
  changes when 1.0 keeps the appended ground-truth boxes alone; above 1 nothing is
  captioned."""
  key = jax.random.key(3)
  loose = dict(fg_iou_threshold=0.3, bg_iou_threshold=0.1)

  def loss_terms(**fields):  # jitted: one compile beats hundreds of eager ones here
    model = _model(**loose, **fields)
    return jax.jit(lambda v, t, k: model.apply(v, setup.images, targets=t,
                                               rngs={"sampling": k}))(
        setup.variables, _targets(1), key)

  base = loss_terms()
  assert float(base["positives"]) > 2  # proposals among the positives, not just the gt
  for threshold, captioned in ((1.0, True), (1.5, False)):
    terms = loss_terms(caption_iou_threshold=threshold)
    for k in ("rpn_objectness", "rpn_box", "box", "confidence", "positives"):
      np.testing.assert_allclose(float(terms[k]), float(base[k]), rtol=1e-6)
    assert (float(terms["caption"]) > 0) == captioned
    if captioned:  # the loss of the gt rows alone: not the loss over every positive
      assert float(terms["caption"]) != pytest.approx(float(base["caption"]), rel=1e-4)


def test_caption_row_index_takes_the_objects_round_robin():
  """Against a sort by hand: captioned rows before the others; among them each object's
  k-th region (in sampling order) before any object's (k + 1)-th; ties by index."""
  rng = np.random.default_rng(0)
  captioned = rng.random((20, 12)) < 0.6
  matched = rng.integers(0, 4, (20, 12))
  got = np.asarray(caption_row_index(jnp.asarray(captioned), jnp.asarray(matched), 12))
  for b in range(20):
    seen, keys = {}, []
    for i in range(12):
      if captioned[b, i]:
        rank = seen[matched[b, i]] = seen.get(matched[b, i], -1) + 1
        keys.append((0, rank, i))
      else:
        keys.append((1, 0, i))
    assert list(got[b]) == [k[2] for k in sorted(keys)]
  # a quota of 3 over objects with 3, 1 and 1 regions keeps one of each
  first = caption_row_index(jnp.asarray([[1, 1, 1, 1, 1, 0]], bool),
                            jnp.asarray([[0, 0, 2, 0, 1, 1]]), 3)
  assert np.asarray(first).tolist() == [[0, 2, 4]]


def test_caption_rows_caps_the_language_model_rows(setup):
  """caption_rows: a cap at or above the captioned positives changes nothing; below it,
  the caption term reads fewer rows and the other terms stay as they were."""
  key = jax.random.key(3)
  loose = dict(fg_iou_threshold=0.3, bg_iou_threshold=0.1)  # many positives per object

  def loss_terms(**fields):
    model = _model(**loose, **fields)
    return jax.jit(lambda v, t, k: model.apply(v, setup.images, targets=t,
                                               rngs={"sampling": k}))(
        setup.variables, _targets(1), key)

  base = loss_terms()
  assert float(base["positives"]) > 3
  for k, v in loss_terms(caption_rows=100).items():
    np.testing.assert_array_equal(v, base[k], err_msg=k)
  capped = loss_terms(caption_rows=2)
  for k in ("rpn_objectness", "rpn_box", "box", "confidence", "positives"):
    np.testing.assert_array_equal(capped[k], base[k], err_msg=k)
  assert 0 < float(capped["caption"]) != pytest.approx(float(base["caption"]), rel=1e-4)


def test_box_geometry_raw_and_encoded():
  """box_geometry_features: the 6 raw numbers, + longer / shorter side and 3 logs when
  encoded; geometry_width > 0 puts them through their own Dense + ReLU (its width, not
  the 6 numbers, joins the pooled features), 0 appends the raw 6."""
  boxes = jnp.asarray([[[8.0, 16.0, 40.0, 24.0]]])  # 32 x 8 in a 64 (H) x 128 (W) image
  raw = np.asarray(box_geometry_features(boxes, (64, 128)))[0, 0]
  np.testing.assert_allclose(raw, [1 / 16, 1 / 4, 5 / 16, 3 / 8, 1 / 4, 1 / 8])
  enc = np.asarray(box_geometry_features(boxes, (64, 128), encoded=True))[0, 0]
  np.testing.assert_allclose(enc[:6], raw)
  np.testing.assert_allclose(enc[6:], [1 / 4, 1 / 8, np.log(1 / 4), np.log(1 / 8), np.log(1 / 4)],
                             rtol=1e-6)
  assert np.isfinite(np.asarray(box_geometry_features(jnp.zeros((1, 4)), (8, 8), True))).all()
  images = jnp.zeros((1, 64, 64, 3))
  kernels = {}
  for width in (0, 8):
    model = _model(box_geometry=True, geometry_width=width)
    params = jax.eval_shape(lambda m=model: m.init({"params": jax.random.key(0)}, images))
    params = params["params"]
    kernels[width] = params["recognition_0"]["kernel"].shape[0]
    assert ("geometry_fc" in params) == (width > 0)
  assert params["geometry_fc"]["kernel"].shape == (11, 8)
  assert kernels[8] - kernels[0] == 8 - 6


def test_fpn_levels_fuse_the_coarser_maps_into_the_read_map(setup):
  """fpn_levels: the map the RPN and the sampler read is the FPN's finest output over
  backbone_level and the coarser levels (same stride, fpn_channels wide); levels out of
  order are a ConfigError."""
  model = _model(fpn_levels=("stride_32",), fpn_channels=8)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  assert sorted(variables["params"]["fpn"]) == ["inner_blocks_0", "inner_blocks_1",
                                                "layer_blocks_0", "layer_blocks_1"]
  fmap, stride = model.apply(variables, setup.images, False, method=DenseCap._features)
  plain, plain_stride = setup.model.apply(setup.variables, setup.images, False,
                                          method=DenseCap._features)
  assert stride == plain_stride == 16 and fmap.shape == plain.shape[:3] + (8,)
  maps = model.apply(variables, setup.images, False, method=lambda m, x, t: m.backbone(
      (x - jnp.asarray(m.pixel_mean)) / jnp.asarray(m.pixel_std), train=t))
  expected = FPN(8, extra_pool=False).apply({"params": variables["params"]["fpn"]},
                                           [maps["stride_16"], maps["stride_32"]])[0]
  np.testing.assert_allclose(fmap, expected, rtol=1e-5, atol=1e-6)
  for levels in (("stride_8",), ("stride_32", "stride_32"), ("c5",)):
    with pytest.raises(ConfigError, match="fpn_levels"):
      build_densecap(12, backbone_level="stride_16", fpn_levels=levels)


def test_caption_geometry_reads_the_described_box(setup):
  """caption_geometry: the LM's input is the code, then ReLU(Dense) of the encoded geometry
  of the box described: the given box in region_codes; in training the matched
  ground-truth box of every captioned positive, also of the proposals (IoU >= 0.3 here)
  that are not that box."""
  model = _model(caption_geometry=4, fg_iou_threshold=0.3, bg_iou_threshold=0.1)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  dense = variables["params"]["caption_geometry_fc"]

  def geometry(boxes):  # the Dense output for boxes [..., 4], before the ReLU
    return box_geometry_features(jnp.asarray(boxes), (64, 64), True) @ dense["kernel"] + dense["bias"]

  boxes = jnp.asarray([[[4.0, 6.0, 30.0, 28.0], [20.0, 20.0, 60.0, 50.0]]])
  codes, _ = model.apply(variables, setup.images, boxes, jnp.ones((1, 2), bool),
                         method=DenseCap.region_codes)
  assert codes.shape == (1, 2, 32 + 4)
  np.testing.assert_allclose(codes[..., 32:], jax.nn.relu(geometry(boxes)), rtol=1e-5,
                             atol=1e-6)
  terms, state = jax.jit(lambda v, t, k: model.apply(  # one compile, not hundreds of eager ones
      v, setup.images, train=True, targets=t, rngs={"sampling": k},
      mutable=["intermediates", "batch_stats"],
      capture_intermediates=lambda m, _: m.name == "caption_geometry_fc"))(
          variables, _targets(1), jax.random.key(3))
  (rows,) = state["intermediates"]["caption_geometry_fc"]["__call__"]
  positives = int(terms["positives"])
  assert positives > 2  # proposals among the positives, not just the two gt boxes
  gt_rows = np.asarray(geometry(GT_BOXES))
  for row in np.asarray(rows)[0, :positives]:
    assert min(np.abs(row - g).max() for g in gt_rows) < 1e-5
  with pytest.raises(ConfigError, match="caption_geometry"):
    build_densecap(12, caption_geometry=-1)


def test_context_scale_adds_the_enlarged_box_grid(setup):
  """context_scale: the recognition input is the box's grid then the grid of the box
  enlarged about its centre (here 2x: [8, 8, 24, 24] -> [0, 0, 32, 32])."""
  model = _model(context_scale=2.0)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  first = variables["params"]["recognition_0"]["kernel"]
  assert first.shape[0] == 2 * setup.variables["params"]["recognition_0"]["kernel"].shape[0]
  boxes = jnp.asarray([[[8.0, 8.0, 24.0, 24.0]]])

  def inputs(m, v, b):  # the flattened grids that enter recognition_0
    fmap, stride = m.apply(v, setup.images, False, method=DenseCap._features)
    return jnp.concatenate([ops.roi.bilinear_sample(fmap, r, m.pool_size, 1.0 / stride,
                                                    image_size=(64, 64)).reshape(1, 1, -1)
                            for r in b], -1)

  def code(m, v, x):  # recognition on given inputs
    for k in range(len(m.recognition_widths)):
      p = v["params"][f"recognition_{k}"]
      x = jax.nn.relu(x @ p["kernel"] + p["bias"])
    return x

  x = inputs(model, variables, [boxes, jnp.asarray([[[0.0, 0.0, 32.0, 32.0]]])])
  fmap, stride = model.apply(variables, setup.images, False, method=DenseCap._features)
  codes, _, _ = model.apply(variables, fmap, stride, boxes, (64, 64), method=DenseCap._codes)
  np.testing.assert_allclose(codes, code(model, variables, x), rtol=1e-5, atol=1e-6)


def test_recognition_dropout_only_in_training(setup):
  """recognition_dropout: in training each recognition FC's units are zeroed with that
  probability and the rest scaled by 1 / (1 - rate) (the "dropout" rng); at test time and
  in the captions of given boxes, nothing changes."""
  model = _model(recognition_widths=(64,), recognition_dropout=0.5)
  plain = _model(recognition_widths=(64,))
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  fmap, stride = model.apply(variables, setup.images, False, method=DenseCap._features)
  boxes = jnp.asarray([[[4.0, 6.0, 30.0, 28.0], [20.0, 20.0, 60.0, 50.0]]])

  def codes(m, dropout, key=0):
    return np.asarray(m.apply(variables, fmap, stride, boxes, (64, 64), dropout,
                              method=DenseCap._codes, rngs={"dropout": jax.random.key(key)})[0])

  base = codes(plain, False)
  np.testing.assert_array_equal(codes(model, False), base)
  dropped = codes(model, True)
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], 2 * base[kept], rtol=1e-6)
  live = base > 0
  assert 0.3 < np.mean(~kept[live]) < 0.7  # about half the active units dropped
  assert not np.array_equal(dropped, codes(model, True, key=1))
  # the loss: training draws from the dropout rng, evaluation does not
  @functools.partial(jax.jit, static_argnums=0)  # one compile per mode beats eager here
  def caption_loss(train, key):
    out = model.apply(variables, setup.images, train, targets=_targets(1),
                      rngs={"sampling": jax.random.key(3), "dropout": key},
                      mutable=["batch_stats"] if train else False)
    return (out[0] if train else out)["caption"]
  keys = jax.random.key(0), jax.random.key(1)
  assert float(caption_loss(True, keys[0])) != float(caption_loss(True, keys[1]))
  assert float(caption_loss(False, keys[0])) == float(caption_loss(False, keys[1]))
  with pytest.raises(ConfigError, match="recognition_dropout"):
    build_densecap(12, recognition_dropout=1.0)


def test_relative_geometry_by_hand():
  box = jnp.asarray([[0.0, 0.0, 10.0, 20.0]])
  other = jnp.asarray([[5.0, 10.0, 25.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
  g = np.asarray(relative_geometry(box, other))
  assert g.shape == (1, 2, 7)
  # centres (5, 10) -> (15, 15): dx / w = 1, dy / h = 0.25; w 10 -> 20, h 20 -> 10;
  # intersection 5 x 10 = 50 of areas 200 and 200: IoU 50 / 350, 0.25 of each
  np.testing.assert_allclose(g[0, 0], [1.0, 0.25, np.log(2.0), np.log(0.5), 50 / 350, 0.25,
                                       0.25], rtol=1e-6)
  np.testing.assert_allclose(g[0, 1], [0, 0, 0, 0, 1, 1, 1], atol=1e-6)


def test_object_context_attends_over_valid_objects_only():
  """ObjectContext: with one valid object every head's weight is 1 on it (the context is
  its value projection); invalid objects change nothing; no valid object, no context."""
  module = ObjectContext(width=8, heads=2)
  rng = np.random.default_rng(0)
  codes = jnp.asarray(rng.normal(size=(1, 3, 6)), jnp.float32)
  boxes = jnp.asarray([[[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 50]]], jnp.float32)
  objects = jnp.asarray(rng.normal(size=(1, 2, 6)), jnp.float32)
  object_boxes = jnp.asarray([[[2, 2, 12, 12], [0, 0, 40, 40]]], jnp.float32)
  variables = module.init(jax.random.key(0), codes, boxes, objects, object_boxes,
                          jnp.asarray([[True, True]]))
  apply = lambda o, v: np.asarray(module.apply(variables, codes, boxes, o, object_boxes,
                                               jnp.asarray([v])))
  out = apply(objects, [True, False])
  assert out.shape == (1, 3, 14)
  np.testing.assert_array_equal(out[..., :6], codes)  # the region's own code first
  p = variables["params"]["value"]
  value = np.asarray(objects[0, 0] @ p["kernel"] + p["bias"])
  np.testing.assert_allclose(out[0, :, 6:], np.broadcast_to(value, (3, 8)), rtol=1e-5)
  changed = objects.at[0, 1].set(7.0)  # the invalid object's code
  np.testing.assert_array_equal(apply(changed, [True, False]), out)
  assert not np.allclose(apply(changed, [True, True]), apply(objects, [True, True]))
  np.testing.assert_array_equal(apply(objects, [False, False])[..., 6:], 0)


def test_object_context_captions_read_the_other_boxes(setup):
  """With object_context the caption of a given box depends on the other valid given
  boxes (its context), not on invalid ones; without it, it does not."""
  model = _model(object_context=8, object_context_heads=2)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  assert variables["params"]["lm"]["image_encoder"]["kernel"].shape[0] == 32 + 8

  def logprob(boxes, valid):
    out = model.apply(variables, setup.images, jnp.asarray([boxes], jnp.float32),
                      jnp.asarray([valid]), method=DenseCap.caption_regions)
    return float(out["caption_logprob"][0, 0])

  first, second = list(GT_BOXES[0]), list(GT_BOXES[1])
  alone = logprob([first, second], [True, False])
  assert logprob([first, [0.0, 0.0, 64.0, 64.0]], [True, False]) == alone
  assert logprob([first, second], [True, True]) != alone
  terms = model.apply(variables, setup.images, True, targets=_targets(1),
                      rngs={"sampling": jax.random.key(1)}, mutable=["batch_stats"])[0]
  assert np.isfinite(float(terms["caption"])) and float(terms["caption"]) > 0
  with pytest.raises(ConfigError, match="object_context"):
    build_densecap(12, object_context=6, object_context_heads=4)


def test_overlap_partner_by_hand():
  """Each described box's partner: the valid other object whose box intersects it most
  (never itself; ties: the first); none when no valid other box intersects."""
  boxes = jnp.asarray([[[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40], [15, 0, 25, 10]]],
                      jnp.float32)
  own = jnp.asarray([[0, 1, 2, 3]])
  # intersections: 0-1 25, 1-3 25; 0-3 and 2 none
  index, found = overlap_partner(boxes, own, boxes, jnp.ones((1, 4), bool))
  np.testing.assert_array_equal(found, [[True, True, False, True]])
  np.testing.assert_array_equal(np.asarray(index)[found], [1, 0, 1])  # 1: tie 0 / 3 -> 0
  index, found = overlap_partner(boxes, own, boxes, jnp.asarray([[True, False, True, True]]))
  np.testing.assert_array_equal(found, [[False, True, False, False]])
  assert int(index[0, 1]) == 0
  # a box described by no object of the list (index -1) may pair with any of them
  index, found = overlap_partner(boxes[:, :1], jnp.asarray([[-1]]), boxes, jnp.ones((1, 4), bool))
  assert int(index[0, 0]) == 0 and bool(found[0, 0])


def test_partner_overlap_reads_the_map_in_the_intersection(setup):
  """partner_overlap: the partner Dense also reads the sampler's grid of the map in the
  intersection of the described box and its partner's (boxes by hand)."""
  np.testing.assert_array_equal(  # overlapping; apart: a zero-size box
      ops.boxes.elementwise_intersection(
          jnp.asarray([[4.0, 6.0, 30.0, 28.0], [0.0, 0.0, 5.0, 5.0]]),
          jnp.asarray([[20.0, 20.0, 60.0, 50.0], [10.0, 2.0, 20.0, 4.0]])),
      [[20.0, 20.0, 30.0, 28.0], [10.0, 2.0, 10.0, 4.0]])
  model = _model(partner_context=4, partner_overlap=2)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  boxes = jnp.asarray([[[4.0, 6.0, 30.0, 28.0], [20.0, 20.0, 60.0, 50.0]]])
  codes, _ = model.apply(variables, setup.images, boxes, jnp.ones((1, 2), bool),
                         method=DenseCap.region_codes)
  fmap, stride = model.apply(variables, setup.images,
                             method=lambda m, x: m._features(x, False))  # pylint: disable=protected-access
  grid = ops.roi.bilinear_sample(fmap, jnp.asarray([[[20.0, 20.0, 30.0, 28.0]]]), 2,
                                 1.0 / stride, image_size=(64, 64)).reshape(-1)
  dense = variables["params"]["partner"]["Dense_0"]
  assert dense["kernel"].shape == (32 + 7 + 4 * fmap.shape[-1], 4)
  for row, other in ((0, 1), (1, 0)):  # the same intersection either way
    x = jnp.concatenate([codes[0, other, :32], relative_geometry(
        boxes[0, row:row + 1], boxes[0, other:other + 1])[0, 0], grid])
    np.testing.assert_allclose(codes[0, row, 32:36],
                               jax.nn.relu(x @ dense["kernel"] + dense["bias"]),
                               rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(grid).sum()) > 0


def test_partner_context_reads_the_box_overlapping_most(setup):
  """partner_context: after the code, ReLU(Dense) of the partner's code and relative
  geometry, then the found flag: for given boxes by hand from their codes; zero and flag 0
  for a box no other touches; in training the partner of each captioned positive is the
  other ground-truth box (their relative geometry), never the box itself."""
  model = _model(partner_context=4, fg_iou_threshold=0.3, bg_iou_threshold=0.1)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  dense = variables["params"]["partner"]["Dense_0"]
  boxes = jnp.asarray([[[4.0, 6.0, 30.0, 28.0], [20.0, 20.0, 60.0, 50.0],
                        [2.0, 40.0, 14.0, 60.0]]])
  codes, _ = model.apply(variables, setup.images, boxes, jnp.ones((1, 3), bool),
                         method=DenseCap.region_codes)
  assert codes.shape == (1, 3, 32 + 4 + 1)
  own = codes[0, :, :32]
  for row, other in ((0, 1), (1, 0)):
    x = jnp.concatenate([own[other], relative_geometry(boxes[0, row:row + 1],
                                                       boxes[0, other:other + 1])[0, 0]])
    np.testing.assert_allclose(codes[0, row, 32:36], jax.nn.relu(x @ dense["kernel"] + dense["bias"]),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(codes[0, :, 36], [1, 1, 0])
  np.testing.assert_array_equal(codes[0, 2, 32:], 0)
  gt = np.asarray([[4.0, 6.0, 30.0, 28.0], [20.0, 20.0, 60.0, 50.0]], np.float32)
  targets = {**_targets(1), "boxes": jnp.asarray(gt[None])}

  def inputs_of(name, parent, apply):  # (apply's output, the inputs of module `name`)
    seen = []

    def record(next_fun, args, kwargs, context):
      if context.module.name == name and context.module.parent.name == parent:
        seen.append(args)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      out = apply()
    return out, seen[0]

  @jax.jit
  def train(v):  # the partner Dense's input in training
    return inputs_of("Dense_0", "partner", lambda: model.apply(
        v, setup.images, train=True, targets=targets, rngs={"sampling": jax.random.key(3)},
        mutable=["batch_stats"])[0])

  terms, (x,) = train(variables)
  positives = int(terms["positives"])
  assert positives > 2  # proposals among the positives, not just the two gt boxes
  geometry = np.asarray(relative_geometry(jnp.asarray(gt), jnp.asarray(gt)))
  pairs = (geometry[0, 1], geometry[1, 0])
  described = []
  for row in np.asarray(x)[0, :positives, -7:]:
    match = [k for k, g in enumerate(pairs) if np.abs(row - g).max() < 1e-5]
    assert match, row  # the other gt box's geometry, not the box's own (0, 0, 0, 0, 1, 1, 1)
    described += match
  assert set(described) == {0, 1}

  # test time: the partners are the final detections scoring at least partner_min_score
  # (0.5; the confidence bias moved so that the median detection scores 0.5: the same
  # detections in the same order, some above the threshold, some below)
  @jax.jit
  def detect(v):  # the objects PartnerContext reads at test time
    return inputs_of("partner", None, lambda: model.apply(v, setup.images))

  out, _ = detect(variables)
  median = np.median(np.asarray(out["scores"])[np.asarray(out["valid"])])
  confidence = variables["params"]["confidence"]
  variables = {**variables, "params": {**variables["params"], "confidence": {
      **confidence, "bias": confidence["bias"] - np.log(median / (1 - median))}}}
  out, (_, _, _, _, objects, _) = detect(variables)
  valid, high = np.asarray(out["valid"]), np.asarray(out["scores"]) >= model.partner_min_score
  assert (valid & high).any() and (valid & ~high).any()
  np.testing.assert_array_equal(objects, valid & high)
  with pytest.raises(ConfigError, match="partner_context"):
    build_densecap(12, partner_context=-1)
  with pytest.raises(ConfigError, match="partner_min_score"):
    build_densecap(12, partner_min_score=1.5)


def test_mask_head_learns_the_matched_objects_masks(setup):
  """mask_head: a sixth term, Mask R-CNN's mask loss on the LM's positive rows against
  their matched objects' masks; the other terms are the model's without it. With logits of
  a bias b alone (kernel 0), a mask of ones costs softplus(-b) per pixel, zeros
  softplus(b); with fg_iou_threshold 1 the positives are the two appended gt boxes, one
  row each, so a ones mask and a zeros mask average the two. Its gradient reaches the
  backbone; the branch has parameters after `init` (the test path), no output there."""
  exact = dict(fg_iou_threshold=1.0, bg_iou_threshold=0.3)
  model, plain = _model(mask_head=(8,), **exact), _model(**exact)
  assert model.loss_terms == LOSS_TERMS + ("mask",) and model.training_targets == ("masks",)
  variables = host_init(lambda: model.init({"params": jax.random.key(0)}, setup.images))
  assert set(variables["params"]) == set(setup.variables["params"]) | {"mask"}
  ones, zeros = np.ones((64, 64), np.uint8), np.zeros((64, 64), np.uint8)

  def mask_term(params, masks):
    targets = {**_targets(1), "masks": masks}
    terms = model.apply({**variables, "params": params}, setup.images, targets=targets,
                        rngs={"sampling": jax.random.key(2)})
    return terms["mask"], terms

  grad = jax.jit(jax.grad(mask_term, has_aux=True))  # one compile: the terms and gradients
  terms = lambda params, *masks: grad(params, jnp.asarray(np.stack(masks)[None]))
  b = 0.7
  logits = variables["params"]["mask"]["mask_fcn_logits"]
  biased = {**variables["params"], "mask": {**variables["params"]["mask"], "mask_fcn_logits": {
      "kernel": jnp.zeros_like(logits["kernel"]), "bias": jnp.full_like(logits["bias"], b)}}}
  softplus = lambda x: float(np.log1p(np.exp(x)))
  for masks, want in (((ones, ones), softplus(-b)), ((zeros, zeros), softplus(b)),
                      ((ones, zeros), (softplus(-b) + softplus(b)) / 2)):
    _, got = terms(biased, *masks)
    assert float(got["positives"]) == 2
    np.testing.assert_allclose(float(got["mask"]), want, rtol=1e-5)
  grads, got = jax.device_get(terms(variables["params"], ones, zeros))
  base = jax.jit(lambda p: plain.apply({**variables, "params": p}, setup.images,
                                       targets=_targets(1),
                                       rngs={"sampling": jax.random.key(2)}))(
      {k: v for k, v in variables["params"].items() if k != "mask"})
  for k in LOSS_TERMS:
    np.testing.assert_allclose(float(got[k]), float(base[k]), rtol=1e-6, err_msg=k)
  norm = lambda tree: sum(float(np.abs(g).sum()) for g in jax.tree_util.tree_leaves(tree))
  assert norm(grads["backbone"]) > 0 and norm(grads["mask"]) > 0
  assert norm(grads["lm"]) == 0 and norm(grads["rpn"]) == 0
  out = jax.eval_shape(lambda v: model.apply(v, setup.images), variables)
  assert "masks" not in out and out["tokens"].shape == (1, 6, T)
