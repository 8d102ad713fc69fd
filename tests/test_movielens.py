"""MovieLens-100K: conversion of both source formats, the atomic cache, offline errors, and (network) the real data."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from metarec_core.errors import DataError
from metarec_core.movielens import (
    convert_recbole,
    export_movielens_100k,
    load_movielens_100k,
    movielens_cache_dir,
    read_grouplens,
)



def flags(*on: int) -> str:
    bits = ["0"] * 19
    for i in on:
        bits[i] = "1"
    return "|".join(bits)


@pytest.fixture()
def grouplens_dir(tmp_path: Path) -> Path:
    """A 3-user, 3-movie folder in the GroupLens ml-100k format (Latin-1, '|' and tab separated, no headers)."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n3\t3\t1\t889751712\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    items = (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n"
        f"2|Misérables, Les (1995)|01-Jan-1995||http://y|{flags(8, 12)}\n"
        f"3|unknown||||{flags(0)}\n"
    )
    (folder / "u.item").write_bytes(items.encode("latin-1"))
    return folder


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No package index and a fresh cache folder: a fetch must fail fast."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("METAREC_ML100K_DIR", raising=False)
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_grouplens_folder_is_read_and_cached(grouplens_dir, offline):
    data = load_movielens_100k(grouplens_dir=grouplens_dir)
    assert (data.n_users, data.n_items, len(data.ratings)) == (3, 3, 4)
    items = data.item_table
    assert items["title"].tolist() == ["Toy Story", "Misérables, Les", "unknown"]
    assert items["year"].tolist()[:2] == [1995, 1995] and pd.isna(items["year"].iloc[2])
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "Drama|Musical", "unknown"]
    assert data.user_table["occupation"].tolist() == ["technician", "other", "writer"]
    kinds = {s.name: s.kind for s in data.user_features + data.item_features}
    assert kinds == {"age": "numeric", "gender": "categorical", "occupation": "categorical",
                     "title": "text", "year": "numeric", "genres": "multilabel"}
    # The folder filled the cache: offline, with no folder given, the same data loads.
    again = load_movielens_100k()
    assert again.fingerprint == data.fingerprint
    assert (movielens_cache_dir() / "ratings.parquet").is_file()


def test_offline_fetch_explains_the_local_copy(offline):
    with pytest.raises(DataError) as info:
        load_movielens_100k()
    message = str(info.value)
    assert "recbole==1.2.1" in message and "u.data" in message and "grouplens_dir" in message
    assert not movielens_cache_dir().exists()


def test_missing_grouplens_file(grouplens_dir, offline):
    (grouplens_dir / "u.item").unlink()
    with pytest.raises(DataError, match="u.item"):
        read_grouplens(grouplens_dir)


def test_recbole_conversion():
    inter = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t1\t3\t100\n8\t2\t5\t200\n"
    user = b"user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n7\t24\tM\ttechnician\t85711\n8\t30\tF\tother\t01002\n"
    item = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
            "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tunkonwn\tunkonwn\tunknown\n"
            "3\tLand Before Time III (1995)\tV\tAnimation\n").encode()
    tables = convert_recbole(inter, user, item)
    assert list(tables["ratings"].columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(tables["users"].columns) == ["user_id", "age", "gender", "occupation"]
    assert list(tables["items"].columns) == ["item_id", "title", "year", "genres"]
    assert tables["items"]["genres"].tolist() == ["Animation|Children's|Comedy", "unknown", "Animation"]
    assert tables["items"]["title"].tolist() == ["Toy Story", "unknown", "Land Before Time III"]
    year = tables["items"]["year"]
    assert year.iloc[0] == 1995 and pd.isna(year.iloc[1]) and year.iloc[2] == 1995


def test_export_writes_the_three_csv_files(grouplens_dir, offline, tmp_path):
    load_movielens_100k(grouplens_dir=grouplens_dir)
    paths = export_movielens_100k(tmp_path / "out")
    assert [p.name for p in paths] == ["ratings.csv", "users.csv", "items.csv"]
    assert paths[0].read_text().splitlines()[0] == "user_id,item_id,rating,timestamp"
    assert paths[1].read_text().splitlines()[0] == "user_id,age,gender,occupation"
    assert paths[2].read_text().splitlines()[0] == "item_id,title,year,genres"
    assert "Misérables" in paths[2].read_text(encoding="utf-8")


def test_concurrent_first_loads_do_not_corrupt_the_cache(grouplens_dir, offline, monkeypatch):
    monkeypatch.setenv("METAREC_ML100K_DIR", str(grouplens_dir))
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(load_movielens_100k().fingerprint)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 4
    leftovers = [p.name for p in offline.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.network
def test_real_movielens_100k():
    """Fetches the recbole wheel once into the default cache (later runs read the cache)."""
    data = load_movielens_100k()
    assert (data.n_users, data.n_items, len(data.ratings)) == (943, 1682, 100_000)
    assert data.rating_range == (1.0, 5.0) and not data.implicit
    assert (data.ratings["timestamp"] > 0).all()
    assert data.ratings.groupby("user").size().min() == 20
    assert data.item_table.loc[data.items.index("1"), "title"] == "Toy Story"
    assert set(data.user_table.columns) == {"age", "gender", "occupation"}
    assert data.item_table["genres"].str.contains("Comedy").sum() == 505
    assert not data.warnings
    assert data.item_table["year"].isna().sum() == 1  # only the 'unknown' movie
