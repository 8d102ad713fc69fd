"""Meta-learning: ``adapt`` a model to tasks from their support sets, and the MAML meta-loss on their query sets."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.func import functional_call

from metarec_core.losses import task_losses
from metarec_core.models import FeatureContext, PreferenceModel
from metarec_core.tasks import Episode, TaskBatch

Params = dict[str, torch.Tensor]

#: Inner-loop update rules of :func:`adapt` (the training default first).
SOLVERS = ("newton", "gradient")
#: How :func:`adapt` combines a task's support losses (the training default first).
REDUCTIONS = ("sum", "mean")


def adapt(
    model: PreferenceModel,
    params: Mapping[str, torch.Tensor],
    support: Episode,
    context: FeatureContext,
    *,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    scope: str = "user",
    loss: str = "mse",
    trace: list[float] | None = None,
    path: list[Params] | None = None,
    reduction: str = "sum",
    solver: str = "newton",
) -> Params:
    """Adapt parameters to each task of a batch by gradient or Newton steps on its support set.

    The module is never mutated: parameters are a plain dict run through
    ``torch.func.functional_call``. Parameters in ``scope`` get a leading task
    dimension ``T`` and each task follows its own gradient (the inner loss is
    the sum of per-task support losses, so task ``t``'s parameters only see
    task ``t``). Tasks with an empty support set keep the starting point.

    Parameters
    ----------
    model
        The module whose forward defines the scores.
    params
        Starting parameters (``dict(model.named_parameters())`` or an
        outer-loop version of them).
    support
        The support sets ``(T, S)`` with masks.
    context
        Side features of users and items.
    steps
        Number of inner gradient steps; ``0`` returns the starting point.
    lr
        Inner learning rate: one number, or a tensor per adapted parameter
        (learned per-parameter rates, Meta-SGD), broadcast against it.
    first_order
        Drop second-order terms (the inner gradients are treated as constants).
        By default the graph through the inner loop is kept, so the outer
        gradient is true second-order MAML when gradients are enabled.
    scope
        Which parameters adapt: ``user`` (offset and taste vector), ``head``
        (the MLP head, as in MeLU), ``user+head`` or ``dense`` (all but the
        embedding tables).
    loss
        ``mse`` (explicit ratings) or ``bce`` (implicit, scores are logits).
    trace
        If given, the mean support loss over tasks before each step and after
        the last one is appended to it (for plots of the inner loop).
    path
        If given, the (detached) parameters before the first step and after
        each step are appended to it, so a caller can score every step.
    reduction
        How a task's support losses combine in the inner loss: ``mean`` (each
        step moves as far whatever the support size) or ``sum`` (steps grow
        with the number of ratings, so a user with one rating moves little
        and one with twenty moves more — the shrinkage a Bayesian update or a
        ridge fold-in applies).
    solver
        ``gradient``: ``θ ← θ − α ⊙ ∇L_support`` (MAML; with learned ``α``,
        Meta-SGD). ``newton``: a damped Gauss–Newton step on the support loss
        plus a Gaussian prior centred on the starting point,
        ``θ ← θ + (JᵀHJ + diag(1/α))⁻¹ (Jᵀg − (θ − θ₀)/α)`` with ``J`` the
        Jacobian of the support scores, ``g`` the negative loss gradient and
        ``H`` the loss curvature per rating. ``α`` (the same per-parameter
        rates) is then the prior variance: how far a user may move from the
        start. For a score linear in the adapted parameters one step is the
        exact ridge / MAP fit (a fold-in whose prior is meta-learned), and it
        shrinks by itself with few ratings. Differentiable, so the
        meta-gradient stays exact; meant for small scopes (``user``).

    Returns
    -------
    dict
        All parameters; those in ``scope`` with shape ``(T, *shape)``.

    Examples
    --------
    >>> adapted = adapt(model, dict(model.named_parameters()), batch.support(), ctx, steps=5, lr=0.1)  # doctest: +SKIP
    >>> scores = score(model, adapted, batch.query(), ctx)  # doctest: +SKIP
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got '{solver}'")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")
    names = model.scope_names(scope)
    n_tasks = int(support.users.shape[0])
    base = dict(params)
    # Only tensors that differ from the module's own need swapping in (fewer swaps per step).
    own = dict(model.named_parameters())
    swapped = {n: v for n, v in base.items() if n not in names and own.get(n) is not v}
    create_graph = torch.is_grad_enabled() and not first_order
    with torch.enable_grad():
        fast = {}
        for name in names:
            start = base[name]
            if not start.requires_grad:
                start = start.detach().requires_grad_(True)
            fast[name] = start.unsqueeze(0).expand(n_tasks, *start.shape)
        if path is not None:
            path.append({**base, **{n: w.detach() for n, w in fast.items()}})
        for _ in range(steps):
            predictions = functional_call(model, {**swapped, **fast}, (support.users, support.items, context), {"warm": support.warm})
            per_task = task_losses(predictions, support.ratings, support.mask, loss)
            if trace is not None:
                trace.append(float(per_task.detach().sum()) / max(n_tasks, 1))
            if solver == "newton":
                fast = _newton_step(predictions, support, fast, {n: base[n] for n in names}, lr, loss, reduction, create_graph)
                if path is not None:
                    path.append({**base, **{n: w.detach() for n, w in fast.items()}})
                continue
            inner = (per_task * support.mask.sum(dim=-1)).sum() if reduction == "sum" else per_task.sum()
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=create_graph, allow_unused=True)
            updated = {}
            for (name, weight), grad in zip(fast.items(), grads):
                if grad is None:
                    updated[name] = weight
                    continue
                if not create_graph:
                    grad = grad.detach()
                step = lr[name] if isinstance(lr, Mapping) else lr
                updated[name] = weight - step * grad
            fast = updated
            if path is not None:
                path.append({**base, **{n: w.detach() for n, w in fast.items()}})
        if trace is not None and steps > 0:
            with torch.no_grad():
                predictions = functional_call(model, {**swapped, **fast}, (support.users, support.items, context), {"warm": support.warm})
                trace.append(float(task_losses(predictions, support.ratings, support.mask, loss).sum()) / max(n_tasks, 1))
    if not torch.is_grad_enabled():
        fast = {name: weight.detach() for name, weight in fast.items()}
    return {**base, **fast}


def _newton_step(
    predictions: torch.Tensor, support: Episode, fast: Params, start: Params, lr: float | Mapping[str, torch.Tensor],
    loss: str, reduction: str, create_graph: bool,
) -> Params:
    """One damped Gauss–Newton step of every task's adapted parameters (see :func:`adapt`)."""
    n_tasks, n_support = predictions.shape
    if n_support == 0:
        return fast
    names = list(fast)
    eye = torch.eye(n_support, dtype=predictions.dtype, device=predictions.device)
    one_hot = eye.unsqueeze(1).expand(n_support, n_tasks, n_support)
    # Row s of every task's Jacobian at once: tasks are independent, so the gradient
    # of sum_t f[t, s] with respect to task t's parameters is d f[t, s] / d theta_t.
    rows = torch.autograd.grad(predictions, [fast[n] for n in names], grad_outputs=one_hot, is_grads_batched=True, create_graph=create_graph, allow_unused=True)
    blocks = [
        (r if r is not None else fast[n].new_zeros((n_support,) + tuple(fast[n].shape))).reshape(n_support, n_tasks, -1)
        for n, r in zip(names, rows)
    ]
    jacobian = torch.cat(blocks, dim=-1).transpose(0, 1)  # (T, S, P)
    if not create_graph:
        # First order: the Jacobian, residuals and current point are constants; the prior
        # variances still get their gradient (as a gradient step's rates do).
        predictions = predictions.detach()
    weights = support.mask.to(predictions.dtype)
    if reduction == "mean":
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)
    if loss == "bce":
        probability = torch.sigmoid(predictions)
        residual, curvature = support.ratings - probability, probability * (1 - probability)
    else:
        residual, curvature = support.ratings - predictions, torch.ones_like(predictions)
    variance = torch.cat([
        (lr[n] if isinstance(lr, Mapping) else torch.full_like(start[n], float(lr))).expand_as(start[n]).reshape(-1)
        for n in names
    ]).clamp(min=1e-6)
    theta = torch.cat([fast[n].reshape(n_tasks, -1) for n in names], dim=-1)
    theta0 = torch.cat([start[n].reshape(1, -1) for n in names], dim=-1)
    if not create_graph:
        theta, theta0 = theta.detach(), theta0.detach()
    weighted = jacobian * (weights * curvature).unsqueeze(-1)
    system = jacobian.transpose(1, 2) @ weighted + torch.diag_embed((1.0 / variance).expand(n_tasks, -1))
    rhs = (jacobian.transpose(1, 2) @ (weights * residual).unsqueeze(-1)).squeeze(-1) - (theta - theta0) / variance
    delta = torch.linalg.solve(system, rhs)
    updated, offset = {}, 0
    for n in names:
        size = fast[n][0].numel()
        updated[n] = fast[n] + delta[:, offset:offset + size].reshape(fast[n].shape)
        offset += size
    return updated


def score(model: PreferenceModel, params: Mapping[str, torch.Tensor], episode: Episode, context: FeatureContext) -> torch.Tensor:
    """Scores ``(T, N)`` of an episode's items under (possibly adapted) parameters."""
    return functional_call(model, dict(params), (episode.users, episode.items, context), {"warm": episode.warm})


def meta_loss(
    model: PreferenceModel,
    params: Mapping[str, torch.Tensor],
    tasks: TaskBatch,
    context: FeatureContext,
    *,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    scope: str = "user",
    loss: str = "mse",
    reduction: str = "sum",
    query_pooling: str = "task",
    solver: str = "newton",
    huber_delta: float = 0.0,
) -> torch.Tensor:
    """``L_meta``: the mean over tasks of each task's query loss after adapting on its support set.

    ``huber_delta > 0`` makes the query loss of ratings Huber's
    (:func:`~metarec_core.losses.rating_errors`); the support loss the inner
    loop fits stays the squared error (the fold-in is a ridge solve).

    Differentiating it with respect to ``params`` gives the MAML meta-gradient
    (second order unless ``first_order``). ``query_pooling="rating"`` weights
    each task by its number of query ratings instead (the pooled mean over all
    query ratings, which is what a pooled MAE rewards).
    """
    adapted = adapt(model, params, tasks.support(), context, steps=steps, lr=lr, first_order=first_order, scope=scope, loss=loss, reduction=reduction, solver=solver)
    query = tasks.query()
    per_task = task_losses(score(model, adapted, query, context), query.ratings, query.mask, loss, huber_delta=huber_delta)
    has_query = query.mask.any(dim=1)
    if not bool(has_query.any()):
        return per_task.sum() * 0.0
    if query_pooling == "rating":
        counts = query.mask.sum(dim=1).to(per_task.dtype)
        return (per_task * counts).sum() / counts.sum()
    return per_task[has_query].mean()
