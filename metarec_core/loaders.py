"""Loaders: interaction and side-table files (CSV, TSV, Parquet) in, a validated Dataset out."""
from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.features import FEATURE_KINDS, FeatureSpec, infer_feature_specs
from metarec_core.idmap import IdMap, normalise_id

logger = logging.getLogger(__name__)

#: A file path (``str`` is always a path, never file content) or the bytes of an upload.
Source = Union[str, Path, bytes]

#: Files larger than this are refused unless the caller raises the limit.
DEFAULT_MAX_BYTES = 1 << 30
#: Reading a table and building a Dataset from it takes up to this many times the file's size in memory
#: (measured: about 9x for a CSV of numeric IDs, whose IDs become strings; 4.5x for text IDs).
READ_MEMORY_FACTOR = 10

#: Recognised column names per role, compared after :func:`normalise_column_name`.
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "user": (
        "userid", "user", "uid", "customer", "customerid", "client", "clientid", "member", "memberid", "visitor",
        "visitorid", "account", "accountid", "buyer", "buyerid", "reader", "readerid", "viewer", "viewerid",
    ),
    "item": (
        "itemid", "movieid", "item", "iid", "sku", "product", "productid", "article", "articleid", "asin", "isbn",
        "book", "bookid", "movie", "track", "trackid", "song", "songid", "video", "videoid", "offer", "offerid",
    ),
    "rating": ("rating", "score", "stars", "star", "rate", "grade", "ratingvalue", "reviewscore", "overall"),
    "timestamp": (
        "timestamp", "time", "ts", "date", "datetime", "eventtime", "createdat", "ratedat", "when", "unixtime", "epoch",
    ),
}
#: The roles of the interactions' columns, in the order they are resolved.
ROLES = ("user", "item", "rating", "timestamp")
#: Endings that make a usual name an ID column too (``customer_code``, ``product_key``).
_ID_SUFFIXES = ("id", "key", "code", "no", "number", "ref")
_SHOWN_NAMES = {
    "user": "user_id / user / customer / client / member / visitor / account",
    "item": "item_id / item / movieId / sku / product / article / asin",
    "rating": "rating / score / stars / grade",
    "timestamp": "timestamp / time / ts / date / datetime",
}
_ROLE_WORDS = {"user": "user IDs", "item": "item IDs", "rating": "ratings", "timestamp": "timestamps"}
_DELIMITERS = (",", "\t", ";", "|")
#: Largest rating magnitude accepted: beyond it a value is a sentinel or a unit mix-up, and squared errors lose precision.
MAX_ABS_RATING = 1e6
#: A rating this many interquartile ranges outside the middle half of the others is "far outside" the inferred scale.
RATING_OUTLIER_SPANS = 4.0
#: Far-outside ratings are refused when they are at most this share of the rows (or at most 3): typos and sentinels.
RATING_OUTLIER_SHARE = 0.01
#: Fewest users a dataset needs: a cold-start split trains on some users and tests on a new one (training checks the rest).
MIN_USERS = 2
_PARQUET_SUFFIXES = (".parquet", ".pq")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ColumnMapping:
    """Which column plays which role; ``None`` means auto-detect.

    Parameters
    ----------
    user, item
        ID columns of the interactions table.
    rating
        Rating column. When none is given or found, the data are implicit (every
        row is one interaction, rating 1).
    timestamp
        Timestamp column (numbers are seconds; date strings are parsed).
    user_table_id, item_table_id
        ID columns of the user and item tables (default: auto-detected by the
        same names, else the interactions' column name).
    implicit
        Ignore any rating column and treat every row as an interaction.
    item_name, user_name
        The item / user table's column that names each row (shown instead of
        the ID); ``None`` detects it (:func:`metarec_core.titles.name_column`),
        ``""`` shows IDs.
    allow_mixed_ids
        Accept ID columns mixing numeric and non-numeric IDs (all IDs are then
        compared as text). By default such a column is an error, since it is
        usually a typo or a stray line.
    """

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    timestamp: str | None = None
    user_table_id: str | None = None
    item_table_id: str | None = None
    implicit: bool = False
    allow_mixed_ids: bool = False
    item_name: str | None = None
    user_name: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("implicit", "allow_mixed_ids"):
                if not isinstance(value, bool):
                    raise ValueError(f"ColumnMapping.{f.name} must be true or false, got {value!r}")
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"ColumnMapping.{f.name} must be a column name, got {value!r}")


# --------------------------------------------------------------------------- reading files


def read_table(source: Source, *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """Read one CSV, TSV or Parquet table from a path or from bytes.

    The format comes from the file name's extension, else from the content
    (Parquet's magic bytes; the delimiter of a text file is sniffed from its
    header line among ``,``, tab, ``;`` and ``|``). Text is decoded as UTF-8,
    UTF-8 with a byte-order mark, UTF-16 with a byte-order mark, then GB18030
    (GBK) when that gives Chinese text, then Latin-1 (both with a warning).

    Parameters
    ----------
    source
        A path (``str`` or ``Path``) or the raw bytes of an upload.
    name
        Name used in messages (for bytes, e.g. the uploaded file's name). It is
        never used to build a path.
    max_bytes
        Refuse files larger than this.

    Returns
    -------
    pandas.DataFrame
        The table with stripped column names. ``attrs["source"]`` holds the name
        used in messages and ``attrs["warnings"]`` a tuple of reading warnings
        (e.g. a Latin-1 fallback), which :func:`build_dataset` passes on.

    Raises
    ------
    DataError
        Missing, empty, too large, binary or unparseable file, no header row,
        duplicate column names.
    """
    raw, label, suffix = _read_bytes(source, name, max_bytes)
    warnings: list[str] = []
    if raw[:4] == b"PAR1" or suffix in _PARQUET_SUFFIXES:
        frame = _read_parquet(raw, label)
    else:
        frame = _read_text(raw, label, suffix, warnings)
    frame.attrs["source"] = label
    frame.attrs["warnings"] = tuple(warnings)
    return frame


def _read_bytes(source: Source, name: str | None, max_bytes: int) -> tuple[bytes, str, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        label = name or "upload"
        _check_size("the upload", len(raw), max_bytes, label)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        label = name or path.name
        try:
            if not path.exists():
                raise DataError(f"no such file '{path}'; check the path", source=label)
            if path.is_dir():
                raise DataError(f"'{path}' is a folder, not a file; give the table file inside it", source=label)
            _check_size("the file", path.stat().st_size, max_bytes, label)
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read the file: {exc.strerror or exc}", source=label) from exc
    else:
        raise DataError(f"expected a file path or bytes, got {type(source).__name__}")
    suffix = ""
    lowered = label.lower()
    for ext in (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq"):
        if lowered.endswith(ext):
            suffix = ext
            break
    return raw, label, suffix


def big_file_advice(size: int) -> str:
    """What to do with a file too big for a limit or for the memory: the command line, a sample, a bigger machine."""
    mb = max(1, int(-(-size // (1024 * 1024))))
    return (
        f"for large files use the command line (python -m metarec_core train --interactions FILE --max-mb {mb}), "
        "train on a sample of the rows, or use a machine with more memory"
    )


def _check_size(what: str, size: int, max_bytes: int, label: str, available: int | None = None) -> None:
    """Refuse a file over ``max_bytes``, or one that reading would not fit in the memory available."""
    if size > max_bytes:
        raise DataError(f"{what} is {_size(size)}, over the limit of {_size(max_bytes)}; {big_file_advice(size)}", source=label)
    if available is None:
        from metarec_core.memory import available_ram

        available = available_ram()
    # Bytes already read (an upload) are in memory; reading them takes the rest.
    needed = size * (READ_MEMORY_FACTOR - (1 if what == "the upload" else 0))
    if available is not None and needed > available:
        raise DataError(
            f"{what} is {_size(size)}, and reading it takes about {_size(needed)} of memory ({READ_MEMORY_FACTOR}x its size) "
            f"but the machine has {_size(available)} available; {big_file_advice(size)}",
            source=label,
        )


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def _read_parquet(raw: bytes, label: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not raw:
        raise DataError("the file is empty; export the table again", source=label)
    try:
        table = pq.read_table(pa.BufferReader(raw))
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"not a readable Parquet file ({exc}); save it again as Parquet or CSV", source=label) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) == 0:
        raise DataError("the Parquet file has no columns", source=label)
    if len(frame) == 0:
        raise DataError("the Parquet file has columns but no rows", source=label)
    return frame


def _decode_check(raw: bytes, label: str, warnings: list[str]) -> tuple[bytes, str]:
    """Strip byte-order marks, pick an encoding; returns (bytes, pyarrow encoding name)."""
    if raw.startswith(_UTF8_BOM):
        return raw[len(_UTF8_BOM):], "utf8"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16").encode("utf-8"), "utf8"
        except UnicodeDecodeError as exc:
            raise DataError("the file starts like UTF-16 text but cannot be decoded; save it as UTF-8 CSV", source=label) from exc
    head = raw[:65536]
    if head.startswith(b"PK\x03\x04"):
        raise DataError(
            "this looks like an Excel workbook or a zip archive, not a table; save it as CSV (UTF-8) or Parquet",
            source=label,
        )
    if b"\x00" in head:
        raise DataError(
            "cannot decode the file as text (it contains NUL bytes: binary or an unsupported encoding); "
            "save it as CSV in UTF-8, TSV or Parquet",
            source=label,
        )
    try:
        raw.decode("utf-8")
        return raw, "utf8"
    except UnicodeDecodeError as exc:
        if _looks_chinese(raw):
            warnings.append(
                f"{label}: not valid UTF-8 (first bad byte at offset {exc.start}); read it as GB18030 (GBK) Chinese text. "
                "If names look wrong, save the file as UTF-8."
            )
            return raw, "gb18030"
        warnings.append(
            f"{label}: not valid UTF-8 (first bad byte at offset {exc.start}); read it as Latin-1. "
            "If accented text looks wrong, save the file as UTF-8."
        )
        return raw, "latin-1"


def _looks_chinese(raw: bytes) -> bool:
    """Whether bytes that are not UTF-8 decode strictly as GB18030 into mostly common Chinese characters (the first MB is checked)."""
    try:
        text = codecs.getincrementaldecoder("gb18030")().decode(raw[: 1 << 20], final=len(raw) <= 1 << 20)
    except UnicodeDecodeError:
        return False
    non_ascii = [c for c in text if ord(c) > 127]
    cjk = sum(1 for c in non_ascii if _common_chinese(c))
    return bool(non_ascii) and cjk >= 0.8 * len(non_ascii)


def _common_chinese(char: str) -> bool:
    """A character of GB2312 (the common simplified Chinese set); Latin-1 text read as GB18030 gives rare ones."""
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def _read_text(raw: bytes, label: str, suffix: str, warnings: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not raw.strip():
        raise DataError("the file is empty; it needs a header line and at least one row", source=label)
    data, encoding = _decode_check(raw, label, warnings)
    first_end = data.find(b"\n")
    header = (data if first_end < 0 else data[:first_end]).decode(encoding if encoding != "utf8" else "utf-8", "replace")
    header = header.rstrip("\r")
    if not header.strip():
        raise DataError("the first line is blank; the file must start with a header line naming the columns", source=label)
    delimiter = _sniff_delimiter(header, suffix)
    names = [n.strip().strip('"').strip() for n in header.split(delimiter)]
    if all(_looks_numeric(n) for n in names):
        raise DataError(
            f"no header row: the first line '{header[:80]}' looks like data; add a header line naming the columns, "
            "e.g. user_id,item_id,rating,timestamp",
            source=label,
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"column name(s) {', '.join(repr(d) for d in dupes)} appear more than once in the header; rename them", source=label)
    if first_end < 0 or not data[first_end + 1:].strip():
        raise DataError("the file has a header line but no data rows", source=label)

    column_types: dict[str, object] = {}
    for _ in range(len(names) + 1):
        try:
            table = pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(encoding=encoding, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types=column_types),
            )
            break
        except pa.ArrowInvalid as exc:
            message = str(exc)
            match = re.search(r"In CSV column #(\d+): CSV conversion error", message)
            if match and int(match.group(1)) < len(names) and names[int(match.group(1))] not in column_types:
                # A column whose type changed after the first block: read it as text, validate later.
                column_types[names[int(match.group(1))]] = pa.string()
                continue
            raise DataError(
                f"cannot parse the table ({message.splitlines()[0][:300]}); check that every row has the same "
                f"number of '{_show_delim(delimiter)}'-separated fields and that quotes are closed",
                source=label,
            ) from exc
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"cannot read the table ({exc}); save it as UTF-8 CSV, TSV or Parquet", source=label) from exc
    frame = table.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError("the file has a header line but no data rows", source=label)
    return frame


def _sniff_delimiter(header: str, suffix: str) -> str:
    counts = {d: header.count(d) for d in _DELIMITERS}
    preferred = "\t" if suffix in (".tsv", ".tab") else ","
    best = max(_DELIMITERS, key=lambda d: (counts[d], d == preferred))
    return best if counts[best] > 0 else preferred


def _show_delim(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else delimiter


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- column detection


def normalise_column_name(name: object) -> str:
    """Lower-case a column name and drop separators and RecBole type suffixes (``user_id:token`` -> ``userid``)."""
    text = str(name).strip().lower()
    text = text.split(":", 1)[0]
    return re.sub(r"[\s_\-.]", "", text)


@dataclass(frozen=True)
class ColumnGuess:
    """What :func:`guess_columns` found for each role, how, and why a role stayed open.

    Attributes
    ----------
    mapping
        The chosen or guessed column of each role; a role nothing fits is ``None``.
    how
        ``{role: "chosen" | "name" | "content"}`` for every role that has a column:
        given by the caller, recognised by its name, or by its values.
    problems
        ``{role: DataError}`` for each role that is ambiguous, or required and missing,
        or chosen but not in the table. The other roles are guessed regardless.
    rating_like
        Columns whose values look like ratings (numbers on a small scale), whether used or not.
    """

    mapping: ColumnMapping
    how: Mapping[str, str]
    problems: Mapping[str, DataError]
    rating_like: tuple[str, ...] = ()


def guess_columns(
    interactions: pd.DataFrame,
    columns: ColumnMapping | None = None,
    *,
    source: str | None = None,
) -> ColumnGuess:
    """Guess each role's column independently: by name, else by content; never raises for a missing role.

    Rules, per role: a column chosen in ``columns`` wins; else exactly one column
    whose name is a usual name of the role (:data:`COLUMN_NAMES`, e.g. ``customer``,
    ``sku``, ``stars``, ``ts``), else one whose name starts with such a word and
    ends in ``id``/``key``/``code``/``no``; else, for the timestamp, the one column
    of dates or of Unix seconds, and for the rating the one column of numbers on
    a small scale (at most 21 distinct values spanning at most 10). A role that
    fails leaves the others guessed.

    Parameters
    ----------
    interactions
        The interactions table.
    columns
        Explicit choices (``None`` roles are guessed).
    source
        File name for messages.

    Returns
    -------
    ColumnGuess
    """
    columns = columns or ColumnMapping()
    source = source or interactions.attrs.get("source")
    present = [str(c) for c in interactions.columns]
    resolved: dict[str, str | None] = {}
    how: dict[str, str] = {}
    problems: dict[str, DataError] = {}
    for role in ROLES:
        chosen = getattr(columns, role)
        if role == "rating" and columns.implicit:
            resolved[role] = None
            continue
        if chosen is None:
            continue
        if chosen in present:
            resolved[role], how[role] = chosen, "chosen"
        else:
            resolved[role] = None
            problems[role] = DataError(
                f"the column '{chosen}' chosen for {_ROLE_WORDS[role]} is not in the table; its columns are {_list(present)}",
                source=source, column=chosen, setting=role,
            )
    for role in ROLES:
        if role in resolved:
            continue
        free = [c for c in present if c not in resolved.values()]
        matches = _named_like(free, role)
        if len(matches) > 1:
            resolved[role] = None
            problems[role] = DataError(
                f"ambiguous {_ROLE_WORDS[role]}: columns {_list(matches)} all look like {_ROLE_WORDS[role]}; choose one",
                source=source, hint=f"ColumnMapping({role}=...) or --{role}-col", setting=role,
            )
        elif matches:
            resolved[role], how[role] = matches[0], "name"
    for role, test in (("timestamp", _looks_like_times), ("rating", _looks_like_ratings)):
        if role in resolved:
            continue
        free = [c for c in present if c not in resolved.values()]
        found = [c for c in free if test(interactions[c])]
        resolved[role] = found[0] if len(found) == 1 else None
        if len(found) == 1:
            how[role] = "content"
    for role in ("user", "item"):
        if resolved.get(role) is None and role not in problems:
            hint = ""
            if present and all(_looks_numeric(c) for c in present):
                hint = " (the column names look like data: does the file have a header line?)"
            problems[role] = DataError(
                f"no column of {_ROLE_WORDS[role]} found{hint}: expected one named {_SHOWN_NAMES[role]}, "
                f"the columns are {_list(present)}; rename it or choose it",
                source=source, hint=f"ColumnMapping({role}=...) or --{role}-col", setting=role,
            )
        resolved.setdefault(role, None)
    ids = {resolved["user"], resolved["item"], resolved["timestamp"]}
    rating_like = tuple(c for c in present if c not in ids and _looks_like_ratings(interactions[c]))
    return ColumnGuess(replace(columns, **resolved), how, problems, rating_like)


def detect_columns(
    interactions: pd.DataFrame,
    columns: ColumnMapping | None = None,
    *,
    source: str | None = None,
) -> ColumnMapping:
    """Resolve which interactions column is the user, item, rating and timestamp (see :func:`guess_columns`).

    Parameters
    ----------
    interactions
        The interactions table.
    columns
        Explicit choices; unset roles are guessed.
    source
        File name for messages.

    Returns
    -------
    ColumnMapping
        A mapping with ``user`` and ``item`` set; ``rating`` is ``None`` for
        implicit data, ``timestamp`` ``None`` when there is none.

    Raises
    ------
    DataError
        A named column is missing, or an ID column is missing or ambiguous.
    """
    source = source or interactions.attrs.get("source")
    guess = guess_columns(interactions, columns, source=source)
    for role in ROLES:
        if role in guess.problems:
            raise guess.problems[role]
    resolved = [getattr(guess.mapping, role) for role in ROLES]
    taken = [v for v in resolved if v is not None]
    clash = sorted({v for v in taken if taken.count(v) > 1})
    if clash:
        raise DataError(
            f"the column '{clash[0]}' is used for two roles; choose different columns for user, item, rating and timestamp",
            source=source,
            column=clash[0],
        )
    for role, kind in guess.how.items():
        if kind == "content":
            logger.info("%s: column %r read as %s (its values look like it)", source or "interactions", getattr(guess.mapping, role), _ROLE_WORDS[role])
    return guess.mapping


def side_id_column(table: pd.DataFrame, role: str, interactions_column: str | None) -> str | None:
    """The ID column of a user (``role="user"``) or item table: the one usual ID name, else the interactions' column name.

    ``None`` when neither fits (no such column, or several usual names).
    """
    present = [str(c) for c in table.columns]
    matches = _named_like(present, role)
    if len(matches) == 1:
        return matches[0]
    return interactions_column if interactions_column in present else None


def _named_like(present: Sequence[str], role: str) -> list[str]:
    """Columns named like ``role``: exact usual names, else a usual name followed by an ID suffix."""
    wanted = COLUMN_NAMES[role]
    exact = [c for c in present if normalise_column_name(c) in wanted]
    if exact or role not in ("user", "item"):
        return exact
    return [
        c for c in present
        if any(normalise_column_name(c) == w + suffix for w in wanted for suffix in _ID_SUFFIXES)
    ]


def _looks_like_times(values: pd.Series) -> bool:
    """Dates, date strings, or whole numbers in the range of Unix seconds (1973 to 2096)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return True
    present = values.dropna()
    if len(present) == 0 or pd.api.types.is_bool_dtype(values.dtype):
        return False
    sample = present.iloc[:: max(1, len(present) // 200)]
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = sample.to_numpy(dtype=np.float64)
        return bool(np.all(np.mod(numbers, 1) == 0) and numbers.min() >= 1e8 and numbers.max() <= 4e9 and present.nunique() > 1)
    text = sample.astype(str)
    if text.str.fullmatch(r"\s*-?\d+(\.\d+)?\s*").any() or not text.str.contains(r"\d", regex=True).all():
        return False
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.95)


def _looks_like_ratings(values: pd.Series) -> bool:
    """Numbers (not IDs, not times) on a small scale: 2 to 21 distinct values spanning at most 10."""
    if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return False
    present = values.dropna()
    if len(present) < 2:
        return False
    numbers = present.to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all():
        return False
    distinct = present.nunique()
    return bool(2 <= distinct <= 21 and numbers.max() - numbers.min() <= 10)


def _list(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in list(names)[:12])
    return shown + (", ..." if len(names) > 12 else "")


# --------------------------------------------------------------------------- validation helpers


def _row_of(mask: np.ndarray) -> int:
    """1-based data row of the first True in ``mask``."""
    return int(np.flatnonzero(mask)[0]) + 1


def _encode_ids(
    values: pd.Series,
    *,
    what: str,
    source: str | None,
    column: str,
    allow_mixed: bool,
) -> tuple[np.ndarray, list[str]]:
    """Codes (int64, position in the returned list) and the normalised external IDs, numeric-aware sorted."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{int(missing.sum())} row(s) have no {what} ID (first: row {_row_of(missing)}); "
            "fill them in or remove those rows",
            source=source,
            column=column,
            row=_row_of(missing),
        )
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        if np.all(np.mod(arr, 1) == 0) and np.all(np.abs(arr) < 2**62):
            values = pd.Series(arr.astype(np.int64))
    codes, uniques = pd.factorize(values, sort=False)
    codes = np.asarray(codes, dtype=np.int64)
    unique_list = list(uniques)
    is_number = np.fromiter(
        (isinstance(u, (int, float, np.integer, np.floating)) and not isinstance(u, bool) for u in unique_list),
        dtype=bool,
        count=len(unique_list),
    )
    normalised = [normalise_id(u) for u in unique_list]
    if not is_number.all():
        numeric_text = np.fromiter((_looks_numeric(s) for s in normalised), dtype=bool, count=len(normalised))
        kinds_mixed = is_number.any() or (numeric_text.any() and not numeric_text.all())
        if kinds_mixed and not allow_mixed:
            odd_numeric = numeric_text.sum() < (~numeric_text).sum()
            odd = numeric_text if odd_numeric else ~numeric_text
            odd_rows = odd[codes]
            example = normalised[int(np.flatnonzero(odd)[0])]
            raise DataError(
                f"mixed types in the {what} ID column: {int((~numeric_text).sum())} non-numeric and "
                f"{int(numeric_text.sum())} numeric IDs (e.g. '{example}' in row {_row_of(odd_rows)}); "
                "fix the odd rows, or if these IDs really are text choose allow_mixed_ids (--allow-mixed-ids)",
                source=source,
                column=column,
                row=_row_of(odd_rows),
            )
    # Merge raw values that normalise to the same ID (' 7' and '7', 7.0 and 7).
    merged_codes, merged = pd.factorize(pd.Index(normalised, dtype=object), sort=False)
    codes = np.asarray(merged_codes, dtype=np.int64)[codes]
    ids = [str(x) for x in merged]
    order = _id_order(ids)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids), dtype=np.int64)
    return rank[codes], [ids[i] for i in order]


def _id_order(ids: Sequence[str]) -> np.ndarray:
    """Sort order for IDs: numerically when every ID is a number, else as text."""
    if not ids:
        return np.zeros(0, dtype=np.int64)
    numbers = pd.to_numeric(pd.Series(list(ids), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    text = np.array(ids, dtype=object)
    if not np.isnan(numbers).any():
        return np.lexsort((text, numbers)).astype(np.int64)
    return np.argsort(text, kind="stable").astype(np.int64)


def _nested_kind(values: pd.Series) -> tuple[str, int] | None:
    """``("list" | "record", 1-based row)`` of the first value that is a list or a record (dict, map entries), else None."""
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) not in ("mixed", "unknown-array", "mixed-integer"):
        return None
    for row, value in enumerate(values.to_numpy(), start=1):
        if isinstance(value, dict):
            return "record", row
        if isinstance(value, (list, tuple, set, np.ndarray)):
            items = list(value)
            if any(isinstance(x, (dict, tuple, list, set, np.ndarray)) for x in items):
                return "record", row  # a map (key/value pairs) or nested lists
            return "list", row
    return None


def _refuse_nested(values: pd.Series, *, what: str, source: str | None, column: str) -> None:
    """A column that must hold one plain value per row (an ID, a rating, a time) holding lists or records."""
    nested = _nested_kind(values)
    if nested is not None:
        kind, row = nested
        raise DataError(
            f"the {what} column holds {'lists' if kind == 'list' else 'records (struct or map values)'} "
            f"(first in row {row}), not one value per row; store one plain {what} per row (one row per interaction)",
            source=source,
            column=column,
            row=row,
        )


def _flatten_lists(features: pd.DataFrame, *, source: str | None, warnings: list[str]) -> pd.DataFrame:
    """Side-table feature columns of lists of labels become ``|``-separated text (multi-label); records are refused."""
    for column in features.columns:
        nested = _nested_kind(features[column])
        if nested is None:
            continue
        kind, row = nested
        if kind == "record":
            raise DataError(
                f"the column holds records (struct or map values, first in row {row}); metarec reads plain values, or lists "
                "of labels: split the record into one column per field and load the file again",
                source=source,
                column=str(column),
                row=row,
            )
        features[column] = [
            "|".join(str(x) for x in v) if isinstance(v, (list, tuple, set, np.ndarray)) else v for v in features[column].to_numpy()
        ]
        warnings.append(
            f"{source}: column '{column}' holds lists; read as '|'-separated labels (a multi-label feature)."
        )
    return features


def check_rating_values(
    numbers: np.ndarray,
    *,
    source: str | None = None,
    column: str | None = "rating",
    scale: tuple[float, float] | None = None,
    warnings: list[str] | None = None,
) -> None:
    """Refuse ratings that cannot be right: not finite, beyond ±:data:`MAX_ABS_RATING`, or far outside the scale.

    The scale is ``scale`` when given (every rating must lie in it); else it is
    inferred from the middle half of the ratings: a rating more than
    :data:`RATING_OUTLIER_SPANS` interquartile ranges below the first quartile
    or above the third is far outside it. A few such ratings (at most
    :data:`RATING_OUTLIER_SHARE` of the rows, or at most 3) are typos or
    sentinels (999, -1 for "unknown") and are refused, naming the first row;
    more of them are a long tail of real values and only get a warning.

    Parameters
    ----------
    numbers
        The ratings, one per row (in file order, so rows are named as in the file).
    source, column
        File and column for messages.
    scale
        ``(lowest, highest)`` declared by the user, or None to infer it.
    warnings
        Where a warning about a long tail goes (None: no warning).

    Raises
    ------
    DataError
        Naming the file, column, first bad row, the value and the accepted range.
    """
    numbers = np.asarray(numbers, dtype=np.float64)
    if len(numbers) == 0:
        return
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = _row_of(bad)
        raise DataError(
            f"{int(bad.sum())} rating(s) are missing or not finite (NaN, empty or inf; first: row {row}); "
            "fill them in or remove those rows",
            source=source, column=column, row=row,
        )
    huge = np.abs(numbers) > MAX_ABS_RATING
    if huge.any():
        row = _row_of(huge)
        raise DataError(
            f"{int(huge.sum())} rating(s) are beyond ±{MAX_ABS_RATING:,.0f} (first: {numbers[row - 1]:g} in row {row}); "
            "such values are sentinels or a unit mix-up: fix those rows, or rescale the column",
            source=source, column=column, row=row,
        )
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        outside = (numbers < lo) | (numbers > hi)
        if outside.any():
            row = _row_of(outside)
            raise DataError(
                f"{int(outside.sum())} rating(s) are outside the declared scale {lo:g} to {hi:g} (first: "
                f"{numbers[row - 1]:g} in row {row}); fix or remove those rows, or declare the scale they belong to",
                source=source, column=column, row=row,
            )
        return
    q1 = float(np.quantile(numbers, 0.25, method="lower"))
    q3 = float(np.quantile(numbers, 0.75, method="higher"))
    span = q3 - q1 if q3 > q1 else max(abs(q1), 1.0)
    low, high = q1 - RATING_OUTLIER_SPANS * span, q3 + RATING_OUTLIER_SPANS * span
    far = (numbers < low) | (numbers > high)
    if not far.any():
        return
    inside = numbers[~far]
    bulk = f"{inside.min():g} to {inside.max():g}"
    row = _row_of(far)
    n_far = int(far.sum())
    if n_far <= max(3, int(RATING_OUTLIER_SHARE * len(numbers))):
        raise DataError(
            f"{n_far} rating(s) are far outside the scale of the others (those are {bulk}; first: "
            f"{numbers[row - 1]:g} in row {row}); fix or remove those rows, or if they are right declare the scale "
            "(rating_scale=(LO, HI), --rating-scale LO,HI)",
            source=source, column=column, row=row,
        )
    if warnings is not None:
        warnings.append(
            f"{source or 'interactions'}: {n_far} rating(s) lie far outside the middle of the others ({bulk}; first: "
            f"{numbers[row - 1]:g} in row {row}); squared errors will be dominated by them: consider a log scale."
        )


def _ratings(
    values: pd.Series,
    *,
    source: str | None,
    column: str,
    scale: tuple[float, float] | None = None,
    warnings: list[str] | None = None,
) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(np.float64)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numeric = np.zeros(len(numbers), dtype=bool)
    else:
        coerced = pd.to_numeric(values, errors="coerce")
        numbers = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numeric = np.isnan(numbers) & values.notna().to_numpy()
    if not_numeric.any():
        row = _row_of(not_numeric)
        raise DataError(
            f"{int(not_numeric.sum())} rating(s) are not numbers (first: '{values.iloc[row - 1]}' in row {row}); "
            "ratings must be numbers (any scale); fix those rows",
            source=source,
            column=column,
            row=row,
        )
    check_rating_values(numbers, source=source, column=column, scale=scale, warnings=warnings)
    if numbers.min() == numbers.max():
        raise DataError(
            f"every rating is {numbers[0]:g}, so there is nothing to learn from them; if each row is simply an "
            "interaction, load the data as implicit (ColumnMapping(implicit=True) or --implicit)",
            source=source,
            column=column,
        )
    return numbers.astype(np.float32)


def _timestamps(values: pd.Series, *, source: str | None, column: str, warnings: list[str]) -> np.ndarray:
    dtype = values.dtype
    if pd.api.types.is_integer_dtype(dtype) and not values.hasnans:
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        seconds = _datetime_seconds(values)
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        seconds = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            seconds = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
            seconds = _datetime_seconds(parsed)
            unparsed = np.isnan(seconds) & values.notna().to_numpy()
            if unparsed.any():
                row = _row_of(unparsed)
                raise DataError(
                    f"{int(unparsed.sum())} timestamp(s) are neither numbers nor dates (first: "
                    f"'{values.iloc[row - 1]}' in row {row}); use Unix seconds or ISO dates like 2024-05-01 13:00",
                    source=source,
                    column=column,
                    row=row,
                )
    inf = np.isinf(seconds)
    if inf.any():
        row = _row_of(inf)
        raise DataError(f"timestamp in row {row} is infinite; fix that row", source=source, column=column, row=row)
    missing = np.isnan(seconds)
    if missing.any():
        warnings.append(
            f"{int(missing.sum())} interaction(s) have no timestamp (first: row {_row_of(missing)}); "
            "their time is unknown (-1), so time-based splits treat them as oldest."
        )
    out = np.where(missing, -1.0, np.floor(seconds))
    return out.astype(np.int64)


def _datetime_seconds(values: pd.Series) -> np.ndarray:
    s = pd.Series(values)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    epoch = pd.Timestamp("1970-01-01")
    delta = (s - epoch) / pd.Timedelta(seconds=1)
    return delta.to_numpy(dtype=np.float64, na_value=np.nan)


# --------------------------------------------------------------------------- building a Dataset


def build_dataset(
    interactions: pd.DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    *,
    columns: ColumnMapping | None = None,
    feature_kinds: Mapping[str, str] | None = None,
    name: str = "dataset",
    source_names: Mapping[str, str] | None = None,
    rating_scale: tuple[float, float] | None = None,
) -> Dataset:
    """Validate interaction and side tables and build a :class:`~metarec_core.dataset.Dataset`.

    Rules: ID columns are auto-detected (see :func:`detect_columns`); IDs must be
    present, one plain value per row (no lists or records) and not mix numeric
    and non-numeric values; ratings must be finite numbers within the scale
    (see :func:`check_rating_values`), not all equal; at least
    :data:`MIN_USERS` users; side-table columns of
    lists become ``|``-separated labels, records are refused; no rating column means implicit data (rating 1);
    duplicate (user, item) pairs keep the latest by timestamp, else the last row,
    and are counted in a warning; side-table IDs must match at least one
    interaction, and side-table-only IDs become cold users/items.

    Parameters
    ----------
    interactions
        One row per interaction.
    users, items
        Optional side tables: an ID column plus feature columns.
    columns
        Column choices (default: auto-detect).
    feature_kinds
        ``{column: kind}`` overriding the inferred feature kind
        (``categorical``, ``multilabel``, ``numeric``, ``text`` or ``ignore``).
        A key may be prefixed ``users.`` or ``items.`` to pick one table.
    name
        Dataset name.
    source_names
        File names for messages, keys ``interactions``, ``users``, ``items``
        (default: ``DataFrame.attrs["source"]`` set by :func:`read_table`).
    rating_scale
        ``(lowest, highest)`` rating, when known: every rating must lie in it.
        Default: inferred from the ratings (see :func:`check_rating_values`).

    Returns
    -------
    Dataset
        Users and items indexed in ID order (numeric when every ID is a
        number), side-table-only IDs after them.

    Raises
    ------
    DataError
        On any problem, naming the file, column or row and what to do.
    """
    names = dict(source_names or {})
    src_inter = names.get("interactions") or interactions.attrs.get("source")
    if not all(isinstance(c, str) for c in interactions.columns):
        attrs = dict(interactions.attrs)
        interactions = interactions.rename(columns=str)
        interactions.attrs.update(attrs)
    warnings: list[str] = []
    for frame in (interactions, users, items):
        if frame is not None:
            warnings.extend(frame.attrs.get("warnings", ()))
    if len(interactions) == 0:
        raise DataError("there are no interactions (the table has no rows)", source=src_inter)
    mapping = detect_columns(interactions, columns, source=src_inter)
    user_col, item_col = str(mapping.user), str(mapping.item)
    rating_scale = _check_scale(rating_scale)
    for role, column in (("user", user_col), ("item", item_col), ("rating", mapping.rating), ("timestamp", mapping.timestamp)):
        if column is not None:
            _refuse_nested(interactions[column], what=f"{role} ID" if role in ("user", "item") else role, source=src_inter, column=str(column))

    user_codes, user_ids = _encode_ids(
        interactions[user_col], what="user", source=src_inter, column=user_col, allow_mixed=mapping.allow_mixed_ids
    )
    item_codes, item_ids = _encode_ids(
        interactions[item_col], what="item", source=src_inter, column=item_col, allow_mixed=mapping.allow_mixed_ids
    )
    if mapping.rating is not None:
        rating = _ratings(interactions[mapping.rating], source=src_inter, column=mapping.rating, scale=rating_scale, warnings=warnings)
        implicit = False
    else:
        rating = np.ones(len(interactions), dtype=np.float32)
        implicit = True
        if not mapping.implicit:
            like = [str(c) for c in interactions.columns if c not in (user_col, item_col, mapping.timestamp)
                    and _looks_like_ratings(interactions[c])]
            seen = f"; column(s) {_list(like)} look like ratings: choose one as the rating column if they are" if like else ""
            warnings.append(
                f"{src_inter or 'interactions'}: no rating column (looked for {_SHOWN_NAMES['rating']}); "
                f"every row is treated as an implicit interaction (1){seen}."
            )
    if mapping.timestamp is not None:
        timestamp = _timestamps(interactions[mapping.timestamp], source=src_inter, column=mapping.timestamp, warnings=warnings)
    else:
        timestamp = np.full(len(interactions), -1, dtype=np.int64)
    used = {user_col, item_col, mapping.rating, mapping.timestamp}
    unused = [str(c) for c in interactions.columns if c not in used]
    if unused:
        warnings.append(
            f"{src_inter or 'interactions'}: column(s) {_list(unused)} are not used; only user, item, rating and "
            "timestamp are read from the interactions (put features in a user or item table)."
        )

    keep = _deduplicate(user_codes, item_codes, timestamp, len(item_ids), warnings, src_inter, mapping.timestamp is not None)
    if keep is not None:
        user_codes, item_codes, rating, timestamp = user_codes[keep], item_codes[keep], rating[keep], timestamp[keep]
        if not implicit and rating.min() == rating.max():
            raise DataError(
                f"after resolving duplicates every rating is {rating[0]:g}; load the data as implicit instead",
                source=src_inter,
                column=mapping.rating,
            )

    if len(user_ids) < MIN_USERS:
        raise DataError(
            f"the interactions have {len(user_ids)} user(s); a cold-start split needs at least {MIN_USERS} users (some to "
            "train on, one new to test on); load the interactions of more users",
            source=src_inter,
            column=user_col,
        )

    kinds = _split_feature_kinds(feature_kinds, users, items)
    user_map, user_table, user_specs = _side_table(
        users, "user", user_ids, mapping.user_table_id, user_col, kinds["users"], names.get("users"), mapping, warnings
    )
    item_map, item_table, item_specs = _side_table(
        items, "item", item_ids, mapping.item_table_id, item_col, kinds["items"], names.get("items"), mapping, warnings
    )
    for role, chosen, table in (("item", mapping.item_name, item_table), ("user", mapping.user_name, user_table)):
        if chosen and chosen not in table.columns:
            raise DataError(
                f"the column '{chosen}' chosen for {role} names is not a feature of the {role} table "
                f"(its features are {_list([str(c) for c in table.columns]) or 'none'}); choose another or none",
                source=names.get(f"{role}s"), column=chosen, hint=f"ColumnMapping({role}_name=...)", setting=f"{role}_name",
            )
    ratings = pd.DataFrame(
        {
            "user": user_codes.astype(np.int64, copy=False),
            "item": item_codes.astype(np.int64, copy=False),
            "rating": rating.astype(np.float32, copy=False),
            "timestamp": timestamp.astype(np.int64, copy=False),
        }
    )
    dataset = Dataset(
        name=name,
        ratings=ratings,
        users=user_map,
        items=item_map,
        user_table=user_table,
        item_table=item_table,
        user_features=user_specs,
        item_features=item_specs,
        implicit=implicit,
        warnings=tuple(warnings),
        item_name_column=mapping.item_name,
        user_name_column=mapping.user_name,
    )
    logger.info("built %r with %d warning(s)", dataset, len(warnings))
    return dataset


def _check_scale(scale: tuple[float, float] | None) -> tuple[float, float] | None:
    if scale is None:
        return None
    try:
        lo, hi = (float(x) for x in scale)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the rating scale must be two numbers (lowest, highest), got {scale!r}") from exc
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(f"the rating scale must go from a lower to a higher finite number, got {lo:g} to {hi:g}")
    return lo, hi


def _deduplicate(
    users: np.ndarray,
    items: np.ndarray,
    timestamp: np.ndarray,
    n_items: int,
    warnings: list[str],
    source: str | None,
    has_time: bool,
) -> np.ndarray | None:
    """Row positions to keep (latest by timestamp, else last), or None when there are no duplicates."""
    key = users * np.int64(max(n_items, 1)) + items
    n = len(key)
    order = np.argsort(key, kind="stable")  # equal keys stay in row order
    sorted_key = key[order]
    same_as_next = sorted_key[1:] == sorted_key[:-1]
    if not same_as_next.any():
        return None
    # Resolve only the rows of duplicated pairs: latest timestamp wins, then the later row.
    in_group = np.zeros(n, dtype=bool)
    in_group[:-1] |= same_as_next
    in_group[1:] |= same_as_next
    rows = order[in_group]
    rows = rows[np.lexsort((rows, timestamp[rows], key[rows]))]
    group_key = key[rows]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = group_key[1:] != group_key[:-1]
    keep_mask = np.ones(n, dtype=bool)
    keep_mask[rows[~last]] = False
    keep = np.flatnonzero(keep_mask)
    dropped = n - len(keep)
    pairs = int(last.sum())
    policy = "the latest by timestamp (the last row on ties)" if has_time else "the last row (no timestamp column)"
    warnings.append(
        f"{source or 'interactions'}: {pairs} (user, item) pair(s) occur more than once; kept {policy} "
        f"and dropped {dropped} duplicate row(s)."
    )
    return keep


def _split_feature_kinds(
    feature_kinds: Mapping[str, str] | None, users: pd.DataFrame | None, items: pd.DataFrame | None
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"users": {}, "items": {}}
    if not feature_kinds:
        return out
    tables = {"users": users, "items": items}
    for key, kind in feature_kinds.items():
        if kind not in FEATURE_KINDS and kind != "ignore":
            raise DataError(
                f"feature kind '{kind}' for column '{key}' is unknown; use one of "
                f"{', '.join(FEATURE_KINDS)} or ignore",
                column=key,
            )
        prefix, _, rest = key.partition(".")
        if prefix in tables and rest:
            if tables[prefix] is None or rest not in tables[prefix].columns:
                raise DataError(f"feature kind given for '{key}', but the {prefix} table has no column '{rest}'", column=rest)
            out[prefix][rest] = kind
            continue
        found = False
        for table_name, table in tables.items():
            if table is not None and key in table.columns:
                out[table_name][key] = kind
                found = True
        if not found:
            raise DataError(f"feature kind given for column '{key}', which is in neither the user nor the item table", column=key)
    return out


def _side_table(
    table: pd.DataFrame | None,
    role: str,
    interaction_ids: list[str],
    id_column: str | None,
    interactions_column: str,
    kinds: dict[str, str],
    source: str | None,
    mapping: ColumnMapping,
    warnings: list[str],
) -> tuple[IdMap, pd.DataFrame, tuple[FeatureSpec, ...]]:
    """ID map (interaction IDs, then side-only IDs) and the feature table aligned to it."""
    if table is None:
        return IdMap(interaction_ids), pd.DataFrame(index=pd.RangeIndex(len(interaction_ids))), ()
    source = source or table.attrs.get("source") or f"{role} table"
    if not all(isinstance(c, str) for c in table.columns):
        table = table.rename(columns=str)
    if len(table) == 0:
        raise DataError(f"the {role} table has no rows; leave it out or fill it in", source=source)
    present = [str(c) for c in table.columns]
    if id_column is not None:
        if id_column not in present:
            raise DataError(
                f"the column '{id_column}' chosen for {role} IDs is not in the {role} table; its columns are {_list(present)}",
                source=source,
                column=id_column,
            )
        column = id_column
    else:
        matches = _named_like(present, role)
        found = side_id_column(table, role, interactions_column)
        if found is not None:
            column = found
        elif matches:
            raise DataError(
                f"ambiguous {role} IDs in the {role} table: columns {_list(matches)}; choose one",
                source=source, hint=f"ColumnMapping({role}_table_id=...)", setting=f"{role}_table_id",
            )
        else:
            raise DataError(
                f"no {role} ID column in the {role} table: expected one named {_SHOWN_NAMES[role]} or "
                f"'{interactions_column}', the columns are {_list(present)}; rename it or choose it",
                source=source, hint=f"ColumnMapping({role}_table_id=...)", setting=f"{role}_table_id",
            )
    _refuse_nested(table[column], what=f"{role} ID", source=source, column=column)
    codes, side_ids = _encode_ids(
        table[column], what=role, source=source, column=column, allow_mixed=mapping.allow_mixed_ids
    )
    known = {x: i for i, x in enumerate(interaction_ids)}
    side_pos = np.fromiter((known.get(x, -1) for x in side_ids), dtype=np.int64, count=len(side_ids))
    matched = side_pos >= 0
    if not matched.any():
        raise DataError(
            f"none of the {len(side_ids)} IDs in the {role} table's column '{column}' match a {role} ID of the "
            f"interactions (e.g. '{side_ids[0]}' vs '{interaction_ids[0]}'); check that both files use the same IDs",
            source=source,
            column=column,
        )
    only_side = [x for x, m in zip(side_ids, matched) if not m]
    all_ids = list(interaction_ids) + only_side
    # Position of each side-table ID in the final map.
    final_pos = side_pos.copy()
    final_pos[~matched] = len(interaction_ids) + np.arange(len(only_side), dtype=np.int64)
    row_target = final_pos[codes]
    dup = pd.Series(row_target).duplicated(keep="last").to_numpy()
    if dup.any():
        warnings.append(
            f"{source}: {int(dup.sum())} {role} ID(s) appear in more than one row (first: row {_row_of(dup)}); "
            "kept the last row of each."
        )
    if only_side:
        warnings.append(
            f"{source}: {len(only_side)} {role}(s) appear only in the {role} table, with no interactions; "
            f"they are kept as cold {role}s."
        )
    n_without = len(interaction_ids) - int(matched.sum())
    if n_without:
        warnings.append(
            f"{source}: {n_without} of {len(interaction_ids)} {role}s with interactions have no row in the {role} "
            "table; their features are missing."
        )
    feature_columns = [c for c in table.columns if str(c) != column]
    features = table[feature_columns].copy()
    features.columns = [str(c) for c in feature_columns]
    features = _flatten_lists(features, source=source, warnings=warnings)
    keep_rows = ~dup
    aligned = features.iloc[np.flatnonzero(keep_rows)]
    aligned.index = pd.Index(row_target[keep_rows])
    aligned = aligned.reindex(pd.RangeIndex(len(all_ids)))
    try:
        specs = infer_feature_specs(aligned, overrides=dict(kinds))
    except ValueError as exc:
        raise DataError(str(exc), source=source) from exc
    kept = [s.name for s in specs]
    return IdMap(all_ids), aligned[kept].reset_index(drop=True), specs


def load_dataset(
    interactions: Source,
    users: Source | None = None,
    items: Source | None = None,
    *,
    columns: ColumnMapping | None = None,
    feature_kinds: Mapping[str, str] | None = None,
    name: str | None = None,
    source_names: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rating_scale: tuple[float, float] | None = None,
) -> Dataset:
    """Read interaction (and optional user and item) files and build a validated Dataset.

    Parameters
    ----------
    interactions, users, items
        Paths or bytes (see :func:`read_table`).
    columns, feature_kinds, rating_scale
        See :func:`build_dataset`.
    name
        Dataset name (default: the interactions file's stem, or ``uploaded``).
    source_names
        Names of uploads for messages, keys ``interactions``, ``users``, ``items``.
    max_bytes
        Size limit per file.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        See :func:`read_table` and :func:`build_dataset`.

    Examples
    --------
    >>> data = load_dataset(b"user_id,item_id,rating\\n1,10,4\\n2,10,2\\n")
    >>> data.n_users, data.n_items
    (2, 1)
    """
    names = dict(source_names or {})
    frames: dict[str, pd.DataFrame | None] = {}
    for key, source in (("interactions", interactions), ("users", users), ("items", items)):
        frames[key] = None if source is None else read_table(source, name=names.get(key), max_bytes=max_bytes)
    if name is None:
        if isinstance(interactions, (str, Path)):
            name = Path(interactions).stem
        else:
            # An upload's name is only text for messages: take its last component without the extension.
            label = re.split(r"[\\/]", names.get("interactions") or "")[-1]
            name = label.rsplit(".", 1)[0] if "." in label.strip(".") else label
            name = name or "uploaded"
    return build_dataset(
        frames["interactions"],  # type: ignore[arg-type]
        frames["users"],
        frames["items"],
        columns=columns,
        feature_kinds=feature_kinds,
        name=name,
        source_names={k: v.attrs["source"] for k, v in frames.items() if v is not None},
        rating_scale=rating_scale,
    )
