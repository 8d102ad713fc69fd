"""The training schedule: which phase runs when, and how a pass is cut into batches."""
from __future__ import annotations

import numpy as np
import torch

from metarec_core.train_config import TrainConfig


def plan(config: TrainConfig, *, n_meta_steps: int, n_trans_steps: int) -> list[tuple[int, str, int]]:
    """The schedule as ``(epoch, phase, steps)`` blocks, in the order ``fit`` runs them.

    ``phase`` is ``meta``, ``transfer`` or ``joint``; a phase whose λ is 0 (or
    that has no steps) is left out. The Train page's timeline draws this plan.
    """
    meta_on = config.lambda_meta > 0 and n_meta_steps > 0
    trans_on = config.lambda_trans > 0 and n_trans_steps > 0
    plan: list[tuple[int, str, int]] = []
    if config.schedule == "alternating":
        for e in range(config.num_epochs):
            plan += [(e, "meta", n_meta_steps)] * (config.meta_epochs if meta_on else 0)
            plan += [(e, "transfer", n_trans_steps)] * (config.trans_epochs if trans_on else 0)
    elif config.schedule == "sequential":
        plan += [(e, "transfer", n_trans_steps) for e in range(config.num_epochs) for _ in range(config.trans_epochs if trans_on else 0)]
        offset = config.num_epochs if plan else 0
        plan += [(offset + e, "meta", n_meta_steps) for e in range(config.num_epochs) for _ in range(config.meta_epochs if meta_on else 0)]
    else:
        passes = max(config.meta_epochs, config.trans_epochs)
        if meta_on and trans_on:
            plan += [(e, "joint", n_meta_steps) for e in range(config.num_epochs) for _ in range(passes)]
        elif meta_on:
            plan += [(e, "meta", n_meta_steps) for e in range(config.num_epochs) for _ in range(passes)]
        elif trans_on:
            plan += [(e, "transfer", n_trans_steps) for e in range(config.num_epochs) for _ in range(passes)]
    return plan


def n_batches(n: int, size: int) -> int:
    """Steps in one pass over ``n`` examples at batch ``size`` (the last batch may be short)."""
    return (n + size - 1) // size if n else 0


def batch(order: np.ndarray | torch.Tensor, b: int, size: int) -> np.ndarray | torch.Tensor:
    """The ``b``-th batch of ``size`` from ``order`` (an array or a tensor), wrapping around so every batch is full."""
    n = len(order)
    if n == 0:
        return order
    start = (b * size) % n
    idx = order[start : start + size]
    if len(idx) < min(size, n):
        rest = order[: min(size, n) - len(idx)]
        idx = torch.cat([idx, rest]) if isinstance(idx, torch.Tensor) else np.concatenate([idx, rest])
    return idx
