"""Tests of metarec_core.artifacts: run directories written and read back, safely, including runs saved by older versions."""
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec_core.artifacts import (
    CONFIG_FILE, CONTEXT_FILE, MODEL_FILE, WEIGHTS_FILE, load_run, load_weights, read_metrics, saved_config_values,
)
from metarec_core.errors import DataError
from metarec_core.recommender import Recommender
from metarec_core.tasks import tasks_from_frames

PAIRS = [("1", 5.0), ("2", 1.0), ("3", 4.0)]


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def edit_config(run_dir: Path, change) -> None:
    values = json.loads((run_dir / CONFIG_FILE).read_text())
    change(values)
    (run_dir / CONFIG_FILE).write_text(json.dumps(values))


def test_round_trip_gives_the_same_model_rates_and_scores(tiny_run):
    result, run_dir, dataset = tiny_run
    loaded = load_run(run_dir)
    assert loaded.config == result.artifacts.config
    for name, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), loaded.model.state_dict()[name]), name
    assert loaded.users == dataset.users and loaded.items == dataset.items
    assert loaded.loss == "mse" and not loaded.implicit and loaded.rating_range == dataset.rating_range
    assert loaded.meta["cold_users"] == list(result.artifacts.cold_users)
    # Every user's scores of every item, in memory and read back, with the saved context.
    users = np.arange(dataset.n_users)
    query = tasks_from_frames(dataset.ratings.iloc[:0], dataset.ratings[["user", "item", "rating"]], users=users)[0]
    result.model.eval()
    with torch.no_grad():
        before = result.model(query.users, query.query_items, result.artifacts.context, warm=True)
        after = loaded.model(query.users, query.query_items, loaded.context, warm=True)
    assert torch.allclose(before, after)
    # The seen history is the split's training rows.
    train = result.artifacts.seen
    assert np.array_equal(loaded.seen[0], train[0]) and np.array_equal(loaded.seen[1], train[1])
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["final_metrics"]["test_mae"] == pytest.approx(result.final_metrics["test_mae"])


def test_a_loaded_run_adapts_the_same_way_twice(tiny_run):
    _, run_dir, _ = tiny_run
    a, b = Recommender.from_run_dir(run_dir), Recommender.from_run_dir(run_dir)
    assert np.array_equal(a.score_items(a.adapt_user(PAIRS)), b.score_items(b.adapt_user(PAIRS)))


def test_weights_are_safetensors_and_a_pickle_is_not_unpickled(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    assert (run_dir / WEIGHTS_FILE).read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a pickle
    run = copy_of(run_dir, tmp_path)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (run / WEIGHTS_FILE).write_bytes(pickle.dumps({"item_factor.weight": Payload()}))
    with pytest.raises(Exception):
        load_run(run)
    with pytest.raises(Exception):
        load_weights(run)
    assert not marker.exists()


@pytest.mark.parametrize("loader", [load_run, load_weights])
def test_a_pickle_in_the_weights_file_is_a_data_error_naming_the_run(tiny_run, tmp_path, loader):
    _, run_dir, _ = tiny_run
    run = copy_of(run_dir, tmp_path)
    torch.save({"item_factor.weight": torch.zeros(3)}, run / WEIGHTS_FILE)  # a pickle under the safetensors name
    with pytest.raises(DataError, match=str(run)):
        loader(run)


@pytest.mark.parametrize("name", [CONFIG_FILE, MODEL_FILE, WEIGHTS_FILE, CONTEXT_FILE])
def test_a_missing_file_is_named_in_the_error(tiny_run, tmp_path, name):
    _, run_dir, _ = tiny_run
    run = copy_of(run_dir, tmp_path)
    (run / name).unlink()
    with pytest.raises(DataError, match=f"has no {name}.*train it again"):
        load_run(run)


def test_folders_that_are_not_runs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(DataError, match="is not a run directory"):
        load_run(tmp_path)
    with pytest.raises(DataError, match="no weights"):
        load_weights(tmp_path)


def test_unreadable_config_and_weights_that_do_not_fit_are_data_errors(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    run = copy_of(run_dir, tmp_path)
    (run / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DataError, match="'config.json' in run directory .* is not valid JSON"):
        load_run(run)
    shutil.copy(run_dir / CONFIG_FILE, run / CONFIG_FILE)
    meta = json.loads((run / MODEL_FILE).read_text())
    meta["shape"]["n_items"] += 1
    (run / MODEL_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="do not fit.*train it again"):
        load_run(run)


def test_saved_config_values_fill_settings_older_runs_predate():
    assert saved_config_values({"lr": 0.01}) == {
        "lr": 0.01, "inner_solver": "gradient", "patience": 0, "l0_unit": "step", "huber_delta": 0.0,
    }
    newer = {"inner_solver": "newton", "patience": 3, "l0_unit": "pass", "huber_delta": 0.5}
    assert saved_config_values(newer) == newer
    assert saved_config_values(["not", "a", "dict"]) == ["not", "a", "dict"]


def test_a_run_saved_before_the_newton_solver_and_early_stopping_loads_as_it_was_trained(tiny_run, tmp_path):
    """A config.json without ``inner_solver`` or ``patience`` loads as gradient steps and no early stopping."""
    _, run_dir, _ = tiny_run
    run = copy_of(run_dir, tmp_path)
    edit_config(run, lambda v: v.update(inner_solver="gradient"))  # what such a run said, had it said it
    gradient = Recommender.from_run_dir(run)
    expected = gradient.score_items(gradient.adapt_user(PAIRS))
    edit_config(run, lambda v: (v.pop("inner_solver"), v.pop("patience")))
    legacy = Recommender.from_run_dir(run)
    assert legacy.run.config.inner_solver == "gradient" and legacy.run.config.patience == 0
    assert np.allclose(legacy.score_items(legacy.adapt_user(PAIRS)), expected)
    newton = Recommender.from_run_dir(run_dir)
    assert not np.allclose(newton.score_items(newton.adapt_user(PAIRS)), expected)  # the solver matters


def test_read_metrics_skips_a_half_written_last_line(tiny_run, tmp_path, caplog):
    _, run_dir, _ = tiny_run
    rows = read_metrics(run_dir)
    assert rows and rows[-1]["phase"] == "done" and all("time" in r for r in rows)
    run = copy_of(run_dir, tmp_path)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"phase": "meta", "epo')
    with caplog.at_level(logging.WARNING, logger="metarec_core.artifacts"):
        assert read_metrics(run) == rows
    assert "not complete JSON" in caplog.text
    assert read_metrics(tmp_path / "nowhere") == []


def _pickle_bytes() -> bytes:
    import pickle

    return pickle.dumps({"weights": [1.0, 2.0]})  # never unpickled: it is read as safetensors and refused


#: Tampered run files: (file, new content or a function of the old bytes, what the message says).
TAMPERED = [
    ("weights.safetensors", lambda old: _pickle_bytes(), "is not a readable safetensors file"),
    ("weights.safetensors", lambda old: old[: len(old) // 2], "is not a readable safetensors file"),
    ("weights.safetensors", lambda old: b"\x00" * 64, "is not a readable safetensors file"),
    ("context.safetensors", lambda old: old[:100], "is not a readable safetensors file"),
    ("model.json", lambda old: b"{broken", "is not valid JSON"),
    ("model.json", lambda old: b"[1, 2]", "holds a JSON list, not an object"),
    ("model.json", lambda old: b'{"shape": 5}', "lacks model_config"),
    ("model.json", lambda old: old.replace(b'"shape": {', b'"shape": {"bogus": 1, '), "does not describe a model"),
    ("model.json", lambda old: b"\xff\xfe\x00garbage", "is not text"),
    ("config.json", lambda old: b"[1, 2]", "holds a JSON list, not an object"),
    ("config.json", lambda old: b'{"no_such_setting": 1}', "holds settings this version of metarec cannot use"),
    ("config.json", lambda old: b"", "is not valid JSON"),
]


@pytest.mark.parametrize("name, change, expected", TAMPERED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TAMPERED)])
def test_tampered_run_files_are_named_with_what_to_do(tiny_run, tmp_path, name, change, expected):
    from metarec_core.artifacts import check_run_files

    _, run_dir, _ = tiny_run
    run = copy_of(run_dir, tmp_path)
    assert check_run_files(run) == []
    (run / name).write_bytes(change((run / name).read_bytes()))
    with pytest.raises(DataError) as caught:
        Recommender.from_run_dir(run)
    message = str(caught.value)
    assert f"'{name}' in run directory '{run}'" in message and expected in message
    assert "train the run again" in message and len(message.splitlines()) == 1
    if "does not describe a model" not in expected and "cannot use" not in expected:  # the light check reads headers and JSON only
        assert any(f"'{name}'" in p and expected in p for p in check_run_files(run))
