"""The inner loop's per-parameter rates: where they start, and how a run without a meta phase picks them."""
from __future__ import annotations

import logging
import math

import torch

from metarec_core.models import PreferenceModel
from metarec_core.train_config import TrainConfig

log = logging.getLogger(__name__)


def initial_inner_rates(model: PreferenceModel, config: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """One rate per adapted parameter entry, all at ``inner_lr``; trainable when ``learn_inner_lr``."""
    names = model.scope_names(config.adapt_scope)
    params = dict(model.named_parameters())
    return {
        name: torch.full_like(params[name], config.inner_lr, device=device).requires_grad_(config.learn_inner_lr)
        for name in names
    }


#: Candidate inner rates (Newton: prior variances; gradient: step sizes) tried on the
#: validation users when no meta phase learns them (``lambda_meta = 0``).
PRIOR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def validated_prior(inner_lr: dict[str, torch.Tensor], validate, kind: str) -> dict[str, float]:
    """Set every inner rate to the value of :data:`PRIOR_GRID` with the best validation score; return its metrics.

    With ``lambda_meta = 0`` (transfer only) no meta-gradient learns how far a
    new user should move from the start, so that one number is chosen like the
    fold-in penalty of the ALS baseline: on held-out training users (K-shot
    MAE; AUC on implicit data).
    """
    key, sign = ("valid_auc", -1.0) if kind == "bce" else ("valid_mae", 1.0)
    before = {name: rate.detach().clone() for name, rate in inner_lr.items()}
    best: tuple[float, float, dict[str, float]] | None = None
    for value in PRIOR_GRID:
        with torch.no_grad():
            for rate in inner_lr.values():
                rate.fill_(value)
        metrics = validate()
        score = metrics.get(key)
        if score is None:  # the validation users give no score (e.g. one class only): nothing to choose by
            break
        if math.isfinite(score) and (best is None or sign * score < best[0]):
            best = (sign * score, value, metrics)
    with torch.no_grad():
        for name, rate in inner_lr.items():
            if best is None:
                rate.copy_(before[name])
            else:
                rate.fill_(best[1])
    if best is None:
        log.warning("no meta phase and no usable validation score: the inner rates stay as they were")
        return validate()
    log.info("no meta phase: inner rates set to %g on the validation users", best[1])
    return best[2]


#: Factors by which :func:`calibrated_rates` may scale the meta-learned inner rates (1 = as learned, tried first).
RATE_FACTORS = (1.0, 0.5, 0.7, 1.4, 2.0)


def calibrated_rates(inner_lr: dict[str, torch.Tensor], validate, kind: str, before: dict[str, float] | None = None) -> dict[str, float]:
    """Scale every meta-learned inner rate by the factor of :data:`RATE_FACTORS` with the best validation score.

    The meta phase learns the rates (prior variances of the fold-in) on
    training users sampled as tasks; on held-out users a uniformly stronger or
    weaker prior can fit better (on ML-1M the learned prior was too weak: ×0.7
    lowered validation and test MAE). Like the ALS baseline's fold-in penalty,
    this one number is chosen on the validation users (K-shot MAE; AUC on
    implicit data); the rates stay as learned unless a factor scores strictly
    better, or when the rates as learned have no score to compare with.
    ``before`` is the validation of the rates as learned, if already computed.
    Returns the metrics of the rates kept.
    """
    key, sign = ("valid_auc", -1.0) if kind == "bce" else ("valid_mae", 1.0)
    learned = {name: rate.detach().clone() for name, rate in inner_lr.items()}

    def scale(factor: float) -> None:
        with torch.no_grad():
            for name, rate in inner_lr.items():
                rate.copy_(learned[name] * factor)

    best_metrics = before if before is not None else validate()
    best_score, best_factor = best_metrics.get(key), 1.0
    if best_score is not None and math.isfinite(best_score):
        for factor in RATE_FACTORS:
            if factor == 1.0:
                continue
            scale(factor)
            metrics = validate()
            score = metrics.get(key)
            if score is not None and math.isfinite(score) and sign * score < sign * best_score:
                best_score, best_factor, best_metrics = score, factor, metrics
    scale(best_factor)
    if best_factor != 1.0:
        log.info("inner rates scaled by %g on the validation users", best_factor)
    return best_metrics
