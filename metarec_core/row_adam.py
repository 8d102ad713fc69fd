"""Row-wise (lazy) Adam: an optimiser for embedding tables that updates only the rows a step looked up."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch


class RowAdam(torch.optim.Optimizer):
    """Adam on embedding tables, applied each step to the rows that step looked up and to no others.

    A dense Adam step reads and writes every row of every table, so a step's
    cost grows with the catalogue (users × items) instead of with the batch;
    and a row the batch never saw still moves, driven by its stale momentum.
    Here a step updates, for each table, only the rows it is given, with the
    gradient it is given for them (see :func:`row_gradient`): it enters their
    first and second moments and they take the Adam step; every other row
    keeps its value and its moments (the lazy Adam of
    sparse-gradient recommenders; ``torch.optim.SparseAdam`` behaves alike).
    The bias correction counts the optimiser's steps, as dense Adam's does, so
    a row looked up at every step follows dense Adam exactly.

    Parameters
    ----------
    tables
        The tables (2-D parameters, one row per user or item).
    lr
        Learning rate (a learning-rate scheduler may change ``param_groups[0]["lr"]``).
    betas, eps
        Adam's moment decays and denominator term.
    coast
        Before a row's update, also move it the steps dense Adam would have
        taken on its momentum alone while it was left out (in closed form, see
        :meth:`_coast`), so a rarely seen row's one gradient moves it as far as
        under dense Adam instead of a tenth of that.
    """

    def __init__(
        self, tables: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        coast: bool = False,
    ) -> None:
        super().__init__(list(tables), {"lr": lr, "betas": betas, "eps": eps})
        self.steps = 0
        self.coast = coast

    @torch.no_grad()
    def step(self, updates: Sequence[tuple[torch.Tensor, torch.Tensor] | None]) -> None:  # type: ignore[override]
        """One Adam step on some rows of each table.

        Parameters
        ----------
        updates
            For each table, in the order given at construction, ``(rows, grad)``:
            the indices of the rows to update (unique) and their gradient
            ``(len(rows), *row_shape)``; ``None`` updates no row of that table.
        """
        self.steps += 1
        tables = [p for group in self.param_groups for p in group["params"]]
        if len(updates) != len(tables):
            raise ValueError(f"RowAdam.step needs an update (or None) for each of its {len(tables)} tables, got {len(updates)}")
        given = iter(updates)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            correction1 = 1.0 - beta1 ** self.steps
            correction2 = 1.0 - beta2 ** self.steps
            for table in group["params"]:
                update = next(given)
                if update is None or update[0].numel() == 0:
                    continue
                idx, grad = update
                state = self.state[table]
                if not state:
                    state["exp_avg"] = torch.zeros_like(table)
                    state["exp_avg_sq"] = torch.zeros_like(table)
                    state["last"] = torch.zeros(table.shape[0], dtype=torch.long, device=table.device)
                m = state["exp_avg"].index_select(0, idx)
                v = state["exp_avg_sq"].index_select(0, idx)
                if self.coast:
                    self._coast(table, idx, m, v, state["last"].index_select(0, idx), lr, beta1, beta2, eps)
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                state["exp_avg"].index_copy_(0, idx, m)
                state["exp_avg_sq"].index_copy_(0, idx, v)
                state["last"].index_fill_(0, idx, self.steps)
                table.index_add_(0, idx, (m / correction1) / ((v / correction2).sqrt_().add_(eps)), alpha=-lr)

    def _coast(
        self, table: torch.Tensor, idx: torch.Tensor, m: torch.Tensor, v: torch.Tensor, last: torch.Tensor,
        lr: float, beta1: float, beta2: float, eps: float,
    ) -> None:
        """Rows ``idx`` left out since step ``last``: the steps dense Adam would have taken on their momentum alone.

        With no gradient for ``k`` steps, dense Adam decays the moments by ``β1^k`` and
        ``β2^k`` and moves the row by ``lr·m̂/√v̂`` times ``Σ_j (β1/√β2)^j``, a geometric
        sum (the bias corrections taken at the first skipped step; ``eps`` ignored
        inside the sum). ``m`` and ``v`` are updated in place.
        """
        skipped = (self.steps - 1 - last).clamp_(min=0)
        if not bool((skipped > 0).any()):
            return
        rho = beta1 / math.sqrt(beta2)
        k = skipped.to(torch.float64)
        first = (last + 1).to(torch.float64)
        factor = rho * (1.0 - rho ** k) / (1.0 - rho) * torch.sqrt(1.0 - beta2 ** first) / (1.0 - beta1 ** first)
        shape = (-1,) + (1,) * (m.dim() - 1)
        table.index_add_(0, idx, m / (v.sqrt() + eps) * factor.to(m.dtype).reshape(shape), alpha=-lr)
        m.mul_((beta1 ** k).to(m.dtype).reshape(shape))
        v.mul_((beta2 ** k).to(v.dtype).reshape(shape))


def row_gradient(table: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The gradient of ``table`` on ``rows`` (unique indices), ``(len(rows), *row_shape)``, from a dense or sparse ``.grad``.

    ``slots`` is a scratch vector of ``-1`` with one entry per table row (left
    as it was found): a sparse gradient's entries outside ``rows`` are dropped,
    so they must be zero (a lookup whose loss weight is 0, such as padding).
    """
    grad = table.grad
    if grad is None:
        return table.new_zeros((len(rows),) + tuple(table.shape[1:]))
    if not grad.is_sparse:
        return grad.index_select(0, rows)
    indices, values = grad._indices()[0], grad._values()
    n = len(rows)
    slots.index_copy_(0, rows, torch.arange(n, device=rows.device))
    at = slots.index_select(0, indices)
    slots.index_fill_(0, rows, -1)
    at = torch.where(at < 0, n, at)  # entries outside ``rows`` go to a spare row that is dropped
    out = table.new_zeros((n + 1,) + tuple(table.shape[1:]))
    return out.index_add_(0, at, values)[:n]
