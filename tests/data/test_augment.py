"""Training augmentations: the dihedral group, flux-conserving blurs, bounded jitters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensscan.data.augment import Augment, _blur, augment, d4

OFF = dict(d4=False, noise_jitter=0.0, psf_jitter=0.0, flux_jitter=0.0, colour_jitter=0.0,
           band_psf_jitter=0.0, background_jitter=0.0)


def test_d4_is_the_dihedral_group_action():
    x = torch.arange(3 * 5 * 5, dtype=torch.float32).reshape(1, 3, 5, 5).repeat(400, 1, 1, 1)
    out = d4(x, torch.Generator().manual_seed(0))
    seen = {tuple(o.flatten().tolist()) for o in out}
    assert len(seen) == 8  # every one of the eight symmetries is drawn, and no other image
    for o in out[:16]:  # each output is a permutation of the pixels of its input, per band
        assert torch.equal(o.flatten(1).sort().values, x[0].flatten(1).sort().values)


def test_blur_keeps_flux_per_band():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    y = _blur(x, torch.tensor([[0.5, 1.0, 1.5], [0.0, 0.8, 0.3]]))
    np.testing.assert_allclose(y.sum(dim=(2, 3)).numpy(), 1.0, rtol=1e-5)
    assert y[0, 2, 7, 7] < y[0, 1, 7, 7] < y[0, 0, 7, 7]  # wider blur, lower peak


def test_colour_jitter_scales_each_band_within_its_range():
    a = Augment(**dict(OFF, colour_jitter=0.1))
    x = torch.ones(500, 3, 4, 4)
    y = augment(x, a, torch.Generator().manual_seed(1))
    scale = y[:, :, 0, 0]
    mag = -2.5 * torch.log10(scale)
    assert mag.abs().max() <= 0.1 + 1e-5 and mag.abs().max() > 0.09
    assert (y == scale[:, :, None, None]).all()  # one factor per band and sample
    assert abs(float(np.corrcoef(mag[:, 0], mag[:, 1])[0, 1])) < 0.2  # bands independent


@pytest.mark.parametrize("seed", [0, 1])
def test_all_augmentations_keep_shape_and_mean_flux(seed):
    x = torch.rand(256, 3, 48, 48) + 1.0
    y = augment(x, Augment(), torch.Generator().manual_seed(seed))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=0.03)


def test_everything_off_is_the_identity():
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(augment(x, Augment(**OFF), torch.Generator().manual_seed(0)), x)


def test_d4_keeps_every_sample_s_pixel_values():
    """Random pixels: each output holds exactly its own input's values, band by band."""
    x = torch.randn(64, 3, 10, 10)
    out = augment(x, Augment(**dict(OFF, d4=True)), torch.Generator().manual_seed(3))
    assert torch.equal(out.flatten(2).sort().values, x.flatten(2).sort().values)
    assert not torch.equal(out, x)


def test_noise_jitter_adds_noise_of_a_uniform_amplitude():
    """Noise of sigma ``amp`` per sample, amp uniform in [0, noise_jitter] (sky-sigma units)."""
    a = Augment(**dict(OFF, noise_jitter=0.8))
    x = torch.full((2000, 3, 32, 32), 5.0)
    noise = augment(x, a, torch.Generator().manual_seed(4)) - x
    amp = noise.flatten(1).std(dim=1)  # (N,) per-sample sigma
    assert float(noise.mean()) == pytest.approx(0.0, abs=2e-3)
    assert float(amp.max()) <= 0.8 * 1.05 and float(amp.max()) > 0.78
    assert float(amp.min()) < 0.02
    assert float(amp.mean()) == pytest.approx(0.4, abs=0.02)  # uniform: mean jitter / 2
    assert float((noise**2).mean()) == pytest.approx(0.8**2 / 3, rel=0.05)


def test_flux_jitter_scales_each_sample_uniformly_within_its_range():
    a = Augment(**dict(OFF, flux_jitter=0.2))
    x = torch.rand(4000, 3, 4, 4) + 0.5
    scale = augment(x, a, torch.Generator().manual_seed(5)) / x
    per = scale[:, 0, 0, 0]
    torch.testing.assert_close(scale, per[:, None, None, None].expand_as(scale))  # one factor
    assert float(per.min()) >= 0.8 - 1e-6 and float(per.max()) <= 1.2 + 1e-6
    assert float(per.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(per.std()) == pytest.approx(0.2 / 3**0.5, rel=0.05)  # uniform in 1 +- 0.2


def test_psf_jitter_blurs_all_bands_alike_and_at_most_its_sigma():
    """Without band jitter a sample's three bands get one blur; none wider than psf_jitter."""
    x = torch.zeros(500, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    y = augment(x, Augment(**dict(OFF, psf_jitter=1.0)), torch.Generator().manual_seed(6))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    np.testing.assert_allclose(y.sum(dim=(2, 3)).numpy(), 1.0, rtol=1e-5)
    widest = _blur(x[:1], torch.tensor([1.0]))[0, 0, 7, 7]
    assert float(y[:, 0, 7, 7].min()) >= float(widest) - 1e-6
    assert float(y[:, 0, 7, 7].max()) > 0.95  # some draws barely blur


def _d4_by_selection(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The D4 of the CPU-only version: the same draws, applied one transform at a time."""
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    out = torch.empty_like(x)
    for r in range(4):
        for f in (False, True):
            idx = ((k == r) & (flip == f)).nonzero(as_tuple=True)[0]
            y = x[idx].flip(-1) if f else x[idx]
            out[idx] = torch.rot90(y, r, dims=(-2, -1))
    return out


def test_d4_gather_is_the_per_transform_d4():
    """One gather (no host sync on a GPU) gives what the per-transform selection gave."""
    x = torch.randn(64, 3, 12, 12)
    for seed in range(3):
        got = d4(x, torch.Generator().manual_seed(seed))
        assert torch.equal(got, _d4_by_selection(x, torch.Generator().manual_seed(seed)))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_statistics_equal_on_every_device(device):
    """augment() on a device, drawing from a generator on that device, gives the statistics of
    the CPU draws (another stream of the same distributions)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0, 1, (4096, 3, 24, 24)).astype(np.float32))
    x[:, :, 10:14, 10:14] += 20.0  # a bright core: the blur and flux jitter show in it
    ref = augment(x, Augment(), torch.Generator().manual_seed(0))
    gen = torch.Generator(device=device).manual_seed(1)
    got = augment(x.to(device), Augment(), gen)
    assert got.device.type == device
    got = got.cpu()
    assert float(got.mean()) == pytest.approx(float(ref.mean()), abs=0.01)
    assert float(got.std()) == pytest.approx(float(ref.std()), rel=0.01)
    q = torch.tensor([0.001, 0.1, 0.5, 0.9, 0.999])
    sample = torch.randperm(ref.numel(), generator=torch.Generator().manual_seed(2))[:200_000]
    np.testing.assert_allclose(torch.quantile(got.flatten()[sample], q),
                               torch.quantile(ref.flatten()[sample], q), rtol=0.05, atol=0.02)
    peak = (got.amax(dim=(2, 3)), ref.amax(dim=(2, 3)))  # flux and PSF jitter of the core
    assert float(peak[0].mean()) == pytest.approx(float(peak[1].mean()), rel=0.01)
    assert float(peak[0].std()) == pytest.approx(float(peak[1].std()), rel=0.05)


def test_background_jitter_adds_a_smooth_zero_mean_field_per_band():
    """A residual of sky subtraction: smooth (neighbouring pixels alike, unlike noise), zero
    mean over each image, of a per-band amplitude up to ``background_jitter`` sky sigma."""
    from lensscan.data.augment import smooth_field

    x = torch.zeros(2000, 3, 48, 48)
    out = augment(x, Augment(**dict(OFF, background_jitter=2.0)), torch.Generator().manual_seed(4))
    amp = out.std(dim=(2, 3))
    assert float(out.mean(dim=(2, 3)).abs().max()) < 1e-4
    assert float(amp.max()) <= 2.0 + 1e-4 and float(amp.mean()) == pytest.approx(1.0, abs=0.05)
    assert abs(float(np.corrcoef(amp[:, 0], amp[:, 1])[0, 1])) < 0.1  # bands drawn apart
    f = smooth_field(500, 48, 48, torch.Generator().manual_seed(5), torch.device("cpu"),
                     torch.float32)
    step = (f[..., 1:] - f[..., :-1]).std() / f.std()  # noise would give sqrt(2)
    assert float(step) < 0.15
