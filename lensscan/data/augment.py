"""Training augmentations on normalised images (torch): D4, noise, PSF, flux and colour jitter.

Every function runs on the device its input is on, drawing from a generator on that device (a
GPU trains without a host round trip); on CPU the draws and the arithmetic are those of the
CPU-only version before, so CPU training is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch


@dataclass(frozen=True)
class Augment:
    """Augmentation settings, stored in the model card's training section."""

    d4: bool = True  # random flips and 90-degree rotations
    noise_jitter: float = 0.5  # extra Gaussian noise up to this many sky sigma
    psf_jitter: float = 0.6  # extra Gaussian blur up to this sigma, pixels
    flux_jitter: float = 0.15  # overall brightness scale 1 +- this
    colour_jitter: float = 0.08  # per-band calibration offset, +- mag (colours of everything)
    band_psf_jitter: float = 0.3  # extra per-band blur up to this sigma, pixels (chromatic PSF)
    # a smooth residual of the sky's subtraction (gradients, halos), up to this many sky sigma
    # per band; off by default: at 1.0 it gained on held-out over-subtraction and lost on the
    # other families (README, "The robustness matrix")
    background_jitter: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augment:
        """Settings from a dict (a card's, or ``--augment KEY=VALUE``): an unknown name, a
        ``d4`` that is not a boolean, an amount that is not a finite number >= 0 or a
        ``flux_jitter`` of 1 or more (a scale of 1 +- it reaching zero) is one ValueError naming
        it. Amounts are kept as floats (``1`` and ``1.0`` name the same training run)."""
        names = [f.name for f in fields(cls)]
        out: dict[str, Any] = {}
        for key, value in d.items():
            if key not in names:
                raise ValueError(f"augment: no setting {key!r} (settings: {', '.join(names)})")
            if key == "d4":
                if not isinstance(value, bool):
                    raise ValueError(f"augment: d4 is true or false, not {value!r}")
                out[key] = value
                continue
            out[key] = amount = _amount(key, value)
            if key == "flux_jitter" and amount >= 1:
                raise ValueError(f"augment: flux_jitter is under 1 (a scale of 1 +- it), not "
                                 f"{value!r}")
        return cls(**out)


def _amount(key: str, value: Any) -> float:
    """``value`` as a finite float >= 0 (no negative zero), or one ValueError naming ``key``."""
    amount = math.nan  # text, a boolean, None: not an amount
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            amount = float(value)
        except OverflowError:  # an int beyond float's range
            amount = math.inf
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"augment: {key} is a finite number >= 0, not {value!r}")
    return amount + 0.0


def d4_maps(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Pixel permutations of the 8 dihedral transforms of an (h, w) image, (8, h*w): map
    ``2 * k + flip`` is ``rot90(flip(x) if flip else x, k)``, flattened."""
    grid = torch.arange(h * w, device=device).reshape(h, w)
    return torch.stack([torch.rot90(g, k, dims=(0, 1)).reshape(-1)
                        for k in range(4) for g in (grid, grid.flip(-1))])


def d4(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply one of the 8 dihedral transforms per sample. x: (N, C, H, W), square.

    One gather through the drawn permutation (no per-transform selection, which needs the
    host to look at the draws: a sync per batch on a GPU)."""
    n, c, h, w = x.shape
    k = torch.randint(0, 4, (n,), generator=gen, device=x.device)
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    perm = d4_maps(h, w, x.device)[2 * k + flip.long()]  # (N, H*W)
    out = x.reshape(n, c, h * w).gather(2, perm[:, None, :].expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per sample, sigma (N,), or per sample and band, (N, C); pixels."""
    radius = 3
    n, c, h, w = x.shape
    sigma = sigma[:, None].expand(n, c) if sigma.dim() == 1 else sigma
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma.reshape(-1).clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (N*C, 7)
    y = x.reshape(1, n * c, h, w)
    kx = k[:, None, None, :]  # (N*C, 1, 1, 7)
    ky = k[:, None, :, None]  # (N*C, 1, 7, 1)
    y = torch.nn.functional.conv2d(y, kx, padding=(0, radius), groups=n * c)
    y = torch.nn.functional.conv2d(y, ky, padding=(radius, 0), groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x: torch.Tensor, a: Augment, gen: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch of normalised images (N, 3, H, W) in sky-sigma units."""
    n, dev = x.shape[0], x.device
    if a.flux_jitter > 0:
        scale = 1 + (torch.rand(n, 1, 1, 1, generator=gen, device=dev) * 2 - 1) * a.flux_jitter
        x = x * scale
    if a.colour_jitter > 0:
        mag = (torch.rand(n, x.shape[1], 1, 1, generator=gen, device=dev) * 2 - 1) \
            * a.colour_jitter
        x = x * 10 ** (-0.4 * mag)
    if a.psf_jitter > 0 or a.band_psf_jitter > 0:
        common = torch.rand(n, 1, generator=gen, device=dev) * a.psf_jitter
        band = torch.rand(n, x.shape[1], generator=gen, device=dev) * a.band_psf_jitter
        x = _blur(x, torch.sqrt(common**2 + band**2))
    if a.noise_jitter > 0:
        amp = torch.rand(n, 1, 1, 1, generator=gen, device=dev) * a.noise_jitter
        x = x + amp * torch.randn(x.shape, generator=gen, device=dev)
    if a.d4:
        x = d4(x, gen)
    if a.background_jitter > 0:  # drawn last: the draws before are as they were without it
        amp = torch.rand(n, x.shape[1], 1, 1, generator=gen, device=dev) * a.background_jitter
        x = x + amp * smooth_field(n, x.shape[-2], x.shape[-1], gen, dev, x.dtype)
    return x


def smooth_field(n: int, h: int, w: int, gen: torch.Generator | None, device: torch.device,
                 dtype: torch.dtype, cells: int = 4) -> torch.Tensor:
    """``n`` random smooth fields (N, 1, H, W) of zero mean and unit standard deviation: a
    ``cells`` x ``cells`` grid of normal draws, interpolated bicubically (features of about a
    third of the image: gradients, saddles, broad halos)."""
    coarse = torch.randn(n, 1, cells, cells, generator=gen, device=device, dtype=dtype)
    field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                            align_corners=True)
    field = field - field.mean(dim=(2, 3), keepdim=True)
    return field / field.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
