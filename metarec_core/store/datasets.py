"""Saved datasets: their catalogue rows and their Parquet folders under ``datasets/<dataset_id>/``."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap
from metarec_core.store.database import ID_PATTERN, Database, StoreError, check_id, check_name

logger = logging.getLogger(__name__)

#: Files of a saved dataset's folder.
DATASET_FILES = ("ratings.parquet", "user_table.parquet", "item_table.parquet", "meta.json")
_DATASET_FORMAT = "metarec-dataset"
_BUILTIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class DatasetRecord:
    """One saved dataset: its generated ID, name, fingerprint and size."""

    id: str
    name: str
    fingerprint: str
    created: float
    n_users: int
    n_items: int
    n_ratings: int
    implicit: bool

    @property
    def ref(self) -> str:
        """The dataset reference runs use (``stored:<id>``)."""
        return f"stored:{self.id}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def split_dataset_ref(ref: str) -> tuple[str, str]:
    """Split a dataset reference and check its form (not whether a built-in name exists).

    Parameters
    ----------
    ref
        ``builtin:<name>`` or ``stored:<dataset_id>``. Which built-in names exist
        is :func:`metarec_core.catalogue.parse_dataset_ref`'s business.

    Returns
    -------
    tuple of str
        ``("builtin", name)`` or ``("stored", dataset_id)``.

    Raises
    ------
    StoreError
        If the reference is malformed.
    """
    kind, _, value = str(ref).partition(":")
    if (kind == "builtin" and _BUILTIN_NAME.match(value)) or (kind == "stored" and ID_PATTERN.match(value)):
        return kind, value
    raise StoreError(f"dataset reference '{ref}' is not valid; use builtin:<name> or stored:<dataset id>")


class DatasetShelf(Database):
    """The saved datasets of a store (mixed into :class:`~metarec_core.store.RunStore`)."""

    def save_dataset(self, dataset: Dataset, *, name: str | None = None) -> str:
        """Save a dataset (Parquet tables + JSON) and return its ID.

        A dataset with the same fingerprint already saved is not saved again;
        its ID is returned.

        Raises
        ------
        DataError
            If a table cannot be written as Parquet or does not read back identically.
        """
        fingerprint = dataset.fingerprint
        existing = self._read_one("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,))
        if existing:
            return existing[0]
        name = check_name(name or dataset.name)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=self.datasets_dir))
        try:
            write_dataset_dir(dataset, tmp, name=name, fingerprint=fingerprint)
            reread = read_dataset_dir(tmp, label=f"dataset '{name}'", verify=False)
            if reread.fingerprint != fingerprint:
                raise DataError(
                    f"dataset '{name}' does not read back identically from Parquet "
                    f"({_first_difference(dataset, reread)}); convert that column to plain text or numbers and try again"
                )
            for _ in range(10):
                dataset_id = secrets.token_hex(5)
                try:
                    with self._write() as conn:
                        row = conn.execute("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,)).fetchone()
                        if row:
                            return row[0]
                        conn.execute(
                            "INSERT INTO datasets (id, name, fingerprint, created, n_users, n_items, n_ratings, implicit) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (dataset_id, name, fingerprint, time.time(), dataset.n_users, dataset.n_items, len(dataset.ratings), int(dataset.implicit)),
                        )
                        os.replace(tmp, self.datasets_dir / dataset_id)
                except sqlite3.IntegrityError:
                    continue
                logger.info("saved dataset %s (%s, fingerprint %s)", dataset_id, name, fingerprint)
                return dataset_id
            raise StoreError("could not generate a unique dataset ID; try again")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def load_dataset(self, dataset_id: str) -> Dataset:
        """Read a saved dataset back (its fingerprint is checked)."""
        record = self.get_dataset(dataset_id)
        dataset = read_dataset_dir(self.datasets_dir / record.id, label=f"saved dataset '{record.id}'")
        if dataset.fingerprint != record.fingerprint:
            raise DataError(
                f"saved dataset '{record.id}' no longer matches its fingerprint ({record.fingerprint}); "
                "its files changed on disk; delete it and save the data again"
            )
        return dataset

    def get_dataset(self, dataset_id: str) -> DatasetRecord:
        """One saved dataset's record; raises :class:`StoreError` if unknown."""
        row = self._read_one("SELECT * FROM datasets WHERE id = ?", (str(dataset_id),))
        if row is None:
            raise StoreError(f"no saved dataset '{dataset_id}' in the store at '{self.home}'")
        return _dataset_from_row(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """Saved datasets, newest first."""
        return [_dataset_from_row(r) for r in self._read("SELECT * FROM datasets ORDER BY created DESC, rowid DESC")]

    def has_dataset_files(self, dataset_id: str) -> bool:
        """Whether a saved dataset's folder is there (its ``meta.json`` at least)."""
        return (self.datasets_dir / check_id(dataset_id, "dataset") / "meta.json").is_file()

    def delete_dataset(self, dataset_id: str, *, force: bool = False) -> None:
        """Delete a saved dataset.

        Refused while runs use it, unless ``force`` (those runs keep their results
        but cannot be re-trained); always refused while a run on it is queued or running.
        """
        self.get_dataset(dataset_id)
        users = self._read(
            "SELECT r.id, j.status FROM runs r JOIN jobs j ON j.run_id = r.id AND j.kind = 'train' "
            "WHERE r.dataset_ref = ? ORDER BY r.created DESC",
            (f"stored:{dataset_id}",),
        )
        active = [run_id for run_id, status in users if status in ("queued", "running")]
        if active:
            raise StoreError(f"dataset '{dataset_id}' is used by queued or running run(s) {', '.join(active[:5])}; cancel them first")
        if users and not force:
            ids = ", ".join(r[0] for r in users[:5]) + (", ..." if len(users) > 5 else "")
            raise StoreError(
                f"dataset '{dataset_id}' is used by {len(users)} run(s) ({ids}); delete those runs first, "
                "or force the deletion (--force): the runs keep their results but can no longer be re-trained"
            )
        with self._write() as conn:
            conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))
        shutil.rmtree(self.datasets_dir / check_id(dataset_id, "dataset"), ignore_errors=True)
        logger.info("deleted dataset %s", dataset_id)


# ---------------------------------------------------------------------- Parquet folders
def write_dataset_dir(dataset: Dataset, directory: Path, *, name: str, fingerprint: str) -> None:
    """Write a dataset's three tables as Parquet and its ID maps, feature kinds and provenance as ``meta.json``.

    Raises
    ------
    DataError
        If a table cannot be written as Parquet (naming the column that mixes types).
    """
    for label, frame, filename in (
        ("ratings", dataset.ratings, "ratings.parquet"),
        ("user table", dataset.user_table, "user_table.parquet"),
        ("item table", dataset.item_table, "item_table.parquet"),
    ):
        try:
            frame.to_parquet(directory / filename)
        except (ValueError, TypeError, ImportError) as exc:
            column = _unstorable_column(frame)
            raise DataError(
                f"the {label} of dataset '{name}' cannot be stored as Parquet ({exc}); "
                "give that column one type (all text or all numbers) and try again",
                column=column,
            ) from exc
    meta = {
        "format": _DATASET_FORMAT,
        "version": 1,
        "name": name,
        "fingerprint": fingerprint,
        "implicit": bool(dataset.implicit),
        "warnings": list(dataset.warnings),
        "users": dataset.users.to_json(),
        "items": dataset.items.to_json(),
        "user_features": [dataclasses.asdict(s) for s in dataset.user_features],
        "item_features": [dataclasses.asdict(s) for s in dataset.item_features],
        "item_name_column": dataset.item_name_column,
        "user_name_column": dataset.user_name_column,
    }
    (directory / "meta.json").write_text(json.dumps(meta))


def read_dataset_dir(directory: Path, *, label: str, verify: bool = True) -> Dataset:
    """Read a folder written by :func:`write_dataset_dir`; with ``verify``, its fingerprint must match ``meta.json``'s.

    Raises
    ------
    DataError
        If a file is missing, unreadable or changed; the message names it.
    """
    for filename in DATASET_FILES:
        if not (directory / filename).is_file():
            raise DataError(f"{label}: file '{filename}' is missing; delete the dataset and save it again")
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format") != _DATASET_FORMAT:
            raise DataError(f"{label}: 'meta.json' is not a metarec dataset description")
        users = IdMap.from_json(meta["users"])
        items = IdMap.from_json(meta["items"])
        dataset = Dataset(
            name=str(meta["name"]),
            ratings=pd.read_parquet(directory / "ratings.parquet"),
            users=users,
            items=items,
            user_table=_read_table(directory / "user_table.parquet", len(users)),
            item_table=_read_table(directory / "item_table.parquet", len(items)),
            user_features=tuple(FeatureSpec(**s) for s in meta["user_features"]),
            item_features=tuple(FeatureSpec(**s) for s in meta["item_features"]),
            implicit=bool(meta["implicit"]),
            warnings=tuple(str(w) for w in meta["warnings"]),
            item_name_column=meta.get("item_name_column"),
            user_name_column=meta.get("user_name_column"),
        )
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{label} cannot be read ({type(exc).__name__}: {exc}); delete it and save the data again") from exc
    if verify and dataset.fingerprint != meta["fingerprint"]:
        raise DataError(f"{label} does not match its recorded fingerprint {meta['fingerprint']}; its files were changed or damaged")
    return dataset


def _dataset_from_row(row: tuple) -> DatasetRecord:
    dataset_id, name, fingerprint, created, n_users, n_items, n_ratings, implicit = row
    return DatasetRecord(dataset_id, name, fingerprint, created, n_users, n_items, n_ratings, bool(implicit))


def _unstorable_column(frame: pd.DataFrame) -> str | None:
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column])
        except (pa.ArrowException, TypeError, ValueError):
            return str(column)
    return None


def _read_table(path: Path, n_rows: int) -> pd.DataFrame:
    table = pd.read_parquet(path)
    if len(table.columns) == 0 and len(table) != n_rows:
        table = pd.DataFrame(index=pd.RangeIndex(n_rows))
    return table


def _first_difference(a: Dataset, b: Dataset) -> str:
    for label, x, y in (("ratings", a.ratings, b.ratings), ("user table", a.user_table, b.user_table), ("item table", a.item_table, b.item_table)):
        for column in x.columns:
            if column not in y.columns or not x[column].astype(str).equals(y[column].astype(str)):
                return f"{label} column '{column}' changed"
        if not x.index.equals(y.index):
            return f"{label} row index changed"
    return "content changed"
