"""Tests of the store's database: opening without a write lock, refusing newer schemas, and damaged stores said in one line."""
from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metarec_core.cli import main
from metarec_core.errors import StoreBusyError, StoreDamagedError
from metarec_core.store import RunStore, StoreError
from metarec_core.store import database
from tests.store_fakes import CONFIG


def store_with_runs(home: Path, n: int) -> list[str]:
    store = RunStore(home)
    ids = [store.create_run(CONFIG, "builtin:synthetic", name=f"run {i}") for i in range(n)]
    store.close()
    del store
    gc.collect()  # every connection closed: the WAL is folded into store.sqlite3
    return ids


def test_opening_and_listing_do_not_wait_for_a_writer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ids = store_with_runs(tmp_path, 2)
    writer = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        started = time.monotonic()
        store = RunStore(tmp_path)
        assert {r.id for r in store.list_runs()} == set(ids)
        assert main(["runs", "list", "--home", str(tmp_path)]) == 0
        assert time.monotonic() - started < 5.0  # a write lock would have waited 30 s
        assert ids[0] in capsys.readouterr().out
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer metarec"):
        RunStore(tmp_path)


def test_an_empty_database_beside_run_folders_is_reported_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ids = store_with_runs(tmp_path, 4)
    (tmp_path / "store.sqlite3").write_bytes(b"")
    with pytest.raises(StoreDamagedError, match=r"store.sqlite3 in .* is empty but runs/ holds 4 run folder\(s\)") as caught:
        RunStore(tmp_path)
    assert sorted(ids)[0] in str(caught.value) and "restore store.sqlite3 from a backup" in str(caught.value)
    assert (tmp_path / "store.sqlite3").stat().st_size == 0  # nothing was created over it
    assert main(["runs", "list", "--home", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "no runs yet" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: store.sqlite3") and "is empty but runs/ holds 4 run folder(s)" in lines[0]
    (tmp_path / "store.sqlite3").unlink()
    with pytest.raises(StoreError, match="is missing but runs/ holds 4"):
        RunStore(tmp_path)


def test_an_empty_database_without_run_folders_is_a_new_store(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite3").write_bytes(b"")
    store = RunStore(tmp_path)
    assert store.list_runs() == []
    store.create_run(CONFIG, "builtin:synthetic")
    assert len(RunStore(tmp_path).list_runs()) == 1


@pytest.mark.parametrize("damage", ["not a database", "damaged pages"])
def test_a_damaged_database_is_reported_in_one_line(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture) -> None:
    store_with_runs(tmp_path, 30)
    path = tmp_path / "store.sqlite3"
    data = path.read_bytes()
    if damage == "not a database":
        path.write_bytes(b"this is not SQLite at all " * 200)
    else:  # the header is fine, the table pages are not
        path.write_bytes(data[:4096] + b"\xab" * (len(data) - 4096))
    with pytest.raises(StoreDamagedError, match=r"store.sqlite3 in .* is damaged \(.*\); nothing was changed: run `python -m metarec_core runs recover"):
        RunStore(tmp_path).list_runs()
    assert main(["runs", "list", "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0] and "unexpected" not in err[0] and "DatabaseError" not in err[0]
    assert "runs recover" in err[0] and "move it away" not in err[0]


def test_a_database_of_another_program_is_not_taken_over(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreError, match="not a metarec store"):
        RunStore(tmp_path)


def test_damage_that_a_first_query_misses_is_found_on_open(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Random bytes over the table pages used to list only the runs still readable, with exit code 0."""
    store = RunStore(tmp_path)
    for i in range(40):
        store.create_run(CONFIG, "builtin:synthetic", name=f"run {i} " + "x" * 150)
    store.close()
    del store
    gc.collect()
    path = tmp_path / "store.sqlite3"
    data = bytearray(path.read_bytes())
    assert len(data) == 14 * 4096
    data[6 * 4096: 8 * 4096] = np.random.default_rng(0).integers(0, 256, 2 * 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))  # an index's pages: every run still lists, the store is damaged all the same
    with pytest.raises(StoreDamagedError, match="is damaged"):
        RunStore(tmp_path)
    assert main(["runs", "list", "--home", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "runs recover" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_a_missing_table_is_damage(tmp_path: Path) -> None:
    store_with_runs(tmp_path, 1)
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        conn.execute("DROP TABLE datasets")
    with pytest.raises(StoreDamagedError, match=r"table\(s\) datasets missing"):
        RunStore(tmp_path)


def _hold_write_lock(db: Path) -> subprocess.Popen:
    """Another process that takes the store's write lock and keeps it until killed."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"UPDATE runs SET name = name\")\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_reads_go_on_and_a_write_names_the_process_holding_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store_with_runs(tmp_path, 2)
    monkeypatch.setattr(database, "WRITE_BUSY_TIMEOUT", 0.3)
    holder = _hold_write_lock(tmp_path / "store.sqlite3")
    try:
        started = time.monotonic()
        assert main(["runs", "list", "--home", str(tmp_path)]) == 0
        assert main(["runs", "show", ids[0], "--home", str(tmp_path)]) == 0
        assert time.monotonic() - started < 5.0
        capsys.readouterr()
        with pytest.raises(StoreBusyError) as caught:
            RunStore(tmp_path).rename(ids[0], "new name")
        message = str(caught.value)
        assert f"PID {holder.pid}" in message and "is writing to the run store" in message
        assert "not damaged" in message and "retry" in message
        assert "move it" not in message and "report" not in message and "damaged (" not in message
        assert main(["runs", "rename", ids[0], "other", "--home", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another process" in err[0] and "unexpected" not in err[0]
    finally:
        holder.kill()
        holder.wait()
    assert RunStore(tmp_path).get_run(ids[0]).name == "run 0"  # nothing half-written


def test_lock_holder_is_none_without_a_lock(tmp_path: Path) -> None:
    store_with_runs(tmp_path, 1)
    assert database.lock_holder(tmp_path / "store.sqlite3") is None


def test_a_write_under_a_held_lock_and_a_full_disk_are_not_called_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metarec_core.jobs import submit

    store_with_runs(tmp_path, 1)
    monkeypatch.setattr(database, "WRITE_BUSY_TIMEOUT", 0.2)
    holder = _hold_write_lock(tmp_path / "store.sqlite3")
    try:
        with pytest.raises(StoreBusyError, match="not damaged"):
            submit(RunStore(tmp_path), {"num_epochs": 1}, "builtin:synthetic")  # what the Train page's button calls
    finally:
        holder.kill()
        holder.wait()
    full = RunStore(tmp_path)._translate(sqlite3.OperationalError("database or disk is full"))
    assert not isinstance(full, StoreDamagedError) and "is full" in str(full) and "free some space and retry" in str(full)
    io_error = RunStore(tmp_path)._translate(sqlite3.OperationalError("disk I/O error"))
    assert not isinstance(io_error, StoreDamagedError) and "check the disk" in str(io_error)


def test_listing_does_not_wait_to_mark_a_dead_workers_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ids = store_with_runs(tmp_path, 2)
    store = RunStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert store.claim_job(ids[0], pid=dead.pid)  # its worker is gone: the next look marks it failed
    store.close()
    holder = _hold_write_lock(tmp_path / "store.sqlite3")
    try:
        started = time.monotonic()
        assert main(["runs", "list", "--home", str(tmp_path)]) == 0
        assert time.monotonic() - started < 10.0  # not the 30 s a write waits
        captured = capsys.readouterr()
        assert ids[0] in captured.out and ids[1] in captured.out
        assert "the store is busy; runs whose worker died may still show as running" in captured.err
    finally:
        holder.kill()
        holder.wait()
    assert main(["runs", "list", "--home", str(tmp_path)]) == 0
    assert "busy" not in capsys.readouterr().err
    assert RunStore(tmp_path).get_run(ids[0]).status == "failed"  # marked on the next look
