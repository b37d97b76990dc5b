"""Residual networks sized for 48-64 pixel cutouts: a plain ResNet and a multi-scale variant."""

from __future__ import annotations

import torch
from torch import nn

from lensscan.models.layers import BasicBlock, MultiScaleBlock, conv_bn
from lensscan.models.residual import RadialResidual


class SmallResNet(nn.Module):
    """ResNet-style classifier: 3x3 stride-2 stem, four stages of basic blocks, global pooling.

    Parameters
    ----------
    in_chans, num_classes, drop_rate
        As for every lensscan architecture.
    widths : tuple of int
        Channels of the four stages (each after the first halves the resolution).
    depths : tuple of int
        Blocks per stage.
    residual : bool
        Also feed the stem each band less its annulus median about the centre
        (:mod:`lensscan.models.residual`): ``2 * in_chans`` input channels. A member trained
        without it starts a run with it, the new channels' weights at zero.
    """

    block = BasicBlock

    def __init__(self, in_chans: int = 3, num_classes: int = 1, drop_rate: float = 0.1,
                 widths: tuple[int, ...] = (24, 48, 96, 192),
                 depths: tuple[int, ...] = (1, 1, 1, 1), residual: bool = False) -> None:
        super().__init__()
        self.residual = RadialResidual() if residual else None
        self.stem = self._stem(2 * in_chans if residual else in_chans, widths[0])
        stages = []
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            blocks = [self.block(cin, w, stride=1 if i == 0 else 2)]
            blocks += [self.block(w, w) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)

    def _stem(self, cin: int, cout: int) -> nn.Module:
        return conv_bn(cin, cout, 3, stride=2)

    def forward_features(self, x: torch.Tensor,
                         residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual``: ``self.residual(x)`` when the caller has it already (an ensemble
        computes it once for all its members)."""
        if self.residual is not None:
            x = torch.cat([x, self.residual(x) if residual is None else residual], dim=1)
        return self.stages(self.stem(x))  # (N, C, S/16, S/16)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return self.fc(self.drop(x))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, residual))


class MultiScaleStem(nn.Module):
    """Parallel 3x3, 5x5 and 7x7 convolutions (arcs of all widths), concatenated, then pooled."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        each = cout // 3
        sizes = (each, each, cout - 2 * each)
        self.branches = nn.ModuleList(
            [conv_bn(cin, c, k) for c, k in zip(sizes, (3, 5, 7), strict=True)]
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.cat([b(x) for b in self.branches], dim=1))  # (N, C, S/2, S/2)


class MultiScaleResNet(SmallResNet):
    """Multi-scale residual CNN: multi-kernel stem and dilated/undilated residual blocks."""

    block = MultiScaleBlock

    def _stem(self, cin: int, cout: int) -> nn.Module:
        return MultiScaleStem(cin, cout)
