"""Tests of the app's sweep views: the figures, the Train page's Sweep section on a recorded sweep, the Runs page's sweep filter.

The sweeps here are recorded by hand (no Ray), as a driver would record them: seconds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from metarec_core.store import RunStore
from metarec_core.sweep import build_spec
from metarec_core.sweep_driver import best_trial, trial_table
from tests.store_fakes import append_events, event
from ui.sweeps import heatmap_figure, parallel_figure

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "tests" / "app_entry.py"
GRID = {"lambda_meta": [0.0, 1.0], "lambda_trans": [0.5, 1.0]}
#: valid_mae of each (λ1, λ2) trial: the best is λ1 = 1, λ2 = 0.5.
MAE = {(0.0, 0.5): 0.90, (0.0, 1.0): 0.85, (1.0, 0.5): 0.70, (1.0, 1.0): 0.75}


def record_sweep(store: RunStore, *, running: tuple[float, float] | None = None) -> str:
    """A sweep of the 2 x 2 λ grid with its four trials finished (one still running at epoch 1 if ``running``)."""
    spec = build_spec({"num_epochs": 2}, grid=GRID)
    sweep_id = store.create_sweep(spec.to_json(), "builtin:synthetic", name="λ grid", status="running")
    store.claim_sweep(sweep_id, pid=__import__("os").getpid())
    for (lm, lt), mae in MAE.items():
        config = spec.trial_config({"lambda_meta": lm, "lambda_trans": lt})
        from metarec_core.configs import config_to_dict

        is_running = running == (lm, lt)
        run_id = store.insert_run(f"λ grid · {lm} {lt}", config_to_dict(config), "builtin:synthetic", sweep_id=sweep_id,
                                  status="running" if is_running else "completed", heartbeat=time.time() if is_running else None,
                                  progress={"step": 3, "total_steps": 6, "epoch": 1, "phase": "transfer"} if is_running else None)
        events = [event("validate", 1, 3, metrics={"valid_mae": mae + 0.05})]
        if not is_running:
            events += [event("validate", 2, 6, metrics={"valid_mae": mae}), event("done", 2, 6, metrics={"valid_mae": mae})]
        append_events(store.run_dir(run_id), events)
    if running is None:
        store.finish_sweep(sweep_id, "completed", best=best_trial(store, sweep_id, spec))
    return sweep_id


def test_the_trial_table_has_the_settings_metric_progress_and_best(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sweep_id = record_sweep(store, running=(0.0, 1.0))
    table = trial_table(store, sweep_id)
    assert list(table.columns) == ["run_id", "status", "lambda_meta", "lambda_trans", "metric", "epoch", "fraction", "error", "best"]
    running = table[table["status"] == "running"].iloc[0]
    assert running["metric"] == pytest.approx(0.90) and running["fraction"] == 0.5 and running["epoch"] == 1  # its last epoch so far
    best = table[table["best"]]
    assert len(best) == 1 and (best["lambda_meta"].iloc[0], best["lambda_trans"].iloc[0]) == (1.0, 0.5)


def test_the_heatmap_has_a_cell_per_value_pair_and_stars_the_best(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    table = trial_table(store, record_sweep(store))
    fig = heatmap_figure(table, "lambda_meta", "lambda_trans", metric_label="MAE", mode="min")
    (heat,) = fig.data
    assert list(heat.x) == ["0", "1"] and list(heat.y) == ["0.5", "1"]
    assert np.allclose(np.asarray(heat.z, dtype=float), [[0.90, 0.70], [0.85, 0.75]])
    assert [list(row) for row in heat.text] == [["0.9000", "★ 0.7000"], ["0.8500", "0.7500"]]  # λ1 = 1, λ2 = 0.5 starred
    assert heat.colorscale[0][1] != heatmap_figure(table, "lambda_meta", "lambda_trans", metric_label="MAE", mode="max").data[0].colorscale[0][1]


def test_random_draws_become_dots_and_categories_get_axes() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"lambda_l0": rng.uniform(0, 1, 20), "schedule": ["joint", "alternating"] * 10, "metric": rng.uniform(0.7, 0.9, 20)})
    table["best"] = table["metric"] == table["metric"].min()
    scatter = heatmap_figure(table, "lambda_l0", "schedule", metric_label="MAE", mode="min").data[0]
    assert scatter.type == "scatter" and len(scatter.x) == 20 and list(scatter.marker.symbol).count("star") == 1
    par = parallel_figure(table, ["lambda_l0", "schedule"], metric_label="MAE", mode="min").data[0]
    schedule = par.dimensions[1]
    assert list(schedule.ticktext) == ["alternating", "joint"] and set(schedule.values) == {0, 1}
    low, high = par.dimensions[2].constraintrange  # the best trial's line is the one selected
    assert low <= table["metric"].min() <= high and high < table["metric"].nsmallest(2).iloc[1]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "data"))
    st.cache_resource.clear()
    yield tmp_path / "home"
    st.cache_resource.clear()


def open_train(sweep_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=90)
    at.session_state["dataset_key"] = "builtin:synthetic"
    if sweep_id:
        at.session_state["sweep_current"] = sweep_id
    at.run()
    return at.switch_page(str(ROOT / "pages" / "train.py")).run()


def test_the_train_page_shows_a_finished_sweep_and_uses_its_best_settings(home: Path) -> None:
    sweep_id = record_sweep(RunStore(home))
    at = open_train(sweep_id)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Best so far: lambda_meta=1 lambda_trans=0.5" in s.value.replace("\\", "") for s in at.success)
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert {"heatmap", "parcoords"} <= {trace["type"] for spec in specs for trace in spec["data"]}
    assert at.slider(key="cfg_lambda_trans").value == 1.0
    next(b for b in at.button if b.label == "Use these settings").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (at.slider(key="cfg_lambda_meta").value, at.slider(key="cfg_lambda_trans").value) == (1.0, 0.5)


def test_the_sweep_section_refuses_bad_values_in_one_line(home: Path) -> None:
    at = open_train()
    at.text_input(key="sweep_values_lambda_trans_grid").set_value("0.5, lots").run()
    errors = [e.value.replace("\\", "") for e in at.error]
    assert any("--grid lambda_trans: lots is not a number" in e for e in errors), errors
    assert not at.exception


def run_table(at: AppTest) -> pd.DataFrame:
    """The Runs page's run table (the queue view above it lists only queued and running runs)."""
    return next(df.value for df in at.dataframe if {"ID", "kind"} <= set(df.value.columns))


def test_the_runs_page_filters_by_sweep(home: Path) -> None:
    store = RunStore(home)
    sweep_id = record_sweep(store)
    own = store.create_run({"num_epochs": 1}, "builtin:synthetic", name="a run of its own")
    at = AppTest.from_file(str(ENTRY), default_timeout=90)
    at.session_state["dataset_key"] = "builtin:synthetic"
    at.run()
    at.switch_page(str(ROOT / "pages" / "runs.py")).run()
    assert not at.exception
    assert len(run_table(at)) == 5
    at.selectbox(key="runs_sweep_filter").set_value(sweep_id).run()
    assert sorted(run_table(at)["ID"]) == sorted(r.id for r in store.sweep_trials(sweep_id))
    at.selectbox(key="runs_sweep_filter").set_value("-").run()
    assert list(run_table(at)["ID"]) == [own]
