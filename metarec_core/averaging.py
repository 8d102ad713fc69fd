"""Weight averaging and best-epoch keeping: the two ways a run chooses which weights it ends with."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from metarec_core.models import PreferenceModel


class WeightAverage:
    """An exponential moving average of a model's parameters and the inner rates, swapped in to validate and save.

    ``rows`` names embedding tables (model parameter names) whose average is
    kept row by row, lazily: a step that changes only some rows of a table
    touches only those rows of its average (:meth:`catch_up` before the
    optimiser step, :meth:`update` after it), so a step's cost follows the
    batch, not the catalogue. A row that did not change for ``k`` steps has
    been averaged with the same value ``k`` times, which has the closed form
    ``mean ← x + (mean − x)·d_1···d_k``; the row is brought up to date with it
    when it next changes and whenever the average is read (:meth:`apply`,
    :meth:`applied`). The result equals the average updated at every step.
    """

    def __init__(
        self, model: PreferenceModel, inner_lr: dict[str, torch.Tensor], decay: float, rows: Collection[str] = (),
    ) -> None:
        self.live = {**{"model." + n: p for n, p in model.named_parameters()}, **{"inner_lr." + n: v for n, v in inner_lr.items()}}
        self.mean = {n: v.detach().clone() for n, v in self.live.items()}
        self.decay = decay
        self.steps = 0
        self.lazy = tuple("model." + n for n in rows)
        unknown = [n for n in self.lazy if n not in self.live]
        if unknown:
            raise ValueError(f"WeightAverage: no parameter named {', '.join(n[len('model.'):] for n in unknown)}")
        dense = [n for n in self.live if n not in self.lazy]
        self._lives = [self.live[n].detach() for n in dense]
        self._means = [self.mean[n] for n in dense]
        # Per lazy table: the step each row's average is up to date with; and Σ log(decay) over steps 1..k at [k].
        self._since = {n: torch.zeros(self.live[n].shape[0], dtype=torch.long, device=self.live[n].device) for n in self.lazy}
        device = next(iter(self.live.values())).device if self.live else torch.device("cpu")
        self._log_decay = torch.zeros(1024, dtype=torch.float64, device=device)

    def _step_decay(self, step: int) -> float:
        """The decay of step ``step`` (1-based): ramped as ``(1 + n) / (10 + n)``, at most ``decay``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    def catch_up(self, rows: Mapping[str, torch.Tensor] | None = None) -> None:
        """Bring the average of these rows of the lazy tables up to the last step (call before the optimiser changes them).

        ``rows`` maps a table's parameter name to row indices; ``None`` brings every row of every lazy table up to date.
        """
        names = self.lazy if rows is None else [n for n in ("model." + k for k in rows) if n in self._since]
        with torch.no_grad():
            for name in names:
                live, mean, since = self.live[name].detach(), self.mean[name], self._since[name]
                idx = None if rows is None else rows[name[len("model."):]]
                if idx is None:
                    factor = torch.exp(self._log_decay[self.steps] - self._log_decay[since]).to(mean.dtype)
                    mean.copy_(live + (mean - live) * factor.reshape((-1,) + (1,) * (mean.dim() - 1)))
                    since.fill_(self.steps)
                elif idx.numel():
                    factor = torch.exp(self._log_decay[self.steps] - self._log_decay.index_select(0, since.index_select(0, idx)))
                    row_live, row_mean = live.index_select(0, idx), mean.index_select(0, idx)
                    caught = row_live + (row_mean - row_live) * factor.to(mean.dtype).reshape((-1,) + (1,) * (mean.dim() - 1))
                    mean.index_copy_(0, idx, caught)
                    since.index_fill_(0, idx, self.steps)

    def update(self, rows: Mapping[str, torch.Tensor] | None = None) -> None:
        """Move the average towards the current weights (call after each optimiser step).

        The decay ramps up as ``(1 + n) / (10 + n)`` over the first steps, so a short
        run's average is not held back by the initial weights. ``rows``: the rows of
        the lazy tables this step changed (each brought up to date by
        :meth:`catch_up` before the step); their other rows did not change.
        """
        self.steps += 1
        decay = self._step_decay(self.steps)
        if self.steps >= len(self._log_decay):
            self._log_decay = torch.cat([self._log_decay, torch.zeros_like(self._log_decay)])
        self._log_decay[self.steps] = self._log_decay[self.steps - 1] + math.log(decay)
        with torch.no_grad():
            if self._means:
                torch._foreach_lerp_(self._means, self._lives, 1.0 - decay)  # one fused update over every dense tensor
            for table, idx in (rows or {}).items():
                name = "model." + table
                if name not in self._since or idx.numel() == 0:
                    continue
                mean = self.mean[name]
                mean.index_copy_(0, idx, torch.lerp(mean.index_select(0, idx), self.live[name].detach().index_select(0, idx), 1.0 - decay))
                self._since[name].index_fill_(0, idx, self.steps)

    def apply(self) -> None:
        """Overwrite the live weights with the average (training is over)."""
        self.catch_up()
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
