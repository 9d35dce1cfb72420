"""PyTorch (eager, float32) twins of jaxseg segmentation models, for bench/train_step.py.

Benchmark-only reference: jaxseg never imports torch, and this file imports no jaxseg.
`build_twin(flax_model)` reads the fields of a jaxseg model instance and returns the same
network in PyTorch (NCHW, images in [0, 1] -> logits [N, num_classes, H, W]), with the
same parameter count; it raises `NotImplementedError` for settings no twin covers
(the benchmark then prints "n/a"). Twins:

  EncoderDecoder (U-Net / encoder-decoder)  `TorchUNet`: per stage two 3x3 ConvNormAct,
      2x2 max pool (or strided ConvNormAct), transpose-conv upsampling (kernel 2 unless
      `upsample_kernel`, with bias), skip concatenation [upsampled, skip], 1x1 classifier.
  FCN (32s / 16s / 8s)  `TorchFCN`: VGG stages of 3x3 ConvNormAct + 2x2 max pool, fc6
      (`head_kernel_size` ConvNormAct) and fc7 (1x1 ConvNormAct), 1x1 score_fr (bias),
      fusions up2 = ConvTranspose2d(k=4, s=2, p=1, no bias, bilinear init) + 1x1 score_poolX
      (bias, zero init), fixed bilinear (half-pixel) upsampling to the input size.
  DeepLabV3Plus  `TorchDeepLabV3Plus`: ResNet (basic or bottleneck blocks, "small" or
      "imagenet" stem, atrous later stages at output stride 8/16, multi-grid) -> ASPP
      (1x1, one 3x3 per rate, image pooling; or the rate-1 baseline) -> 1x1 project;
      decoder: bilinear up to stride 4, concat with 1x1-reduced stride-4 features, two 3x3
      ConvNormAct, 1x1 classifier, bilinear x4.

ConvNormAct is conv (no bias when normalized) -> BatchNorm (momentum 0.1 = flax 0.9,
eps 1e-5) -> ReLU, with conv types "standard", "depthwise_separable" (depthwise kxk ->
BN -> ReLU -> pointwise 1x1) and "spatially_separable" (kx1 then 1xk). Convolutions pad
like XLA's 'SAME' (asymmetric (0, 1) for a stride-2 3x3 conv on an even size), so every
feature map has the jaxseg shape; dropout with rate 0 is omitted as in flax.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
  """(low, high) padding of XLA's 'SAME' for one spatial axis."""
  total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
  return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
  """nn.Conv2d with XLA 'SAME' padding (symmetric padding when it is, else F.pad)."""

  def __init__(self, cin, cout, kernel_size, stride=1, dilation=1, groups=1, bias=True):
    super().__init__(cin, cout, kernel_size, stride=stride, padding=0, dilation=dilation,
                     groups=groups, bias=bias)

  def forward(self, x):
    (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
    ph, pw = _same_pads(x.shape[-2], kh, sh, dh), _same_pads(x.shape[-1], kw, sw, dw)
    if ph[0] == ph[1] and pw[0] == pw[1]:
      padding = (ph[0], pw[0])
    else:
      x, padding = F.pad(x, (pw[0], pw[1], ph[0], ph[1])), 0
    return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


def batch_norm(c: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


def dropout(rate: float) -> nn.Module:
  return nn.Dropout(rate) if rate else nn.Identity()


class DepthwiseSeparableConv(nn.Module):
  """jaxseg.models.layers.DepthwiseSeparableConv."""

  def __init__(self, cin, cout, k=3, stride=1, dilation=1, norm=True, use_bias=True):
    super().__init__()
    self.depthwise = Conv2dSame(cin, cin, k, stride, dilation, groups=cin, bias=not norm)
    self.bn = batch_norm(cin) if norm else nn.Identity()
    self.pointwise = nn.Conv2d(cin, cout, 1, bias=use_bias)

  def forward(self, x):
    return self.pointwise(F.relu(self.bn(self.depthwise(x)), inplace=True))


class ConvNormAct(nn.Module):
  """jaxseg.models.layers.ConvNormAct: conv -> [BatchNorm] -> [ReLU]."""

  def __init__(self, cin, cout, k=3, stride=1, norm=True, activation=True, dilation=1,
               conv_type="standard"):
    super().__init__()
    bias = not norm
    if conv_type == "standard":
      self.conv = Conv2dSame(cin, cout, k, stride, dilation, bias=bias)
    elif conv_type == "depthwise_separable":
      self.conv = DepthwiseSeparableConv(cin, cout, k, stride, dilation, norm, use_bias=bias)
    elif conv_type == "spatially_separable":
      self.conv = nn.Sequential(
          Conv2dSame(cin, cout, (k, 1), (stride, 1), (dilation, 1), bias=False),
          Conv2dSame(cout, cout, (1, k), (1, stride), (1, dilation), bias=bias))
    else:
      raise NotImplementedError(f"conv_type {conv_type!r}")
    self.bn = batch_norm(cout) if norm else nn.Identity()
    self.activation = activation

  def forward(self, x):
    x = self.bn(self.conv(x))
    return F.relu(x, inplace=True) if self.activation else x


def conv_block(cin: int, cout: int, num_convs: int = 2, norm: bool = True,
               conv_type: str = "standard") -> nn.Sequential:
  """jaxseg.models.layers.ConvBlock: `num_convs` 3x3 ConvNormAct."""
  return nn.Sequential(*[ConvNormAct(cin if i == 0 else cout, cout, 3, norm=norm,
                                     conv_type=conv_type) for i in range(num_convs)])


def bilinear_upsample(x, factor: int):
  """jaxseg.ops.bilinear_upsample (half-pixel centres, edge-clamped)."""
  if factor == 1:
    return x
  return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class Normalize(nn.Module):

  def __init__(self, pixel_mean, pixel_std):
    super().__init__()
    self.register_buffer("mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1))

  def forward(self, images):
    return (images - self.mean) / self.std


# ------------------------------------------------------------------------------ U-Net


class TorchUNet(nn.Module):
  """EncoderDecoder(num_classes, base_width, depth, skip_connections, downsample,
  upsample='transpose', upsample_kernel, norm, conv_type, dropout_rate)."""

  def __init__(self, num_classes: int = 4, base_width: int = 32, depth: int = 4,
               skip_connections: bool = True, downsample: str = "maxpool",
               upsample: str = "transpose", upsample_kernel: int | None = None,
               norm: bool = True, conv_type: str = "standard", dropout_rate: float = 0.0,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    super().__init__()
    if upsample != "transpose":
      raise NotImplementedError(f"U-Net twin: upsample={upsample!r} (only 'transpose')")
    if downsample not in ("maxpool", "strided"):
      raise NotImplementedError(f"U-Net twin: downsample={downsample!r}")
    widths = [base_width * 2**i for i in range(depth + 1)]
    self.normalize = Normalize(pixel_mean, pixel_std)
    self.skip_connections = skip_connections
    block = lambda cin, cout: conv_block(cin, cout, 2, norm, conv_type)
    self.down = nn.ModuleList()
    self.downsample = nn.ModuleList()
    cin = 3
    for w in widths[:-1]:
      self.down.append(block(cin, w))
      self.downsample.append(nn.MaxPool2d(2) if downsample == "maxpool" else
                             ConvNormAct(w, w, 3, stride=2, norm=norm))
      cin = w
    self.bottleneck = block(cin, widths[-1])
    self.dropout = dropout(dropout_rate)
    cin = widths[-1]
    k = upsample_kernel or 2
    pad = max(0, -(-(k - 2) // 2))
    self.ups = nn.ModuleList()
    self.up_blocks = nn.ModuleList()
    for w in reversed(widths[:-1]):
      self.ups.append(nn.ConvTranspose2d(cin, w, k, stride=2, padding=pad,
                                         output_padding=2 - k + 2 * pad))
      self.up_blocks.append(block(2 * w if skip_connections else w, w))
      cin = w
    self.classifier = nn.Conv2d(cin, num_classes, 1)

  def forward(self, images):
    x = self.normalize(images)
    skips = []
    for block, down in zip(self.down, self.downsample):
      x = block(x)
      skips.append(x)
      x = down(x)
    x = self.dropout(self.bottleneck(x))
    for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
      x = up(x)
      if self.skip_connections:
        x = torch.cat([x, skip], dim=1)
      x = block(x)
    return self.classifier(x)


# ------------------------------------------------------------------------------ FCN

FCN_VARIANTS = {"32s": 0, "16s": 1, "8s": 2}


def bilinear_transpose_kernel(k: int, channels: int) -> torch.Tensor:
  """ConvTranspose2d weight [C, C, k, k] of jaxseg's `bilinear_kernel_init` (FCN)."""
  factor = (k + 1) // 2
  center = factor - 1 if k % 2 == 1 else factor - 0.5
  filt1d = 1 - np.abs(np.arange(k) - center) / factor
  weight = np.zeros((channels, channels, k, k), np.float32)
  weight[np.arange(channels), np.arange(channels)] = np.outer(filt1d, filt1d)
  return torch.from_numpy(weight)


class TorchFCN(nn.Module):
  """FCN(num_classes, variant, stage_widths, stage_convs, head_width, head_kernel_size,
  upsample='transpose', conv_type, norm, dropout_rate)."""

  def __init__(self, num_classes: int, variant: str = "8s",
               stage_widths=(16, 32, 64, 128, 128), stage_convs=(2, 2, 3, 3, 3),
               head_width: int = 256, head_kernel_size: int = 7, upsample: str = "transpose",
               conv_type: str = "standard", norm: bool = True, dropout_rate: float = 0.0,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    super().__init__()
    if upsample != "transpose":
      raise NotImplementedError(f"FCN twin: upsample={upsample!r} (only 'transpose')")
    self.fusions = FCN_VARIANTS[variant]
    self.num_stages = len(stage_widths)
    self.normalize = Normalize(pixel_mean, pixel_std)
    self.stages = nn.ModuleList()
    cin = 3
    for w, n in zip(stage_widths, stage_convs):
      self.stages.append(conv_block(cin, w, n, norm, conv_type))
      cin = w
    # fc6 / fc7 / score layers are standard convs whatever `conv_type` (as in fcn.py).
    self.fc6 = nn.Sequential(ConvNormAct(cin, head_width, head_kernel_size, norm=norm),
                             dropout(dropout_rate))
    self.fc7 = nn.Sequential(ConvNormAct(head_width, head_width, 1, norm=norm),
                             dropout(dropout_rate))
    self.score_fr = nn.Conv2d(head_width, num_classes, 1)
    self.upscores = nn.ModuleList()
    self.score_pools = nn.ModuleList()
    for j in range(1, self.fusions + 1):
      up = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
      with torch.no_grad():
        up.weight.copy_(bilinear_transpose_kernel(4, num_classes))
      self.upscores.append(up)
      skip = nn.Conv2d(stage_widths[self.num_stages - j - 1], num_classes, 1)
      nn.init.zeros_(skip.weight)
      nn.init.zeros_(skip.bias)
      self.score_pools.append(skip)

  def forward(self, images):
    x = self.normalize(images)
    pools = []  # pools[i]: max-pooled output of stage i + 1 (stride 2**(i + 1))
    for stage in self.stages:
      x = F.max_pool2d(stage(x), 2)
      pools.append(x)
    score = self.score_fr(self.fc7(self.fc6(x)))
    for j, (up, skip) in enumerate(zip(self.upscores, self.score_pools), start=1):
      score = up(score) + skip(pools[self.num_stages - j - 1])
    return bilinear_upsample(score, 2**(self.num_stages - self.fusions))


# ------------------------------------------------------------------------------ DeepLab v3+


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, features, stride=1, dilation=1, conv_type="standard", norm=True):
    super().__init__()
    out = features * self.expansion
    self.body = nn.Sequential(
        ConvNormAct(cin, features, 3, stride, norm, dilation=dilation, conv_type=conv_type),
        ConvNormAct(features, out, 3, 1, norm, activation=False, dilation=dilation,
                    conv_type=conv_type))
    self.shortcut = (ConvNormAct(cin, out, 1, stride, norm, activation=False)
                     if stride != 1 or cin != out else nn.Identity())

  def forward(self, x):
    return F.relu(self.body(x) + self.shortcut(x), inplace=True)


class BottleneckBlock(nn.Module):
  expansion = 4

  def __init__(self, cin, features, stride=1, dilation=1, conv_type="standard", norm=True):
    super().__init__()
    out = features * self.expansion
    self.body = nn.Sequential(
        ConvNormAct(cin, features, 1, norm=norm),
        ConvNormAct(features, features, 3, stride, norm, dilation=dilation,
                    conv_type=conv_type),
        ConvNormAct(features, out, 1, norm=norm, activation=False))
    self.shortcut = (ConvNormAct(cin, out, 1, stride, norm, activation=False)
                     if stride != 1 or cin != out else nn.Identity())

  def forward(self, x):
    return F.relu(self.body(x) + self.shortcut(x), inplace=True)


class TorchResNet(nn.Module):
  """jaxseg.models.backbones.resnet.ResNet: dict of features by nominal stride."""

  def __init__(self, stage_sizes=(2, 2, 2, 2), block="basic", width=64, stem="imagenet",
               output_stride=32, multi_grid=(1,), conv_type="standard", norm=True,
               frozen_bn=False):
    super().__init__()
    self.stem_type, self.frozen_bn = stem, frozen_bn
    if stem == "imagenet":
      self.stem = nn.ModuleList([ConvNormAct(3, width, 7, 2, norm)])
    elif stem == "small":
      self.stem = nn.ModuleList([ConvNormAct(3, width, 3, 1, norm),
                                 ConvNormAct(width, width, 3, 2, norm)])
    else:
      raise NotImplementedError(f"ResNet twin: stem={stem!r}")
    block_cls = BottleneckBlock if block == "bottleneck" else BasicBlock
    self.stages = nn.ModuleList()
    cin, stride, dilation = width, 4, 1
    for i, num_blocks in enumerate(stage_sizes):
      stage_stride = 1 if i == 0 else 2
      if stride * stage_stride > output_stride:
        dilation *= stage_stride
        stage_stride = 1
      stride *= stage_stride
      last_stage = i == len(stage_sizes) - 1
      blocks = []
      for j in range(num_blocks):
        grid = multi_grid[j % len(multi_grid)] if last_stage else 1
        blocks.append(block_cls(cin, width * 2**i, stage_stride if j == 0 else 1,
                                dilation * grid, conv_type, norm))
        cin = width * 2**i * block_cls.expansion
      self.stages.append(nn.Sequential(*blocks))
    self.out_features = cin

  def train(self, mode: bool = True):
    super().train(mode)
    if self.frozen_bn:  # BatchNorm always on its running statistics
      for m in self.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.eval()
    return self

  def forward(self, x):
    features = {}
    if self.stem_type == "imagenet":
      x = self.stem[0](x)
      features["stride_2"] = x
      x = F.max_pool2d(x, 3, 2, padding=1)
    else:
      x = self.stem[1](self.stem[0](x))
      features["stride_2"] = x
      x = F.max_pool2d(x, 2)
    for i, stage in enumerate(self.stages):
      x = stage(x)
      features[f"stride_{4 * 2**i}"] = x
    return features


class TorchASPP(nn.Module):
  """jaxseg.models.segmentation.deeplab.ASPP."""

  def __init__(self, cin, features=256, atrous_rates=(6, 12, 18), aspp=True,
               conv_type="standard", norm=True):
    super().__init__()
    self.aspp = aspp
    self.conv1x1 = ConvNormAct(cin, features, 1, norm=norm)
    self.atrous = nn.ModuleList([
        ConvNormAct(cin, features, 3, norm=norm, dilation=rate if aspp else 1,
                    conv_type=conv_type) for rate in atrous_rates])
    # image_pooling (aspp=True) or local1x1 (aspp=False): the same 1x1 ConvNormAct.
    self.last = ConvNormAct(cin, features, 1, norm=norm)
    self.project = ConvNormAct(features * (len(atrous_rates) + 2), features, 1, norm=norm)

  def forward(self, x):
    branches = [self.conv1x1(x)] + [conv(x) for conv in self.atrous]
    if self.aspp:
      pooled = self.last(x.mean(dim=(2, 3), keepdim=True))
      branches.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
    else:
      branches.append(self.last(x))
    return self.project(torch.cat(branches, dim=1))


class TorchDeepLabV3Plus(nn.Module):
  """DeepLabV3Plus(num_classes, ...) with the same fields as the flax model."""

  def __init__(self, num_classes: int, stage_sizes=(1, 1, 1, 1), block="basic", width=16,
               stem="imagenet", output_stride=16, multi_grid=(1,),
               backbone_conv_type="standard", frozen_bn=False, aspp=True, atrous_rates=None,
               aspp_features=64, low_level_features=16, decoder_features=64,
               conv_type="standard", norm=True, dropout_rate=0.0,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    super().__init__()
    if atrous_rates is None:
      atrous_rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
    self.output_stride = output_stride
    self.normalize = Normalize(pixel_mean, pixel_std)
    self.backbone = TorchResNet(stage_sizes, block, width, stem, output_stride, multi_grid,
                                backbone_conv_type, norm, frozen_bn)
    self.aspp = TorchASPP(self.backbone.out_features, aspp_features, atrous_rates, aspp,
                          conv_type, norm)
    low_in = width * (4 if block == "bottleneck" else 1)
    self.low_level_reduce = ConvNormAct(low_in, low_level_features, 1, norm=norm)
    self.decoder = nn.Sequential(
        ConvNormAct(aspp_features + low_level_features, decoder_features, 3, norm=norm,
                    conv_type=conv_type),
        ConvNormAct(decoder_features, decoder_features, 3, norm=norm, conv_type=conv_type),
        dropout(dropout_rate))
    self.classifier = nn.Conv2d(decoder_features, num_classes, 1)

  def forward(self, images):
    feats = self.backbone(self.normalize(images))
    x = self.aspp(feats["stride_32"])
    low = self.low_level_reduce(feats["stride_4"])
    x = bilinear_upsample(x, self.output_stride // 4)
    x = self.decoder(torch.cat([x, low], dim=1))
    return bilinear_upsample(self.classifier(x), 4)


# ------------------------------------------------------------------------------ builders

_TWINS = {
    "EncoderDecoder": (TorchUNet, ("num_classes", "base_width", "depth", "skip_connections",
                                   "downsample", "upsample", "upsample_kernel", "norm",
                                   "conv_type", "dropout_rate", "pixel_mean", "pixel_std")),
    "FCN": (TorchFCN, ("num_classes", "variant", "stage_widths", "stage_convs", "head_width",
                       "head_kernel_size", "upsample", "conv_type", "norm", "dropout_rate",
                       "pixel_mean", "pixel_std")),
    "DeepLabV3Plus": (TorchDeepLabV3Plus, (
        "num_classes", "stage_sizes", "block", "width", "stem", "output_stride", "multi_grid",
        "backbone_conv_type", "frozen_bn", "aspp", "atrous_rates", "aspp_features",
        "low_level_features", "decoder_features", "conv_type", "norm", "dropout_rate",
        "pixel_mean", "pixel_std")),
}


def build_twin(flax_model) -> nn.Module:
  """The PyTorch twin of a jaxseg model instance (its class and dataclass fields).

  Raises NotImplementedError where there is none (other models, upsampling methods other
  than transpose convolutions, a compute dtype other than float32).
  """
  name = type(flax_model).__name__
  if name not in _TWINS:
    raise NotImplementedError(f"no PyTorch twin of {name}")
  dtype = getattr(flax_model, "dtype", None)
  if dtype is not None and np.dtype(dtype) != np.float32:
    raise NotImplementedError(f"{name} twin: dtype {np.dtype(dtype).name} (float32 only)")
  cls, fields = _TWINS[name]
  torch.manual_seed(0)
  return cls(**{f: getattr(flax_model, f) for f in fields})


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


class TorchTrainer:
  """Eager train step: forward + softmax cross-entropy + backward + Adam step."""

  def __init__(self, model: nn.Module, images_nhwc: np.ndarray, labels_nhw: np.ndarray,
               channels_last: bool = True, threads: int | None = None, lr: float = 1e-3):
    if threads:
      torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.model = model.to(memory_format=fmt).train()
    self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
    self.images = torch.from_numpy(np.ascontiguousarray(
        images_nhwc.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
    self.labels = torch.from_numpy(np.asarray(labels_nhw, np.int64))

  def step(self) -> torch.Tensor:
    self.opt.zero_grad(set_to_none=True)
    logits = self.model(self.images)
    loss = F.cross_entropy(logits, self.labels)
    loss.backward()
    self.opt.step()
    return loss

  def timed_step(self) -> float:
    t = time.perf_counter()
    float(self.step().detach())  # eager CPU is synchronous; .item() for good measure
    return time.perf_counter() - t
