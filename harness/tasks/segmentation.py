"""Segmentation of synthetic shapes: which pixels belong to the discs, among squares and noise.

Each grey ``size`` x ``size`` image holds one to three bright discs (the foreground, class 1, brightness 1)
and as many dimmer squares (background, class 0, brightness 0.5) on Gaussian noise: with noise 0.3 no
single pixel tells them apart, so the net must pool its neighbourhood. ``foreground`` sets the share of pixels the discs cover on average (from ~1% to ~20%:
their radius follows it), so class imbalance is one knob. Targets are per-pixel class indices ``[N, H, W]``
(target kind ``mask``); the model, a small fully convolutional net with dilated 3x3 convolutions, gives
per-pixel logits ``[N, 2, H, W]``. Metrics, per image then averaged: Dice and IoU of the foreground
(primary: test/dice), and pixel accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness import HarnessError
from harness.tasks import Data, Split, Task, check_number, check_positive_int, check_seed, split_indices


def shapes(n: int, size: int, foreground: float, noise: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """n images [n, 1, size, size] and their masks [n, size, size] (1 where a disc is)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    counts = torch.randint(1, 4, (n,), generator=g)
    # a disc of radius r covers pi r^2 pixels: r such that the image's discs cover `foreground` of it on average
    radius = torch.sqrt(foreground * size * size / (math.pi * counts.float()))
    images = torch.zeros(n, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for k in range(3):
        on = (counts > k).float()[:, None, None]
        r = (radius * (0.8 + 0.4 * torch.rand(n, generator=g)))[:, None, None]
        cy, cx = (torch.rand(2, n, generator=g) * size)[:, :, None, None]
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).float() * on
        sy, sx = (torch.rand(2, n, generator=g) * size)[:, :, None, None]
        square = (((yy - sy).abs() <= r * 0.9) & ((xx - sx).abs() <= r * 0.9)).float() * on
        images = torch.maximum(images, torch.maximum(disc, 0.5 * square))
        masks = torch.maximum(masks, disc.long())
    images = images + noise * torch.randn(n, size, size, generator=g)
    return images.unsqueeze(1), masks


def fcn(channels: int = 8) -> nn.Sequential:
    """Four 3x3 convolutions (dilation 1, 2, 4, 8: a 31-pixel receptive field) + ReLU, then 1x1 to 2 logits."""
    layers: list[nn.Module] = []
    width = 1
    for d in (1, 2, 4, 8):
        layers += [nn.Conv2d(width, channels, 3, padding=d, dilation=d), nn.ReLU()]
        width = channels
    layers.append(nn.Conv2d(width, 2, 1))
    return nn.Sequential(*layers)


def segmentation_metrics(logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Per image, then averaged: the foreground's Dice and IoU (1 for an image with no foreground predicted or
    true), and pixel accuracy."""
    pred = logits.argmax(dim=1)
    fg_pred, fg_true = (pred == 1).flatten(1).float(), (y == 1).flatten(1).float()
    inter = (fg_pred * fg_true).sum(1)
    total = fg_pred.sum(1) + fg_true.sum(1)
    union = total - inter
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(inter))
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return {"dice": dice.mean(), "iou": iou.mean(), "pixel_accuracy": (pred == y).float().mean()}


class Segmentation(Task):
    name = "segmentation"
    targets = ("mask",)
    primary_metric = "test/dice"
    num_classes = 2

    def __init__(
        self,
        n_train: int = 1000,
        n_val: int = 300,
        n_test: int = 500,
        size: int = 32,
        foreground: float = 0.05,
        noise: float = 0.3,
        channels: int = 8,
        data_seed: int = 0,
    ):
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        self.size = check_positive_int("task.size", size)
        if self.size < 8:
            raise HarnessError(f"task.size must be at least 8 pixels, got {size}")
        self.foreground = check_number("task.foreground", foreground, 0.0, "a share of pixels in (0, 0.3]")
        if not 0 < self.foreground <= 0.3:
            raise HarnessError(f"task.foreground must be a share of pixels in (0, 0.3], got {foreground!r}")
        self.noise = check_number("task.noise", noise, 0.0, "a number >= 0 (the noise's standard deviation)")
        self.channels = check_positive_int("task.channels", channels)
        self.data_seed = check_seed("task.data_seed", data_seed)

    def load(self) -> Data:
        n = sum(self.sizes)
        x, y = shapes(n, self.size, self.foreground, self.noise, torch.Generator().manual_seed(self.data_seed))
        return Data(*(Split(x[i], y[i]) for i in split_indices(n, self.sizes, self.data_seed)))

    def model(self) -> nn.Module:
        return fcn(self.channels)

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        return segmentation_metrics(output, y)
