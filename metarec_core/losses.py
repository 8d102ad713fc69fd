"""Loss terms of the objective ``L_total = λ1·L_meta + λ2·L_trans + L0``, as pure functions."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

LOSS_KINDS = ("mse", "bce")


def rating_errors(predictions: torch.Tensor, targets: torch.Tensor, huber_delta: float = 0.0) -> torch.Tensor:
    """Elementwise loss of predicted ratings: the squared error, or with ``huber_delta = δ > 0`` Huber's.

    Huber's loss is scaled to equal the squared error ``e²`` where ``|e| ≤ δ``
    and grows linearly, ``2δ|e| − δ²``, beyond: a rating far from the
    prediction pulls with a bounded force, so the fit moves towards the
    conditional median (what MAE rewards) without changing small errors.
    """
    if huber_delta > 0:
        return 2.0 * F.huber_loss(predictions, targets, reduction="none", delta=float(huber_delta))
    return (predictions - targets) ** 2


def task_losses(
    predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, kind: str = "mse", *, huber_delta: float = 0.0
) -> torch.Tensor:
    """Per-task mean loss over the valid (masked) entries -> ``(T,)``; an empty task gives 0.

    ``mse``: squared error of predicted ratings (Huber's with ``huber_delta > 0``,
    see :func:`rating_errors`). ``bce``: binary cross-entropy with ``predictions``
    as logits and 0/1 targets.
    """
    if kind == "mse":
        errors = rating_errors(predictions, targets, huber_delta)
    elif kind == "bce":
        errors = F.binary_cross_entropy_with_logits(predictions, targets, reduction="none")
    else:
        raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got '{kind}'")
    weights = mask.to(errors.dtype)
    return (errors * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1.0)


def pointwise_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "mse", *, huber_delta: float = 0.0) -> torch.Tensor:
    """``L_trans`` on a batch of (user, item) pairs: the mean squared (or Huber, :func:`rating_errors`) error, or BCE on logits."""
    if kind == "mse":
        return rating_errors(predictions, targets, huber_delta).mean() if huber_delta > 0 else F.mse_loss(predictions, targets)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(predictions, targets)
    raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got '{kind}'")


def l2_penalty(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``L0`` before its weight: ``Σ‖θ − θ_source‖²`` (L2-SP) when ``anchor`` is given, else ``Σ‖θ‖²``.

    Parameters absent from ``anchor`` (e.g. new layers) fall back to plain L2.
    """
    total = None
    for name, value in params.items():
        ref = anchor.get(name) if anchor is not None else None
        term = ((value - ref) ** 2).sum() if ref is not None and ref.shape == value.shape else (value ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def occurrence_penalty(
    rows: Mapping[str, tuple[torch.Tensor, torch.Tensor]], anchor: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-occurrence L2 of embedding rows: the mean over a batch of ``Σ_tables ‖row − row_source‖²``.

    ``rows`` maps a table's name to ``(table, index)``, ``index`` holding the
    row of each batch example (a row appears as often as it occurs). Summed
    over an epoch this penalises each row in proportion to how often it is
    seen, the regulariser of SGD matrix factorisation and of weighted-λ ALS,
    instead of shrinking rare and frequent rows alike. Rows are measured from
    the anchor's (L2-SP) where ``anchor`` holds a table of the same shape.
    """
    total = None
    for name, (table, index) in rows.items():
        value = table[index]
        ref = anchor.get(name) if anchor is not None else None
        if ref is not None and ref.shape == table.shape:
            value = value - ref[index]
        term = (value ** 2).reshape(len(index), -1).sum(dim=1).mean()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
