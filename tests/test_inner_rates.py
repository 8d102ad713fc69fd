"""Tests of metarec_core.inner_rates: the starting inner rates, the prior chosen on validation users without a meta phase, and the calibration of learned rates."""
import pytest
import torch

from metarec_core.inner_rates import PRIOR_GRID, RATE_FACTORS, calibrated_rates, initial_inner_rates, validated_prior
from metarec_core.models import ModelConfig, ModelShape, PreferenceModel
from metarec_core.train_config import TrainConfig


def model() -> PreferenceModel:
    return PreferenceModel(ModelShape(n_users=5, n_items=4, user_categorical=(3,)), ModelConfig(factor_dim=3, hidden=(4,)))


@pytest.mark.parametrize("scope, solver", [("user", "newton"), ("user+head", "gradient")])
def test_initial_rates_are_one_per_adapted_entry_at_inner_lr(scope, solver):
    m = model()
    rates = initial_inner_rates(m, TrainConfig(adapt_scope=scope, inner_solver=solver, inner_lr=0.25), torch.device("cpu"))
    params = dict(m.named_parameters())
    assert tuple(rates) == m.scope_names(scope)
    for name, rate in rates.items():
        assert rate.shape == params[name].shape and torch.all(rate == 0.25) and rate.requires_grad


def test_initial_rates_are_constants_when_not_learned():
    rates = initial_inner_rates(model(), TrainConfig(learn_inner_lr=False), torch.device("cpu"))
    assert not any(rate.requires_grad for rate in rates.values())


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


def test_calibrated_rates_scale_the_learned_rates_by_the_best_validated_factor():
    learned = {"user_offset": torch.tensor(0.2), "user_taste": torch.tensor([0.1, 0.4, 0.3])}
    rates = {name: rate.clone() for name, rate in learned.items()}
    tried = []

    def validate():
        factor = float(rates["user_offset"]) / 0.2
        assert torch.allclose(rates["user_taste"], learned["user_taste"] * factor)  # every rate scaled alike
        tried.append(round(factor, 6))
        return {"valid_mae": 0.7 + abs(factor - 0.7), "valid_auc": 0.9 - abs(factor - 1.4)}

    metrics = calibrated_rates(rates, validate, "mse")
    assert tried == pytest.approx(list(RATE_FACTORS))
    assert torch.allclose(rates["user_taste"], learned["user_taste"] * 0.7) and metrics["valid_mae"] == pytest.approx(0.7)
    rates = {name: rate.clone() for name, rate in learned.items()}
    calibrated_rates(rates, validate, "bce")  # implicit data: the highest AUC wins
    assert float(rates["user_offset"]) == pytest.approx(0.2 * 1.4)


def test_calibrated_rates_stay_as_learned_unless_a_factor_is_strictly_better():
    rates = {"user_offset": torch.tensor(0.2)}
    before = {"valid_mae": 0.75}
    calls = []

    def validate():
        calls.append(float(rates["user_offset"]))
        return {"valid_mae": 0.75 if len(calls) % 2 else float("nan")}  # ties and non-finite scores only

    assert calibrated_rates(rates, validate, "mse", before=before) == before
    assert float(rates["user_offset"]) == pytest.approx(0.2) and len(calls) == len(RATE_FACTORS) - 1  # 1.0 reused
    assert calibrated_rates(rates, lambda: {}, "bce") == {}  # no score at all: nothing to choose by
    assert float(rates["user_offset"]) == pytest.approx(0.2)
