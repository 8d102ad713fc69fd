"""Tests of metarec_core.meta: adapt, score and the MAML meta-loss."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.losses import task_losses
from metarec_core.meta import adapt, meta_loss, score
from metarec_core.models import EntityTensors, FeatureContext, ModelConfig, ModelShape, PreferenceModel
from metarec_core.tasks import UserRatings, sample_tasks


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    shape = ModelShape(n_users=30, n_items=25, user_categorical=(4,), item_multilabel=(6,), item_numeric=1, global_mean=3.0)
    model = PreferenceModel(shape, ModelConfig(factor_dim=4, feature_dim=3, hidden=(8,)))
    # Give the zero-initialised last head layer some weight so head gradients are not trivially zero.
    with torch.no_grad():
        model.head[-1].weight.normal_(std=0.3)
        model.user_taste.normal_(std=0.3)
    g = torch.Generator().manual_seed(1)
    context = FeatureContext(
        EntityTensors(torch.randint(0, 4, (30, 1), generator=g), (), torch.zeros(30, 0)),
        EntityTensors(torch.zeros(25, 0, dtype=torch.long), (torch.randint(0, 6, (25, 3), generator=g),), torch.randn(25, 1, generator=g)),
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user": rng.integers(0, 30, 900), "item": rng.integers(0, 25, 900), "rating": rng.integers(1, 6, 900).astype(np.float32),
    }).drop_duplicates(["user", "item"])
    model.mark_known(frame["user"].to_numpy(), frame["item"].to_numpy())
    tasks = sample_tasks(UserRatings(frame, 30), np.arange(8), support_size=5, query_size=8, rng=rng)
    return model, context, tasks


@pytest.mark.parametrize("scope", ["user", "head", "user+head", "dense"])
def test_adapt_leaves_module_untouched(setup, scope):
    model, context, tasks = setup
    before = copy.deepcopy(model.state_dict())
    params = dict(model.named_parameters())
    adapted = adapt(model, params, tasks.support(), context, steps=3, lr=0.1, scope=scope, reduction="mean", solver="gradient")
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    changed = [n for n in model.scope_names(scope) if not torch.allclose(adapted[n], params[n].expand_as(adapted[n]))]
    assert changed, "adaptation changed no parameter"


def test_zero_steps_is_identity(setup):
    model, context, tasks = setup
    params = dict(model.named_parameters())
    adapted = adapt(model, params, tasks.support(), context, steps=0, lr=0.1, scope="user+head", reduction="mean", solver="gradient")
    q = tasks.query()
    assert torch.allclose(score(model, adapted, q, context), score(model, params, q, context))


def test_adaptation_lowers_support_loss(setup):
    model, context, tasks = setup
    trace: list[float] = []
    adapt(model, dict(model.named_parameters()), tasks.support(), context, steps=5, lr=0.05, scope="user", trace=trace, reduction="mean", solver="gradient")
    assert len(trace) == 6
    assert trace[-1] < trace[0]


def test_tasks_adapt_independently(setup):
    """Task t's adapted parameters depend only on task t's support set."""
    model, context, tasks = setup
    params = dict(model.named_parameters())
    together = adapt(model, params, tasks.support(), context, steps=3, lr=0.1, scope="user+head", reduction="mean", solver="gradient")
    for t in (0, 3):
        alone = adapt(model, params, tasks.select([t]).support(), context, steps=3, lr=0.1, scope="user+head", reduction="mean", solver="gradient")
        for name in model.scope_names("user+head"):
            assert torch.allclose(together[name][t], alone[name][0], atol=1e-6), name


@pytest.mark.parametrize("first_order", [False, True])
def test_vectorised_meta_gradient_equals_task_loop(setup, first_order):
    model, context, tasks = setup
    params = dict(model.named_parameters())
    names = list(params)
    kwargs = dict(steps=3, lr=0.1, scope="user+head", first_order=first_order, reduction="mean", solver="gradient")
    batched = torch.autograd.grad(meta_loss(model, params, tasks, context, **kwargs), [params[n] for n in names], allow_unused=True)
    loop_total = sum(meta_loss(model, params, tasks.select([t]), context, **kwargs) for t in range(len(tasks))) / len(tasks)
    looped = torch.autograd.grad(loop_total, [params[n] for n in names], allow_unused=True)
    for name, a, b in zip(names, batched, looped):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_second_order_differs_from_first_order(setup):
    model, context, tasks = setup
    params = dict(model.named_parameters())
    kwargs = dict(steps=3, lr=0.1, scope="user+head", reduction="mean", solver="gradient")
    second = torch.autograd.grad(meta_loss(model, params, tasks, context, **kwargs), [params["item_factor.weight"], params["user_taste"]])
    first = torch.autograd.grad(meta_loss(model, params, tasks, context, first_order=True, **kwargs), [params["item_factor.weight"], params["user_taste"]])
    assert not torch.allclose(second[0], first[0], atol=1e-6)
    assert not torch.allclose(second[1], first[1], atol=1e-6)


def test_learned_per_parameter_rates_are_differentiable(setup):
    model, context, tasks = setup
    params = dict(model.named_parameters())
    rates = {n: torch.full_like(params[n], 0.1, requires_grad=True) for n in model.scope_names("user")}
    loss = meta_loss(model, params, tasks, context, steps=2, lr=rates, scope="user", reduction="mean", solver="gradient")
    grads = torch.autograd.grad(loss, list(rates.values()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_adapt_under_no_grad_still_adapts(setup):
    model, context, tasks = setup
    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        adapted = adapt(model, params, tasks.support(), context, steps=2, lr=0.1, scope="user", reduction="mean", solver="gradient")
    assert not adapted["user_taste"].requires_grad
    assert not torch.allclose(adapted["user_taste"][0], params["user_taste"])


def test_sum_reduction_scales_each_step_by_the_support_size(setup):
    """With ``reduction='sum'`` a task with n support ratings steps n times as far as with the mean."""
    model, context, tasks = setup
    params = dict(model.named_parameters())
    one = tasks.select([0])
    n = int(one.support_mask.sum())
    summed = adapt(model, params, one.support(), context, steps=1, lr=0.01, scope="user", reduction="sum", solver="gradient")
    meaned = adapt(model, params, one.support(), context, steps=1, lr=0.01 * n, scope="user", reduction="mean", solver="gradient")
    for name in ("user_offset", "user_taste"):
        assert torch.allclose(summed[name], meaned[name], atol=1e-6)


def test_rating_pooled_meta_loss_is_the_mean_over_all_query_ratings(setup):
    import dataclasses

    model, context, tasks = setup
    mask = tasks.query_mask.clone()
    mask[0, 2:] = False  # task 0 keeps only two query ratings: the poolings now differ
    tasks = dataclasses.replace(tasks, query_mask=mask)
    params = dict(model.named_parameters())
    pooled = meta_loss(model, params, tasks, context, steps=2, lr=0.1, query_pooling="rating", reduction="mean", solver="gradient")
    adapted = adapt(model, params, tasks.support(), context, steps=2, lr=0.1, reduction="mean", solver="gradient")
    query = tasks.query()
    errors = (score(model, adapted, query, context) - query.ratings) ** 2
    assert torch.allclose(pooled, errors[query.mask].mean(), atol=1e-6)
    per_task = meta_loss(model, params, tasks, context, steps=2, lr=0.1, reduction="mean", solver="gradient")
    assert not torch.allclose(pooled, per_task)


def _support_objective(model, params, theta, tasks, t, context, variance):
    episode = tasks.select([t]).support()
    full = {**params, "user_offset": theta["user_offset"].unsqueeze(0), "user_taste": theta["user_taste"].unsqueeze(0)}
    predictions = score(model, full, episode, context)
    fit = 0.5 * (((predictions - episode.ratings) ** 2) * episode.mask).sum()
    prior = sum(0.5 * ((theta[n] - params[n]) ** 2).sum() / variance for n in ("user_offset", "user_taste"))
    return fit + prior


def test_newton_step_is_the_exact_map_fit_when_scores_are_linear_in_the_user(setup):
    """One Newton step lands where the support loss plus the Gaussian prior has zero gradient; a second does not move."""
    model, context, tasks = setup
    with torch.no_grad():
        model.head[-1].weight.zero_()  # the head is now constant: scores are linear in (offset, taste)
    params = {k: v.detach() for k, v in model.named_parameters()}
    variance = 0.3
    one = adapt(model, params, tasks.support(), context, steps=1, lr=variance, scope="user", reduction="sum", solver="newton")
    two = adapt(model, params, tasks.support(), context, steps=2, lr=variance, scope="user", reduction="sum", solver="newton")
    for t in range(len(tasks)):
        theta = {n: one[n][t].clone().requires_grad_(True) for n in ("user_offset", "user_taste")}
        grads = torch.autograd.grad(_support_objective(model, params, theta, tasks, t, context, variance), list(theta.values()))
        assert all(g.abs().max() < 1e-4 for g in grads), t
        assert not torch.allclose(one["user_taste"][t], params["user_taste"])
    for name in ("user_offset", "user_taste"):
        assert torch.allclose(one[name], two[name], atol=1e-5)


def test_newton_steps_lower_the_regularised_support_loss_with_a_nonlinear_head(setup):
    model, context, tasks = setup
    params = {k: v.detach() for k, v in model.named_parameters()}
    adapted = adapt(model, params, tasks.support(), context, steps=3, lr=0.3, scope="user", reduction="sum", solver="newton")
    for t in range(len(tasks)):
        start = {n: params[n].clone() for n in ("user_offset", "user_taste")}
        after = {n: adapted[n][t] for n in ("user_offset", "user_taste")}
        assert _support_objective(model, params, after, tasks, t, context, 0.3) < _support_objective(model, params, start, tasks, t, context, 0.3)


def test_newton_prior_variance_sets_how_far_a_user_moves(setup):
    """Small prior variance keeps the start (strong shrinkage); a large one fits the support closely."""
    model, context, tasks = setup
    params = {k: v.detach() for k, v in model.named_parameters()}
    moves = []
    for variance in (1e-4, 0.1, 10.0):
        with torch.no_grad():
            adapted = adapt(model, params, tasks.support(), context, steps=1, lr=variance, scope="user", reduction="sum", solver="newton")
        moves.append(float((adapted["user_taste"] - params["user_taste"]).norm() + (adapted["user_offset"] - params["user_offset"]).norm()))
    assert moves[0] < 0.01 * moves[2]
    assert moves[0] < moves[1] < moves[2]


def test_newton_meta_gradient_vectorised_equals_task_loop_and_reaches_the_prior_variance(setup):
    model, context, tasks = setup
    params = dict(model.named_parameters())
    names = list(params)
    rates = {n: torch.full_like(params[n], 0.3, requires_grad=True) for n in model.scope_names("user")}
    kwargs = dict(steps=2, lr=rates, scope="user", reduction="sum", solver="newton")
    batched = torch.autograd.grad(meta_loss(model, params, tasks, context, **kwargs), [params[n] for n in names] + list(rates.values()), allow_unused=True)
    loop_total = sum(meta_loss(model, params, tasks.select([t]), context, **kwargs) for t in range(len(tasks))) / len(tasks)
    looped = torch.autograd.grad(loop_total, [params[n] for n in names] + list(rates.values()), allow_unused=True)
    for name, a, b in zip(names + ["rate offset", "rate taste"], batched, looped):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert all(g.abs().sum() > 0 for g in batched[-2:])


def test_newton_on_implicit_data_lowers_the_support_loss(setup):
    model, context, tasks = setup
    import dataclasses

    binary = dataclasses.replace(tasks, support_ratings=(tasks.support_ratings >= 4).float())
    trace: list[float] = []
    adapt(model, dict(model.named_parameters()), binary.support(), context, steps=2, lr=1.0, scope="user", loss="bce", reduction="sum", solver="newton", trace=trace)
    assert trace[-1] < trace[0]


def test_unknown_solver_or_reduction_is_rejected(setup):
    model, context, tasks = setup
    with pytest.raises(ValueError, match="solver"):
        adapt(model, dict(model.named_parameters()), tasks.support(), context, steps=1, lr=0.1, solver="adam")
    with pytest.raises(ValueError, match="reduction"):
        adapt(model, dict(model.named_parameters()), tasks.support(), context, steps=1, lr=0.1, reduction="median", solver="gradient")


def test_newton_with_no_support_ratings_keeps_the_start(setup):
    import dataclasses

    model, context, tasks = setup
    params = {k: v.detach() for k, v in model.named_parameters()}
    empty = dataclasses.replace(tasks, support_items=tasks.support_items[:, :0], support_ratings=tasks.support_ratings[:, :0], support_mask=tasks.support_mask[:, :0])
    masked = dataclasses.replace(tasks, support_mask=torch.zeros_like(tasks.support_mask))
    for batch in (empty, masked):
        with torch.no_grad():
            adapted = adapt(model, params, batch.support(), context, steps=2, lr=0.5, scope="user", reduction="sum", solver="newton")
        assert torch.allclose(adapted["user_taste"], params["user_taste"].expand_as(adapted["user_taste"]))
        assert torch.allclose(adapted["user_offset"], params["user_offset"].expand_as(adapted["user_offset"]))


def test_first_order_newton_treats_the_step_as_constant_but_still_learns_the_prior_variance(setup):
    """First order: d L_query / d start = d L_query / d adapted (the step is a constant), and α keeps its gradient."""
    model, context, tasks = setup
    params = dict(model.named_parameters())
    rates = {n: torch.full_like(params[n], 0.3, requires_grad=True) for n in model.scope_names("user")}
    kwargs = dict(steps=1, lr=rates, scope="user", reduction="sum", solver="newton")
    first = torch.autograd.grad(meta_loss(model, params, tasks, context, first_order=True, **kwargs), [params["user_taste"], *rates.values()])
    second = torch.autograd.grad(meta_loss(model, params, tasks, context, **kwargs), [params["user_taste"], *rates.values()])
    assert all(g.abs().sum() > 0 for g in first[1:])
    assert not torch.allclose(first[0], second[0], atol=1e-6)
    # The first-order gradient is the query-loss gradient at each task's adapted point, averaged over tasks.
    with torch.no_grad():
        adapted = adapt(model, params, tasks.support(), context, **kwargs)
    at = adapted["user_taste"].clone().requires_grad_(True)
    query = tasks.query()
    per_task = task_losses(score(model, {**adapted, "user_taste": at}, query, context), query.ratings, query.mask)
    (expected,) = torch.autograd.grad(per_task[query.mask.any(dim=1)].mean(), [at])
    assert torch.allclose(first[0], expected.sum(dim=0), atol=1e-6)


def test_adapt_defaults_are_the_default_runs_inner_loop():
    """A direct caller of adapt or meta_loss gets the algorithm a default run uses (Newton fold-in, summed support loss)."""
    import inspect

    from metarec_core.meta import meta_loss
    from metarec_core.train_config import TrainConfig

    expected = TrainConfig().inner_loop()
    for function in (adapt, meta_loss):
        defaults = {n: p.default for n, p in inspect.signature(function).parameters.items() if n in expected}
        assert defaults == expected, function.__name__
