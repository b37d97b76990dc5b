"""Grad-CAM maps (Selvaraju et al. 2017) for any lensscan architecture."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def grad_cam(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class-activation maps of the lens logit, (N, H, W) in [0, 1] at the input size.

    Uses the model's ``forward_features`` (last conv maps) and ``forward_head``.
    """
    model.eval()
    with torch.enable_grad():
        feats = model.forward_features(x.detach().clone().requires_grad_(False))
        feats = feats.detach().requires_grad_(True)  # (N, C, h, w)
        logit = model.forward_head(feats).sum()
        (grad,) = torch.autograd.grad(logit, feats)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    cam = F.relu((weights * feats).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    return cam.detach().numpy()
