"""Tests of metarec_core.train_config: TrainConfig's checks, its run kind and loss, the inner-loop settings and presets."""
import dataclasses

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


# --------------------------------------------------------------------------- scenario "auto"


def catalogue(n_items: int, new_items: int, **changes):
    """A synthetic catalogue of ``n_items`` rated items plus ``new_items`` items without interactions (features only)."""
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    return make_synthetic(SyntheticConfig(n_users=60, n_items=n_items, ratings_per_user=(5, 20), cold_items=new_items, seed=2, **changes)).dataset


def test_auto_trains_for_new_items_when_a_tenth_of_the_catalogue_has_no_interactions():
    from metarec_core.train_config import resolve_scenario

    choice = resolve_scenario(TrainConfig(), catalogue(40, 10))  # 10 of 50 items (20 %) without interactions
    c = choice.config
    assert c.scenario == "item-cold" and c.use_text and c.model.item_id_dropout == 0.5
    assert {k: getattr(c, k) for k in GRADIENT_STEPS} == GRADIENT_STEPS
    assert choice.new_items == 10 and choice.n_items == 50
    assert choice.switched_on["scenario"] == "item-cold" and "10 of 50 items have no interactions" in choice.message
    # Everything else is the default's.
    assert c == preset_config("new items (text features)")


def test_auto_keeps_the_new_users_protocol_on_a_warm_catalogue_and_below_the_share():
    from metarec_core.train_config import AUTO_NEW_ITEM_SHARE, resolve_scenario

    for dataset in (catalogue(40, 0), catalogue(40, 3)):  # 0 % and 7 % of the items without interactions
        assert 3 / 43 < AUTO_NEW_ITEM_SHARE
        choice = resolve_scenario(TrainConfig(), dataset)
        assert choice.config == TrainConfig(scenario="user-cold") and choice.switched_on == {} and choice.message == ""
    implicit = catalogue(40, 10, implicit=True)
    assert resolve_scenario(TrainConfig(), implicit).config.scenario == "user-cold"  # not measured on implicit data


def test_auto_leaves_settings_the_user_chose_and_named_scenarios_alone():
    from metarec_core.splits import SplitConfig, split_cold_start
    from metarec_core.train_config import resolve_scenario

    dataset = catalogue(40, 10)
    chosen = TrainConfig(inner_steps=2, model=TrainConfig().model.__class__(item_id_dropout=0.2))
    c = resolve_scenario(chosen, dataset).config
    assert c.scenario == "item-cold" and c.model.item_id_dropout == 0.2
    assert c.inner_solver == "newton" and c.inner_steps == 2  # the inner-loop settings only switch together
    for scenario in ("user-cold", "warm", "both-cold"):
        named = TrainConfig(scenario=scenario)
        assert resolve_scenario(named, dataset).config == named
    split = split_cold_start(dataset, SplitConfig(scenario="warm"))
    assert resolve_scenario(TrainConfig(), dataset, split).config == TrainConfig(scenario="warm")
    with pytest.raises(ConfigError, match="scenario must be one of"):
        config_from_dict(TrainConfig, {"scenario": "new-items"})


def test_the_default_run_beats_a_no_feature_baseline_on_items_without_interactions(tmp_path):
    """A catalogue whose held-out fifth of items has no ratings: the default run scores those items better than the bias baseline."""
    import json

    import torch

    from metarec_core.artifacts import load_run
    from metarec_core.evaluation import evaluate_split
    from metarec_core.evaluation_report import EvaluationConfig
    from metarec_core.synthetic import SyntheticConfig, make_synthetic
    from metarec_core.splits import SplitConfig, split_cold_start
    from metarec_core.training import fit

    full = make_synthetic(SyntheticConfig(n_users=150, n_items=80, ratings_per_user=(10, 30), affinity=1.5, seed=4)).dataset
    split = split_cold_start(full, SplitConfig(scenario="item-cold", cold_fraction=0.2, support_size=5, seed=0))
    uploaded = dataclasses.replace(full, ratings=split.train.reset_index(drop=True))  # 16 items known by features only
    torch.set_num_threads(1)
    fast = {"num_epochs": 3, "meta_epochs": 1, "trans_epochs": 1, "support_size": 5, "eval_support_size": 5,
            "meta_batch_size": 16, "batch_size": 256, "text_encoder": "hashing", "device": "cpu"}
    fit(config_from_dict(TrainConfig, fast), uploaded, out_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["scenario"] == "item-cold" and saved["use_text"] is True  # config.json records what auto picked
    result = evaluate_split(split, full, EvaluationConfig(baselines=("bias", "genre"), no_adaptation=False), run=load_run(tmp_path / "run"))
    table = result.frame.pivot_table(index="method", columns="metric", values="value")
    run = table.loc["meta+transfer"]
    assert run["mae"] < table.loc["bias", "mae"] - 0.05
    assert run["ndcg@3"] > table.loc["bias", "ndcg@3"] + 0.02
