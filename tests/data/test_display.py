"""Display of g, r, i cutouts (:mod:`lensscan.data.display`): astropy's Lupton composite after
sky subtraction, PNG grids, and code that draws cutouts without importing the simulator."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np

from lensscan.data.display import composite_grid, rgb_composite, sky_and_noise

LEVELS = (10.0, 30.0, 5.0)  # sky per band (g, r, i)


def _sky(seed: int = 0) -> np.ndarray:
    """A (3, 64, 64) cutout of pure sky: a different level per band, Gaussian noise of 0.05
    (as in the simulated surveys)."""
    rng = np.random.default_rng(seed)
    return (np.array(LEVELS)[:, None, None] + rng.normal(0.0, 0.05, (3, 64, 64)))


def test_sky_and_noise_come_from_the_border():
    image = _sky()
    image[:, 20:44, 20:44] += 1e3  # a bright object inside the border changes neither
    img, noise = sky_and_noise(image)
    assert np.abs(np.median(img[:, :4], axis=(1, 2))).max() < 0.01
    np.testing.assert_allclose(noise, 0.05, rtol=0.1)


def test_composite_colours_follow_the_bands():
    """i -> red, r -> green, g -> blue; the sky's level is removed; a saturated knot keeps
    its hue."""
    image = _sky()
    image[2, 10:14, 10:14] += 1.5  # i only, 30 sigma
    image[0, 40:44, 40:44] += 1.5  # g only
    image[:, 28:32, 50:54] += np.array([20.0, 40.0, 80.0])[:, None, None]  # bright, red
    rgb = rgb_composite(image)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    level_free = rgb_composite(image - np.array(LEVELS)[:, None, None])
    assert np.abs(rgb.astype(int) - level_free).max() <= 1
    assert np.median(rgb[:4].mean(axis=-1)) < 30  # the sky is dark
    red, blue, bright = rgb[11, 11].astype(int), rgb[41, 41].astype(int), rgb[30, 52].astype(int)
    assert red[0] > 100 and red[1:].max() < red[0] / 4
    assert blue[2] > 100 and blue[:2].max() < blue[2] / 4
    assert bright[0] == 255 and np.allclose(bright / 255, [1.0, 0.5, 0.25], atol=0.01)


def test_composite_grid_labels_untrusted_ids_as_text():
    from PIL import Image

    images = [_sky(k) for k in range(13)]
    titles = [f"#{k} id$\\notacommand{{x}}$_{k}\n0.900" for k in range(13)]  # not mathtext
    png = composite_grid(images, 5, titles=titles, dpi=50)
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (int(5 * 1.3 * 50), int(3 * 1.45 * 50))
    png = composite_grid(images[:4], 2, row_labels=("lens", "edge_on"), dpi=50)
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (int(2 * 1.2 * 50), int(2 * 1.25 * 50))


def test_drawing_cutouts_does_not_import_the_simulator():
    """The gallery and evaluation draw composites without lenstronomy (seconds of import)."""
    code = ("import sys, lensscan.catalog.gallery, lensscan.train.evaluate\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.startswith(('lenstronomy', 'lensscan.simulate'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_panel_titles_print_and_fit():
    """Titles are ids from shards: a direction override or a control character is shown as
    U+FFFD (it reversed the text drawn), and a long id is cut to the panel's width."""
    from lensscan.data.display import TITLE_WIDTH, _title

    assert _title("#1 0.99\n\u202eevil\x00") == "#1 0.99\n\ufffdevil\ufffd"
    long = _title("x" * 300)
    assert len(long) == TITLE_WIDTH and long.endswith("\u2026")
    png = composite_grid([np.ones((3, 64, 64), np.float32)] * 2, 2, titles=["a\nb", "c"])
    assert png.startswith(b"\x89PNG")
