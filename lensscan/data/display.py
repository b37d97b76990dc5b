"""How a (3, H, W) g, r, i cutout is shown: its sky and noise, its asinh RGB composite, and PNG
grids of composites.

The simulator's mosaic, evaluation's Grad-CAM figure and the catalog's gallery all draw cutouts,
so the primitives live here, below all three (numpy and astropy; matplotlib only to draw a grid).
The gallery's other stretches are in :mod:`lensscan.catalog.stretch`.

Images come back as (H, W, 3) uint8 with row 0 at the bottom (south), as cutouts are stored.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from astropy.visualization import make_lupton_rgb

BORDER = 4  # pixels of the border that give sky and noise


def sky_and_noise(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract each band's sky, the median of the :data:`BORDER`-pixel frame.

    Parameters
    ----------
    image : ndarray, shape (3, H, W)
        A cutout, in any flux unit.

    Returns
    -------
    ndarray, shape (3, H, W)
        The image minus its sky (float64, same unit).
    ndarray, shape (3,)
        Each band's sky noise (1.4826 x the frame's median absolute deviation; same unit).
    """
    img = np.asarray(image, dtype=np.float64)
    b = BORDER
    border = np.concatenate([img[:, :b, :].reshape(3, -1), img[:, -b:, :].reshape(3, -1),
                             img[:, b:-b, :b].reshape(3, -1), img[:, b:-b, -b:].reshape(3, -1)],
                            axis=1)
    sky = np.median(border, axis=1)
    noise = 1.4826 * np.median(np.abs(border - sky[:, None]), axis=1)
    noise = np.where(noise > 0, noise, 1e-12)
    return img - sky[:, None, None], noise


def rgb_composite(image: np.ndarray, stretch: float = 0.5, q: float = 8.0) -> np.ndarray:
    """Lupton et al. (2004) asinh RGB of a (3, H, W) g, r, i cutout -> (H, W, 3) uint8.

    i is shown as red, r as green, g as blue, after each band's sky is subtracted
    (:func:`sky_and_noise`); astropy's :func:`~astropy.visualization.make_lupton_rgb` stretches
    the mean of the three bands, so all bands share one stretch and colours are kept.

    Parameters
    ----------
    stretch : float
        The linear stretch, in the image's flux unit (``make_lupton_rgb``'s ``stretch``).
    q : float
        The asinh softening (``make_lupton_rgb``'s ``Q``).
    """
    img, _ = sky_and_noise(image)
    return make_lupton_rgb(img[2], img[1], img[0], stretch=stretch, Q=q)


TITLE_WIDTH = 22  # characters of a title line that fit above a panel


def _title(text: str) -> str:
    """A panel's title as drawn: characters that do not print (controls, direction overrides)
    shown as U+FFFD, each line cut to :data:`TITLE_WIDTH` characters with an ellipsis."""
    lines = ["".join(c if c.isprintable() else "\ufffd" for c in line)
             for line in text.split("\n")]
    return "\n".join(ln if len(ln) <= TITLE_WIDTH else ln[:TITLE_WIDTH - 1] + "\u2026"
                     for ln in lines)


def composite_grid(images: Sequence[np.ndarray], columns: int, titles: Sequence[str] = (),
                   row_labels: Sequence[str] = (), dpi: int = 90) -> bytes:
    """PNG bytes of the :func:`rgb_composite` of each cutout, ``columns`` wide, row by row.

    ``titles`` (one per image, up to two lines) go above the panels; ``row_labels`` left of
    each row. Without images the grid is one empty row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    cell = (1.3, 1.45) if titles else (1.2, 1.25)  # inches, width and height
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell[0], rows * cell[1]),
                             squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        if k < len(images):
            ax.imshow(rgb_composite(images[k]), origin="lower")
        if k < len(titles):  # ids: "$" is text
            ax.set_title(_title(titles[k]), fontsize=6, parse_math=False)
    for r, label in enumerate(row_labels):
        axes[r, 0].set_ylabel(label, fontsize=8, parse_math=False)
    # the first row's two title lines need about 0.3" above the panels, whatever the rows
    fig.subplots_adjust(wspace=0.04, hspace=0.35 if titles else 0.03,
                        left=0.08 if row_labels else 0.01, right=0.99,
                        top=1 - (0.3 if titles else 0.02) / (rows * cell[1]), bottom=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
