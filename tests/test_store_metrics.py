"""Tests of reading a run's metrics.jsonl: the rows match what fit writes, and rows round-trip through events."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from metarec_core.store.metrics import events_from_rows, final_values, read_metrics_log, write_events
from tests.store_fakes import event


def test_the_rows_are_the_values_fit_writes(tmp_path: Path, tiny_scenario) -> None:
    from metarec_core.artifacts import read_metrics
    from metarec_core.progress import ProgressEvent
    from metarec_core.train_config import TrainConfig
    from metarec_core.training import fit

    config = TrainConfig(num_epochs=2, trans_epochs=1, inner_steps=1, first_order=True, meta_batch_size=8, device="cpu")
    result = fit(config, tiny_scenario.dataset, out_dir=tmp_path / "run")
    events = read_metrics(tmp_path / "run")
    log = read_metrics_log(tmp_path / "run" / "metrics.jsonl")
    assert log.problems == ()
    expected = [
        (e["phase"], e["epoch"], e["step"], k, v, e["time"])
        for e in events for k, v in [*e["losses"].items(), *e["metrics"].items()]
    ]
    got = list(log.frame.itertuples(index=False, name=None))
    assert [r[:4] for r in got] == [r[:4] for r in expected] and len(got) > 10
    assert [r[4] for r in got] == pytest.approx([r[4] for r in expected], nan_ok=True)
    assert [r[5] for r in got] == pytest.approx([r[5] for r in expected])
    assert {"meta", "validate", "done"} <= set(log.frame["phase"]) and log.frame["epoch"].max() == 2
    assert final_values(log.frame) == pytest.approx(result.final_metrics)
    # The fake events of the store tests have exactly the fields fit writes.
    assert set(event("meta", 0, 1)) == {f.name for f in dataclasses.fields(ProgressEvent)} | {"time"} == set(events[0])


def test_rows_round_trip_through_events(tmp_path: Path) -> None:
    rows = [
        ("meta", 0, 1, "total", 1.5, 10.0), ("meta", 0, 1, "meta", float("nan"), 10.0), ("meta", 0, 2, "total", 1.25, 11.0),
        ("validate", 1, 2, "valid_mae", 0.95, 12.0), ("validate", 1, 2, "valid_ndcg@3", 0.5, 12.0), ("done", 1, 2, "test_mae", 0.9, 13.0),
    ]
    events = events_from_rows(rows, total_steps=2)
    assert [(e["phase"], e["step"], e["losses"], e["metrics"]) for e in events][1:] == [
        ("meta", 2, {"total": 1.25}, {}), ("validate", 2, {}, {"valid_mae": 0.95, "valid_ndcg@3": 0.5}), ("done", 2, {}, {"test_mae": 0.9}),
    ]
    assert events[0]["elapsed"] == 0.0 and events[-1]["elapsed"] == 3.0 and events[0]["total_steps"] == 2
    write_events(tmp_path, events)
    log = read_metrics_log(tmp_path / "metrics.jsonl")
    pd.testing.assert_frame_equal(log.frame, pd.DataFrame(rows, columns=list(log.frame.columns)).astype(log.frame.dtypes.to_dict()))
    assert final_values(log.frame) == {"test_mae": 0.9}


def test_lines_that_are_not_events_are_named(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([
        json.dumps(event("meta", 0, 1, losses={"total": 1.0})),
        "[1, 2]",
        json.dumps({"phase": "meta", "epoch": "one", "step": 2, "losses": {"total": 1.0}}),
        json.dumps(event("meta", 0, 3, losses={"total": True, "meta": 0.5})),
        '{"phase": "meta", "epo',
    ]))
    log = read_metrics_log(path)
    assert list(log.frame["key"]) == ["total", "meta"]
    assert log.problems == (
        "'metrics.jsonl' line 2 is incomplete or not a JSON object; it is skipped",
        "'metrics.jsonl' line 3 has no phase, epoch and step; it is skipped",
        "'metrics.jsonl' line 5 is incomplete or not a JSON object; it is skipped",
        "'metrics.jsonl' has 1 value(s) that are not numbers (first on line 4); they are left out",
    )
    assert read_metrics_log(tmp_path / "missing.jsonl").frame.empty
