"""DenseCap (Johnson, Karpathy & Fei-Fei, CVPR 2016) on the embedded shapes with region
captions (`shapes_captions`: a sentence per object, e.g. "a large red circle behind a
blue square"): the fully convolutional localization network with an LSTM language model.

./launch.sh train experiments/dense_captioning/densecap_shapes.py
Variants: `:small` (64 x 64), `:tiny` (seconds; tests).
The paper's network is VGG-16 with 4096-wide recognition FCs and a 512-unit LSTM on
720 px Visual Genome images; here a ResNet-18 of width 16 read at stride 4, 1024-wide
FCs, a 384-unit LSTM and an auxiliary mask branch on 128 px images, 32 regions sampled
per image (the LM runs on 8 rows per image: the positives, `caption_rows`; 16 is the
paper's every positive). The loss weights are 1 for every term but the mask branch's 2
(the paper's code weighs the localization layer's box 0.05 and objectness 0.1, the
recognition box and confidence 0.1 and the captions 1: set config.loss.*_weight for
them).
`model.box_geometry` (a jaxseg option, not the paper's) gives the recognition network
the box's normalised position and size, so "small" / "large" can be told apart.
Explored on this machine (gt-box exact match / dense-captioning mAP at the last step):
stride-8 features, 256-wide FCs, LSTM 256, 2000 steps: 0.46 / 0.79; stride 4: 4000
steps 0.55 / 0.88; this config 0.575 / 0.893; with model.caption_iou_threshold=0.9
0.563 / 0.821; model.geometry_width=64 (the box geometry through its own Dense + ReLU)
0.586 / 0.906; that and model.context_scale=2.0 (the grid of the box enlarged 2x too)
0.581 / 0.895: both within noise, so off here (README "Dense captioning"); 8000 or
16000 training images 0.591 / 0.905 both; model.object_context=256 0.534 / 0.830 (with
8000 images 0.570 / 0.860), off. `model.caption_geometry=64` (the LM also reads the
geometry of the box it describes: the matched gt box in training) 0.645 / 0.888, on:
size-word errors fall from 0.10 to 0.02 of the boxes; with it, model.fpn_levels=
('stride_8', 'stride_16', 'stride_32') (an FPN of 64 channels) 0.654 / 0.881 at 1.5x
the step time, off. `model.partner_context=64` (the LM also reads the code and relative
geometry of the box's partner, the other object whose box overlaps it most: the gt boxes
in training, detections scoring >= model.partner_min_score=0.5 at test) 0.667 / 0.911,
METEOR 0.650 -> 0.678: on; with 8000 training images 0.669 / 0.890, so 2000 stay.
`model.lm.code_every_step=True` (par-inject: the LM's projected input biases its gates at
every step, so the clause's object need not be carried from before START) 0.745 / 0.903:
on; the clause's object, wrong on 0.199 of the boxes, is wrong on 0.057.
`model.caption_rows=8` (the LM reads 8 rows per image, the captioned positives taken
round-robin over their objects, instead of 16 of which about half were padding late in
training): the step 184 -> 143 ms, 0.750 / 0.904: on. `model.partner_overlap=3` (the
partner part also reads a 3 x 3 grid of the map in the intersection of the two boxes)
0.742 / 0.917, the clause's direction no better: off. `model.mask_head=(32, 32)` (Mask
R-CNN's mask branch on the LM's rows, trained on the objects' instance masks: an
auxiliary loss, nothing at test time) 0.773 / 0.934, METEOR 0.673 -> 0.749, shape errors
0.071 -> 0.043 of the boxes: on, with config.loss.mask_weight=2.0 0.780 / 0.944 (seed 1:
0.782 / 0.941; weight 4 0.764 / 0.932); with partner_overlap=3 0.761 / 0.934. Without the
mask branch, `model.lm.hidden_dim=512` (the paper's) 0.744 / 0.912 and
`model.pool_size=10` 0.709 / 0.905: neither better.
Where the gt-box captions go wrong: `python -m
jaxseg.tasks.dense_captioning WORKDIR`; what the codes hold: `./launch.sh bench
densecap_probe --workdir=WORKDIR`.
"""
from ml_collections.config_dict import placeholder

from jaxseg import configs

LOSS = dict(rpn_objectness_weight=1.0, rpn_box_weight=1.0, box_weight=1.0,
            confidence_weight=1.0, caption_weight=1.0, mask_weight=2.0)


def get_config(arg=None):
  model = dict(
      name="densecap", backbone="resnet18", backbone_args=dict(width=16),
      backbone_level="stride_4",
      rpn=dict(anchor_sizes=((16.0, 32.0, 64.0),), aspect_ratios=(0.5, 1.0, 2.0),
               pre_nms_top_n_train=600, post_nms_top_n_train=300, pre_nms_top_n_test=300,
               post_nms_top_n_test=100, nms_threshold=0.7, batch_size_per_image=128),
      sampler="bilinear", pool_size=7, recognition_widths=(1024, 1024),
      recognition_dropout=0.0, box_geometry=True,
      geometry_width=0, context_scale=0.0, object_context=0, object_context_heads=4,
      fpn_levels=(), fpn_channels=64, caption_geometry=64, partner_context=64,
      partner_min_score=0.5, partner_overlap=0, mask_head=(32, 32),
      sampled_regions=32, positive_fraction=0.5, fg_iou_threshold=0.7, bg_iou_threshold=0.3,
      caption_iou_threshold=placeholder(float), caption_rows=8, final_nms_threshold=0.3,
      detections_per_image=20,
      decode="greedy", lm=dict(embed_dim=256, hidden_dim=384, code_every_step=True))
  tiny = dict(backbone_args=dict(width=4),
              rpn=dict(anchor_sizes=((8.0, 16.0),), pre_nms_top_n_train=64,
                       post_nms_top_n_train=32, pre_nms_top_n_test=32, post_nms_top_n_test=16,
                       batch_size_per_image=32),
              backbone_level="stride_8", recognition_widths=(16,), sampled_regions=16,
              detections_per_image=8, mask_head=(4,),
              lm=dict(embed_dim=8, hidden_dim=16))
  small = dict(rpn=dict(anchor_sizes=((8.0, 16.0, 32.0),)))
  c = configs.detection(
      arg, model, tiny, small, task="dense_captioning", best_metric="map", loss=LOSS,
      dataset=dict(name="shapes_captions", max_caption_length=10),
      run=dict(num_steps=5000, eval_every=2500, checkpoint_every=500),
      optimizer=dict(lr=1e-3, warmup_steps=100, weight_decay=1e-4, grad_clip_norm=10.0))
  c.vocab = dict(min_count=1, max_size=None)
  return c.lock()
