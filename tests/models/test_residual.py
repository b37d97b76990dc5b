"""The residual input channels: the image less its annulus medians, and warm starts into them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensscan.models import create_model
from lensscan.models.residual import RadialResidual, annuli
from lensscan.train.warmstart import widened


def _galaxy_and_arc(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r, phi = np.hypot(yy, xx), np.arctan2(yy, xx)
    galaxy = 50 * np.exp(-((r / 4.0) ** 0.5))  # round, steep: a deflector's light
    arc = 3 * np.exp(-0.5 * ((r - 12) / 1.0) ** 2) * (np.abs(phi) < 0.6)  # a tenth of a ring
    as_tensor = lambda a: torch.tensor(np.stack([a, 0.5 * a, 0.3 * a])[None], dtype=torch.float32)  # noqa: E731
    return as_tensor(galaxy), as_tensor(arc)


def test_the_residual_removes_a_round_galaxy_and_keeps_an_arc():
    galaxy, arc = _galaxy_and_arc()
    res = RadialResidual()
    left = res(galaxy).abs()
    # pixels of one annulus differ a little, most where the profile is steepest (the core)
    assert left.sum() < 0.03 * galaxy.sum() and left.max() < 0.1 * galaxy.max()
    kept = res(galaxy + arc)
    on_arc = arc > 1.0
    assert (kept[on_arc] - arc[on_arc]).abs().max() < 0.2 * arc.max()
    assert kept[on_arc].mean() > 0.9 * arc[on_arc].mean()
    assert kept.shape == arc.shape and torch.isfinite(kept).all()


def test_annuli_cover_every_pixel_once():
    members, ring = annuli(48, 48)
    flat = members[members < 48 * 48]
    assert sorted(flat.tolist()) == list(range(48 * 48))
    assert (ring[members[:, 0]] == torch.arange(len(members))).all()


@pytest.mark.parametrize("arch", ["resnet", "multiscale_resnet"])
def test_a_member_widened_with_residual_channels_scores_as_before(arch):
    torch.manual_seed(0)
    plain = create_model(arch).eval()
    wide = create_model(arch, residual=True).eval()
    wide.load_state_dict(widened(plain.state_dict(), wide))
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(plain(x), wide(x), atol=1e-6)
    # the new channels train: gradients reach their (zero) weights
    wide.train()
    wide(x).sum().backward()
    grads = [p.grad for n, p in wide.named_parameters() if p.dim() == 4 and p.shape[1] == 6]
    assert grads and all(g is not None and g[:, 3:].abs().sum() > 0 for g in grads)


def _save_residual_member(root, name="m0"):
    from lensscan import modelcard
    from lensscan.data.preprocess import Preprocessing

    torch.manual_seed(1)
    kw = {"widths": [8, 8, 16, 16], "residual": True}
    modelcard.save_member(str(root / name), create_model("resnet", **kw), {
        "name": name, "arch": "resnet", "arch_kwargs": kw,
        "preprocessing": Preprocessing().to_dict(), "bands": ["g", "r", "i"],
        "threshold": 0.5}, half=False)
    return str(root / name)


def test_an_ensemble_computes_the_residual_once_for_its_members_and_scores_alike(
        tmp_path, tiny_model):
    from lensscan.modelcard import load_member
    from lensscan.models.ensemble import Ensemble

    wide, _ = load_member(_save_residual_member(tmp_path))
    wide2, _ = load_member(_save_residual_member(tmp_path, "m1"))
    plain, _ = load_member(f"{tiny_model}/m0")
    ens = Ensemble([wide, plain, wide2], [0.5, 0.5, 0.5], output_logits=True).eval()
    x = torch.randn(5, 3, 48, 48)
    calls = []
    ens.residual.register_forward_hook(lambda *_: calls.append(1))
    for m in (wide, wide2):
        m.residual.register_forward_hook(lambda *_: calls.append(2))
    with torch.no_grad():
        together = ens.member_logits(x)
        assert calls == [1]  # once, by the ensemble, for both residual members
        apart = torch.cat([wide(x), plain(x), wide2(x)], dim=1)
    assert torch.equal(together, apart)


def test_a_run_started_from_a_residual_member_keeps_its_channels(tmp_path):
    from lensscan.config import TrainConfig
    from lensscan.train.trainer import complete
    from lensscan.train.warmstart import initial_weights

    member = _save_residual_member(tmp_path)
    cfg = complete(TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), arch="resnet",
                               init=member))
    assert cfg.arch_kwargs == {"widths": [8, 8, 16, 16], "residual": True}
    assert initial_weights(cfg).keys() == create_model("resnet", **cfg.arch_kwargs).state_dict(
    ).keys()
    # a plain run of another width cannot start from it
    other = TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), arch="resnet", init=member,
                        arch_kwargs={"widths": [8, 8, 8, 8]})
    with pytest.raises(Exception, match="cannot start"):
        initial_weights(complete(other))
