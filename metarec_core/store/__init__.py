"""The run store: runs, their jobs and artifacts, and saved datasets, under one home directory.

Layout of a store home (``METAREC_HOME``, default the user's data directory +
``metarec``)::

    store.sqlite3            runs, jobs, datasets and sweeps tables (WAL mode)
    runs/<run_id>/           one artifact directory per run (weights, ID maps, metrics.jsonl, logs)
    datasets/<dataset_id>/   Parquet tables and meta.json of a saved dataset
    sweeps/<sweep_id>/       a sweep's driver log and Ray Tune's records

Modules: :mod:`~metarec_core.store.database` (connections, schema, errors),
:mod:`~metarec_core.store.migration` (upgrades of older stores),
:mod:`~metarec_core.store.runs` (runs and their jobs),
:mod:`~metarec_core.store.metrics` (a run's ``metrics.jsonl`` as a table),
:mod:`~metarec_core.store.datasets` (saved datasets),
:mod:`~metarec_core.store.sweeps` (sweeps and their trials) and
:mod:`~metarec_core.store.archive` (zip export and import). The store never
loads a built-in dataset: :mod:`metarec_core.catalogue` resolves references.
"""
from __future__ import annotations

from pathlib import Path

from metarec_core.store import archive
from metarec_core.store.archive import MAX_IMPORT_BYTES, ImportedRun
from metarec_core.store.database import SCHEMA_VERSION, StoreError, default_home
from metarec_core.store.datasets import DatasetRecord, DatasetShelf, split_dataset_ref
from metarec_core.store.metrics import METRIC_COLUMNS
from metarec_core.store.runs import (
    ACTIVE_STATUSES,
    EXPECTED_ARTIFACTS,
    FINISHED_STATUSES,
    JOB_KINDS,
    RUN_STATUSES,
    JobRecord,
    RunComparison,
    RunRecord,
    RunRegistry,
)
from metarec_core.store.sweeps import SWEEP_STATUSES, SweepRecord, SweepRegistry

__all__ = [
    "ACTIVE_STATUSES", "EXPECTED_ARTIFACTS", "FINISHED_STATUSES", "JOB_KINDS", "MAX_IMPORT_BYTES", "METRIC_COLUMNS",
    "RUN_STATUSES", "SCHEMA_VERSION", "SWEEP_STATUSES", "SweepRecord", "DatasetRecord", "ImportedRun", "JobRecord", "RunComparison", "RunRecord",
    "RunStore", "StoreError", "default_home", "split_dataset_ref",
]


class RunStore(RunRegistry, SweepRegistry, DatasetShelf):
    """Runs, their jobs, metrics and artifacts, sweeps, and saved datasets under one home directory.

    Parameters
    ----------
    home
        Directory of the store; created if missing. Default :func:`default_home`.

    Examples
    --------
    >>> store = RunStore(tmp_path)                                   # doctest: +SKIP
    >>> run_id = store.create_run({"num_epochs": 1}, "builtin:synthetic")  # doctest: +SKIP
    >>> store.get_run(run_id).status                                 # doctest: +SKIP
    'queued'
    """

    def export_run(self, run_id: str, to_zip: str | Path, *, include_dataset: bool = True) -> Path:
        """Write a finished run to a zip file; see :func:`metarec_core.store.archive.export_run`."""
        return archive.export_run(self, run_id, to_zip, include_dataset=include_dataset)

    def import_run(self, zip_path: str | Path, *, max_bytes: int = MAX_IMPORT_BYTES) -> ImportedRun:
        """Add a run from a zip file written by :meth:`export_run`; see :func:`metarec_core.store.archive.import_run`."""
        return archive.import_run(self, zip_path, max_bytes=max_bytes)
