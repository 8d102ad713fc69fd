"""The Dataset: interactions plus optional user and item tables, on dense indices."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap

#: Columns of :attr:`Dataset.ratings`.
RATING_COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True)
class Dataset:
    """Interactions and side tables of one dataset, indexed by dense integer IDs.

    Attributes
    ----------
    name
        A short name shown in the app and stored with runs.
    ratings
        One row per (user, item) pair: ``user`` and ``item`` (int64 indices into
        :attr:`users` / :attr:`items`), ``rating`` (float32; 1.0 for implicit
        data) and ``timestamp`` (int64 seconds, or -1 when unknown).
    users, items
        ID maps. They also hold users/items that occur only in a side table
        (cold entities with no interactions yet).
    user_table, item_table
        Side features, row ``i`` describing index ``i`` (``len == len(users)``
        / ``len(items)``); columns are the feature names (no ID column). Empty
        (zero columns) when there is no side table.
    user_features, item_features
        Feature kind of each column of the side tables.
    implicit
        True when every interaction is a 1 (no explicit rating).
    warnings
        Problems found while loading that did not stop it (duplicates
        resolved, unmatched side-table rows, ...), as plain sentences.
    item_name_column, user_name_column
        The side-table column that names each item / user, as chosen with the
        data; ``None`` means detect it (:mod:`metarec_core.titles`), ``""`` none.
    """

    name: str
    ratings: pd.DataFrame
    users: IdMap
    items: IdMap
    user_table: pd.DataFrame
    item_table: pd.DataFrame
    user_features: tuple[FeatureSpec, ...] = ()
    item_features: tuple[FeatureSpec, ...] = ()
    implicit: bool = False
    warnings: tuple[str, ...] = field(default=())
    item_name_column: str | None = None
    user_name_column: str | None = None

    def __post_init__(self) -> None:
        missing = [c for c in RATING_COLUMNS if c not in self.ratings.columns]
        if missing:
            raise ValueError(f"Dataset.ratings lacks column(s) {missing}")
        if len(self.user_table) != len(self.users) or len(self.item_table) != len(self.items):
            raise ValueError("Dataset side tables must have one row per user / item index")

    def __repr__(self) -> str:
        kind = "implicit" if self.implicit else "explicit"
        return (
            f"Dataset('{self.name}', {self.n_users} users, {self.n_items} items, "
            f"{len(self.ratings)} {kind} interactions)"
        )

    @property
    def n_users(self) -> int:
        """Number of users, including users with no interactions."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items, including items with no interactions."""
        return len(self.items)

    @property
    def rating_range(self) -> tuple[float, float]:
        """Smallest and largest rating present."""
        r = self.ratings["rating"]
        return float(r.min()), float(r.max())

    @property
    def fingerprint(self) -> str:
        """A short content hash of interactions, IDs and side tables (stable across runs)."""
        h = hashlib.sha256()
        for arr in (
            self.ratings["user"].to_numpy(np.int64),
            self.ratings["item"].to_numpy(np.int64),
            self.ratings["rating"].to_numpy(np.float32),
            self.ratings["timestamp"].to_numpy(np.int64),
        ):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(self.users.external_ids).encode())
        h.update("\x1e".join(self.items.external_ids).encode())
        for table in (self.user_table, self.item_table):
            h.update(pd.util.hash_pandas_object(table.astype(str), index=True).to_numpy().tobytes())
        for spec in self.user_features + self.item_features:
            h.update(f"{spec.name}:{spec.kind}:{spec.separator}".encode())
        for role, chosen in (("items", self.item_name_column), ("users", self.user_name_column)):
            if chosen is not None:  # a choice made with the data; the detected default leaves the hash as it was
                h.update(f"name of {role}:{chosen}".encode())
        return h.hexdigest()[:16]

    def text_columns(self) -> tuple[str, ...]:
        """Item features marked as free text."""
        return tuple(s.name for s in self.item_features if s.kind == "text")
