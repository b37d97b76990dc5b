"""The original project's CNN: three Conv-BN-ReLU-MaxPool-Dropout blocks and two FC layers."""

from __future__ import annotations

import torch
from torch import nn


class BaselineCNN(nn.Module):
    """Seed-project CNN, kept as the baseline every other member must beat.

    Parameters
    ----------
    in_chans : int
        Input bands (3: g, r, i).
    num_classes : int
        1 for a single lens logit.
    drop_rate : float
        Dropout after each block and before the last FC layer.
    widths : tuple of int
        Channels of the three conv blocks.
    input_size : int
        Side of the (square) input in pixels; sets the FC layer's width.
    hidden : int
        Width of the first FC layer.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1, drop_rate: float = 0.25,
                 widths: tuple[int, int, int] = (32, 64, 128), input_size: int = 48,
                 hidden: int = 256) -> None:
        super().__init__()
        blocks = []
        cin = in_chans
        for w in widths:
            blocks += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2), nn.Dropout(drop_rate)]
            cin = w
        self.features = nn.Sequential(*blocks)
        side = input_size // 8
        self.num_features = widths[-1] * side * side
        self.fc1 = nn.Linear(self.num_features, hidden)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, C, S/8, S/8)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)  # (N, C * S/8 * S/8)
        return self.fc2(self.drop(torch.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
