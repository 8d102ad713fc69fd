"""Run exports: a finished run (record, config, metrics, artifacts, saved dataset) written to one zip file and read back.

A zip holds ``run.json`` (the run's record and any problems found),
``config.json``, ``metrics.csv`` (the run's metrics as a table, for reading
elsewhere), ``artifacts/...`` (every file of the run directory: weights, ID
maps, ``metrics.jsonl``, logs) and, for a run on a saved dataset,
``dataset/...`` so it can be reproduced elsewhere.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from metarec_core.errors import DataError, MetarecError
from metarec_core.store.database import StoreError, one_line
from metarec_core.store.datasets import DATASET_FILES, read_dataset_dir, split_dataset_ref
from metarec_core.store.metrics import METRIC_COLUMNS, METRICS_FILE, events_from_rows, read_metrics_log, write_events
from metarec_core.store.runs import EXPECTED_ARTIFACTS, FINISHED_STATUSES, RUN_RECORD_FILE

if TYPE_CHECKING:
    from metarec_core.store import RunStore

logger = logging.getLogger(__name__)

#: Largest total uncompressed size :func:`import_run` accepts.
MAX_IMPORT_BYTES = 4 * 1024**3
_EXPORT_FORMAT = "metarec-run"
#: What reading a damaged, truncated, encrypted or oddly compressed zip member raises.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class ImportedRun:
    """Result of :func:`import_run`: the new run's ID and what was wrong but not fatal."""

    run_id: str
    warnings: tuple[str, ...] = ()


def export_run(store: RunStore, run_id: str, to_zip: str | Path, *, include_dataset: bool = True) -> Path:
    """Write a finished run to a zip file (see the module docstring for what it holds).

    Returns
    -------
    Path
        The zip file written.

    Raises
    ------
    StoreError
        If the run is unknown or still queued or running.
    """
    run = store.get_run(run_id)
    if run.is_active:
        raise StoreError(f"run '{run_id}' is {run.status}; export it once it has finished (or cancel it)")
    problems = store.check_run(run_id)
    target = Path(to_zip).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    dataset_id = None
    kind, value = split_dataset_ref(run.dataset_ref)
    if include_dataset and kind == "stored":
        if store.has_dataset_files(value):
            dataset_id = value
        else:
            problems = problems + (f"saved dataset '{value}' is missing; exported without it",)
    manifest = {
        "format": _EXPORT_FORMAT,
        "version": 1,
        "run": {k: v for k, v in run.to_json().items() if k not in ("pid", "host", "cancel_requested", "config")},
        "dataset_included": dataset_id is not None,
        "problems": list(problems),
    }
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".zip", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("run.json", json.dumps(manifest, indent=2, sort_keys=True))
            zf.writestr("config.json", json.dumps(run.config, indent=2, sort_keys=True))
            zf.writestr("metrics.csv", store.metrics_frame(run_id).to_csv(index=False))
            run_dir = store.run_dir(run_id)
            if run_dir.is_dir():
                for path in sorted(run_dir.rglob("*")):
                    if path.is_file() and not path.is_symlink() and path.relative_to(run_dir).as_posix() != RUN_RECORD_FILE:
                        zf.write(path, "artifacts/" + path.relative_to(run_dir).as_posix())
            if dataset_id is not None:
                for name in DATASET_FILES:
                    zf.write(store.datasets_dir / dataset_id / name, f"dataset/{name}")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    for problem in problems:
        logger.warning("run %s exported with a problem: %s", run_id, problem)
    return target


def import_run(store: RunStore, zip_path: str | Path, *, max_bytes: int = MAX_IMPORT_BYTES) -> ImportedRun:
    """Add a run exported by :func:`export_run` under a new run ID.

    Member names are checked (no absolute paths, no ``..``, only the known
    top-level entries) and the total size is bounded. The run's metrics are its
    ``artifacts/metrics.jsonl`` (incomplete lines are skipped and reported); an
    export without one has its ``metrics.csv`` turned into it.

    Raises
    ------
    DataError
        If the file is not a metarec run export or holds unsafe entries.
    """
    source = Path(zip_path).name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a readable zip file ({exc}); choose a file written by `runs export`", source=source) from exc
    warnings: list[str] = []
    with zf:
        members = _safe_members(zf, source, max_bytes)
        for required in ("run.json", "config.json"):
            if required not in members:
                raise DataError(f"'{required}' is missing; this is not a metarec run export", source=source)
        manifest = _read_json_member(zf, members["run.json"], source)
        config = _read_json_member(zf, members["config.json"], source)
        if not isinstance(manifest, dict) or manifest.get("format") != _EXPORT_FORMAT or not isinstance(manifest.get("run"), dict):
            raise DataError("'run.json' is not a metarec run manifest", source=source)
        if not isinstance(config, dict):
            raise DataError("'config.json' must hold a JSON object of settings", source=source)
        meta = manifest["run"]
        status = meta.get("status")
        if status not in FINISHED_STATUSES:
            raise DataError(f"'run.json' has status '{status}'; only finished runs can be imported", source=source)
        warnings.extend(f"at export: {p}" for p in manifest.get("problems", []) if isinstance(p, str))
        dataset_ref = str(meta.get("dataset_ref", ""))
        try:
            split_dataset_ref(dataset_ref)
        except StoreError as exc:
            raise DataError(f"'run.json': {exc}", source=source) from exc
        if any(n.startswith("dataset/") for n in members):
            dataset_ref = "stored:" + _import_dataset(store, zf, members, source)
        elif dataset_ref.startswith("stored:") and not store.has_dataset_files(dataset_ref[7:]):
            warnings.append(f"its dataset ({dataset_ref}) was not exported and is not in this store; the run cannot be re-trained here")
        csv_events: list[dict[str, Any]] = []
        if f"artifacts/{METRICS_FILE}" not in members:
            if "metrics.csv" in members:
                rows, bad = _read_metrics_csv(_read_member(zf, members["metrics.csv"], source).decode("utf-8", "replace"))
                csv_events = events_from_rows(rows)
                warnings.extend(bad)
            else:
                warnings.append(f"the export holds neither 'artifacts/{METRICS_FILE}' nor 'metrics.csv'; the run is imported without metrics")
        warnings.extend(_check_imported_config(config))

        run_id = _insert_imported(store, meta, config, dataset_ref)
        run_dir = store.run_dir(run_id)
        try:
            for name, info in members.items():
                if name.startswith("artifacts/") and name != f"artifacts/{RUN_RECORD_FILE}":  # the new run has its own record
                    dest = run_dir.joinpath(*PurePosixPath(name).parts[1:])
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    _copy_member(zf, info, dest, source)
            if csv_events:
                write_events(run_dir, csv_events)
        except OSError as exc:
            store.delete(run_id)
            raise DataError(f"cannot unpack the run's artifacts ({exc})", source=source) from exc
        except BaseException:
            store.delete(run_id)
            raise
    warnings.extend(read_metrics_log(run_dir / METRICS_FILE).problems)
    missing = [n for n in EXPECTED_ARTIFACTS if not (run_dir / n).is_file()]
    if missing and status == "completed":
        warnings.append(f"artifact(s) {', '.join(missing)} missing from the export")
    logger.info("imported run %s from %s", run_id, source)
    return ImportedRun(run_id=run_id, warnings=tuple(warnings))


def _insert_imported(store: RunStore, meta: dict[str, Any], config: dict[str, Any], dataset_ref: str) -> str:
    def num(key: str) -> float | None:
        value = meta.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    fingerprint = meta.get("dataset_fingerprint")
    return store.insert_run(
        str(meta.get("name") or "imported run"),
        config,
        dataset_ref,
        status=meta["status"],
        dataset_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        device=meta["device"] if isinstance(meta.get("device"), str) else None,
        progress=meta["progress"] if isinstance(meta.get("progress"), dict) else None,
        created=num("created"),
        started=num("started"),
        finished=num("finished"),
        error=one_line(str(meta["error"])) if meta.get("error") else None,
    )


def _import_dataset(store: RunStore, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], source: str) -> str:
    missing = [n for n in DATASET_FILES if f"dataset/{n}" not in members]
    if missing:
        raise DataError(f"the exported dataset lacks {', '.join(missing)}", source=source)
    with tempfile.TemporaryDirectory(dir=store.datasets_dir, prefix=".import-") as tmp:
        for name in DATASET_FILES:
            _copy_member(zf, members[f"dataset/{name}"], Path(tmp) / name, source)
        dataset = read_dataset_dir(Path(tmp), label=f"{source}: dataset")
    return store.save_dataset(dataset, name=dataset.name)


def _safe_members(zf: zipfile.ZipFile, source: str, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in zf.infolist():
        name = info.filename
        if info.is_dir():
            continue
        parts = PurePosixPath(name).parts
        unsafe = (
            not name
            or "\\" in name
            or "\x00" in name
            or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name) is not None
            or any(p in ("", ".", "..") for p in parts)
            or name != "/".join(parts)
        )
        if unsafe:
            raise DataError(f"entry '{name}' has an unsafe path; refusing to import", source=source)
        allowed = name in ("run.json", "config.json", "metrics.csv") or (
            len(parts) >= 2 and parts[0] in ("artifacts", "dataset")
        )
        if not allowed:
            raise DataError(f"entry '{name}' does not belong in a run export (it holds run.json, config.json, metrics.csv, artifacts/ and dataset/); refusing to import", source=source)
        if parts[0] == "dataset" and (len(parts) != 2 or parts[1] not in DATASET_FILES):
            raise DataError(f"dataset entry '{name}' does not belong in a run export; refusing to import", source=source)
        if name in members:
            raise DataError(f"entry '{name}' appears twice", source=source)
        total += info.file_size
        if total > max_bytes:
            raise DataError(f"the export unpacks to more than {max_bytes / 1024**3:.1f} GiB; refusing to import", source=source)
        members[name] = info
    return members


def _damaged_member(info: zipfile.ZipInfo, exc: BaseException, source: str) -> DataError:
    return DataError(
        f"entry '{info.filename}' cannot be read ({type(exc).__name__}: {one_line(str(exc), 120)}); the zip is damaged, "
        "truncated or not written by `runs export`: export the run again; nothing was imported",
        source=source,
    )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """A member's bytes (its size and CRC checked by :mod:`zipfile`); a damaged member is a :class:`DataError` naming it."""
    try:
        return zf.read(info)
    except _MEMBER_ERRORS as exc:
        raise _damaged_member(info, exc, source) from exc


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, source: str) -> None:
    """Unpack one member to ``dest``; a damaged member is a :class:`DataError` naming it, a full disk an ``OSError``."""
    with open(dest, "wb") as out:
        try:
            src = zf.open(info)
        except _MEMBER_ERRORS as exc:
            raise _damaged_member(info, exc, source) from exc
        with src:
            while True:
                try:
                    chunk = src.read(1 << 20)
                except _MEMBER_ERRORS as exc:
                    raise _damaged_member(info, exc, source) from exc
                if not chunk:
                    break
                out.write(chunk)


def _read_json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> Any:
    try:
        return json.loads(_read_member(zf, info, source).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"'{info.filename}' is not valid JSON ({exc})", source=source) from exc


def _read_metrics_csv(text: str) -> tuple[list[tuple], list[str]]:
    rows: list[tuple] = []
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != list(METRIC_COLUMNS):
        return [], [f"'metrics.csv' has columns {header}, expected {', '.join(METRIC_COLUMNS)}; metrics not imported"]
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        try:
            if len(row) != len(METRIC_COLUMNS) or not row[0] or not row[3]:
                raise ValueError("wrong number of fields")
            value = float(row[4]) if row[4] not in ("", "nan", "NaN") else float("nan")
            rows.append((row[0], int(row[1] or -1), int(row[2] or -1), row[3], value, float(row[5])))
        except ValueError:
            problems.append(f"'metrics.csv' line {line} is incomplete or malformed; it is skipped")
    return rows, problems


def _check_imported_config(config: dict[str, Any]) -> list[str]:
    try:
        from metarec_core.configs import config_from_dict
        from metarec_core.train_config import TrainConfig
    except ImportError:
        return []
    try:
        config_from_dict(TrainConfig, config)
    except MetarecError as exc:
        return [f"its config does not fit this metarec version ({exc}); it can be viewed but not re-trained as is"]
    return []
