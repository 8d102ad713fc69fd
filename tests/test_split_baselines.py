"""Baselines beside every run: measured on the run's own split, once per split, read back from the run directory."""
from __future__ import annotations

import dataclasses

import pytest

from metarec_core import split_baselines
from metarec_core.evaluation import evaluate_baselines
from metarec_core.evaluation_report import EvaluationConfig
from metarec_core.split_baselines import read_run_baselines, score_split_baselines, split_key, write_run_baselines
from metarec_core.train_config import TrainConfig, resolve_scenario

CONFIG = TrainConfig(eval_support_size=5, seed=3)


def test_scores_are_the_baselines_on_the_runs_split(tiny_scenario, tmp_path) -> None:
    data = tiny_scenario.dataset
    scores = score_split_baselines(data, CONFIG, cache_dir=tmp_path)
    assert set(scores) == {"bias", "mf"}
    scenario = resolve_scenario(CONFIG, data).config.scenario  # "auto" resolved as training does
    direct = evaluate_baselines(data, EvaluationConfig(scenario=scenario, shots=(5,), seeds=(3,), baselines=("bias",),
                                                       cold_fraction=CONFIG.cold_fraction, no_adaptation=False))
    mae = direct.frame.query("metric == 'mae'")["value"].mean()
    assert scores["bias"]["test_mae"] == pytest.approx(mae) and 0.3 < mae < 2.0
    assert {"test_mae", "test_ndcg@3"} <= set(scores["mf"])


def test_one_measurement_per_split_shared_by_model_settings(tiny_scenario, tmp_path, monkeypatch) -> None:
    data = tiny_scenario.dataset
    first = score_split_baselines(data, CONFIG, cache_dir=tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(split_baselines, "evaluate_baselines", refuse)
    other_model = dataclasses.replace(CONFIG, lambda_meta=0.0, num_epochs=7)
    assert split_key(data, other_model) == split_key(data, CONFIG)
    assert score_split_baselines(data, other_model, cache_dir=tmp_path) == first
    assert split_key(data, dataclasses.replace(CONFIG, seed=4)) != split_key(data, CONFIG)
    assert split_key(data, dataclasses.replace(CONFIG, eval_support_size=10)) != split_key(data, CONFIG)


def test_implicit_data_has_no_rating_baselines_and_runs_read_back(tiny_scenario, tmp_path) -> None:
    implicit = dataclasses.replace(tiny_scenario.dataset, implicit=True)
    assert score_split_baselines(implicit, CONFIG) == {}
    assert read_run_baselines(tmp_path) == {}  # a run measured before baselines were kept
    write_run_baselines(tmp_path, {"bias": {"test_mae": 0.8}})
    assert read_run_baselines(tmp_path) == {"bias": {"test_mae": 0.8}}
    (tmp_path / "baselines.json").write_text("{broken")
    assert read_run_baselines(tmp_path) == {}
