"""Weighted ensemble of lens classifiers (pure torch)."""

from __future__ import annotations

import torch
from torch import nn


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
    """

    def __init__(self, members: list[nn.Module], weights: list[float], bias: float = 0.0) -> None:
        super().__init__()
        if len(members) != len(weights):
            raise ValueError("one weight per member")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(float(bias)))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, M) logits of every member."""
        return torch.cat([m(x).float().reshape(-1, 1) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(score, member_scores)``: (N,) and (N, M) probabilities."""
        logits = self.member_logits(x)  # (N, M)
        combined = logits @ self.weights + self.bias  # (N,)
        return torch.sigmoid(combined), torch.sigmoid(logits)
