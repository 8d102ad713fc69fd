"""Tests of metarec_core.train_config: TrainConfig's checks, its run kind and loss, the inner-loop settings and presets."""
import pytest

from metarec_core.configs import config_from_dict, config_to_dict
from metarec_core.errors import ConfigError
from metarec_core.presets import GRADIENT_STEPS, PRESETS
from metarec_core.train_config import RUN_KINDS, TrainConfig, preset_config


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


@pytest.mark.parametrize("values, message", [
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"patience": -1}, "patience"),
    ({"cpu_threads": -1}, "cpu_threads"),
    ({"min_support_size": 11, "support_size": 10}, "min_support_size"),
    ({"final_lr_fraction": 1.5}, "final_lr_fraction"),
    ({"lr": float("nan")}, "lr"),
    ({"device": "tpu"}, "device"),
    ({"loss": "hinge"}, "loss"),
])
def test_out_of_range_values_are_rejected_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(TrainConfig, values)


def test_newton_config_needs_the_user_scope():
    with pytest.raises(ConfigError, match="adapt_scope"):
        config_from_dict(TrainConfig, {"inner_solver": "newton", "adapt_scope": "head"})
    assert config_from_dict(TrainConfig, {"inner_solver": "gradient", "adapt_scope": "head"}).adapt_scope == "head"


@pytest.mark.parametrize("lambdas, kind", [((1.0, 1.0), "both"), ((0.0, 1.0), "transfer"), ((0.5, 0.0), "meta")])
def test_kind_names_what_the_run_learns_from(lambdas, kind):
    config = TrainConfig(lambda_meta=lambdas[0], lambda_trans=lambdas[1])
    assert config.kind == kind and kind in RUN_KINDS


def test_loss_follows_the_data_unless_set():
    auto = TrainConfig()
    assert auto.loss_for(implicit=False) == "mse" and auto.loss_for(implicit=True) == "bce"
    assert TrainConfig(loss="mse").loss_for(implicit=True) == "mse"
    assert TrainConfig(loss="bce").loss_for(implicit=False) == "bce"


def test_inner_loop_carries_the_adapt_settings():
    config = TrainConfig(inner_steps=4, inner_solver="gradient", adapt_scope="user+head", inner_reduction="mean")
    assert config.inner_loop() == {"steps": 4, "scope": "user+head", "reduction": "mean", "solver": "gradient"}


def test_presets_build_and_ablate():
    assert set(PRESETS) >= {"new users (meta + transfer)", "transfer only", "meta only", "new items (text features)"}
    assert preset_config("transfer only").lambda_meta == 0 and preset_config("transfer only").kind == "transfer"
    assert preset_config("meta only").lambda_trans == 0 and preset_config("meta only").kind == "meta"
    text = preset_config("new items (text features)")
    assert text.use_text and text.scenario == "item-cold" and text.model.item_id_dropout == 0.5
    assert text.inner_solver == GRADIENT_STEPS["inner_solver"] and text.inner_steps == GRADIENT_STEPS["inner_steps"]
    assert preset_config("new users (meta + transfer)") == TrainConfig()


def test_preset_overrides_win_and_unknown_presets_are_named():
    assert preset_config("meta only", num_epochs=3, lambda_meta=2.0).num_epochs == 3
    assert preset_config("meta only", lambda_meta=2.0).lambda_meta == 2.0
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*transfer only"):
        preset_config("nope")


def test_config_survives_a_dict_round_trip():
    config = TrainConfig(schedule="joint", text_columns=("title",), model=TrainConfig().model.__class__(hidden=(16, 8)))
    assert config_from_dict(TrainConfig, config_to_dict(config)) == config
