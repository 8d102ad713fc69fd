"""A table of hostile inputs and faults through the command line: each gets one line naming what is wrong and what to do.

Every case runs a real command (``python -m metarec_core ...`` in process) on a
bad file, a tampered run folder or a damaged, locked or foreign store, and
checks: exit code 1, exactly one line on stderr starting ``error:``, no
"unexpected" message, no traceback, the name of the file, column, row or run
in the line, and nothing lost (the damaged file is still there, byte for byte).
The app shows the same core messages through ``ui.errors`` (see ``test_app``).
"""
from __future__ import annotations

import gc
import io
import pickle
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from metarec_core.cli import main
from metarec_core.store import RunStore
from tests.store_fakes import CONFIG, append_events, event, finish_fake_run

GOOD = "user_id,item_id,rating,timestamp\n" + "".join(
    f"{u},{10 + i},{1 + (u + i) % 5},{1000 + 10 * u + i}\n" for u in range(1, 9) for i in range(4)
)


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def _good_parquet() -> bytes:
    return _parquet({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [10, 11, 10, 12, 11, 12], "rating": [4, 3, 5, 1, 2, 4]})


def _with_row(line: str, at: int = 5) -> str:
    lines = GOOD.splitlines()
    lines[at] = line
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FileCase:
    """``data describe`` on an interactions file (and optionally an item table) that is wrong in one way."""

    id: str
    interactions: bytes | str
    expected: str
    name: str = "ratings.csv"
    items: bytes | None = None
    items_name: str = "items.parquet"
    extra: tuple[str, ...] = ()


FILE_CASES = [
    FileCase("empty", b"", "the file is empty"),
    FileCase("blank", b"\n\n  \n", "the file is empty"),
    FileCase("header only", "user_id,item_id,rating\n", "header line but no data rows"),
    FileCase("blank first line", "\nuser_id,item_id\n1,2\n", "the first line is blank"),
    FileCase("no header", "1,10,4\n2,11,3\n", "no header row"),
    FileCase("duplicate names", "user_id,user_id,rating\n1,2,3\n", "appear more than once in the header"),
    FileCase("NUL bytes", b"user_id,item_id\n1,\x00\x00\x002\n", "contains NUL bytes"),
    FileCase("excel workbook", b"PK\x03\x04" + b"\x00" * 60, "looks like an Excel workbook or a zip archive"),
    FileCase("broken UTF-16", b"\xff\xfeu\x00s\x00\x00\xd8", "starts like UTF-16 text but cannot be decoded"),
    FileCase("unclosed quote", 'user_id,item_id,rating\n1,"10,4\n2,11,3\n', "cannot parse the table"),
    FileCase("too many fields", "user_id,item_id,rating\n1,10,4\n2,11,3,9,9\n", "cannot parse the table"),
    FileCase("no user column", "who,item_id,rating\nx,10,4\ny,11,3\n", "no column of user IDs found"),
    FileCase("missing user ID", _with_row(",12,3,1005"), "row(s) have no user ID"),
    FileCase("mixed ID types", _with_row("abc,12,3,1005"), "mixed types in the user ID column"),
    FileCase("rating text", _with_row("2,12,good,1005"), "rating(s) are not numbers"),
    FileCase("rating NaN", _with_row("2,12,nan,1005"), "missing or not finite"),
    FileCase("rating inf", _with_row("2,12,inf,1005"), "missing or not finite"),
    FileCase("rating -inf", _with_row("2,12,-inf,1005"), "missing or not finite"),
    FileCase("rating 999", _with_row("2,12,999,1005"), "far outside the scale of the others"),
    FileCase("rating -50", _with_row("2,12,-50,1005"), "far outside the scale of the others"),
    FileCase("rating 1e30", _with_row("2,12,1e30,1005"), "beyond ±1,000,000"),
    FileCase("rating -1e300", _with_row("2,12,-1e300,1005"), "beyond ±1,000,000"),
    FileCase("rating off declared scale", _with_row("2,12,6,1005"), "outside the declared scale 1 to 5", extra=("--rating-scale", "1,5")),
    FileCase("declared scale backwards", GOOD, "from a lower to a higher", extra=("--rating-scale", "5,1")),
    FileCase("declared scale not numbers", GOOD, "--rating-scale takes two numbers", extra=("--rating-scale", "one,five")),
    FileCase("all ratings equal", "user_id,item_id,rating\n1,10,3\n2,11,3\n", "every rating is 3"),
    FileCase("timestamp text", _with_row("2,12,3,yesterday"), "neither numbers nor dates"),
    FileCase("timestamp inf", _with_row("2,12,3,inf"), "is infinite"),
    FileCase("one user", "user_id,item_id,rating\n1,10,4\n1,11,3\n1,12,5\n", "needs at least 2 users"),
    FileCase("parquet garbage", b"PAR1" + b"\x01\x02" * 40, "not a readable Parquet file", name="ratings.parquet"),
    FileCase("parquet truncated", _good_parquet()[:-30], "not a readable Parquet file", name="ratings.parquet"),
    FileCase("parquet list user ID", _parquet({"user_id": [[1], [1], [2], [2]], "item_id": [10, 11, 10, 12], "rating": [4, 3, 5, 1]}),
             "the user ID column holds lists", name="ratings.parquet"),
    FileCase("parquet struct rating", _parquet({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 10, 12], "rating": [{"v": 4}, {"v": 3}, {"v": 5}, {"v": 1}]}),
             "the rating column holds records", name="ratings.parquet"),
    FileCase("item table struct", _good_parquet(), "the column holds records", name="ratings.parquet",
             items=_parquet({"item_id": [10, 11, 12], "info": [{"a": 1}, {"a": 2}, {"a": 3}]})),
    FileCase("item table list ID", _good_parquet(), "the item ID column holds lists", name="ratings.parquet",
             items=_parquet({"item_id": [[10], [11], [12]], "year": [1990, 1991, 1992]})),
    FileCase("item table nested lists", _good_parquet(), "the column holds records", name="ratings.parquet",
             items=_parquet({"item_id": [10, 11, 12], "tags": [[["a"]], [["b"]], [["c"]]]})),
    FileCase("item table matches nothing", GOOD, "match a item ID of the interactions",
             items=_parquet({"item_id": [901, 902], "year": [1990, 1991]})),
    FileCase("item table without ID column", GOOD, "no item ID column in the item table",
             items=_parquet({"film": [10, 11], "year": [1990, 1991]})),
    FileCase("unknown feature kind", GOOD, "feature kind 'colour' for column 'year' is unknown",
             items=_parquet({"item_id": [10, 11], "year": [1990, 1991]}), extra=("--kind", "year=colour")),
    FileCase("over the size limit", GOOD, "over the limit of", extra=("--max-mb", "0.0001")),
    FileCase("size limit zero", GOOD, "--max-mb must be positive", extra=("--max-mb", "0")),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_bad_data_files(case: FileCase, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.interactions if isinstance(case.interactions, bytes) else case.interactions.encode())
    args = ["data", "describe", "--interactions", str(path), *case.extra]
    if case.items is not None:
        (tmp_path / case.items_name).write_bytes(case.items)
        args += ["--items", str(tmp_path / case.items_name)]
    before = path.read_bytes()
    line = one_error_line(main(args), capsys)
    assert case.expected in line
    names = (case.name, case.items_name, "--rating-scale", "rating scale", "--max-mb", "--kind")
    assert any(n in line for n in names) or "feature kind" in line, line  # names the file (or the option)
    assert path.read_bytes() == before  # read only


def test_missing_file_and_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no such file" in one_error_line(main(["data", "describe", "--interactions", str(tmp_path / "nope.csv")]), capsys)
    assert "is a folder, not a file" in one_error_line(main(["data", "describe", "--interactions", str(tmp_path)]), capsys)


# ----------------------------------------------------------------- tampered run folders


def _pickled(old: bytes) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]})


RUN_CASES: list[tuple[str, str, Callable[[bytes], bytes] | None, str]] = [
    ("weights pickle", "weights.safetensors", _pickled, "is not a readable safetensors file"),
    ("weights truncated", "weights.safetensors", lambda old: old[: len(old) // 3], "is not a readable safetensors file"),
    ("weights zeros", "weights.safetensors", lambda old: b"\x00" * len(old), "is not a readable safetensors file"),
    ("weights empty", "weights.safetensors", lambda old: b"", "is not a readable safetensors file"),
    ("context garbage", "context.safetensors", lambda old: b"garbage" * 10, "is not a readable safetensors file"),
    ("context truncated", "context.safetensors", lambda old: old[:-7], "is not a readable safetensors file"),
    ("model.json broken", "model.json", lambda old: old[: len(old) // 2], "is not valid JSON"),
    ("model.json list", "model.json", lambda old: b"[]", "holds a JSON list"),
    ("model.json keys", "model.json", lambda old: b'{"shape": 1}', "lacks model_config"),
    ("model.json shape", "model.json", lambda old: old.replace(b'"shape": {', b'"shape": {"extra": 2, '), "does not describe a model"),
    ("model.json binary", "model.json", lambda old: b"\xff\xd8\xff\xe0 jpeg", "is not text"),
    ("config.json number", "config.json", lambda old: b"42", "holds a JSON int"),
    ("config.json unknown key", "config.json", lambda old: b'{"warp_drive": true}', "holds settings this version of metarec cannot use"),
    ("config.json empty", "config.json", lambda old: b"", "is not valid JSON"),
    ("weights missing", "weights.safetensors", None, "has no weights.safetensors"),
    ("model.json missing", "model.json", None, "has no model.json"),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_tampered_run_folders(case: tuple, tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, name, change, expected = case
    _, run_dir, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    target = run / name
    if change is None:
        target.unlink()
    else:
        target.write_bytes(change(target.read_bytes()))
    line = one_error_line(main(["recommend", "--run", str(run), "--user", "1"]), capsys)
    assert expected in line and str(run) in line and "train" in line  # names the run folder and what to do


def test_folders_that_are_not_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "does not exist" in one_error_line(main(["recommend", "--run", str(tmp_path / "gone"), "--user", "1"]), capsys)
    assert "is not a run directory" in one_error_line(main(["recommend", "--run", str(tmp_path), "--user", "1"]), capsys)


@pytest.mark.parametrize("k", ["0", "-5", "three"])
def test_recommend_k_below_one(tiny_run, k: str, capsys: pytest.CaptureFixture) -> None:
    """A bad option value is argparse's usage line and one error line (exit code 2), not an empty table."""
    _, run_dir, _ = tiny_run
    with pytest.raises(SystemExit) as caught:
        main(["recommend", "--run", str(run_dir), "--user", "1", "--k", k])
    captured = capsys.readouterr()
    assert caught.value.code == 2 and captured.out == ""
    assert captured.err.strip().splitlines()[-1].endswith(f"argument --k: must be a whole number of at least 1, got '{k}'" if k == "three"
                                                          else f"argument --k: must be a whole number of at least 1, got {k}")


# ----------------------------------------------------------------- damaged, foreign, locked stores


def _store_with_runs(home: Path, n: int = 3) -> list[str]:
    store = RunStore(home)
    ids = [store.create_run(CONFIG, "builtin:synthetic", name=f"run {i} " + "x" * 150) for i in range(n)]
    for run_id in ids:
        finish_fake_run(store, run_id)
        append_events(store.run_dir(run_id), [event("done", 2, 4, time=5.0)])
    store.close()
    del store
    gc.collect()
    return ids


def _junk(db: Path) -> None:
    db.write_bytes(b"junk\n")


def _zero(db: Path) -> None:
    db.write_bytes(b"")


def _missing(db: Path) -> None:
    db.unlink()


def _random_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[4096:] = np.random.default_rng(0).integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def _index_pages(db: Path) -> None:  # damage a first query misses
    for i in range(37):
        RunStore(db.parent).create_run(CONFIG, "builtin:synthetic", name=f"more {i} " + "x" * 150)
    gc.collect()
    data = bytearray(db.read_bytes())
    data[6 * 4096: 8 * 4096] = np.random.default_rng(0).integers(0, 256, 2 * 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def _sql(db: Path, statement: str) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:  # closed: its WAL folded into the file
        conn.execute(statement)


def _drop_table(db: Path) -> None:
    _sql(db, "DROP TABLE datasets")


def _newer(db: Path) -> None:
    _sql(db, "PRAGMA user_version = 99")


def _foreign(db: Path) -> None:
    db.unlink()
    _sql(db, "CREATE TABLE notes (text TEXT)")


STORE_CASES = [
    ("junk", _junk, "is damaged (file is not a database)", "runs recover"),
    ("zero length", _zero, "is empty but runs/ holds 3 run folder(s)", "runs recover"),
    ("missing", _missing, "is missing but runs/ holds 3 run folder(s)", "runs recover"),
    ("random pages", _random_pages, "is damaged", "runs recover"),
    ("index pages", _index_pages, "is damaged", "runs recover"),
    ("dropped table", _drop_table, "table(s) datasets missing", "runs recover"),
    ("newer schema", _newer, "was written by a newer metarec", "upgrade metarec"),
    ("another program's database", _foreign, "it is not a metarec store", "set METAREC_HOME elsewhere"),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=[c[0] for c in STORE_CASES])
@pytest.mark.parametrize("command", ["list", "show"])
def test_damaged_or_foreign_stores(case: tuple, command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, damage, expected, next_step = case
    ids = _store_with_runs(tmp_path)
    db = tmp_path / "store.sqlite3"
    damage(db)
    kept = db.read_bytes() if db.exists() else None
    args = ["runs", command, *([ids[0]] if command == "show" else []), "--home", str(tmp_path)]
    line = one_error_line(main(args), capsys)
    assert expected in line and next_step in line and "store.sqlite3" in line
    assert "no runs yet" not in line and "no run '" not in line
    assert (db.read_bytes() if db.exists() else None) == kept  # nothing was changed
    assert all((tmp_path / "runs" / r / "weights.safetensors").is_file() for r in ids)


def test_a_locked_store_says_who_writes_and_to_retry(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    from metarec_core.store import database

    ids = _store_with_runs(tmp_path, 1)
    monkeypatch.setattr(database, "WRITE_BUSY_TIMEOUT", 0.2)
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store.sqlite3")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_error_line(main(["runs", "rename", ids[0], "new", "--home", str(tmp_path)]), capsys)
        assert f"PID {holder.pid}" in line and "not damaged" in line and "retry" in line and "move" not in line
        assert main(["runs", "list", "--home", str(tmp_path)]) == 0  # reading goes on meanwhile
    finally:
        holder.kill()
        holder.wait()


def test_unknown_runs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _store_with_runs(tmp_path, 1)
    assert "no run ID starts with 'abcd'" in one_error_line(main(["runs", "show", "abcd", "--home", str(tmp_path)]), capsys)
    assert "is not a run ID" in one_error_line(main(["runs", "show", "zz", "--home", str(tmp_path)]), capsys)


# ----------------------------------------------------------------- hostile run exports


def _export(tmp_path: Path) -> Path:
    store = RunStore(tmp_path / "source")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    return store.export_run(run_id, tmp_path / "run.zip")


def _rewrite(path: Path, change: dict[str, bytes | None], extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in members.items():
            data = change.get(name, data)
            if data is not None:
                dst.writestr(name, data)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)


def _bad_crc(path: Path) -> None:
    _rewrite(path, {})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("config.json")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


ZIP_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("not a zip", lambda p: p.write_bytes(b"hello"), "not a readable zip file"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable zip file"),
    ("bad CRC", _bad_crc, "Bad CRC-32"),
    ("no run.json", lambda p: _rewrite(p, {"run.json": None}), "'run.json' is missing"),
    ("run.json not JSON", lambda p: _rewrite(p, {"run.json": b"{oops"}), "'run.json' is not valid JSON"),
    ("config.json a list", lambda p: _rewrite(p, {"config.json": b"[]"}), "must hold a JSON object"),
    ("path traversal", lambda p: _rewrite(p, {}, {"artifacts/../../evil.txt": b"x"}), "has an unsafe path"),
    ("absolute path", lambda p: _rewrite(p, {}, {"/etc/evil": b"x"}), "has an unsafe path"),
    ("unknown entry", lambda p: _rewrite(p, {}, {"payload.sh": b"x"}), "entry 'payload.sh' does not belong in a run export"),
]


@pytest.mark.parametrize("case", ZIP_CASES, ids=[c[0] for c in ZIP_CASES])
def test_hostile_exports(case: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, damage, expected = case
    zip_path = _export(tmp_path)
    damage(zip_path)
    line = one_error_line(main(["runs", "import", str(zip_path), "--home", str(tmp_path / "target")]), capsys)
    assert expected in line and "run.zip" in line
    target = RunStore(tmp_path / "target")
    assert target.list_runs() == [] and not list(target.runs_dir.iterdir())  # nothing half-imported
    assert not (tmp_path / "evil.txt").exists()


# ----------------------------------------------------------------- the checks shared by every case


def one_error_line(rc: int, capsys: pytest.CaptureFixture) -> str:
    """The single ``error:`` line a failing command printed (after checking the exit code and that there is no traceback)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 1, (rc, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "unexpected" not in lines[0].lower() and "Traceback" not in captured.err
    return lines[0]
