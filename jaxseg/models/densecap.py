"""DenseCap's fully convolutional localization network (FCLN; Johnson, Karpathy & Fei-Fei,
"DenseCap: Fully Convolutional Localization Networks for Dense Captioning", CVPR 2016),
with static shapes.

    DenseCap(backbone, rpn, lm)
    images [B, H, W, 3] in [0, 1] -> normalised -> backbone (jaxseg.models.backbones; the
    map `backbone_level`, e.g. "stride_16") -> localization layer = the RPN of
    `jaxseg.models.detection.rpn` itself (anchors, objectness, box regression, top-k +
    NMS -> proposals; its *_train / *_test top-k fields) -> sampler (`sampler`:
    "bilinear", the paper's bilinear interpolation, `ops.roi.bilinear_sample`, or
    "roi_align") pools pool_size x pool_size per region -> recognition network
    (flatten [+ a context grid] [+ box geometry] -> FC + ReLU per `recognition_widths`,
    each followed in training by dropout at `recognition_dropout` (DenseCap's VGG-16
    fc6 / fc7 use 0.5; 0, the default, none) -> the region code;
    from the code a linear box refinement `box_pred` (4 deltas over the region, box-coder
    weights `box_weights`, zero-initialised as DenseCap's box_reg_branch) and a
    confidence logit `confidence`) -> `LanguageModel` (jaxseg.models.captioning) on the
    code.

`box_geometry` (a jaxseg option, off by default): the box's x1 / W, y1 / H, x2 / W, y2 / H,
w / W, h / H appended to the flattened pooled features, so the code knows the region's
size and position (the paper's regions have no context beyond their pooled grid).
`geometry_width` (with box_geometry; 0, the default: the 6 raw numbers as above): the box
encoded by its own learned layer instead, Dense(geometry_width) + ReLU of those 6 numbers
and the longer and shorter side over the image side and the logs of w / W, h / H and the
longer side (`box_geometry_features`), concatenated with the flattened pooled features:
a handful of raw numbers among thousands of pooled features is easily drowned out.
`context_scale` (a jaxseg option; 0, the default: none): the box enlarged about its
centre by this factor is sampled too (same sampler and pool_size; beyond the image
border the bilinear sampler reads 0) and its flattened grid concatenated with the box's,
so the code sees what surrounds the region (an occluder just outside it).
`fpn_levels` (a jaxseg option; (), the default: none): the `backbone_level` map fused with
these coarser maps by a feature pyramid's top-down pathway (Lin et al., CVPR 2017;
`detection.fpn.FPN` of `fpn_channels`, no extra level); its finest output is the map the
localization layer and the sampler read (a fine grid that also sees the coarse levels'
context: the shape of an occluded object, the object it touches).
`caption_geometry` (a jaxseg option; 0, the default: none): the LM reads each code
concatenated with Dense(caption_geometry) + ReLU of the encoded geometry of the box the
caption describes: the matched ground-truth box in training, the final (refined) box at
test time, the given box in `caption_regions`. Words that are a function of the box
(shapes_captions' size word) are then learnt from exact boxes, not from regions up to
30% off, while every positive still trains the captions.
`object_context` (a jaxseg option; 0, the default: none): the LM reads each region's code
concatenated with what an `ObjectContext` of that width (Hu et al.'s object relation
module) gathers from the image's objects: the ground-truth boxes in training, the given
boxes in `caption_regions`, the final detections at test time (a relation clause names
another object).
`partner_context` (a jaxseg option; 0, the default: none): the LM also reads, for the box
a caption describes, its *partner*: the other object whose box intersects that box most
(`overlap_partner`; among the ground-truth boxes in training, the given boxes in
`caption_regions`, the final detections scoring at least `partner_min_score` at test
time: duplicates and false detections are no partners) through `PartnerContext`:
Dense(partner_context) + ReLU of the partner's region code and their
`relative_geometry`, zero with a 0/1 flag when no other box intersects. A hard choice
where `object_context` learns a soft one: shapes_captions' relation clause names the
object with the largest occluded overlap, the box-intersection argmax 98% of the time.
`partner_overlap` (a jaxseg option; 0, the default: none): PartnerContext also reads a
partner_overlap x partner_overlap grid (the `sampler`'s) of the map in the intersection of
the described box and its partner's: where the two overlap, the one in front shows, so
"behind" / "in front of" can be read there (as the union box's features in visual
relationship detection, Lu et al., ECCV 2016).
`mask_head` (a jaxseg option; (), the default: none): conv widths of Mask R-CNN's mask
branch (He et al., ICCV 2017; `instance_heads.MaskHead`, class-agnostic) on a 14 x 14
RoIAlign of the map at the LM's rows, trained on the matched objects' instance masks
(the source's "masks") as the extra loss term "mask"; nothing at test time. An auxiliary
task: the map must then tell an object's own pixels from its occluder's and the
background, what its shape word and a "behind" clause are read from (Mask R-CNN's
multi-task training improves its boxes too).

Training (`__call__(images, targets=...)`; the "sampling" rng collection draws the
samples, as FasterRCNN): the RPN's own losses ("rpn_objectness", "rpn_box": its
matching, 256 anchors, `RPN.losses`); the proposals (the RPN's training top-k) with the
ground-truth boxes appended (a concatenation with its own valid mask, as Faster R-CNN
implementations do: every gt is then a positive region, which DenseCap's BoxSampler does
not do; it gives the recognition network and the LM well-placed positives from the first
step) are matched to the gt by IoU (positive >= fg_iou_threshold, negative <
bg_iou_threshold, no low-quality matches) and `sampled_regions` per image drawn with up to
`positive_fraction` positives (`roi_heads.sample_rois`, i.e. ops.matching.match +
sample_balanced). Losses over them:
- "confidence": binary logistic loss of the confidence logit, positives 1, negatives 0,
  over the sampled regions, divided by their number (DenseCap's LogisticCriterion);
- "box": smooth L1 (beta `smooth_l1_beta`, 1 as torch's SmoothL1Criterion) of the
  refinement deltas of the positives against their matched gt, summed over the 4
  coordinates and divided by the number of positives (DenseCap's BoxRegressionCriterion
  averages over the 4 P elements: this is 4x that, same minimum);
- "caption": `captioning.caption_loss` (= LanguageModel.loss: token-averaged softmax CE)
  of the positives' codes against their matched gt's tokens; the LM runs on a static
  `top_k` of sampled_regions * positive_fraction rows per image (`caption_rows`, a
  jaxseg option, caps it: an LSTM step costs the same for a padding row), positives
  first, round-robin over their objects (`caption_row_index`), weighted by positivity (no
  boolean indexing). `caption_iou_threshold` (a jaxseg
  option; None, the paper: every positive) keeps only the positives whose IoU with their
  gt is at least that for this term: a caption that depends on the box (e.g. "small" /
  "large" by the box's side) is then learnt from boxes that match it, not from regions
  up to 30% off.
Diagnostics: "positives" (sampled positives per image), "caption_accuracy" (teacher-forced
token accuracy on the positives), "rpn_positives".
Gradients: proposals are stop_gradient'ed in `RPN.propose` (as Faster R-CNN), and the gt
boxes are constants, so although the bilinear sampler is differentiable in the box
coordinates (the paper's point: it backpropagates into the localization layer), here no
gradient reaches the RPN through the regions; the RPN trains on its own two losses only,
as in torchvision's Faster R-CNN. The caption loss trains the LM, the recognition FCs
and the backbone; "box" and "confidence" their heads, the FCs and the backbone.

Test time (`__call__(images)`; `train` only sets batch norm's mode, as FasterRCNN), DenseCap's DenseCapModel.lua: the recognition network
runs on every test proposal; final boxes = the proposals refined by `box_pred`, clipped;
NMS at `final_nms_threshold` over the refined boxes ordered by confidence (DenseCap:
box_utils.nms on final_boxes with the objectness scores), the best
`detections_per_image` kept; the captions are those of the codes of the proposals the
kept detections came from. The LM input is the code pooled at the *proposal* box, not
re-pooled at the refined box: in DenseCapModel.lua the recognition network computes
`roi_codes` once from the RoI features, `final_boxes = ApplyBoxTransform(roi_boxes,
final_box_trans)` and `lm_output = language_model(roi_codes)` in the same pass, then
`updateOutput` indexes final_boxes, scores and lm_output with the same NMS indices. (Here
only the kept codes are decoded, which gives the same captions for less work.)
Outputs (D = min(detections_per_image, the RPN's post_nms_top_n_test)):
{"boxes" [B, D, 4], "scores" [B, D] (sigmoid confidence), "valid" [B, D],
"tokens" [B, D, T], "caption_logprob" [B, D], "proposals", "proposal_valid"}; rows past
the detections: boxes -1, scores 0, tokens PAD, logprob 0. `decode` "greedy" or "beam"
(`beam_size` beams; DenseCap's run_model uses argmax sampling by default).

`caption_regions(images, boxes, valid)`: captions of given boxes (e.g. the ground truth);
`region_codes(images, boxes, valid)`: what the LM reads for them (probing);
`region_log_likelihood(images, tokens [Q, T])`: the final detections and log p(query |
region code) [B, D, Q] (-inf for rows past the detections) -- retrieval by text.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses, ops
from jaxseg.errors import ConfigError
from jaxseg.models.backbones import get_backbone, level_stride
from jaxseg.models.captioning import PAD, LanguageModel, caption_loss, token_accuracy
from jaxseg.models.detection import _fields, _plain
from jaxseg.models.detection.body import backbone_maps
from jaxseg.models.detection.fpn import FPN
from jaxseg.models.detection.instance_heads import MaskHead, mask_loss, mask_targets
from jaxseg.models.detection.roi_heads import sample_rois
from jaxseg.models.detection.rpn import ANCHOR_CONVENTIONS, RPN
from jaxseg.models.heads import IMAGENET_MEAN, IMAGENET_STD

SAMPLERS = ("bilinear", "roi_align")
DECODERS = ("greedy", "beam")
LOSS_TERMS = ("rpn_objectness", "rpn_box", "box", "confidence", "caption")
MASK_RESOLUTION = 14  # of mask_head's RoIAlign; its masks are twice that


def box_geometry_features(boxes, image_hw, encoded: bool = False):
  """Boxes [..., 4] (pixels) -> x1 / W, y1 / H, x2 / W, y2 / H, w / W, h / H [..., 6];
  `encoded`: also the longer and the shorter of w / W, h / H and the logs of w / W, h / H
  and the longer side (floored at 1e-3) [..., 11]."""
  h, w = (float(v) for v in image_hw)
  corners = boxes.astype(jnp.float32) / jnp.asarray([w, h, w, h], jnp.float32)
  sides = corners[..., 2:] - corners[..., :2]
  parts = [corners, sides]
  if encoded:
    longer = jnp.max(sides, -1, keepdims=True)
    logs = jnp.log(jnp.maximum(jnp.concatenate([sides, longer], -1), 1e-3))
    parts += [longer, jnp.min(sides, -1, keepdims=True), logs]
  return jnp.concatenate(parts, -1)


def relative_geometry(boxes, others):
  """Boxes [..., R, 4] and others [..., M, 4] (pixel xyxy) -> [..., R, M, 7]: the other's
  centre offset over the box's size (dx / w, dy / h), log(w' / w), log(h' / h) (Hu et al.'s
  relative geometry, signed), their IoU, and the intersection over each one's area."""
  def parts(b):
    wh = jnp.maximum(b[..., 2:] - b[..., :2], 1e-3)
    return (b[..., :2] + b[..., 2:]) / 2, wh
  (c, wh), (c2, wh2) = parts(boxes[..., :, None, :]), parts(others[..., None, :, :])
  inter = ops.boxes.pairwise_intersection(boxes, others)
  area, area2 = jnp.prod(wh, -1), jnp.prod(wh2, -1)
  return jnp.concatenate([(c2 - c) / wh, jnp.log(wh2 / wh),
                          jnp.stack([inter / (area + area2 - inter), inter / area,
                                     inter / area2], -1)], -1)


class ObjectContext(nn.Module):
  """What a region's caption may need from the image's other objects: the object relation
  module of Hu et al. ("Relation Networks for Object Detection", CVPR 2018) over a set of
  object regions. Per head, region r attends over the objects m with weights
  softmax_m(log(g_rm) + q_r . k_m / sqrt(d)), g_rm = ReLU of a small MLP of their
  `relative_geometry` (overlap included), q / k / v linear in the codes; the heads' sums of
  v are concatenated with the region's own code -> [..., R, D + width]."""
  width: int
  heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, codes, boxes, object_codes, object_boxes, object_valid):
    """codes [B, R, D], boxes [B, R, 4]; the objects' codes [B, M, D], boxes [B, M, 4] and
    valid [B, M] -> [B, R, D + width] (the context part 0 without a valid object)."""
    if self.width % self.heads:
      raise ValueError(f"object context width {self.width} is not a multiple of its "
                       f"{self.heads} heads")
    b, r, m, h = codes.shape[0], codes.shape[1], object_codes.shape[1], self.heads
    d = self.width // h
    geometry = relative_geometry(boxes.astype(jnp.float32), object_boxes.astype(jnp.float32))
    g = nn.relu(nn.Dense(h, dtype=self.dtype, name="geometry_out")(
        nn.relu(nn.Dense(32, dtype=self.dtype, name="geometry_in")(geometry.astype(self.dtype)))))
    q = nn.Dense(self.width, dtype=self.dtype, name="query")(codes).reshape(b, r, h, d)
    k = nn.Dense(self.width, dtype=self.dtype, name="key")(object_codes).reshape(b, m, h, d)
    v = nn.Dense(self.width, dtype=self.dtype, name="value")(object_codes).reshape(b, m, h, d)
    logits = (jnp.einsum("brhd,bmhd->brmh", q, k).astype(jnp.float32) / jnp.sqrt(float(d))
              + jnp.log(jnp.maximum(g.astype(jnp.float32), 1e-6)))
    valid = object_valid.astype(bool)[:, None, :, None]
    weights = jax.nn.softmax(jnp.where(valid, logits, -1e9), axis=2) * valid
    context = jnp.einsum("brmh,bmhd->brhd", weights.astype(self.dtype), v)
    return jnp.concatenate([codes, context.reshape(b, r, self.width).astype(codes.dtype)], -1)


def overlap_partner(described, described_index, object_boxes, object_valid):
  """The object each described box [B, R, 4] intersects most among the objects [B, M, 4]
  (`object_valid` [B, M]) other than itself (object `described_index` [B, R]) -> (index
  [B, R], found [B, R]: some valid other object's box intersects it; ties: the first)."""
  inter = ops.boxes.pairwise_intersection(described.astype(jnp.float32),
                                          object_boxes.astype(jnp.float32))
  m = object_boxes.shape[-2]
  other = object_valid.astype(bool)[:, None, :] & (jnp.arange(m) != described_index[..., None])
  inter = jnp.where(other, inter, 0.0)
  return jnp.argmax(inter, -1), jnp.max(inter, -1) > 0


class PartnerContext(nn.Module):
  """A caption's partner object (`overlap_partner`): Dense(width) + ReLU of the partner's
  code, its `relative_geometry` to the described box and, with `overlap_features` (boxes
  [B, R, 4] -> [B, R, F]), those of the two boxes' intersection
  (`ops.boxes.elementwise_intersection`), zero where there is no partner, and a 0/1 flag
  of whether there is one -> [..., R, width + 1]."""
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, described, described_index, object_codes, object_boxes, object_valid,
               overlap_features=None):
    index, found = overlap_partner(described, described_index, object_boxes, object_valid)
    take = lambda x: jnp.take_along_axis(x, index[..., None], 1)
    geometry = relative_geometry(described.astype(jnp.float32)[..., None, :],
                                 take(object_boxes).astype(jnp.float32)[..., None, :])
    parts = [take(object_codes), geometry[..., 0, 0, :]]
    if overlap_features is not None:
      parts.append(overlap_features(ops.boxes.elementwise_intersection(
          described, take(object_boxes))))
    x = jnp.concatenate([p.astype(self.dtype) for p in parts], -1)
    flag = found[..., None].astype(self.dtype)
    return jnp.concatenate([nn.relu(nn.Dense(self.width, dtype=self.dtype)(x)) * flag, flag], -1)


class DenseCap(nn.Module):
  """Backbone + RPN (localization layer) + sampler + recognition network + LM (see the
  module docstring)."""
  backbone: nn.Module
  rpn: RPN
  lm: LanguageModel
  sampler: str = "bilinear"  # SAMPLERS
  pool_size: int = 7
  backbone_level: str = "stride_16"
  recognition_widths: Sequence[int] = (4096, 4096)
  recognition_dropout: float = 0.0  # after each recognition FC in training (DenseCap: 0.5)
  box_geometry: bool = False
  geometry_width: int = 0  # > 0: the box geometry through Dense(geometry_width) + ReLU
  context_scale: float = 0.0  # > 0: also sample the box enlarged by this factor
  object_context: int = 0  # > 0: the LM also gets ObjectContext of this width
  object_context_heads: int = 4
  fpn_levels: Sequence[str] = ()  # coarser backbone maps fused into backbone_level's
  fpn_channels: int = 64
  caption_geometry: int = 0  # > 0: the LM also reads the described box's geometry
  partner_context: int = 0  # > 0: the LM also reads the described box's partner object
  partner_min_score: float = 0.5  # test time: detections scoring less are no partner
  partner_overlap: int = 0  # > 0: PartnerContext also reads this grid of the intersection
  mask_head: Sequence[int] = ()  # conv widths of the auxiliary mask branch; (): none
  sampled_regions: int = 256
  positive_fraction: float = 0.5
  fg_iou_threshold: float = 0.7
  bg_iou_threshold: float = 0.3
  caption_iou_threshold: float | None = None  # None: every positive (the paper)
  caption_rows: int | None = None  # LM rows per image; None: sampled * positive_fraction
  box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
  smooth_l1_beta: float = 1.0
  final_nms_threshold: float = 0.3
  detections_per_image: int = 100
  decode: str = "greedy"  # DECODERS
  beam_size: int = 3
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  dtype: Any = jnp.float32

  needs_proposals = False

  @property
  def loss_terms(self) -> tuple[str, ...]:
    return LOSS_TERMS + (("mask",) if self.mask_head else ())

  @property
  def training_targets(self) -> tuple[str, ...]:
    """Per-object ground truth the loss reads besides boxes and tokens (the source's)."""
    return ("masks",) if self.mask_head else ()

  def setup(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"sampler={self.sampler!r}; expected one of {SAMPLERS}")
    if self.decode not in DECODERS:
      raise ValueError(f"decode={self.decode!r}; expected one of {DECODERS}")
    self.recognition = [nn.Dense(w, dtype=self.dtype) for w in self.recognition_widths]
    self.recognition_drop = nn.Dropout(self.recognition_dropout)
    self.box_pred = nn.Dense(4, dtype=self.dtype, kernel_init=nn.initializers.zeros)
    self.confidence = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01))
    if self.geometry_width < 0:
      raise ValueError(f"geometry_width={self.geometry_width}; expected >= 0")
    if self.box_geometry and self.geometry_width:
      self.geometry_fc = nn.Dense(self.geometry_width, dtype=self.dtype)
    if self.object_context:
      self.relation = ObjectContext(self.object_context, self.object_context_heads, self.dtype)
    if self.fpn_levels:
      self.fpn = FPN(self.fpn_channels, extra_pool=False, dtype=self.dtype)
    if self.caption_geometry:
      self.caption_geometry_fc = nn.Dense(self.caption_geometry, dtype=self.dtype)
    if self.partner_context:
      self.partner = PartnerContext(self.partner_context, self.dtype)
    if self.mask_head:
      self.mask = MaskHead(1, tuple(self.mask_head), MASK_RESOLUTION, self.dtype)

  # -- parts ---------------------------------------------------------------------------
  def _features(self, images, train: bool):
    """(the backbone map [B, Hf, Wf, C] (with fpn_levels: the pyramid's finest), its
    stride)."""
    maps = backbone_maps(self.backbone, images, (self.backbone_level, *self.fpn_levels),
                         self.pixel_mean, self.pixel_std, train)
    fmap = self.fpn(maps)[0] if self.fpn_levels else maps[0]
    return fmap, images.shape[1] // fmap.shape[1]

  def _pool(self, fmap, stride, boxes, image_hw, size: int):
    """The `sampler`'s size x size grid of each box [B, R, 4] on the map, flattened
    [B, R, size * size * C]."""
    if self.sampler == "bilinear":
      out = ops.roi.bilinear_sample(fmap, boxes, size, 1.0 / stride, image_size=image_hw)
    else:
      out = ops.roi.roi_align(fmap, boxes, size, 1.0 / stride, 2, True)
    return out.reshape(out.shape[:2] + (-1,)).astype(self.dtype)

  def _codes(self, fmap, stride, boxes, image_hw, dropout: bool = False):
    """Regions [B, R, 4] -> (codes [B, R, D], deltas [B, R, 4], confidence logits [B, R]);
    `dropout`: recognition_dropout after each FC (the "dropout" rng collection)."""
    pool = lambda regions: self._pool(fmap, stride, regions, image_hw, self.pool_size)
    x = pool(boxes)
    if self.context_scale:
      centre = (boxes[..., :2] + boxes[..., 2:]) / 2
      half = (boxes[..., 2:] - boxes[..., :2]) * (self.context_scale / 2)
      x = jnp.concatenate([x, pool(jnp.concatenate([centre - half, centre + half], -1))], -1)
    if self.box_geometry:
      geometry = box_geometry_features(boxes, image_hw, encoded=bool(self.geometry_width))
      if self.geometry_width:
        geometry = nn.relu(self.geometry_fc(geometry.astype(self.dtype)))
      x = jnp.concatenate([x, geometry.astype(self.dtype)], -1)
    for fc in self.recognition:
      x = nn.relu(fc(x))
      if dropout and self.recognition_dropout:
        x = self.recognition_drop(x, deterministic=False)
    deltas = self.box_pred(x).astype(jnp.float32)
    logits = self.confidence(x)[..., 0].astype(jnp.float32)
    return x, deltas, logits

  def _caption_codes(self, fmap, stride, codes, boxes, described, described_index, image_hw,
                     object_codes, object_boxes, object_valid):
    """The LM's input for regions (their boxes [B, R, 4]) that describe the objects
    `described_index` [B, R] (boxes `described` [B, R, 4]) among the objects (the image's
    gt boxes in training, the given boxes or the final detections at test time): their
    codes, with object_context also what `ObjectContext` gathers from the objects, with
    caption_geometry also the described boxes' geometry, with partner_context also their
    `PartnerContext` (with partner_overlap, of the map (`fmap` of `stride`) sampled in the
    described box's intersection with its partner's)."""
    parts = [codes]
    if self.object_context:
      parts = [self.relation(codes, boxes, object_codes, object_boxes, object_valid)]
    if self.caption_geometry:
      geometry = box_geometry_features(described, image_hw, encoded=True)
      parts.append(nn.relu(self.caption_geometry_fc(geometry.astype(self.dtype))))
    if self.partner_context:
      overlap = None
      if self.partner_overlap:  # the map in the two boxes' intersection
        overlap = lambda b: self._pool(fmap, stride, b, image_hw, self.partner_overlap)
      parts.append(self.partner(described, described_index, object_codes, object_boxes,
                                object_valid, overlap))
    return jnp.concatenate(parts, -1) if len(parts) > 1 else parts[0]

  def _decode(self, codes):
    """codes [N, D] -> (tokens [N, T], logprob [N]) with `decode`."""
    if self.decode == "beam":
      return self.lm.beam_search(codes, self.beam_size)
    return self.lm.greedy(codes)

  def _captions(self, codes, valid):
    """codes [B, K, D], valid [B, K] -> tokens [B, K, T] (PAD rows where not valid),
    logprob [B, K] (0 there)."""
    b, k = valid.shape
    tokens, logprob = self._decode(codes.reshape(b * k, -1))
    tokens = jnp.where(valid[..., None], tokens.reshape(b, k, -1), PAD)
    return tokens, jnp.where(valid, logprob.reshape(b, k), 0.0)

  def _detect(self, images, train: bool = False):
    """The test pipeline up to the captions: (detections dict, kept codes [B, D, Dc])."""
    image_hw = tuple(images.shape[1:3])
    fmap, stride = self._features(images, train)
    if self.mask_head and self.is_initializing():  # the training-only branch's parameters
      self.mask(jnp.zeros((1, 1, MASK_RESOLUTION, MASK_RESOLUTION, fmap.shape[-1]), self.dtype))
    rpn_out = self.rpn([fmap], [stride], image_hw, train=False)
    proposals, proposal_valid = rpn_out["proposals"], rpn_out["proposal_valid"]
    codes, deltas, logits = self._codes(fmap, stride, proposals, image_hw)
    boxes = ops.boxes.decode(deltas, proposals, self.box_weights)
    boxes = ops.boxes.clip_boxes(boxes, float(image_hw[0]), float(image_hw[1]))
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = proposal_valid & (wh[..., 0] > 0) & (wh[..., 1] > 0)
    d = min(self.detections_per_image, proposals.shape[1])
    keep = jax.vmap(lambda bx, sc, v: ops.nms.nms(bx, sc, self.final_nms_threshold, d,
                                                  valid=v)[0])(boxes, logits, ok)
    valid = keep >= 0
    safe = jnp.maximum(keep, 0)
    take = lambda x: jnp.take_along_axis(x, safe.reshape(safe.shape + (1,) * (x.ndim - 2)), 1)
    out = {"boxes": jnp.where(valid[..., None], take(boxes), -1.0),
           "scores": jnp.where(valid, jax.nn.sigmoid(take(logits)), 0.0),
           "valid": valid, "proposals": proposals, "proposal_valid": proposal_valid}
    kept_codes = take(codes)  # the context objects: the detections at their final boxes
    objects = valid & (out["scores"] >= self.partner_min_score) if self.partner_context else valid
    return out, self._caption_codes(fmap, stride, kept_codes, take(proposals), out["boxes"],
                                    _row_index(valid), image_hw, kept_codes, out["boxes"],
                                    objects)

  # -- the three entry points ----------------------------------------------------------
  def __call__(self, images, train: bool = False, targets=None):
    if targets is None:
      out, codes = self._detect(images, train)
      out["tokens"], out["caption_logprob"] = self._captions(codes, out["valid"])
      return out
    return self._losses(images, train, targets)

  def region_codes(self, images, boxes, valid):
    """What the LM reads for given boxes [B, K, 4] (pixel xyxy; `valid` [B, K]): (codes
    [B, K, D'] (the region codes, with object_context their context from the other valid
    boxes), confidence logits [B, K]); e.g. for probing what a trained network encodes."""
    image_hw = tuple(images.shape[1:3])
    valid = valid.astype(bool)
    fmap, stride = self._features(images, False)
    boxes = jnp.where(valid[..., None], boxes.astype(jnp.float32), 0.0)
    codes, _, logits = self._codes(fmap, stride, boxes, image_hw)
    return self._caption_codes(fmap, stride, codes, boxes, boxes, _row_index(valid), image_hw,
                               codes, boxes, valid), logits

  def caption_regions(self, images, boxes, valid):
    """Captions of given boxes [B, K, 4] (pixel xyxy; `valid` [B, K]) -> {"tokens"
    [B, K, T], "caption_logprob" [B, K], "scores" [B, K] (sigmoid confidence)}; rows not
    valid: PAD, 0, 0."""
    valid = valid.astype(bool)
    codes, logits = self.region_codes(images, boxes, valid)
    tokens, logprob = self._captions(codes, valid)
    return {"tokens": tokens, "caption_logprob": logprob,
            "scores": jnp.where(valid, jax.nn.sigmoid(logits), 0.0)}

  def region_log_likelihood(self, images, tokens):
    """The final detections ("boxes", "scores", "valid") and "query_logprob" [B, D, Q]:
    log p(tokens[q] | code of detection d) (LanguageModel.log_likelihood, up to and
    including END), -inf for rows past the detections."""
    out, codes = self._detect(images)
    b, d, c = codes.shape
    q = tokens.shape[0]
    flat_codes = jnp.broadcast_to(codes[:, :, None], (b, d, q, c)).reshape(-1, c)
    flat_tokens = jnp.broadcast_to(tokens.astype(jnp.int32)[None, None],
                                   (b, d) + tokens.shape).reshape(b * d * q, -1)
    ll = self.lm.log_likelihood(flat_codes, flat_tokens).reshape(b, d, q)
    return {"boxes": out["boxes"], "scores": out["scores"], "valid": out["valid"],
            "query_logprob": jnp.where(out["valid"][..., None], ll, -jnp.inf)}

  # -- training ------------------------------------------------------------------------
  def _losses(self, images, train, targets):
    image_hw = tuple(images.shape[1:3])
    fmap, stride = self._features(images, train)
    rpn_out = self.rpn([fmap], [stride], image_hw, train=True)
    rpn_rng, roi_rng = jax.random.split(self.make_rng("sampling"))
    gt_boxes = targets["boxes"].astype(jnp.float32)
    gt_valid = targets["valid"].astype(bool)
    gt_tokens = targets["tokens"].astype(jnp.int32)
    terms = self.rpn.losses(rpn_out["objectness"], rpn_out["deltas"], rpn_out["anchors"],
                            gt_boxes, gt_valid, rpn_rng)
    regions, classes, box_targets, sampled, matched = sample_rois(
        rpn_out["proposals"], rpn_out["proposal_valid"], gt_boxes,
        jnp.ones(gt_valid.shape, jnp.int32), gt_valid, roi_rng, self.sampled_regions,
        self.positive_fraction, self.fg_iou_threshold, self.bg_iou_threshold,
        self.box_weights)
    positive = sampled & (classes > 0)
    codes, deltas, logits = self._codes(fmap, stride, regions, image_hw, dropout=train)
    terms["confidence"] = losses.sigmoid_binary_cross_entropy(logits, positive, sampled)
    terms["box"] = losses.masked_box_loss(deltas, jax.lax.stop_gradient(box_targets),
                                          positive, positive, self.smooth_l1_beta)
    captioned = positive
    if self.caption_iou_threshold is not None:  # captions only on regions this tight
      gt_of = jnp.take_along_axis(gt_boxes, jnp.maximum(matched, 0)[..., None], 1)
      tight = ops.boxes.elementwise_iou(regions, gt_of) >= self.caption_iou_threshold
      captioned = positive & tight
    # the LM on a static number of rows per image: the captioned positives first
    quota = min(regions.shape[1], max(1, int(self.sampled_regions * self.positive_fraction)))
    if self.caption_rows is not None:
      quota = min(quota, self.caption_rows)
    rows = caption_row_index(captioned, matched, quota)
    pos = jnp.take_along_axis(captioned, rows, 1)
    pos_codes = jnp.take_along_axis(codes, rows[..., None], 1)
    gt_index = jnp.take_along_axis(matched, rows, 1)
    gt_safe = jnp.where(gt_valid[..., None], gt_boxes, 0.0)
    gt_codes = None
    if self.object_context or self.partner_context:  # the objects: the image's gt boxes
      gt_codes, _, _ = self._codes(fmap, stride, gt_safe, image_hw, dropout=train)
    described = jnp.take_along_axis(gt_safe, jnp.maximum(gt_index, 0)[..., None], 1)
    row_regions = jnp.take_along_axis(regions, rows[..., None], 1)
    pos_codes = self._caption_codes(fmap, stride, pos_codes, row_regions, described, gt_index,
                                    image_hw, gt_codes, gt_safe, gt_valid)
    if self.mask_head:  # the matched objects' masks in the LM's positive rows
      pooled = ops.roi.roi_align(fmap, row_regions, MASK_RESOLUTION, 1.0 / stride, 2, True)
      mask_target = mask_targets(targets["masks"], row_regions, jnp.maximum(gt_index, 0),
                                 2 * MASK_RESOLUTION)
      terms["mask"] = mask_loss(self.mask(pooled), jnp.zeros_like(gt_index), mask_target, pos)
    pos_tokens = jnp.take_along_axis(gt_tokens, gt_index[..., None], 1)  # [B, quota, T]
    b = regions.shape[0]
    flat_tokens = pos_tokens.reshape(b * quota, -1)
    weights = pos.reshape(-1).astype(jnp.float32)
    lm_logits = self.lm(pos_codes.reshape(b * quota, -1), flat_tokens)
    terms["caption"] = caption_loss(lm_logits, flat_tokens, weights)
    terms["caption_accuracy"] = token_accuracy(lm_logits, flat_tokens, weights)
    terms["positives"] = jnp.sum(positive) / b
    return terms


def caption_row_index(captioned, matched, rows: int):
  """The `rows` regions per image the LM reads [B, rows] (indices into the sampled
  regions): the captioned ones [B, S] first, taken round-robin over the objects they match
  (`matched` [B, S]): every object's first region in sampling order, then every object's
  second, and so on; then the others. A quota below the captioned count thus drops the
  surplus of the objects with the most regions, never an object."""
  s = captioned.shape[1]
  same = (matched[..., :, None] == matched[..., None, :]) & captioned[..., None, :]
  rank = jnp.sum(same & jnp.tri(s, k=-1, dtype=bool), -1)  # its object's regions before it
  order = jnp.where(captioned, rank * s, s * s) + jnp.arange(s)  # ascending: the LM's order
  _, index = jax.lax.top_k(-order.astype(jnp.float32), rows)
  return index


def _row_index(valid):
  """[B, K] -> each row's own index [B, K] (regions that describe objects of the same list)."""
  return jnp.broadcast_to(jnp.arange(valid.shape[1]), valid.shape)


def build_densecap(num_words: int, dtype: Any = jnp.float32, *, backbone: str = "resnet18",
                   backbone_args=None, backbone_level: str = "stride_16", rpn=None, lm=None,
                   **densecap_fields) -> DenseCap:
  """DenseCap over a vocabulary of `num_words` ids (specials included: len(Vocab));
  `rpn`: fields of `RPN` (config.model.rpn), `lm`: fields of `LanguageModel` less
  vocab_size (config.model.lm), the rest fields of `DenseCap` (config.model.*).
  Unknown fields, samplers or decoders -> ConfigError."""
  densecap_fields = dict(_plain(densecap_fields))
  fields = _fields(DenseCap, densecap_fields, "config.model")
  if fields.get("sampler", "bilinear") not in SAMPLERS:
    raise ConfigError(f"config.model.sampler={fields['sampler']!r}; expected one of "
                      f"{SAMPLERS}")
  if fields.get("decode", "greedy") not in DECODERS:
    raise ConfigError(f"config.model.decode={fields['decode']!r}; expected one of {DECODERS}")
  if int(fields.get("geometry_width", 0)) < 0:
    raise ConfigError(f"config.model.geometry_width={fields['geometry_width']!r}; expected >= 0 "
                      "(0: the raw box geometry)")
  if not 0 <= float(fields.get("recognition_dropout", 0.0)) < 1:
    raise ConfigError(f"config.model.recognition_dropout={fields['recognition_dropout']!r}; "
                      "expected a rate in [0, 1)")
  width, heads = int(fields.get("object_context", 0)), int(fields.get("object_context_heads", 4))
  if width < 0 or heads < 1 or width % heads:
    raise ConfigError(f"config.model.object_context={width}, object_context_heads={heads}; "
                      "expected a width >= 0 (0: none) that is a multiple of heads >= 1")
  for key in ("caption_geometry", "partner_context", "partner_overlap"):
    if int(fields.get(key, 0)) < 0:
      raise ConfigError(f"config.model.{key}={fields[key]!r}; expected >= 0 (0: none)")
  if int(fields.get("partner_overlap", 0)) and not int(fields.get("partner_context", 0)):
    raise ConfigError(f"config.model.partner_overlap={fields['partner_overlap']!r} without "
                      "partner_context; expected partner_context > 0 (the overlap is read "
                      "with the partner)")
  if fields.get("fpn_levels"):
    if int(fields.get("fpn_channels", 64)) < 1:
      raise ConfigError(f"config.model.fpn_channels={fields['fpn_channels']!r}; expected >= 1")
    levels = [str(backbone_level), *fields["fpn_levels"]]
    strides = [level_stride(k) for k in levels]
    if None in strides or strides != sorted(set(strides)):
      raise ConfigError(f"config.model.fpn_levels={list(fields['fpn_levels'])!r} with "
                        f"backbone_level={backbone_level!r}; expected backbone maps "
                        "'stride_<n>' each coarser than the one before, e.g. "
                        "('stride_8', 'stride_16', 'stride_32') after 'stride_4'")
  if not 0 <= float(fields.get("partner_min_score", 0.5)) <= 1:
    raise ConfigError(f"config.model.partner_min_score={fields['partner_min_score']!r}; "
                      "expected a score in [0, 1]")
  if float(fields.get("context_scale", 0.0)) < 0:
    raise ConfigError(f"config.model.context_scale={fields['context_scale']!r}; expected >= 0 "
                      "(0: no context)")
  if fields.get("caption_rows") is not None and int(fields["caption_rows"]) < 1:
    raise ConfigError(f"config.model.caption_rows={fields['caption_rows']!r}; expected >= 1 "
                      "(None: sampled_regions * positive_fraction)")
  if any(int(w) < 1 for w in fields.get("mask_head", ())):
    raise ConfigError(f"config.model.mask_head={list(fields['mask_head'])!r}; expected conv "
                      "widths >= 1 ((): no mask branch)")
  if int(fields.get("beam_size", 3)) < 1:
    raise ConfigError(f"config.model.beam_size={fields['beam_size']!r}; expected >= 1")
  rpn = _fields(RPN, dict(_plain(rpn or {})), "config.model.rpn")
  if rpn.get("anchor_convention", "jaxseg") not in ANCHOR_CONVENTIONS:
    raise ConfigError(f"config.model.rpn.anchor_convention={rpn['anchor_convention']!r}; "
                      f"expected one of {ANCHOR_CONVENTIONS}")
  if len(rpn.get("anchor_sizes", ((32.0, 64.0, 128.0),))) != 1:
    raise ConfigError(f"config.model.rpn.anchor_sizes={rpn['anchor_sizes']!r}; DenseCap reads "
                      "one feature level: give one sequence of sizes")
  lm = dict(_plain(lm or {}))
  if "vocab_size" in lm:
    raise ConfigError("config.model.lm.vocab_size is set; the vocabulary size comes from the "
                      f"dataset's vocabulary ({num_words} ids)")
  lm = _fields(LanguageModel, lm, "config.model.lm")
  if num_words < 5:
    raise ConfigError(f"a vocabulary of {num_words} ids; expected the 4 special tokens and "
                      "at least one word")
  for key in ("pixel_mean", "pixel_std"):  # None: the ImageNet defaults (as build_detector)
    if key in fields and fields[key] is None:
      del fields[key]
  for key in ("pixel_mean", "pixel_std", "box_weights", "recognition_widths", "fpn_levels",
              "mask_head"):
    if key in fields:
      fields[key] = tuple(fields[key])
  backbone_args = dict(_plain(backbone_args or {}))
  backbone_args.setdefault("dtype", dtype)
  return DenseCap(backbone=get_backbone(backbone, **backbone_args),
                  rpn=RPN(dtype=dtype, **rpn),
                  lm=LanguageModel(vocab_size=int(num_words), dtype=dtype, **lm),
                  backbone_level=str(backbone_level), dtype=dtype, **fields)


__all__ = ["DECODERS", "DenseCap", "LOSS_TERMS", "MASK_RESOLUTION", "ObjectContext",
           "PartnerContext", "SAMPLERS", "box_geometry_features", "build_densecap",
           "caption_row_index", "overlap_partner", "relative_geometry"]
