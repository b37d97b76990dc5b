"""Scoring's one-step preprocessing is training's two steps, bit for bit: ``preprocess(x)`` equals
``stretch(normalize(x))`` for finite pixels (training augments between the two)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from support import make_batch

from lensscan.data.preprocess import (
    Preprocessing,
    normalize,
    normalize_tensor,
    preprocess,
    preprocess_tensor,
    stretch,
)

SETTINGS = [Preprocessing(), Preprocessing(border=4, noise_band=2, softening=1.5, crop=40)]


def _random(n: int = 64, seed: int = 0) -> np.ndarray:
    """Pixels of every scale and sign, heavy tails, skies far from zero: (N, 3, 64, 64)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, (n, 3, 64, 64)) * rng.lognormal(0, 3, (n, 1, 1, 1))
    x += rng.normal(0, 100, (n, 3, 1, 1))
    return x.astype(np.float32)


def _simulated() -> np.ndarray:
    """One rendered cutout of every kind the simulator draws (lenses, galaxies, stars, sky)."""
    from lensscan.simulate.kinds import KINDS, render_object

    return np.stack([render_object(k, np.random.default_rng([16, i]))[0]
                     for i, k in enumerate(KINDS)])


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {"random": _random(), "sky_and_blob": make_batch(64, seed=9)["image"],
            "simulated": _simulated()}


@pytest.mark.parametrize("p", SETTINGS, ids=["default", "other"])
@pytest.mark.parametrize("name", ["random", "sky_and_blob", "simulated"])
def test_preprocess_is_stretch_of_normalize_bit_for_bit(inputs, name, p):
    x = inputs[name]
    got = preprocess(x, p)
    assert got.shape == (len(x), 3, p.crop, p.crop) and got.dtype == np.float32
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, stretch(normalize(x, p), p))
    # float16 shards: both routes read them the same way (finite pixels: preprocess counts
    # non-finite ones as 0, normalize keeps them)
    half = np.clip(x, -6e4, 6e4).astype(np.float16)
    np.testing.assert_array_equal(preprocess(half, p), stretch(normalize(half, p), p))


@pytest.mark.parametrize("numpy_on_cpu", [True, False])
def test_tensor_routes_agree_bit_for_bit(inputs, numpy_on_cpu):
    """The torch entry points, with numpy's kernels on CPU or torch's own."""
    p = Preprocessing()
    with torch.inference_mode():
        for x in inputs.values():
            t = torch.from_numpy(x)
            one = preprocess_tensor(t, p, numpy_on_cpu)
            two = stretch(normalize_tensor(t, p, numpy_on_cpu), p, numpy_on_cpu)
            assert torch.equal(one, two)


def test_a_read_only_batch_is_viewed_without_a_warning_and_left_as_it_was():
    """Arrow's buffers (a pyarrow-written shard) are read-only: torch's warning about them (once
    per process) reached the user's stderr from every Ray worker of the read stage. A fresh
    process, so that no earlier test has spent the warning; -W error makes it fail."""
    code = """if True:
        import numpy as np
        from lensscan.data.preprocess import Preprocessing, as_tensor, preprocess
        images = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
        images.flags.writeable = False
        before = images.copy()
        assert np.shares_memory(as_tensor(images).numpy(), images)
        out = preprocess(images, Preprocessing())
        assert out.shape == (2, 3, Preprocessing().crop, Preprocessing().crop)
        assert (images == before).all() and not images.flags.writeable
    """
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
