"""Tests of metarec_core.training: ``fit`` end to end — phases, averaging, progress, stopping, NaN handling and quality.

The pieces ``fit`` is built from have their own test files (train_config, schedule, progress,
averaging, inner_rates, transfer, training_data, scoring, artifacts); here runs are fitted.
Mechanics train on ``tiny_scenario``; the quality tests train longer on a larger scenario and are slow.
"""
import itertools

import numpy as np
import pytest
import torch

from metarec_core.artifacts import load_run, read_metrics
from metarec_core.errors import ConfigError, TrainingError
from metarec_core.inner_rates import PRIOR_GRID, RATE_FACTORS
from metarec_core.recommender import Recommender
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit

#: Short runs on tiny_scenario (users with 5-20 ratings, so K = 5).
TINY = {
    "num_epochs": 2, "meta_epochs": 1, "trans_epochs": 1, "meta_batch_size": 16, "batch_size": 128, "inner_steps": 3,
    "support_size": 5, "eval_support_size": 5, "device": "cpu",
}
#: Runs long enough to learn something, on the larger ``scenario``.
FAST = {"num_epochs": 2, "meta_epochs": 1, "trans_epochs": 1, "meta_batch_size": 32, "batch_size": 256, "inner_steps": 3}


@pytest.fixture(scope="module")
def scenario():
    # Demographics carry no group signal here: only the ratings can reveal a user's group.
    return make_synthetic(SyntheticConfig(n_users=240, n_items=120, feature_signal=0.0, seed=3))


@pytest.fixture(scope="module")
def tiny(tiny_scenario):
    return tiny_scenario.dataset


def tiny_config(**values) -> TrainConfig:
    return TrainConfig(**{**TINY, **values})


def config(**values) -> TrainConfig:
    return TrainConfig(**{**FAST, **values})


def test_zero_lambda_turns_a_phase_off(tiny):
    phases = {}
    for name, values in (("transfer", {"lambda_meta": 0.0}), ("meta", {"lambda_trans": 0.0})):
        seen = set()
        fit(tiny_config(num_epochs=1, **values), tiny, on_progress=lambda e: seen.add(e.phase))
        phases[name] = seen
    assert "meta" not in phases["transfer"] and "transfer" in phases["transfer"]
    assert "transfer" not in phases["meta"] and "meta" in phases["meta"]


def test_fit_saves_the_weight_average_not_the_last_step(tiny, tmp_path, monkeypatch):
    import metarec_core.averaging as averaging

    seen = {}
    original = averaging.WeightAverage.apply

    def apply(self):
        seen["last"] = {n: v.detach().clone() for n, v in self.live.items()}
        seen["mean"] = {n: v.detach().clone() for n, v in self.mean.items()}
        original(self)

    monkeypatch.setattr(averaging.WeightAverage, "apply", apply)
    fit(tiny_config(ema_decay=0.9, keep_best=False), tiny, out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    saved = dict(run.model.named_parameters())
    name = "model.item_factor.weight"
    assert torch.allclose(saved["item_factor.weight"], seen["mean"][name])
    assert not torch.allclose(seen["mean"][name], seen["last"][name])  # averaging changed something
    # The inner rates are the averaged ones, times the one factor chosen on the validation users.
    factors = {round(float((value / seen["mean"]["inner_lr." + rate]).mean()), 6) for rate, value in run.inner_lr.items()}
    assert len(factors) == 1 and factors.pop() in {round(f, 6) for f in RATE_FACTORS}
    for rate, value in run.inner_lr.items():
        ratio = value / seen["mean"]["inner_lr." + rate]
        assert torch.allclose(ratio, ratio.reshape(-1)[0].expand_as(ratio))


def test_transfer_only_run_picks_its_prior_on_validation_users(tiny, tmp_path):
    fit(tiny_config(lambda_meta=0.0, inner_lr=0.5), tiny, out_dir=tmp_path / "run")
    rates = load_run(tmp_path / "run").inner_lr
    values = {round(float(v), 6) for rate in rates.values() for v in rate.reshape(-1)}
    assert len(values) == 1 and values.pop() in {round(v, 6) for v in PRIOR_GRID}


def test_progress_events_and_metrics_file(tiny, tmp_path):
    events = []
    result = fit(tiny_config(), tiny, out_dir=tmp_path / "run", on_progress=events.append)
    steps = [e for e in events if e.phase in ("meta", "transfer")]
    assert steps and steps[-1].step == steps[-1].total_steps
    assert [e.step for e in steps] == list(range(1, len(steps) + 1))
    assert all({"total", "l0"} <= set(e.losses) for e in steps)
    assert all("meta" in e.losses for e in steps if e.phase == "meta")
    assert all("trans" in e.losses for e in steps if e.phase == "transfer")
    assert all(e.eta is not None and e.eta >= 0 for e in steps)
    validations = [e for e in events if e.phase == "validate"]
    assert [e.epoch for e in validations] == [1, 2] and "valid_mae" in validations[0].metrics
    assert events[-1].phase == "done" and "test_mae" in events[-1].metrics
    rows = read_metrics(tmp_path / "run")
    assert [r["phase"] for r in rows] == [e.phase for e in events]
    assert not result.stopped and result.epochs_completed == 2


def test_should_stop_stops_cleanly_with_usable_checkpoint(tiny, tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    result = fit(tiny_config(num_epochs=5), tiny, out_dir=tmp_path / "run", should_stop=stop)
    assert result.stopped
    assert result.epochs_completed < 5
    rec = Recommender.from_run_dir(tmp_path / "run")
    scores = rec.score_items(rec.start_state())
    assert np.isfinite(scores).all()


def test_nan_loss_stops_with_a_message(tiny):
    with pytest.raises(TrainingError, match=r"(?s)meta phase, epoch 1.*lower the learning rate \(lr=1e\+30"):
        fit(tiny_config(lr=1e30, lambda_l0=0.0), tiny)


def test_a_diverging_inner_loop_stops_with_a_message(tiny):
    # Gradient steps of size 1e30 overflow; the Newton step with so weak a prior stays finite (or fails to solve,
    # depending on the LAPACK build), so the gradient solver is the one that surely diverges.
    with pytest.raises(TrainingError, match="inner_lr"):
        fit(tiny_config(inner_lr=1e30, inner_solver="gradient", learn_inner_lr=False), tiny)


def test_progress_eta_reaches_zero_and_never_goes_negative(tiny) -> None:
    events = []
    fit(tiny_config(), tiny, on_progress=events.append)
    etas = [e.eta for e in events if e.phase in ("meta", "transfer", "validate")]
    assert etas and min(etas) >= 0.0
    last_step = [e for e in events if e.phase in ("meta", "transfer")][-1]
    assert last_step.eta == pytest.approx(0.0, abs=1.0)  # only the last validation is left, and it is short


def test_early_stopping_skips_the_epochs_after_validation_stops_improving(tiny, monkeypatch):
    """With patience 2, a run whose validation never improves after epoch 1 trains 3 epochs, not 8."""
    import metarec_core.training as training

    scores = itertools.chain([0.9, 0.95, 0.97, 0.99], itertools.repeat(1.0))  # later calls: the final validations
    monkeypatch.setattr(training.Trainer, "validate", lambda self: {"valid_mae": next(scores)})
    events = []
    result = fit(tiny_config(num_epochs=8, patience=2), tiny, on_progress=events.append)
    assert result.epochs_completed == 3
    assert [e.epoch for e in events if e.phase == "validate"] == [1, 2, 3]
    assert result.final_metrics["best_epoch"] == 1.0
    assert events[-1].phase == "done" and events[-2].eta == pytest.approx(0.0, abs=1e-9)
    no_patience = fit(tiny_config(num_epochs=4, patience=0), tiny)
    assert no_patience.epochs_completed == 4


def test_early_stopping_in_a_sequential_run_moves_on_to_the_meta_stage(tiny, monkeypatch):
    """A stalled transfer stage is cut short, but the meta stage still runs."""
    import metarec_core.training as training

    monkeypatch.setattr(training.Trainer, "validate", lambda self: {"valid_mae": 1.0})
    phases = []
    fit(tiny_config(schedule="sequential", num_epochs=5, patience=1), tiny, on_progress=lambda e: phases.append((e.phase, e.epoch)))
    trained = [p for p in phases if p[0] in ("meta", "transfer")]
    assert {e for p, e in trained if p == "transfer"} == {1, 2}
    assert {p for p, _ in trained} == {"transfer", "meta"}


def test_fit_leaves_the_callers_torch_random_state_alone(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(tiny_config(num_epochs=1), tiny)
    assert torch.equal(torch.rand(3), expected)


def test_fit_is_reproducible_under_its_seed(tiny):
    a = fit(tiny_config(num_epochs=1), tiny)
    b = fit(tiny_config(num_epochs=1), tiny)
    c = fit(tiny_config(num_epochs=1, seed=1), tiny)
    assert a.final_metrics == b.final_metrics
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert a.final_metrics != c.final_metrics


def test_implicit_runs_validate_and_test_by_auc(tmp_path):
    implicit = make_synthetic(SyntheticConfig(n_users=60, n_items=40, ratings_per_user=(12, 20), implicit=True, seed=4)).dataset
    events = []
    result = fit(tiny_config(num_epochs=1), implicit, on_progress=events.append, out_dir=tmp_path / "run")
    assert load_run(tmp_path / "run").implicit
    valid = [e.metrics for e in events if e.phase == "validate"]
    assert len(valid) == 1 and set(valid[0]) == {"valid_auc"} and 0.0 <= valid[0]["valid_auc"] <= 1.0
    assert "test_auc" in result.final_metrics and "test_mae" not in result.final_metrics
    assert 0.0 <= result.final_metrics["test_auc"] <= 1.0


# --- quality: these train for real and take several seconds -----------------------------

@pytest.mark.slow
def test_implicit_runs_rank_held_out_items_better_than_chance(tmp_path):
    implicit = make_synthetic(SyntheticConfig(n_users=160, n_items=80, implicit=True, feature_signal=0.0, seed=4)).dataset
    events = []
    result = fit(config(num_epochs=2, device="cpu"), implicit, on_progress=events.append, out_dir=tmp_path / "run")
    valid = [e.metrics["valid_auc"] for e in events if e.phase == "validate"]
    assert len(valid) == 2 and all(0.5 < v <= 1.0 for v in valid)  # better than chance at ranking a user's items
    assert 0.5 < result.final_metrics["test_auc"] <= 1.0


@pytest.mark.slow
def test_adaptation_lowers_new_users_query_error(scenario):
    result = fit(config(num_epochs=4), scenario.dataset)
    no_adapt = fit(config(num_epochs=4, inner_steps=0), scenario.dataset)
    assert result.final_metrics["test_mae"] < no_adapt.final_metrics["test_mae"] - 0.02


@pytest.mark.slow
def test_adaptation_recovers_a_new_users_group(scenario, tmp_path):
    """After a few ratings, the category a new user is predicted to like most is their group's favourite."""
    result = fit(config(num_epochs=4), scenario.dataset, out_dir=tmp_path / "run")
    rec = Recommender.from_run_dir(tmp_path / "run")
    ratings = scenario.dataset.ratings
    cold = np.asarray(result.artifacts.cold_users)
    favourite = scenario.affinity[0].argmax(axis=1)
    hits_adapted = hits_start = 0
    for user in cold:
        rows = ratings[ratings["user"] == user].head(10)
        support = list(zip(rec.items.externals(rows["item"]), rows["rating"]))
        adapted = rec.score_items(rec.adapt_user(support))
        start = rec.score_items(rec.start_state())
        per_category = lambda s: np.bincount(scenario.item_category, weights=s) / np.bincount(scenario.item_category)  # noqa: E731
        want = favourite[scenario.user_group[user]]
        hits_adapted += per_category(adapted).argmax() == want
        hits_start += per_category(start).argmax() == want
    assert hits_adapted / len(cold) > 0.7
    assert hits_adapted > hits_start


def test_fit_refuses_a_run_too_big_for_the_machine_before_building_it(tiny, monkeypatch):
    """A huge hidden layer is refused by name with the estimate, and no model is ever built."""
    import metarec_core.training as training
    from metarec_core.models import ModelConfig

    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(training, "PreferenceModel", built)
    with pytest.raises(ConfigError, match=r"model\.hidden=\[100000000\]"):
        fit(tiny_config(model=ModelConfig(hidden=(100_000_000,))), tiny)


def test_lambda_id_moves_the_id_tables_from_plain_l2_to_the_rows_a_batch_touches(tiny):
    from metarec_core.training import Trainer

    trainer = Trainer(tiny_config(lambda_id=0.1, lambda_l0=1e-3), tiny)
    with torch.no_grad():
        for table in (trainer.model.item_factor, trainer.model.item_bias, trainer.model.user_factor, trainer.model.user_bias):
            table.weight.normal_()
    trainer.l0_term().backward()
    assert trainer.model.item_factor.weight.grad is None and trainer.model.user_bias.weight.grad is None
    assert trainer.model.head[0].weight.grad is not None  # dense weights keep the plain L2
    trainer.model.zero_grad(set_to_none=True)
    rows = torch.arange(16)
    trainer.id_term(trainer.warm_items[rows], trainer.warm_users[rows]).backward()
    touched = np.zeros(tiny.n_items, dtype=bool)
    touched[trainer.warm_items[rows].numpy()] = True
    grad = trainer.model.item_factor.weight.grad.abs().sum(dim=1).numpy()
    assert (grad[touched] > 0).all() and (grad[~touched] == 0).all()
    # Without lambda_id, and with dense table updates, the ID tables are in L0 (every row shrinks at every step).
    plain = Trainer(tiny_config(lambda_l0=1e-3, lambda_id=0.0, table_updates="dense"), tiny)
    with torch.no_grad():
        plain.model.item_factor.weight.normal_()
    plain.l0_term().backward()
    plain.dense_table_gradients()
    assert (plain.model.item_factor.weight.grad.abs().sum(dim=1) > 0).all()


def test_l0_per_pass_spreads_lambda_l0_over_the_steps_of_one_pass(tiny):
    """With l0_unit "pass" a step carries lambda_l0 · batch / n_warm of the prior; with "step" all of it."""
    from metarec_core.training import Trainer

    torch.manual_seed(0)
    per_pass = Trainer(tiny_config(lambda_l0=0.04, l0_unit="pass", batch_size=64), tiny)
    n_warm = len(per_pass.warm_users)
    assert n_warm > 64
    assert per_pass.l0_weight == pytest.approx(0.04 * 64 / n_warm)
    torch.manual_seed(0)
    per_step = Trainer(tiny_config(lambda_l0=0.04, l0_unit="step", batch_size=64), tiny)
    assert per_step.l0_weight == pytest.approx(0.04)
    ratio = float(per_step.l0_term().detach()) / float(per_pass.l0_term().detach())  # same seed, same initial weights
    assert ratio == pytest.approx(n_warm / 64, rel=1e-5)
    with pytest.raises(ValueError, match="l0_unit"):
        tiny_config(l0_unit="epoch")


def test_a_step_updates_only_the_id_rows_its_batch_looks_up(tiny):
    """Rows mode: the table rows (and their averages) of users and items outside the batch keep their values."""
    from metarec_core.training import Trainer

    trainer = Trainer(tiny_config(table_updates="rows"), tiny)
    table = trainer.model.item_factor.weight
    before = table.detach().clone()
    order = torch.arange(len(trainer.warm_users))
    trainer.train_step("transfer", 0, 0, np.arange(0), order)
    looked_up = torch.zeros(tiny.n_items, dtype=torch.bool)
    looked_up[trainer.warm_items[order[: trainer.config.batch_size]]] = True
    changed = (table.detach() != before).any(dim=1)
    assert changed[looked_up].all() and not changed[~looked_up].any()
    assert torch.equal(trainer.average.mean["model.item_factor.weight"][~looked_up], before[~looked_up])
    for b in range(1, 4):  # meta steps: the tasks' items only, no user rows
        users = trainer.model.user_factor.weight.detach().clone()
        trainer.train_step("meta", 0, b, trainer.rng.permutation(trainer.meta_users), order)
        assert torch.equal(trainer.model.user_factor.weight.detach(), users)


def test_rows_mode_charges_each_row_the_l0_of_every_step_it_was_not_looked_up(tiny):
    """With the weights held still, the lazy L0 of the ID tables over a run sums to the every-step L0."""
    from metarec_core.training import Trainer

    trainer = Trainer(tiny_config(lambda_l0=0.5, table_updates="rows"), tiny)
    tables = ("item_factor.weight", "item_bias.weight", "user_factor.weight", "user_bias.weight")
    with torch.no_grad():
        for name in tables:
            trainer.params[name].normal_()
    every_step = trainer.l0_weight * sum(float((trainer.params[n].detach() ** 2).sum()) for n in tables)
    generator = torch.Generator().manual_seed(0)
    lazy, steps = 0.0, 12
    for step in range(steps):
        if step == steps - 1:  # the last step looks up every row
            touched = trainer.touched_rows([torch.arange(tiny.n_items)], [torch.arange(tiny.n_users)])
        else:
            touched = trainer.touched_rows(
                [torch.randint(0, tiny.n_items, (5,), generator=generator)], [torch.randint(0, tiny.n_users, (5,), generator=generator)],
            )
        lazy += float(trainer.l0_term(touched) - trainer.l0_term({}))
        trainer.charge_l0(touched)
        trainer.step += 1
    assert lazy == pytest.approx(steps * every_step, rel=1e-5)


def test_training_with_row_updates_lowers_validation_error_and_returns_a_dense_gradient_model(scenario):
    from metarec_core.training import Trainer

    untrained = Trainer(config(), scenario.dataset).validate()["valid_mae"]
    results = {mode: fit(config(table_updates=mode), scenario.dataset) for mode in ("rows", "dense")}
    for result in results.values():
        assert result.final_metrics["valid_mae"] < untrained - 0.05
    assert abs(results["rows"].final_metrics["test_mae"] - results["dense"].final_metrics["test_mae"]) < 0.05
    assert not results["rows"].model.item_factor.sparse and not results["rows"].model.user_factor.sparse


@pytest.mark.parametrize("phase", ["transfer", "meta"])
def test_dense_table_updates_give_every_parameter_the_gradient_of_the_whole_objective(tiny, phase):
    """Sparse lookups plus L0's table part added by hand: the same gradients as autograd through dense tables and L0."""
    from metarec_core.losses import l2_penalty
    from metarec_core.training import ID_TABLES, Trainer, _sparse_tables

    trainer = Trainer(tiny_config(lambda_l0=0.3, table_updates="dense"), tiny)
    with torch.no_grad():
        for name in ID_TABLES:
            trainer.params[name].normal_(std=0.3)
    tasks = trainer.meta_tasks(trainer.meta_users[:8])
    rows = torch.arange(64)

    def data_term():
        return trainer.meta_term(tasks) if phase == "meta" else trainer.transfer_term(rows)

    grads = {}
    for sparse in (False, True):
        _sparse_tables(trainer.model, tuple(ID_TABLES), sparse)
        trainer.model.zero_grad(set_to_none=True)
        if sparse:
            (data_term() + trainer.l0_term()).backward()
            trainer.dense_table_gradients()
        else:
            penalty = l2_penalty({n: p for n, p in trainer.params.items() if n != "global_bias"})
            (data_term() + trainer.l0_weight * penalty).backward()
        grads[sparse] = {n: p.grad.clone() for n, p in trainer.params.items() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and set(ID_TABLES) <= grads[True].keys()
    for name, grad in grads[False].items():
        assert not grads[True][name].is_sparse
        assert torch.allclose(grads[True][name], grad, atol=1e-6), name


def test_huber_delta_is_the_loss_both_phases_train_on(tiny):
    # Same seed, same first batches: with a tiny δ each error costs about 2δ|e| instead of e², so the first
    # logged losses of both phases shrink by far more than any change of weights could make them.
    first: dict[float, dict[str, float]] = {}
    for delta in (0.0, 0.01):
        seen: dict[str, float] = {}

        def keep(event, seen=seen):
            for phase, name in (("meta", "meta"), ("transfer", "trans")):
                if event.phase == phase and name in event.losses:
                    seen.setdefault(name, float(event.losses[name]))

        fit(tiny_config(num_epochs=1, huber_delta=delta), tiny, on_progress=keep)
        first[delta] = seen
    assert set(first[0.0]) == set(first[0.01]) == {"meta", "trans"}
    for name in ("meta", "trans"):
        assert first[0.01][name] < 0.1 * first[0.0][name]
