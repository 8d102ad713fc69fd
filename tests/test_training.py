"""Tests of metarec_core.training: the objective's schedule, progress, stopping, NaN handling, quality."""
import json

import numpy as np
import pytest
import torch

from metarec_core.artifacts import load_run, read_metrics
from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, TrainingError
from metarec_core.recommender import Recommender
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.presets import GRADIENT_STEPS
from metarec_core.presets import PRESETS
from metarec_core.inner_rates import PRIOR_GRID, validated_prior
from metarec_core.train_config import preset_config, TrainConfig
from metarec_core.schedule import plan
from metarec_core.transfer import source_inner_rates
from metarec_core.progress import TimeLeft
from metarec_core.averaging import WeightAverage
from metarec_core.training import fit

FAST = {"num_epochs": 2, "meta_epochs": 1, "trans_epochs": 1, "meta_batch_size": 32, "batch_size": 256, "inner_steps": 3}


@pytest.fixture(scope="module")
def scenario():
    # Demographics carry no group signal here: only the ratings can reveal a user's group.
    return make_synthetic(SyntheticConfig(n_users=240, n_items=120, feature_signal=0.0, seed=3))


def config(**values) -> TrainConfig:
    return config_from_dict(TrainConfig, {**FAST, **values})


def test_unknown_setting_is_rejected():
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict(TrainConfig, {"lamda_meta": 1.0})
    with pytest.raises(ConfigError):
        config_from_dict(TrainConfig, {"schedule": "random"})
    with pytest.raises(ConfigError):
        config_from_dict(TrainConfig, {"lambda_meta": 0.0, "lambda_trans": 0.0})


@pytest.mark.parametrize("key, value, expected", [
    ("use_text", "no", "true or false"),  # a non-empty string would have counted as true
    ("num_epochs", "abc", "whole number"),
    ("num_epochs", 2.5, "whole number"),
    ("lr", "fast", "a number"),
    ("model", {"hidden": "64,32"}, "a list"),
])
def test_settings_of_the_wrong_type_are_rejected_by_name(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        config_from_dict(TrainConfig, {key: value})
    assert (key if key != "model" else "hidden") in str(info.value)


def test_numbers_widen_and_lists_become_tuples():
    c = config_from_dict(TrainConfig, {"lr": 1, "num_epochs": 3.0, "model": {"hidden": [64, 32]}})
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.num_epochs == 3 and c.model.hidden == (64, 32)


def test_presets_build_and_ablate():
    assert set(PRESETS) >= {"new users (meta + transfer)", "transfer only", "meta only", "new items (text features)"}
    assert preset_config("transfer only").lambda_meta == 0
    assert preset_config("meta only").lambda_trans == 0
    assert preset_config("new items (text features)").use_text


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("alternating", ["meta", "transfer", "transfer", "meta", "transfer", "transfer"]),
        ("sequential", ["transfer", "transfer", "transfer", "transfer", "meta", "meta"]),
        ("joint", ["joint", "joint", "joint", "joint"]),
    ],
)
def test_schedules_run_expected_phases(schedule, expected):
    cfg = config_from_dict(TrainConfig, {"schedule": schedule, "num_epochs": 2, "meta_epochs": 1, "trans_epochs": 2})
    assert [phase for _, phase, _ in plan(cfg, n_meta_steps=3, n_trans_steps=5)] == expected


def test_zero_lambda_turns_a_phase_off(scenario):
    phases = {}
    for name, values in (("transfer", {"lambda_meta": 0.0}), ("meta", {"lambda_trans": 0.0})):
        seen = set()
        fit(config(**values), scenario.dataset, on_progress=lambda e: seen.add(e.phase))
        phases[name] = seen
    assert "meta" not in phases["transfer"] and "transfer" in phases["transfer"]
    assert "transfer" not in phases["meta"] and "meta" in phases["meta"]


def test_validated_prior_keeps_the_grid_value_with_the_best_validation_score():
    rates = {"user_offset": torch.zeros(()), "user_taste": torch.zeros(4)}
    tried = []

    def validate():
        value = float(rates["user_offset"])
        assert torch.all(rates["user_taste"] == value)  # every rate is set to the candidate
        tried.append(value)
        return {"valid_mae": abs(value - 0.1) + 0.7, "valid_auc": 1.0 - abs(value - 0.3)}

    metrics = validated_prior(rates, validate, "mse")
    assert tried == pytest.approx(list(PRIOR_GRID))
    assert float(rates["user_offset"]) == pytest.approx(0.1) and torch.allclose(rates["user_taste"], torch.full((4,), 0.1))
    assert metrics["valid_mae"] == pytest.approx(0.7)
    validated_prior(rates, validate, "bce")  # implicit data: the highest AUC wins
    assert float(rates["user_offset"]) == pytest.approx(0.3)


def test_validated_prior_skips_non_finite_scores_and_keeps_the_rates_without_a_score():
    rates = {"user_offset": torch.tensor(0.5)}
    scores = {0.01: float("nan"), 0.03: 0.9, 0.1: 0.8, 0.3: float("inf"), 1.0: 0.85}
    validated_prior(rates, lambda: {"valid_mae": scores[round(float(rates["user_offset"]), 2)]}, "mse")
    assert float(rates["user_offset"]) == pytest.approx(0.1)
    rates["user_offset"].fill_(0.5)
    assert validated_prior(rates, lambda: {}, "bce") == {}  # one-class validation: no AUC to choose by
    assert float(rates["user_offset"]) == pytest.approx(0.5)
    validated_prior(rates, lambda: {"valid_mae": float("nan")}, "mse")
    assert float(rates["user_offset"]) == pytest.approx(0.5)


def test_fit_saves_the_weight_average_not_the_last_step(scenario, tmp_path, monkeypatch):
    import metarec_core.averaging as averaging

    seen = {}
    original = averaging.WeightAverage.apply

    def apply(self):
        seen["last"] = {n: v.detach().clone() for n, v in self.live.items()}
        seen["mean"] = {n: v.detach().clone() for n, v in self.mean.items()}
        original(self)

    monkeypatch.setattr(averaging.WeightAverage, "apply", apply)
    fit(config(ema_decay=0.9, keep_best=False), scenario.dataset, out_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    saved = dict(run.model.named_parameters())
    name = "model.item_factor.weight"
    assert torch.allclose(saved["item_factor.weight"], seen["mean"][name])
    assert not torch.allclose(seen["mean"][name], seen["last"][name])  # averaging changed something
    for rate, value in run.inner_lr.items():
        assert torch.allclose(value, seen["mean"]["inner_lr." + rate])


def test_transfer_only_run_picks_its_prior_on_validation_users(scenario, tmp_path):
    fit(config(lambda_meta=0.0, inner_lr=0.5), scenario.dataset, out_dir=tmp_path / "run")
    rates = load_run(tmp_path / "run").inner_lr
    values = {round(float(v), 6) for rate in rates.values() for v in rate.reshape(-1)}
    assert len(values) == 1 and values.pop() in {round(v, 6) for v in PRIOR_GRID}


def test_source_inner_rates_are_reused_only_under_the_same_solver(scenario, tmp_path):
    fit(config(**GRADIENT_STEPS, num_epochs=1), scenario.dataset, out_dir=tmp_path / "source")
    source = load_run(tmp_path / "source").inner_lr
    for solver_values, reused in ((GRADIENT_STEPS, True), ({}, False)):
        target = config(**solver_values, source_run=str(tmp_path / "source"))
        rates = {name: torch.full_like(value, 0.123) for name, value in source.items()}
        source_inner_rates(target, rates)
        for name, value in rates.items():
            assert torch.allclose(value, source[name]) if reused else torch.all(value == 0.123), (solver_values, name)


def test_weight_average_follows_the_weights_and_swaps_back():
    model = torch.nn.Linear(2, 1)
    rates = {"w": torch.tensor([0.5])}
    average = WeightAverage(model, rates, decay=0.9)
    start = model.weight.detach().clone()
    for _ in range(200):  # far past the warm-up ramp: the decay is 0.9
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update()
    # An EMA of a weight growing by 1 per step lags it by decay / (1 - decay) = 9 steps.
    assert torch.allclose(average.mean["model.weight"], start + 200 - 9, atol=1e-3)
    live = model.weight.detach().clone()
    with average.applied():
        assert torch.allclose(model.weight, average.mean["model.weight"])
        assert torch.allclose(rates["w"], torch.tensor([0.5]))
    assert torch.equal(model.weight, live)
    average.apply()
    assert torch.allclose(model.weight, start + 191, atol=1e-3)


def test_weight_average_early_steps_are_not_held_back_by_the_initial_weights():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, {}, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(5):
        average.update()
    assert float(average.mean["model.weight"]) > 0.5  # a plain 0.999 decay would still be at 0.005


def test_ema_decay_must_be_below_one():
    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict(TrainConfig, {"ema_decay": 1.0})


def test_progress_events_and_metrics_file(scenario, tmp_path):
    events = []
    result = fit(config(), scenario.dataset, out_dir=tmp_path / "run", on_progress=events.append)
    steps = [e for e in events if e.phase in ("meta", "transfer")]
    assert steps and steps[-1].step == steps[-1].total_steps
    assert all({"total", "l0"} <= set(e.losses) for e in steps)
    assert all(e.eta is not None and e.eta >= 0 for e in steps)
    validations = [e for e in events if e.phase == "validate"]
    assert validations and "valid_mae" in validations[0].metrics
    assert events[-1].phase == "done" and "test_mae" in events[-1].metrics
    rows = read_metrics(tmp_path / "run")
    assert [r["phase"] for r in rows][-1] == "done"
    assert not result.stopped and result.epochs_completed == 2


def test_should_stop_stops_cleanly_with_usable_checkpoint(scenario, tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    result = fit(config(num_epochs=5), scenario.dataset, out_dir=tmp_path / "run", should_stop=stop)
    assert result.stopped
    assert result.epochs_completed < 5
    rec = Recommender.from_run_dir(tmp_path / "run")
    scores = rec.score_items(rec.start_state())
    assert np.isfinite(scores).all()


def test_nan_loss_stops_with_a_message(scenario):
    with pytest.raises(TrainingError, match=r"(?s)phase.*epoch.*learning rate"):
        fit(config(lr=1e30, inner_lr=1e30, lambda_l0=0.0), scenario.dataset)


def test_run_directory_round_trip_gives_same_scores(scenario, tmp_path):
    result = fit(config(), scenario.dataset, out_dir=tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert loaded.config == result.artifacts.config
    for name, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), loaded.model.state_dict()[name]), name
    rec = Recommender(loaded)
    state = rec.adapt_user([("1", 5.0), ("2", 1.0), ("3", 4.0)])
    again = Recommender.from_run_dir(tmp_path / "run").adapt_user([("1", 5.0), ("2", 1.0), ("3", 4.0)])
    assert np.allclose(rec.score_items(state), Recommender.from_run_dir(tmp_path / "run").score_items(again))
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["final_metrics"]["test_mae"] == pytest.approx(result.final_metrics["test_mae"])


def test_runs_saved_before_the_newton_solver_still_adapt_by_gradient_steps(scenario, tmp_path):
    """A config.json without ``inner_solver`` (older runs) loads as the gradient solver it was trained with."""
    fit(config(inner_solver="gradient", inner_lr=0.05, inner_reduction="mean"), scenario.dataset, out_dir=tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    before = Recommender.from_run_dir(tmp_path / "run")
    pairs = [("1", 5.0), ("2", 1.0), ("3", 4.0)]
    expected = before.score_items(before.adapt_user(pairs))
    values = json.loads(path.read_text())
    del values["inner_solver"]
    path.write_text(json.dumps(values))
    loaded = Recommender.from_run_dir(tmp_path / "run")
    assert loaded.run.config.inner_solver == "gradient"
    assert np.allclose(loaded.score_items(loaded.adapt_user(pairs)), expected)


def test_newton_config_needs_the_user_scope():
    with pytest.raises(ConfigError, match="adapt_scope"):
        config(inner_solver="newton", adapt_scope="head")
    assert config(inner_solver="gradient", adapt_scope="head").adapt_scope == "head"


def test_adaptation_lowers_new_users_query_error(scenario):
    result = fit(config(num_epochs=4), scenario.dataset)
    no_adapt = fit(config(num_epochs=4, inner_steps=0), scenario.dataset)
    assert result.final_metrics["test_mae"] < no_adapt.final_metrics["test_mae"] - 0.02


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


def test_whiten_gives_decorrelated_unit_variance_components():
    from metarec_core.training_data import whiten

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 40))  # rank 12, correlated columns
    out = whiten(vectors.astype(np.float32), 8)
    assert out.shape == (200, 8) and out.dtype == np.float32
    cov = np.cov(out, rowvar=False)
    assert np.allclose(cov, np.eye(8), atol=1e-3)


def test_item_id_dropout_hides_ids_only_while_training(scenario):
    from metarec_core.models import ModelConfig

    result = fit(config(num_epochs=1, model={"item_id_dropout": 0.9}), scenario.dataset)
    model = result.model
    users = torch.zeros(1, dtype=torch.long)
    items = torch.arange(scenario.dataset.n_items).reshape(1, -1)
    ctx = result.artifacts.context
    model.eval()
    a = model(users, items, ctx)
    b = model(users, items, ctx)
    assert torch.equal(a, b)  # no dropout when scoring
    model.train()
    torch.manual_seed(0)
    c = model(users, items, ctx)
    assert not torch.allclose(a, c)
    assert ModelConfig(item_id_dropout=0.5).item_id_dropout == 0.5
    with pytest.raises(ValueError):
        ModelConfig(item_id_dropout=1.0)


def test_time_left_prices_each_phase_at_its_own_step_cost() -> None:
    now = [0.0]
    plan = [(0, "meta", 2), (0, "transfer", 4), (1, "meta", 2), (1, "transfer", 4)]
    left = TimeLeft(plan, clock=lambda: now[0])
    assert left.seconds_left() == 0.0  # nothing measured yet
    for phase, cost in [("meta", 10.0), ("meta", 10.0), ("transfer", 1.0)]:
        now[0] += cost
        left.stepped(phase)
    # 2 meta steps at 10 s and 3 + 4 transfer steps at 1 s are left (the naive elapsed/steps × steps left says 49 s).
    assert left.seconds_left() == pytest.approx(2 * 10.0 + 7 * 1.0)
    for _ in range(3):
        now[0] += 1.0
        left.stepped("transfer")
    now[0] += 5.0
    left.validated()  # one validation took 5 s; one more epoch (and validation) to go
    assert left.seconds_left() == pytest.approx(2 * 10.0 + 4 * 1.0 + 5.0)


def test_progress_eta_reaches_zero_and_never_goes_negative(scenario) -> None:
    events = []
    fit(config(device="cpu"), scenario.dataset, on_progress=events.append)
    etas = [e.eta for e in events if e.phase in ("meta", "transfer", "validate")]
    assert etas and min(etas) >= 0.0
    last_step = [e for e in events if e.phase in ("meta", "transfer")][-1]
    assert last_step.eta == pytest.approx(0.0, abs=1.0)  # only the last validation is left, and it is short


def test_implicit_runs_validate_and_test_by_catalogue_auc(tmp_path):
    implicit = make_synthetic(SyntheticConfig(n_users=160, n_items=80, implicit=True, feature_signal=0.0, seed=4)).dataset
    events = []
    result = fit(config(num_epochs=2, device="cpu"), implicit, on_progress=events.append, out_dir=tmp_path / "run")
    assert load_run(tmp_path / "run").implicit
    valid = [e.metrics["valid_auc"] for e in events if e.phase == "validate"]
    assert len(valid) == 2 and all(0.5 < v <= 1.0 for v in valid)  # better than chance at ranking a user's items
    assert 0.5 < result.final_metrics["test_auc"] <= 1.0


def test_occurrence_penalty_weights_each_row_by_how_often_the_batch_holds_it():
    from metarec_core.losses import occurrence_penalty

    table = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 5.0]])
    index = torch.tensor([0, 0, 0, 1])
    # Row 0 three times (norm² 5), row 1 once (norm² 9), row 2 never: (3·5 + 9) / 4.
    assert float(occurrence_penalty({"t": (table, index)})) == pytest.approx(6.0)
    anchor = {"t": torch.ones(3, 2)}
    assert float(occurrence_penalty({"t": (table, index)}, anchor)) == pytest.approx((3 * 1.0 + 5.0) / 4)


def test_lambda_id_moves_the_id_tables_from_plain_l2_to_the_rows_a_batch_touches(scenario):
    from metarec_core.training import Trainer

    trainer = Trainer(config(lambda_id=0.1, lambda_l0=1e-3), scenario.dataset)
    with torch.no_grad():
        for table in (trainer.model.item_factor, trainer.model.item_bias, trainer.model.user_factor, trainer.model.user_bias):
            table.weight.normal_()
    trainer.l0_term().backward()
    assert trainer.model.item_factor.weight.grad is None and trainer.model.user_bias.weight.grad is None
    assert trainer.model.head[0].weight.grad is not None  # dense weights keep the plain L2
    trainer.model.zero_grad(set_to_none=True)
    rows = trainer.warm[:16]
    trainer.id_term(rows).backward()
    touched = np.zeros(scenario.dataset.n_items, dtype=bool)
    touched[rows[:, 1].astype(np.int64)] = True
    grad = trainer.model.item_factor.weight.grad.abs().sum(dim=1).numpy()
    assert (grad[touched] > 0).all() and (grad[~touched] == 0).all()
    # Without lambda_id the ID tables are in L0 (every row shrinks at every step).
    plain = Trainer(config(lambda_l0=1e-3), scenario.dataset)
    with torch.no_grad():
        plain.model.item_factor.weight.normal_()
    plain.l0_term().backward()
    assert (plain.model.item_factor.weight.grad.abs().sum(dim=1) > 0).all()
