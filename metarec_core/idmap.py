"""ID maps: the one owner of external ID <-> dense index for users and items."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class IdMap:
    """A fixed, ordered mapping between external IDs (kept as strings) and indices 0..n-1.

    External IDs are normalised to ``str`` so that ``1`` read from a CSV and ``1``
    read from Parquet are the same user. The map is immutable; :meth:`extended`
    returns a new map with extra IDs appended (their indices come after the old ones).

    Examples
    --------
    >>> users = IdMap(["u1", "u2"])
    >>> users.index("u2")
    1
    >>> users.external(0)
    'u1'
    """

    __slots__ = ("_external", "_index")

    def __init__(self, external_ids: Iterable[object]) -> None:
        ids = tuple(normalise_id(x) for x in external_ids)
        index = {x: i for i, x in enumerate(ids)}
        if len(index) != len(ids):
            seen: set[str] = set()
            dup = next(x for x in ids if x in seen or seen.add(x))  # type: ignore[func-returns-value]
            raise ValueError(f"IdMap: duplicate external ID '{dup}'")
        self._external = ids
        self._index = index

    def __len__(self) -> int:
        return len(self._external)

    def __contains__(self, external_id: object) -> bool:
        return normalise_id(external_id) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._external == other._external

    def __hash__(self) -> int:
        return hash(self._external)

    def __repr__(self) -> str:
        head = ", ".join(self._external[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap({len(self)} ids: {head}{more})"

    @property
    def external_ids(self) -> tuple[str, ...]:
        """All external IDs, in index order."""
        return self._external

    def index(self, external_id: object) -> int:
        """Index of one external ID; raises ``KeyError`` if unknown."""
        return self._index[normalise_id(external_id)]

    def get(self, external_id: object, default: int = -1) -> int:
        """Index of one external ID, or ``default`` if unknown."""
        return self._index.get(normalise_id(external_id), default)

    def lookup(self, external_ids: Iterable[object]) -> np.ndarray:
        """Indices of many external IDs as an int64 array; unknown IDs give -1."""
        get = self._index.get
        return np.fromiter((get(normalise_id(x), -1) for x in external_ids), dtype=np.int64)

    def external(self, index: int) -> str:
        """External ID of one index."""
        return self._external[int(index)]

    def externals(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """External IDs of many indices."""
        ext = self._external
        return [ext[int(i)] for i in indices]

    def extended(self, external_ids: Iterable[object]) -> "IdMap":
        """A new map with the IDs not yet known appended, in first-seen order."""
        new: list[str] = []
        seen = set(self._index)
        for x in external_ids:
            s = normalise_id(x)
            if s not in seen:
                seen.add(s)
                new.append(s)
        return IdMap(self._external + tuple(new))

    def to_json(self) -> list[str]:
        """JSON-ready list of external IDs in index order."""
        return list(self._external)

    @classmethod
    def from_json(cls, values: list[str]) -> "IdMap":
        """Inverse of :meth:`to_json`."""
        return cls(values)


def normalise_id(value: object) -> str:
    """Normalise an external ID to a string (``3.0`` -> ``'3'``, ``b'x'`` -> ``'x'``)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value).strip()
