"""Weight averaging and best-epoch keeping: the two ways a run chooses which weights it ends with."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from metarec_core.models import PreferenceModel


class WeightAverage:
    """An exponential moving average of a model's parameters and the inner rates, swapped in to validate and save."""

    def __init__(self, model: PreferenceModel, inner_lr: dict[str, torch.Tensor], decay: float) -> None:
        self.live = {**{"model." + n: p for n, p in model.named_parameters()}, **{"inner_lr." + n: v for n, v in inner_lr.items()}}
        self.mean = {n: v.detach().clone() for n, v in self.live.items()}
        self.decay = decay
        self.steps = 0
        self._lives = [v.detach() for v in self.live.values()]
        self._means = [self.mean[n] for n in self.live]

    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step).

        The decay ramps up as ``(1 + n) / (10 + n)`` over the first steps, so a short
        run's average is not held back by the initial weights.
        """
        self.steps += 1
        decay = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        with torch.no_grad():
            torch._foreach_lerp_(self._means, self._lives, 1.0 - decay)  # one fused update over every tensor

    def apply(self) -> None:
        """Overwrite the live weights with the average (training is over)."""
        with torch.no_grad():
            for name, value in self.live.items():
                value.copy_(self.mean[name])

    @contextlib.contextmanager
    def applied(self):
        """The average in place of the live weights inside the block; the live weights are back after it."""
        saved = {n: v.detach().clone() for n, v in self.live.items()}
        self.apply()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in self.live.items():
                    value.copy_(saved[name])


class BestEpoch:
    """The weights of the epoch with the best validation score (MAE, or AUC on implicit data)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.value = math.inf
        self.weights: dict[str, torch.Tensor] = {}
        self.rates: dict[str, torch.Tensor] = {}

    def offer(self, epoch: int, metrics: Mapping[str, float], model: PreferenceModel, inner_lr: dict[str, torch.Tensor]) -> None:
        if "valid_mae" in metrics:
            value = metrics["valid_mae"]
        elif "valid_auc" in metrics:
            value = -metrics["valid_auc"]
        else:
            return
        if value < self.value:
            self.epoch, self.value = epoch, value
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.rates = {k: v.detach().clone() for k, v in inner_lr.items()}

    def restore(self, model: PreferenceModel, inner_lr: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(self.weights)
        with torch.no_grad():
            for name, value in inner_lr.items():
                value.copy_(self.rates[name])


#: Later epochs count as worse than the best one when they are off by more than this share of its value.
WORSE_SHARE = 0.0025


@dataclass(frozen=True)
class ValidationTrend:
    """How a validation metric went around its best epoch (the one :class:`BestEpoch` keeps).

    Attributes
    ----------
    best_epoch, best
        The epoch with the best value, and the value.
    last_epoch, last
        The last validated epoch, and its value.
    worse_after
        Whether the epochs after the best one ended worse than it (by more
        than :data:`WORSE_SHARE` of its value): more epochs did not help.
    """

    best_epoch: int
    best: float
    last_epoch: int
    last: float
    worse_after: bool


def validation_trend(epochs: Sequence[int], values: Sequence[float], *, lower_is_better: bool = True) -> ValidationTrend | None:
    """The best epoch of a validation curve and whether the epochs after it got worse (``None`` without points).

    Ties keep the earliest epoch, as :class:`BestEpoch` does.

    Parameters
    ----------
    epochs, values
        The curve (any order; sorted by epoch here).
    lower_is_better
        ``True`` for MAE, ``False`` for AUC or nDCG.

    Returns
    -------
    ValidationTrend or None
    """
    points = sorted((int(e), float(v)) for e, v in zip(epochs, values) if v == v)
    if not points:
        return None
    sign = 1.0 if lower_is_better else -1.0
    best_epoch, best = min(points, key=lambda p: (sign * p[1], p[0]))
    last_epoch, last = points[-1]
    worse = sign * (last - best) > WORSE_SHARE * max(abs(best), 1e-12)
    return ValidationTrend(best_epoch, best, last_epoch, last, bool(last_epoch > best_epoch and worse))
