"""Weighted ensemble of lens classifiers (pure torch)."""

from __future__ import annotations

import torch
from torch import nn

from lensscan.models.residual import RadialResidual


class Ensemble(nn.Module):
    """Combine member logits as ``sigmoid(sum_i w_i * logit_i + bias)``.

    The weights and bias are fitted on validation data (see
    :func:`lensscan.train.ensemble.fit_weights`), so a member that is better on validation data
    counts more.

    Parameters
    ----------
    members : list of nn.Module
        Each maps (N, 3, H, W) to (N, 1) logits.
    weights : sequence of float
        One non-negative weight per member.
    bias : float
        Added to the weighted sum of logits.
    tta : bool
        Test-time augmentation: every member's logit is its mean over the 8 dihedral views
        (flips and 90-degree rotations) of the input, at 8 times the cost.
    output_logits : bool
        :meth:`forward` returns logits instead of probabilities (scoring stores both).
    """

    def __init__(self, members: list[nn.Module], weights: list[float], bias: float = 0.0,
                 tta: bool = False, output_logits: bool = False) -> None:
        super().__init__()
        if len(members) != len(weights):
            raise ValueError("one weight per member")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(float(bias)))
        self.tta = tta
        self.output_logits = output_logits
        self.residual = RadialResidual()

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, M) logits of every member (averaged over views with ``tta``)."""
        n = x.shape[0]
        if self.tta:
            x = d4_views(x)  # (8N, 3, H, W)
        # members fed the residual channels share one computation of them
        takes = [getattr(m, "residual", None) is not None for m in self.members]
        shared = self.residual(x) if any(takes) else None
        logits = torch.cat([(m(x, shared) if t else m(x)).float().reshape(-1, 1)
                            for m, t in zip(self.members, takes, strict=True)], dim=1)
        return logits.reshape(8, n, -1).mean(dim=0) if self.tta else logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(score, member_scores)``: (N,) and (N, M) probabilities; with
        ``output_logits``, the ensemble logit and the member logits instead."""
        logits = self.member_logits(x)  # (N, M)
        # elementwise, not a matmul: stays float32 under fp16 autocast (the logit is stored)
        combined = (logits * self.weights).sum(dim=1) + self.bias  # (N,)
        if self.output_logits:
            return combined, logits
        return torch.sigmoid(combined), torch.sigmoid(logits)


def d4_views(x: torch.Tensor) -> torch.Tensor:
    """The 8 dihedral views of a batch, stacked view-major: (N, C, H, W) -> (8N, C, H, W)."""
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    return torch.cat(views).contiguous(memory_format=torch.channels_last) \
        if x.is_contiguous(memory_format=torch.channels_last) else torch.cat(views)
