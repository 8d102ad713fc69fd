"""Tests of a sweep's specification (parsing, strict validation), of the CLI's refusals, and that Ray is imported lazily."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from metarec_core.cli import main
from metarec_core.errors import ConfigError
from metarec_core.store import RunStore
from metarec_core.sweep import Distribution, build_spec, parse_grid, parse_random, spec_from_json

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- parsing
def test_grid_values_are_json_when_they_parse_and_lists_stay_whole() -> None:
    assert parse_grid("lambda_meta=0,0.5,1") == ("lambda_meta", [0, 0.5, 1])
    assert parse_grid("model.hidden=[64,32],[32]") == ("model.hidden", [[64, 32], [32]])
    assert parse_grid("schedule=alternating,joint") == ("schedule", ["alternating", "joint"])


def test_random_forms_are_parsed() -> None:
    assert parse_random("lambda_l0=loguniform(0.001, 1)") == ("lambda_l0", ("loguniform", [0.001, 1]))
    assert parse_random("schedule=choice(alternating,joint)") == ("schedule", ("choice", ["alternating", "joint"]))


@pytest.mark.parametrize(
    "text, words",
    [
        ("lambda_meta", ["--grid expects KEY=V1,V2,..."]),
        ("lambda_meta=", ["--grid lambda_meta", "at least one value"]),
        ("lambda_meta=0,,1", ["--grid lambda_meta", "empty value"]),
    ],
)
def test_bad_grid_forms_are_refused_in_one_line(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_grid(text)
    assert all(w in str(info.value) for w in words) and "\n" not in str(info.value)


def test_bad_random_forms_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"--random lambda_l0: unknown distribution 'normal'; use uniform, loguniform, choice"):
        parse_random("lambda_l0=normal(0,1)")
    with pytest.raises(ConfigError, match=r"--random lambda_l0: '0.1' is not a distribution"):
        parse_random("lambda_l0=0.1")


# ---------------------------------------------------------------------- validation
def test_a_valid_spec_counts_its_trials_and_survives_json() -> None:
    spec = build_spec(
        {"num_epochs": 2}, grid={"lambda_meta": [0.5, 1], "meta_epochs": [1, 2, 3]},
        random={"lambda_l0": ("loguniform", [1e-3, 1]), "model.factor_dim": ("uniform", [4, 16])}, samples=2,
    )
    assert spec.n_trials == 2 * 3 * 2 and spec.mode == "min"
    assert spec.grid == (("lambda_meta", (0.5, 1.0)), ("meta_epochs", (1, 2, 3)))
    assert dict(spec.random)["model.factor_dim"] == Distribution("uniform", (4, 16), integer=True)
    assert spec_from_json(spec.to_json()) == spec
    config = spec.trial_config({"lambda_meta": 0.5, "meta_epochs": 3, "lambda_l0": 0.01, "model.factor_dim": 7})
    assert (config.lambda_meta, config.meta_epochs, config.lambda_l0, config.model.factor_dim, config.num_epochs) == (0.5, 3, 0.01, 7, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid": {"lamda_meta": [0, 1]}}, r"--grid lamda_meta: unknown setting 'lamda_meta'; did you mean 'lambda_meta'\?"),
        ({"grid": {"lambda_meta": []}}, r"--grid lambda_meta: the grid is empty"),
        ({"grid": {"num_epochs": [2, "many"]}}, r"--grid num_epochs: many is not a whole number; 'num_epochs' takes a whole number"),
        ({"grid": {"lambda_meta": [1, 1.0]}}, r"--grid lambda_meta: value 1 is listed twice"),
        ({"grid": {"lambda_meta": [-1, 1]}}, r"--grid lambda_meta=-1: lambda_meta must be a non-negative number"),
        ({"grid": {"schedule": ["alternating", "zigzag"]}}, r"--grid schedule=zigzag: schedule must be one of"),
        ({"grid": {"lambda_meta": [0, 1], "lambda_trans": [0, 1]}}, r"the grid point lambda_meta=0, lambda_trans=0: lambda_meta and lambda_trans cannot both be 0"),
        ({"random": {"lambda_l0": ("uniform", [1, 0.5])}}, r"--random lambda_l0=uniform\(1, 0.5\): uniform\(A,B\) needs A < B, got A=1, B=0.5"),
        ({"random": {"lambda_l0": ("uniform", [0.5, 0.5])}}, r"needs A < B"),
        ({"random": {"lambda_l0": ("loguniform", [0, 1])}}, r"loguniform\(A,B\) needs A > 0"),
        ({"random": {"lambda_l0": ("uniform", ["a", 1])}}, r"uniform takes two numbers A and B"),
        ({"random": {"schedule": ("uniform", [0, 1])}}, r"'schedule' is not a number, so it cannot be drawn from uniform; use choice"),
        ({"random": {"num_epochs": ("uniform", [1.5, 4])}}, r"'num_epochs' is a whole number, so A and B must be whole numbers"),
        ({"random": {"schedule": ("choice", ["joint"])}}, r"choice needs at least two values"),
        ({"random": {"lr": ("uniform", [-1, 1])}}, r"--random lr=uniform\(-1, 1\): lr must be a non-negative number"),
        ({"grid": {"lambda_meta": [0, 1]}, "random": {"lambda_meta": ("uniform", [0, 1])}}, r"'lambda_meta' is already swept by --grid"),
        ({"grid": {"lambda_meta": [0, 1]}, "fixed": ["lambda_meta"]}, r"'lambda_meta' is also fixed by --set"),
        ({}, r"a sweep needs at least one --grid"),
        ({"grid": {"lambda_meta": [0, 1]}, "samples": 3}, r"--trials 3 draws random settings but the sweep has no --random part"),
        ({"grid": {"lambda_meta": [0, 1]}, "metric": "mae"}, r"--metric: unknown metric 'mae'; use one of valid_mae, valid_ndcg@3, valid_auc"),
        ({"grid": {"lambda_meta": [0.5, 1]}, "early_stopping": "hyperband"}, r"--early-stop: unknown value 'hyperband'; use one of none, asha"),
        ({"grid": {"seed": list(range(5)), "lambda_meta": [0.5, 1]}, "max_trials": 8},
         r"the sweep has 10 trials \(grid 5 × 2 × 1 sample\(s\)\); the maximum is 8"),
        ({"grid": {"valid_fraction": [0.0, 0.1]}}, r"valid_fraction is 0; set valid_fraction > 0"),
    ],
)
def test_bad_specs_are_refused_in_one_line_naming_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_spec({}, **kwargs)
    assert "\n" not in str(info.value)


def test_the_trial_maximum_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAREC_SWEEP_MAX_TRIALS", "3")
    with pytest.raises(ConfigError, match="the maximum is 3"):
        build_spec({}, grid={"seed": [0, 1, 2, 3]})
    monkeypatch.setenv("METAREC_SWEEP_MAX_TRIALS", "many")
    with pytest.raises(ConfigError, match="METAREC_SWEEP_MAX_TRIALS must be a whole number >= 1, got 'many'"):
        build_spec({}, grid={"seed": [0, 1]})


# ---------------------------------------------------------------------- the command line refuses before anything is queued
def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_bad_input_is_one_line_and_queues_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    for argv, words in [
        (["--grid", "lamda_meta=0,1"], "unknown setting 'lamda_meta'"),
        (["--grid", "lambda_meta=0,1", "--set", "lambda_meta=0.5"], "also fixed by --set"),
        (["--random", "lambda_l0=loguniform(1,0.1)", "--trials", "4"], "needs A < B, got A=1, B=0.1"),
        (["--grid", "lambda_meta=0.5,1", "--metric", "valid_auc"], "the dataset has ratings"),
    ]:
        code, out, err = _run_cli(["sweep", "--home", str(home), "--dataset", "synthetic", *argv], capsys)
        assert code == 1 and out == "" and err.count("\n") == 1 and words in err, (argv, err)
        assert "Traceback" not in err
    assert RunStore(home).list_sweeps() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_one_line_within_10_s_and_queues_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    code, out, err = _run_cli(
        ["sweep", "--home", str(home), "--dataset", "synthetic", "--grid", "lambda_meta=0.5,1", "--ray-address", f"127.0.0.1:{_free_port()}"],
        capsys,
    )
    assert time.monotonic() - started < 10
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: cannot reach Ray at 127.0.0.1:") and "ray start --head" in err
    assert RunStore(home).list_sweeps() == [] and RunStore(home).list_runs() == []


def test_a_server_that_is_not_a_ray_head_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:  # an HTTP/1 server: answers anything with a status line
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{server.getsockname()[1]}")  # the address may come from the environment
    started = time.monotonic()
    code, _out, err = _run_cli(["sweep", "--home", str(tmp_path), "--dataset", "synthetic", "--grid", "lambda_meta=0.5,1"], capsys)
    server.close()
    assert code == 1 and "is not a Ray head" in err and time.monotonic() - started < 10
    assert RunStore(tmp_path).list_sweeps() == []


def test_ray_client_addresses_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = _run_cli(
        ["sweep", "--home", str(tmp_path), "--dataset", "synthetic", "--grid", "lambda_meta=0.5,1", "--ray-address", "ray://head:10001"], capsys
    )
    assert code == 1 and "Ray Client (ray://) is not supported" in err


def test_sweeps_show_and_cancel_name_unknown_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run_cli(["sweeps", "show", "abcd", "--home", str(tmp_path)], capsys)
    assert code == 1 and "no sweep ID starts with 'abcd'" in err
    code, _out, err = _run_cli(["runs", "list", "--sweep", "zz", "--home", str(tmp_path)], capsys)
    assert code == 1 and "'zz' is not a sweep ID" in err


# ---------------------------------------------------------------------- Ray is imported only when a sweep runs
def test_the_cli_and_the_app_modules_do_not_import_ray() -> None:
    code = (
        "import sys; import metarec_core.cli as c; c.build_parser(); import metarec_core.sweep_driver, metarec_core.cluster; "
        "import ui.sweeps, ui.runs, ui.charts; "
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
