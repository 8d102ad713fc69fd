"""Tests of metarec_core.domains: splitting and aligning domains, and that source pretraining helps the target."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.artifacts import load_weights
from metarec_core.configs import config_from_dict
from metarec_core.domains import DomainSplit, align_domains, evaluate_returning_users, split_domains, train_cross_domain
from metarec_core.errors import ConfigError, DataError
from metarec_core.loaders import build_dataset
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit

FAST = {
    "num_epochs": 2, "meta_epochs": 1, "trans_epochs": 1, "inner_steps": 2, "support_size": 5,
    "eval_support_size": 5, "keep_best": False, "device": "cpu",
}


def movies(ratings: list[tuple], genres: dict[str, str], name: str = "movies", users: pd.DataFrame | None = None):
    """A small explicit dataset with a multi-label ``genres`` item column."""
    frame = pd.DataFrame(ratings, columns=["user_id", "item_id", "rating"])
    items = pd.DataFrame({"item_id": list(genres), "genres": list(genres.values())})
    return build_dataset(frame, users, items, feature_kinds={"genres": "multilabel"}, name=name)


@pytest.fixture(scope="module")
def two_domains():
    scenario = make_synthetic(SyntheticConfig(n_users=200, n_items=120, two_domains=True, seed=0))
    return scenario, split_domains(scenario.dataset, "domain", ["source"])


def test_split_keeps_id_maps_and_partitions_ratings(two_domains):
    scenario, split = two_domains
    data = scenario.dataset
    for part in (split.source, split.target):
        assert part.users == data.users and part.items == data.items
        pd.testing.assert_frame_equal(part.item_table, data.item_table)
        pd.testing.assert_frame_equal(part.user_table, data.user_table)
        assert part.item_features == data.item_features and part.user_features == data.user_features
    assert (scenario.item_domain[split.source.ratings["item"]] == "source").all()
    assert (scenario.item_domain[split.target.ratings["item"]] == "target").all()
    both = pd.concat([split.source.ratings, split.target.ratings]).sort_values(["user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, data.ratings.sort_values(["user", "item"]).reset_index(drop=True))
    summary = split.summary()
    assert summary["shared_users"] == split.shared_users().size > 0
    assert summary["shared_items"] == 0
    assert "domain" in split.description


def test_multilabel_split_any_or_all():
    data = movies(
        [(1, "a", 5), (1, "b", 3), (2, "c", 4), (2, "d", 2), (3, "a", 1), (3, "e", 4)],
        {"a": "Drama", "b": "Drama|Action", "c": "Action", "d": "Comedy|Action", "e": None},
    )
    ids = lambda ds: sorted(data.items.externals(ds.ratings["item"].unique()))  # noqa: E731
    anyone = split_domains(data, "genres", ["Drama"])
    assert ids(anyone.source) == ["a", "b"] and ids(anyone.target) == ["c", "d", "e"]
    every = split_domains(data, "genres", ["Drama", "Comedy"], match="all")
    assert ids(every.source) == ["a"] and ids(every.target) == ["b", "c", "d", "e"]
    assert any("no 'genres' value" in w for w in anyone.warnings)


def test_split_errors_name_the_problem():
    data = movies([(1, "a", 5), (2, "b", 3), (3, "a", 2)], {"a": "Drama", "b": "Action"})
    with pytest.raises(DataError, match="column 'genre'.*not in the item table"):
        split_domains(data, "genre", ["Drama"])
    with pytest.raises(DataError, match="'Western' never occur.*Action, Drama"):
        split_domains(data, "genres", ["Western"])
    with pytest.raises(DataError, match="target domain has no ratings"):
        split_domains(data, "genres", ["Drama", "Action"])
    with pytest.raises(ConfigError, match="match"):
        split_domains(data, "genres", ["Drama"], match="most")


def test_align_unions_ids_and_side_tables():
    users_a = pd.DataFrame({"user_id": [1, 2, 3], "age": [20, 30, 40]})
    users_b = pd.DataFrame({"user_id": [3, 4], "age": [41, 50]})
    a = movies([(1, "a", 5), (2, "b", 3), (3, "a", 2), (3, "b", 4)], {"a": "Drama", "b": "Action"}, "books", users_a)
    b = movies([(3, "x", 1), (4, "y", 5), (4, "x", 2)], {"x": "Drama|Comedy", "y": "Comedy"}, "films", users_b)
    split = align_domains(a, b)
    src, tgt = split.source, split.target
    assert src.users == tgt.users and src.items == tgt.items
    assert src.users.external_ids == ("1", "2", "3", "4") and src.items.external_ids == ("a", "b", "x", "y")
    # Source indices are unchanged; target rows are re-indexed but name the same external IDs.
    pd.testing.assert_frame_equal(src.ratings.reset_index(drop=True), a.ratings.reset_index(drop=True))
    before = {(b.users.external(u), b.items.external(i), r) for u, i, r in b.ratings[["user", "item", "rating"]].itertuples(index=False)}
    after = {(tgt.users.external(u), tgt.items.external(i), r) for u, i, r in tgt.ratings[["user", "item", "rating"]].itertuples(index=False)}
    assert before == after
    assert src.user_table["age"].tolist() == [20, 30, 40, 50]  # shared user 3 keeps the source's age
    assert src.item_table["genres"].tolist() == ["Drama", "Action", "Drama|Comedy", "Comedy"]
    assert any("1 user feature value(s) differ" in w for w in split.warnings)
    assert split.summary()["shared_users"] == 1


def test_align_refuses_datasets_that_share_nothing_or_clash():
    a = movies([(1, "a", 5), (2, "b", 3)], {"a": "Drama", "b": "Action"}, "a")
    other = build_dataset(
        pd.DataFrame({"user_id": [7, 8], "item_id": ["p", "q"], "rating": [1.0, 4.0]}),
        items=pd.DataFrame({"item_id": ["p", "q"], "brand": ["x", "y"]}), name="b",
    )
    with pytest.raises(DataError, match="share no user IDs, no item IDs and no item feature column"):
        align_domains(a, other)
    with pytest.raises(DataError, match="do not share user/item ID maps"):
        DomainSplit(a, other)  # a hand-made pair must be on one index space too
    clash = movies([(1, "z", 2), (3, "w", 5)], {"z": "Drama", "w": "Action"}, "c")
    clash = dataclasses.replace(clash, item_features=tuple(dataclasses.replace(s, kind="categorical") for s in clash.item_features))
    with pytest.raises(DataError, match="column 'genres'.*multilabel.*categorical"):
        align_domains(a, clash)
    implicit = dataclasses.replace(a, implicit=True, name="clicks")
    with pytest.raises(DataError, match="implicit"):
        align_domains(implicit, a)


@pytest.fixture(scope="module")
def sparse_target(two_domains, tmp_path_factory):
    """The two-domain split with half of the target's ratings, trained with and without the source."""
    _, split = two_domains
    ratings = split.target.ratings
    keep = np.random.default_rng(0).random(len(ratings)) < 0.5
    split = dataclasses.replace(split, target=dataclasses.replace(split.target, ratings=ratings[keep].reset_index(drop=True)))
    config = config_from_dict(TrainConfig, FAST)
    out = tmp_path_factory.mktemp("cross")
    torch.set_num_threads(1)
    events = []
    transferred = train_cross_domain(config, split, out, on_progress=lambda domain, event: events.append(domain))
    # The target keeps the source's items, with no target ratings: scenario "auto" alone would read them as new items.
    alone = fit(dataclasses.replace(config, scenario="user-cold"), split.target)
    return split, out, transferred, alone, events


def test_source_pretraining_helps_new_users_of_the_target(sparse_target):
    split, out, transferred, alone, events = sparse_target
    assert transferred.source.final_metrics["test_mae"] > 0 and set(events) == {"source", "target"}
    with_source = transferred.target.final_metrics
    assert transferred.target.artifacts.config.scenario == "user-cold"  # the target run is for the target's new users
    assert with_source["test_mae"] < alone.final_metrics["test_mae"] - 0.02
    assert with_source["test_ndcg@3"] > 0.5
    # The target run started from the source run: every parameter had a source tensor of the same shape.
    source_weights = load_weights(out / "source")
    for name, value in transferred.target.model.named_parameters():
        assert source_weights[name].shape == value.shape


def test_returning_users_are_scored_with_their_source_parameters(sparse_target):
    split, out, transferred, _, _ = sparse_target
    result = evaluate_returning_users(out / "target", out / "source", split.target)
    assert result["n_users"] > 10
    assert np.isfinite([result["new_mae"], result["returning_mae"]]).all()
    assert result["returning_mae"] < result["new_mae"]
    with pytest.raises(DataError, match="not trained on dataset"):
        evaluate_returning_users(out / "target", out / "source", split.source)


def test_train_cross_domain_owns_source_run(two_domains, tmp_path):
    _, split = two_domains
    with pytest.raises(ConfigError, match="source_run"):
        train_cross_domain(config_from_dict(TrainConfig, {**FAST, "source_run": "x"}), split, tmp_path)
