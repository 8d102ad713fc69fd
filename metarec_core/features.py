"""Side features: their kinds, inference of kinds, and encoding into model-ready arrays."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

FeatureKind = Literal["categorical", "multilabel", "numeric", "text"]
FEATURE_KINDS: tuple[str, ...] = ("categorical", "multilabel", "numeric", "text")

#: A numeric column with at most this many distinct integer values is categorical.
MAX_INTEGER_CATEGORIES = 25
#: A string column whose values are mostly distinct (above this share) is free text.
TEXT_UNIQUE_SHARE = 0.5


@dataclass(frozen=True)
class FeatureSpec:
    """One named side feature of users or items and how to read it.

    Parameters
    ----------
    name
        Column name in the user or item table.
    kind
        ``categorical`` (one value from a vocabulary), ``multilabel`` (several
        values joined by ``separator``, e.g. ``Action|Comedy``), ``numeric`` or
        ``text`` (free text, encoded by a text encoder).
    separator
        Separator of multi-label values.
    """

    name: str
    kind: FeatureKind
    separator: str = "|"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature '{self.name}': kind must be one of {FEATURE_KINDS}, got '{self.kind}'")


def infer_feature_specs(
    table: pd.DataFrame,
    *,
    id_column: str | None = None,
    overrides: dict[str, str] | None = None,
    separator: str = "|",
) -> tuple[FeatureSpec, ...]:
    """Infer the kind of every feature column of a side table.

    Rules: integer columns with few distinct values and bool columns are
    categorical, other numbers numeric; strings containing ``separator`` in at
    least 10% of rows are multi-label; strings that are mostly distinct (like
    titles or descriptions) are text; other strings categorical.

    Parameters
    ----------
    table
        The side table.
    id_column
        The ID column, skipped.
    overrides
        ``{column: kind}`` to force a kind (or ``"ignore"`` to drop a column).
    separator
        Multi-label separator.

    Returns
    -------
    tuple of FeatureSpec
        One spec per feature column, in table order.
    """
    overrides = dict(overrides or {})
    specs: list[FeatureSpec] = []
    for column in table.columns:
        if column == id_column:
            continue
        name = str(column)
        forced = overrides.pop(name, None)
        if forced == "ignore":
            continue
        kind = forced or infer_kind(table[column], separator=separator)
        specs.append(FeatureSpec(name=name, kind=kind, separator=separator))  # type: ignore[arg-type]
    if overrides:
        missing = ", ".join(sorted(overrides))
        raise ValueError(f"feature kind given for column(s) not in the table: {missing}")
    return tuple(specs)


def infer_kind(values: pd.Series, *, separator: str = "|") -> FeatureKind:
    """Infer one column's feature kind (see :func:`infer_feature_specs`)."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values):
        return "categorical"
    if pd.api.types.is_numeric_dtype(values):
        if len(present) and np.all(np.mod(present.to_numpy(dtype=float), 1) == 0) and present.nunique() <= MAX_INTEGER_CATEGORIES:
            return "categorical"
        return "numeric"
    text = present.astype(str)
    if len(text) == 0:
        return "categorical"
    if text.str.contains(separator, regex=False).mean() >= 0.1:
        return "multilabel"
    if len(text) >= 20 and text.nunique() / len(text) > TEXT_UNIQUE_SHARE:
        return "text"
    return "categorical"


@dataclass(frozen=True)
class FeatureVocab:
    """What encoding one feature needs: its vocabulary or its mean and spread.

    Index 0 of a vocabulary is reserved for missing or unseen values.
    """

    spec: FeatureSpec
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def size(self) -> int:
        """Number of embedding rows (vocabulary plus the reserved 0)."""
        return len(self.vocabulary) + 1

    def to_json(self) -> dict:
        """JSON-ready dict."""
        return {"spec": dataclasses.asdict(self.spec), "vocabulary": list(self.vocabulary), "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, values: dict) -> "FeatureVocab":
        """Inverse of :meth:`to_json`."""
        return cls(FeatureSpec(**values["spec"]), tuple(values["vocabulary"]), float(values["mean"]), float(values["std"]))


@dataclass(frozen=True)
class EncodedFeatures:
    """Side features of every user (or item) as arrays, one row per index.

    Attributes
    ----------
    categorical
        ``(n, n_categorical)`` int64 vocabulary indices, 0 = missing/unseen.
    multilabel
        One ``(n, max_labels)`` int64 array per multi-label feature, 0-padded.
    numeric
        ``(n, n_numeric)`` float32 standardised values, missing = 0.
    text_columns
        Names of text features (encoded separately by a text encoder).
    """

    categorical: np.ndarray
    multilabel: tuple[np.ndarray, ...]
    numeric: np.ndarray
    text_columns: tuple[str, ...] = field(default=())

    @property
    def n_rows(self) -> int:
        """Number of entities."""
        return int(self.categorical.shape[0])


class FeatureEncoder:
    """Fits vocabularies on a side table and encodes tables into :class:`EncodedFeatures`.

    Examples
    --------
    >>> table = pd.DataFrame({"gender": ["M", "F", "M"], "age": [20.0, 30.0, 40.0]})
    >>> specs = (FeatureSpec("gender", "categorical"), FeatureSpec("age", "numeric"))
    >>> enc = FeatureEncoder.fit(table, specs)
    >>> enc.transform(table).categorical.ravel().tolist()
    [2, 1, 2]
    """

    def __init__(self, vocabs: tuple[FeatureVocab, ...]) -> None:
        self.vocabs = vocabs

    @classmethod
    def fit(cls, table: pd.DataFrame | None, specs: tuple[FeatureSpec, ...]) -> "FeatureEncoder":
        """Learn vocabularies (sorted, for determinism) and numeric statistics."""
        vocabs: list[FeatureVocab] = []
        for spec in specs:
            column = table[spec.name] if table is not None and spec.name in table else pd.Series([], dtype=object)
            if spec.kind == "categorical":
                values = sorted({str(v) for v in column.dropna()})
                vocabs.append(FeatureVocab(spec, tuple(values)))
            elif spec.kind == "multilabel":
                labels: set[str] = set()
                for v in column.dropna():
                    labels.update(t.strip() for t in str(v).split(spec.separator) if t.strip())
                vocabs.append(FeatureVocab(spec, tuple(sorted(labels))))
            elif spec.kind == "numeric":
                numbers = pd.to_numeric(column, errors="coerce").astype(float)
                mean = float(numbers.mean()) if numbers.notna().any() else 0.0
                std = float(numbers.std(ddof=0)) if numbers.notna().sum() > 1 else 1.0
                vocabs.append(FeatureVocab(spec, (), mean, std if std > 0 else 1.0))
            else:
                vocabs.append(FeatureVocab(spec))
        return cls(tuple(vocabs))

    def of_kind(self, kind: str) -> tuple[FeatureVocab, ...]:
        """Vocabularies of the features of one kind, in table order."""
        return tuple(v for v in self.vocabs if v.spec.kind == kind)

    def transform(self, table: pd.DataFrame | None, n_rows: int | None = None) -> EncodedFeatures:
        """Encode a table whose row ``i`` describes entity index ``i``.

        Rows of ``table`` must already be ordered by index; a missing table (or a
        missing column) encodes as all-missing.
        """
        n = len(table) if table is not None else int(n_rows or 0)
        cats = []
        for vocab in self.of_kind("categorical"):
            lookup = {v: i + 1 for i, v in enumerate(vocab.vocabulary)}
            if table is None or vocab.spec.name not in table:
                cats.append(np.zeros(n, dtype=np.int64))
                continue
            col = table[vocab.spec.name]
            cats.append(np.fromiter((0 if pd.isna(v) else lookup.get(str(v), 0) for v in col), dtype=np.int64, count=n))
        multi = []
        for vocab in self.of_kind("multilabel"):
            lookup = {v: i + 1 for i, v in enumerate(vocab.vocabulary)}
            rows: list[list[int]] = []
            col = table[vocab.spec.name] if table is not None and vocab.spec.name in table else [None] * n
            for v in col:
                if v is None or (not isinstance(v, str) and pd.isna(v)):
                    rows.append([])
                else:
                    rows.append([lookup.get(t.strip(), 0) for t in str(v).split(vocab.spec.separator) if t.strip()])
            width = max([len(r) for r in rows] + [1])
            arr = np.zeros((n, width), dtype=np.int64)
            for i, r in enumerate(rows):
                arr[i, : len(r)] = r
            multi.append(arr)
        nums = []
        for vocab in self.of_kind("numeric"):
            if table is None or vocab.spec.name not in table:
                nums.append(np.zeros(n, dtype=np.float32))
                continue
            values = pd.to_numeric(table[vocab.spec.name], errors="coerce").astype(float).to_numpy()
            z = (values - vocab.mean) / vocab.std
            nums.append(np.nan_to_num(z, nan=0.0).astype(np.float32))
        return EncodedFeatures(
            categorical=np.stack(cats, axis=1) if cats else np.zeros((n, 0), dtype=np.int64),
            multilabel=tuple(multi),
            numeric=np.stack(nums, axis=1) if nums else np.zeros((n, 0), dtype=np.float32),
            text_columns=tuple(v.spec.name for v in self.of_kind("text")),
        )

    def to_json(self) -> list[dict]:
        """JSON-ready list of vocabularies."""
        return [v.to_json() for v in self.vocabs]

    @classmethod
    def from_json(cls, values: list[dict]) -> "FeatureEncoder":
        """Inverse of :meth:`to_json`."""
        return cls(tuple(FeatureVocab.from_json(v) for v in values))
