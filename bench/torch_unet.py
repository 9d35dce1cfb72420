"""PyTorch (eager, float32) twin of `EncoderDecoder(num_classes, base_width, depth)`.

Benchmark-only reference: jaxseg never imports torch. Same layer structure as the flax
model: per stage two (conv3x3 no bias -> BatchNorm -> ReLU), 2x2 max pooling,
ConvTranspose2d(kernel=2, stride=2) upsampling, concatenated skips (upsampled first, then
skip, as in the flax model), 1x1 classifier with bias. Same parameter count.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
  return nn.Sequential(
      nn.Conv2d(cin, cout, 3, padding=1, bias=False),
      nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5), nn.ReLU(inplace=True),
      nn.Conv2d(cout, cout, 3, padding=1, bias=False),
      nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5), nn.ReLU(inplace=True))


class TorchUNet(nn.Module):
  """Images [N, 3, H, W] in [0, 1] -> logits [N, num_classes, H, W]."""

  def __init__(self, num_classes: int = 4, base_width: int = 32, depth: int = 4,
               pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
    super().__init__()
    widths = [base_width * 2**i for i in range(depth + 1)]
    self.register_buffer("mean", torch.tensor(pixel_mean).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(pixel_std).view(1, 3, 1, 1))
    self.down = nn.ModuleList()
    cin = 3
    for w in widths[:-1]:
      self.down.append(conv_block(cin, w))
      cin = w
    self.bottleneck = conv_block(cin, widths[-1])
    cin = widths[-1]
    self.ups = nn.ModuleList()
    self.up_blocks = nn.ModuleList()
    for w in reversed(widths[:-1]):
      self.ups.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
      self.up_blocks.append(conv_block(2 * w, w))
      cin = w
    self.classifier = nn.Conv2d(cin, num_classes, 1)

  def forward(self, images):
    x = (images - self.mean) / self.std
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
      x = block(torch.cat([up(x), skip], dim=1))
    return self.classifier(x)


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


class TorchTrainer:
  """Eager train step: forward + softmax cross-entropy + backward + Adam step."""

  def __init__(self, images_nhwc: np.ndarray, labels_nhw: np.ndarray, num_classes: int = 4,
               base_width: int = 32, depth: int = 4, channels_last: bool = True,
               threads: int | None = None, lr: float = 1e-3):
    if threads:
      torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.model = TorchUNet(num_classes, base_width, depth).to(memory_format=fmt).train()
    self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
    self.images = torch.from_numpy(np.ascontiguousarray(
        images_nhwc.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
    self.labels = torch.from_numpy(np.asarray(labels_nhw, np.int64))

  def step(self) -> float:
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
