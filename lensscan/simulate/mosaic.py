"""PNG mosaics of asinh-stretched g, r, i composites (one row per object kind)."""

from __future__ import annotations

import numpy as np

from lensscan.simulate.kinds import KINDS, render_object
from lensscan.simulate.population import Population, SurveyConditions


def rgb_composite(image: np.ndarray, stretch: float = 0.5, q: float = 8.0) -> np.ndarray:
    """Lupton-style asinh RGB of a (3, H, W) g, r, i cutout -> (H, W, 3) uint8.

    i is shown as red, r as green, g as blue. Sky is subtracted per band with the border median;
    all bands share one stretch, so colours are kept.
    """
    img = np.asarray(image, dtype=np.float64)
    border = np.concatenate([img[:, :4, :].reshape(3, -1), img[:, -4:, :].reshape(3, -1)], axis=1)
    img = img - np.median(border, axis=1)[:, None, None]
    i, r, g = img[2], img[1], img[0]
    mean = (i + r + g) / 3.0
    scale = np.arcsinh(q * mean / stretch) / (q * np.where(mean > 0, mean, np.inf))
    rgb = np.stack([i * scale, r * scale, g * scale], axis=-1)
    peak = np.maximum(rgb.max(axis=-1, keepdims=True), 1.0)
    rgb = np.clip(rgb / peak, 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def kind_mosaic(
    out_png: str, per_kind: int = 8, seed: int = 0, kinds: tuple[str, ...] | None = None,
    pop: Population | None = None, cond: SurveyConditions | None = None, dpi: int = 70,
) -> str:
    """Draw ``per_kind`` objects of every kind into one PNG grid (rows = kinds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = kinds or tuple(KINDS)
    fig, axes = plt.subplots(len(kinds), per_kind, figsize=(per_kind * 1.2, len(kinds) * 1.25))
    for r, kind in enumerate(kinds):
        for c in range(per_kind):
            rng = np.random.default_rng([seed, r, c])
            image, _ = render_object(kind, rng, pop, cond)
            ax = axes[r, c]
            ax.imshow(rgb_composite(image), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(kind, fontsize=8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0.08, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
