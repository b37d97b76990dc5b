"""What the DDP workers of one training run agree on, so that none waits for the others
forever: the least of each count (:func:`agree_min`), and rank 0's decisions
(:func:`from_rank0`). Without a process group (one worker), a worker's own values."""

from __future__ import annotations

import torch


def _tensor(values: list[int], device: torch.device) -> torch.Tensor | None:
    """``values`` as a tensor on ``device`` for a collective; None without a process group of
    several workers."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return torch.tensor(values, dtype=torch.int64, device=device)


def agree_min(values: list[int], device: torch.device) -> list[int]:
    """The least of each value over the run's workers (each worker gets the same list)."""
    import torch.distributed as dist

    if (t := _tensor(values, device)) is None:
        return list(values)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [int(v) for v in t.cpu()]


def from_rank0(values: list[int], device: torch.device) -> list[int]:
    """Rank 0's ``values`` on every worker. Each worker validates on the whole validation set,
    but its EMA copy's batch-norm statistics differ a little from the others' (each updates
    them from its own batches), so near-equal AUCs could rank epochs differently: a worker
    that stopped early would leave the others waiting for it in DDP forever."""
    import torch.distributed as dist

    if (t := _tensor(values, device)) is None:
        return list(values)
    dist.broadcast(t, src=0)
    return [int(v) for v in t.cpu()]
