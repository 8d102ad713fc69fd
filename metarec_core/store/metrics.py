"""A run's metrics as the store reads them: its ``metrics.jsonl`` (what ``fit`` writes) as one row per value.

``fit`` appends one JSON object per progress event to the run directory's
``metrics.jsonl`` (:meth:`metarec_core.artifacts.RunArtifacts.append_metrics`):
``phase``, ``epoch``, ``step``, ``total_steps``, ``losses`` (a dict),
``metrics`` (a dict), ``elapsed``, ``eta`` and ``time``. That file is the
only record of a run's metrics; the store turns each loss term and metric of
each event into one row of ``phase, epoch, step, key, value, time`` and caches
the result until the file's modification time or size changes.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

#: Name of a run's metrics file (``metarec_core.artifacts.METRICS_FILE``).
METRICS_FILE = "metrics.jsonl"
#: Columns of :meth:`MetricsReader.frame`.
METRIC_COLUMNS = ("phase", "epoch", "step", "key", "value", "time")
#: Phases whose values are metrics (validation, final); the other phases' values are loss terms.
METRIC_PHASES = ("validate", "done", "final")
_DTYPES = {"phase": str, "epoch": "int64", "step": "int64", "key": str, "value": "float64", "time": "float64"}


@dataclass(frozen=True)
class MetricsLog:
    """A parsed ``metrics.jsonl``: its rows (see :data:`METRIC_COLUMNS`) and sentences about what was skipped."""

    frame: pd.DataFrame
    problems: tuple[str, ...] = ()


def empty_frame() -> pd.DataFrame:
    """A metrics frame without rows, with the columns and dtypes of a full one."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _DTYPES.items()})


def read_metrics_log(path: Path) -> MetricsLog:
    """Parse a ``metrics.jsonl``; lines that are not complete events and values that are not numbers are skipped and named.

    A missing file is an empty log (a run that has not reported yet).
    """
    rows: list[tuple] = []
    problems: list[str] = []
    bad_values: list[int] = []
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return MetricsLog(empty_frame())
    except OSError as exc:
        return MetricsLog(empty_frame(), (f"'{path.name}' cannot be read: {exc}",))
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                problems.append(f"'{path.name}' line {number} is incomplete or not a JSON object; it is skipped")
                continue
            phase, epoch, step, when = event.get("phase"), event.get("epoch"), event.get("step"), event.get("time")
            if not isinstance(phase, str) or not _is_int(epoch) or not _is_int(step):
                problems.append(f"'{path.name}' line {number} has no phase, epoch and step; it is skipped")
                continue
            when = float(when) if _is_number(when) else float("nan")
            for group in ("losses", "metrics"):
                values = event.get(group) or {}
                if not isinstance(values, Mapping):
                    bad_values.append(number)
                    continue
                for key, value in values.items():
                    if value is None or _is_number(value):
                        rows.append((phase, int(epoch), int(step), str(key), float("nan") if value is None else float(value), when))
                    else:
                        bad_values.append(number)
    if bad_values:
        problems.append(
            f"'{path.name}' has {len(bad_values)} value(s) that are not numbers (first on line {bad_values[0]}); they are left out"
        )
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).astype(_DTYPES) if rows else empty_frame()
    return MetricsLog(frame, tuple(problems))


def final_values(frame: pd.DataFrame) -> dict[str, float]:
    """A run's final metrics: its ``final`` or ``done`` values if written, else its last validation values."""
    for phase in ("final", "done", "validate"):
        rows = frame[(frame["phase"] == phase) & frame["value"].notna()]
        if len(rows):
            return {str(k): float(v) for k, v in zip(rows["key"], rows["value"])}
    return {}


@dataclass
class _Entry:
    """A cached file: its modification time and size, its parsed log, and its final values once asked for."""

    key: tuple[int, int]
    log: MetricsLog
    final: dict[str, float] | None = None


class MetricsReader:
    """Reads runs' ``metrics.jsonl`` files, re-parsing one only when its modification time or size changed.

    Thread-safe; one per store object. Keeps the last ``max_entries`` files read.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, _Entry] = OrderedDict()
        self._max_entries = max_entries

    def _entry(self, run_dir: Path) -> _Entry:
        path = Path(run_dir) / METRICS_FILE
        try:
            stat = os.stat(path)
        except OSError:
            with self._lock:
                self._cache.pop(path, None)
            return _Entry((0, 0), read_metrics_log(path))
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.key == key:
                self._cache.move_to_end(path)
                return cached
        entry = _Entry(key, read_metrics_log(path))
        with self._lock:
            self._cache[path] = entry
            self._cache.move_to_end(path)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return entry

    def log(self, run_dir: Path) -> MetricsLog:
        """The parsed metrics of one run directory (the frame is shared: copy it before changing it)."""
        return self._entry(run_dir).log

    def frame(self, run_dir: Path, phases: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of a run's metrics in write order (a copy), optionally of some phases only."""
        frame = self.log(run_dir).frame
        if phases is not None:
            frame = frame[frame["phase"].isin(list(phases))].reset_index(drop=True)
        return frame.copy()

    def final(self, run_dir: Path) -> dict[str, float]:
        """See :func:`final_values`; worked out once per parse of the file (a sweep's trial table asks for every trial's each second)."""
        entry = self._entry(run_dir)
        if entry.final is None:
            entry.final = final_values(entry.log.frame)
        return dict(entry.final)


def events_from_rows(rows: Iterable[Sequence[Any]], *, total_steps: int = 0) -> list[dict[str, Any]]:
    """Rows of ``phase, epoch, step, key, value, time`` grouped back into the events ``fit`` writes.

    Consecutive rows with the same phase, epoch, step and time are one event;
    values of :data:`METRIC_PHASES` go to ``metrics``, the others to ``losses``.
    Used to carry metrics kept elsewhere (an older store, an export's
    ``metrics.csv``) into a run's ``metrics.jsonl``.
    """
    events: list[dict[str, Any]] = []
    start: float | None = None
    for phase, epoch, step, key, value, when in rows:
        when = float(when) if _is_number(when) else None
        if start is None and when is not None:
            start = when
        last = events[-1] if events else None
        if last is None or (last["phase"], last["epoch"], last["step"], last["time"]) != (phase, epoch, step, when):
            last = {
                "phase": str(phase), "epoch": int(epoch), "step": int(step), "total_steps": int(total_steps),
                "losses": {}, "metrics": {}, "elapsed": None if when is None or start is None else when - start,
                "eta": None, "time": when,
            }
            events.append(last)
        number = float(value) if _is_number(value) else None
        last["metrics" if phase in METRIC_PHASES else "losses"][str(key)] = number
    return events


def write_events(run_dir: Path, events: Sequence[Mapping[str, Any]]) -> None:
    """Write ``metrics.jsonl`` from events (atomically: a temporary file renamed into place)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / METRICS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(dict(e)) + "\n" for e in events), encoding="utf-8")
    os.replace(tmp, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
