"""Training augmentations on normalised images (torch): D4, noise and PSF jitter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Augmentation settings, stored in the model card's training section."""

    d4: bool = True  # random flips and 90-degree rotations
    noise_jitter: float = 0.5  # extra Gaussian noise up to this many sky sigma
    psf_jitter: float = 0.6  # extra Gaussian blur up to this sigma, pixels
    flux_jitter: float = 0.15  # overall brightness scale 1 +- this

    def to_dict(self) -> dict:
        return asdict(self)


def d4(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply one of the 8 dihedral transforms per sample. x: (N, C, H, W), square."""
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    out = torch.empty_like(x)
    for r in range(4):
        for f in (False, True):
            idx = ((k == r) & (flip == f)).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            y = x[idx]
            if f:
                y = y.flip(-1)
            out[idx] = torch.rot90(y, r, dims=(-2, -1))
    return out


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur; sigma: (N,) pixels."""
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # (N, 7)
    k = k / k.sum(dim=1, keepdim=True)
    n, c, h, w = x.shape
    y = x.reshape(1, n * c, h, w)
    kx = k.repeat_interleave(c, 0)[:, None, None, :]  # (N*C, 1, 1, 7)
    ky = k.repeat_interleave(c, 0)[:, None, :, None]  # (N*C, 1, 7, 1)
    y = torch.nn.functional.conv2d(y, kx, padding=(0, radius), groups=n * c)
    y = torch.nn.functional.conv2d(y, ky, padding=(radius, 0), groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x: torch.Tensor, a: Augment, gen: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch of normalised images (N, 3, H, W) in sky-sigma units."""
    n = x.shape[0]
    if a.flux_jitter > 0:
        scale = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * a.flux_jitter
        x = x * scale
    if a.psf_jitter > 0:
        sigma = torch.rand(n, generator=gen) * a.psf_jitter
        x = _blur(x, sigma)
    if a.noise_jitter > 0:
        amp = torch.rand(n, 1, 1, 1, generator=gen) * a.noise_jitter
        x = x + amp * torch.randn(x.shape, generator=gen)
    if a.d4:
        x = d4(x, gen)
    return x
