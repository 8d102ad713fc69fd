"""Rebuilding a store's database from its folders: ``runs/<id>/`` and ``datasets/<id>/`` hold everything the index needs.

A run folder keeps its own record (``run.json``: name, config, dataset,
creation time) beside ``config.json``, ``model.json`` (dataset name and
fingerprint), ``result.json``, ``metrics.jsonl`` (a ``done`` event once
training finished) and the weights; a dataset folder keeps ``meta.json`` and
its Parquet tables. :func:`recover_store` reads them back into a fresh
``store.sqlite3`` built beside the old one, then keeps the old file aside as
``store.sqlite3.damaged-<time>`` (never deleted or overwritten) and puts the
new one in its place. On a healthy database it only adds the folders the
database has no record of. Folders are only read, never changed.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec_core.errors import DataError, StoreDamagedError, StoreError
from metarec_core.store.database import DB_NAME, ID_PATTERN, SCHEMA, SCHEMA_VERSION, check_name, one_line
from metarec_core.store.datasets import read_dataset_dir, split_dataset_ref
from metarec_core.store.runs import RUN_RECORD_FILE, read_run_record

logger = logging.getLogger(__name__)

#: The dataset reference of a recovered run whose dataset is neither saved in the store nor built in.
UNKNOWN_DATASET_REF = "builtin:unknown"


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover_store` did.

    Attributes
    ----------
    kept_aside
        Where the old database now is (None when it was healthy, or there was none).
    runs, datasets
        IDs of the runs and datasets put (back) into the database.
    notes
        Sentences about folders left out or recovered with missing pieces (each names the folder).
    """

    kept_aside: Path | None
    runs: tuple[str, ...]
    datasets: tuple[str, ...]
    notes: tuple[str, ...]


def recover_store(home: str | Path) -> RecoveryReport:
    """Rebuild a store's database from its run and dataset folders, or add the folders a healthy one lacks.

    Parameters
    ----------
    home
        The store home (``store.sqlite3``, ``runs/``, ``datasets/``).

    Returns
    -------
    RecoveryReport

    Raises
    ------
    StoreError
        If the store is busy, written by a newer metarec, not a metarec store, or
        the home cannot be written; nothing is changed then.
    """
    from metarec_core.store import RunStore

    home = Path(home).expanduser()
    try:
        store = RunStore(home)
    except StoreDamagedError:
        return _rebuild(home)
    try:
        return _add_missing(store)
    finally:
        store.close()


def _add_missing(store: Any) -> RecoveryReport:
    known_runs = {r.id for r in store.list_runs()}
    known_sets = {d.id: d.fingerprint for d in store.list_datasets()}
    notes: list[str] = []
    datasets = _read_datasets(store.home, skip=set(known_sets), notes=notes)
    by_fingerprint = {fp: i for i, fp in known_sets.items()} | {d["fingerprint"]: d["id"] for d in datasets}
    runs = _read_runs(store.home, skip=known_runs, datasets=by_fingerprint, notes=notes)
    with store._write() as conn:
        added_sets = _insert(conn, datasets, runs, notes)
    return RecoveryReport(None, tuple(r["id"] for r in runs), tuple(added_sets), tuple(notes))


def _rebuild(home: Path) -> RecoveryReport:
    db_path = home / DB_NAME
    notes: list[str] = []
    datasets = _read_datasets(home, skip=set(), notes=notes)
    runs = _read_runs(home, skip=set(), datasets={d["fingerprint"]: d["id"] for d in datasets}, notes=notes)
    new_path = home / f".{DB_NAME}.rebuilding"
    for path in (new_path, new_path.with_name(new_path.name + "-journal")):
        path.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(new_path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            added_sets = _insert(conn, datasets, runs, notes)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        aside = _keep_aside(db_path)
        os.replace(new_path, db_path)
    except (OSError, sqlite3.DatabaseError) as exc:
        new_path.unlink(missing_ok=True)
        raise StoreError(f"cannot rebuild the run store in '{home}' ({exc}); free some disk space or make it writable and try again") from exc
    logger.info("rebuilt %s from %d run and %d dataset folder(s); the old file is %s", db_path, len(runs), len(datasets), aside)
    return RecoveryReport(aside, tuple(r["id"] for r in runs), tuple(added_sets), tuple(notes))


def _keep_aside(db_path: Path) -> Path | None:
    """Rename the old database (and its -wal / -shm files) to ``…damaged-<time>``; None when there was nothing to keep."""
    if not db_path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = db_path.with_name(f"{db_path.name}.damaged-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    os.replace(db_path, aside)
    return aside


def _folders(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and ID_PATTERN.match(p.name))
    except OSError:
        return []


def _read_datasets(home: Path, *, skip: set[str], notes: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for folder in _folders(home / "datasets"):
        if folder.name in skip:
            continue
        try:
            dataset = read_dataset_dir(folder, label=f"dataset folder '{folder}'")
        except DataError as exc:
            notes.append(f"{exc}; it was left out (its files are untouched)")
            continue
        fingerprint = dataset.fingerprint
        if fingerprint in seen:
            notes.append(f"dataset folder '{folder}' holds the same data as another folder; it was left out")
            continue
        seen.add(fingerprint)
        out.append({
            "id": folder.name, "name": check_name(dataset.name or folder.name), "fingerprint": fingerprint,
            "created": _mtime(folder / "meta.json"), "n_users": dataset.n_users, "n_items": dataset.n_items,
            "n_ratings": len(dataset.ratings), "implicit": int(dataset.implicit),
        })
    return out


def _read_runs(home: Path, *, skip: set[str], datasets: dict[str, str], notes: list[str]) -> list[dict[str, Any]]:
    from metarec_core.artifacts import CONFIG_FILE, MODEL_FILE, RESULT_FILE, WEIGHTS_FILE, read_metrics
    from metarec_core.builtin import BUILTIN_DATASETS

    out: list[dict[str, Any]] = []
    for folder in _folders(home / "runs"):
        if folder.name in skip:
            continue
        record = read_run_record(folder) or {}
        config = record.get("config") if isinstance(record.get("config"), dict) else _json_object(folder / CONFIG_FILE)
        if config is None:
            notes.append(
                f"run folder '{folder}' has neither a readable {RUN_RECORD_FILE} nor {CONFIG_FILE}, so nothing says how it "
                "was trained; it was left out (its files are untouched)"
            )
            continue
        model = _json_object(folder / MODEL_FILE) or {}
        result = _json_object(folder / RESULT_FILE) or {}
        fingerprint = record.get("dataset_fingerprint") or model.get("fingerprint")
        fingerprint = fingerprint if isinstance(fingerprint, str) else None
        dataset_ref = _dataset_ref(record, model, fingerprint, datasets, BUILTIN_DATASETS)
        if dataset_ref == UNKNOWN_DATASET_REF:
            notes.append(
                f"run {folder.name}: its dataset ('{one_line(str(model.get('dataset_name', '?')), 80)}') is neither in datasets/ "
                f"nor built in; it is listed under {UNKNOWN_DATASET_REF}: it still scores and recommends, but to train or "
                "evaluate it again save its data first"
            )
        elif str(record.get("dataset_ref", dataset_ref)) != dataset_ref:
            notes.append(f"run {folder.name}: its dataset {record.get('dataset_ref')} is gone; recorded as {dataset_ref}")
        events = [e for e in read_metrics(folder) if isinstance(e, dict)]
        finished_training = any(e.get("phase") == "done" for e in events)
        times = [t for t in (_number(e.get("time")) for e in events) if t is not None]
        started = min(times) if times else None
        has_weights = (folder / WEIGHTS_FILE).is_file()
        error = None
        if finished_training and has_weights:
            status = "cancelled" if result.get("stopped") else "completed"
        else:
            status = "failed"
            error = (
                "recovered from its folder: training had not finished when the store's records were lost"
                + ("; the last saved epoch's weights are kept" if has_weights else " (no weights)")
            )
            notes.append(f"run {folder.name}: {error}")
        created = _number(record.get("created")) or started or _mtime(folder / CONFIG_FILE)
        finished = _number(result.get("saved_at")) if status != "failed" else None
        name = record.get("name") if isinstance(record.get("name"), str) and record.get("name").strip() else None
        if name is None:
            label = model.get("dataset_name") if isinstance(model.get("dataset_name"), str) else dataset_ref.split(":", 1)[1]
            name = f"{label} {time.strftime('%Y-%m-%d %H:%M', time.localtime(created))} (recovered)"
        out.append({
            "id": folder.name, "name": check_name(name), "config": config, "dataset_ref": dataset_ref,
            "fingerprint": fingerprint, "created": created, "started": started, "status": status, "finished": finished or None,
            "error": error,
        })
    return out


def _insert(conn: sqlite3.Connection, datasets: list[dict[str, Any]], runs: list[dict[str, Any]], notes: list[str]) -> list[str]:
    """Insert the records read from folders (in the caller's transaction); returns the dataset IDs inserted."""
    added: list[str] = []
    for d in datasets:
        try:
            conn.execute(
                "INSERT INTO datasets (id, name, fingerprint, created, n_users, n_items, n_ratings, implicit) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (d["id"], d["name"], d["fingerprint"], d["created"], d["n_users"], d["n_items"], d["n_ratings"], d["implicit"]),
            )
        except sqlite3.IntegrityError:
            notes.append(f"dataset folder '{d['id']}' holds data the store already has under another ID; it was left out")
            continue
        added.append(d["id"])
    for r in runs:
        conn.execute(
            "INSERT INTO runs (id, name, config, dataset_ref, dataset_fingerprint, device, created) VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (r["id"], r["name"], json.dumps(r["config"], sort_keys=True), r["dataset_ref"], r["fingerprint"], r["created"]),
        )
        conn.execute(
            "INSERT INTO jobs (run_id, kind, status, created, started, finished, error) VALUES (?, 'train', ?, ?, ?, ?, ?)",
            (r["id"], r["status"], r["created"], r["started"], r["finished"], r["error"]),
        )
    return added


def _dataset_ref(record: dict, model: dict, fingerprint: str | None, datasets: dict[str, str], builtins: tuple[str, ...]) -> str:
    ref = record.get("dataset_ref")
    if isinstance(ref, str):
        try:
            kind, value = split_dataset_ref(ref)
        except StoreError:
            kind, value = "", ""
        if kind == "builtin" or (kind == "stored" and value in datasets.values()):
            return ref
    if fingerprint and fingerprint in datasets:
        return f"stored:{datasets[fingerprint]}"
    name = model.get("dataset_name")
    if isinstance(name, str) and name in builtins:
        return f"builtin:{name}"
    return UNKNOWN_DATASET_REF


def _json_object(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
