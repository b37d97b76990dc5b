"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 projection when the block changes width or resolution."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.short = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.short(x))


class MultiScaleBlock(nn.Module):
    """Residual block whose first conv has two receptive fields (dilation 1 and 2) in parallel."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        half = cout // 2
        self.near = nn.Conv2d(cin, half, 3, stride, 1, bias=False)
        self.far = nn.Conv2d(cin, cout - half, 3, stride, 2, dilation=2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.short = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.near(x), self.far(x)], dim=1)
        out = self.act(self.bn1(out))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.short(x))
