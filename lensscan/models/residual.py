"""The image less its smooth, round part: each band minus its median over one-pixel annuli about
the cutout's centre.

A deflector's light is close to a function of radius; an arc, or a few images of a source, cover
a small part of each annulus, so the annulus median is the galaxy's and what is left is the
lensed light (and the galaxy's departures from roundness). Renderers differ most in how they
draw the galaxy (profile, size, brightness): given this residual beside the image, a member can
look at arcs with less of the galaxy's shape in the way. A full Einstein ring is removed too;
it stays in the image channels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def annuli(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(members, ring)``: for each one-pixel annulus about the centre the flat indices of its
    pixels, padded with ``h * w`` (an index past the image), shape (A, M); and each pixel's
    annulus, shape (h * w,)."""
    yy, xx = np.mgrid[:h, :w]
    ring = np.floor(np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)).astype(np.int64).ravel()
    counts = np.bincount(ring)
    members = np.full((len(counts), counts.max()), h * w, np.int64)
    for a in range(len(counts)):
        pix = np.flatnonzero(ring == a)
        members[a, : len(pix)] = pix
    return torch.from_numpy(members), torch.from_numpy(ring)


class RadialResidual(nn.Module):
    """``x`` (N, C, H, W) minus, per image and band, the median of its annulus (no weights)."""

    def __init__(self) -> None:
        super().__init__()
        self._maps: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _annuli(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self._maps:
            self._maps[key] = tuple(t.to(x.device) for t in annuli(*key[:2]))
        return self._maps[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, ring = self._annuli(x)
        n, c = x.shape[:2]
        pad = torch.full((n, c, 1), float("nan"), dtype=x.dtype, device=x.device)
        flat = torch.cat([x.flatten(2), pad], dim=2)  # (N, C, H*W + 1)
        median = flat[:, :, members].nanmedian(dim=3).values  # (N, C, A)
        return x - median[:, :, ring].view_as(x)
