"""Text features as transferred knowledge: brand-new items scored from their text alone (zero-shot item cold start)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metarec_core.configs import config_from_dict
from metarec_core.features import FeatureSpec
from metarec_core.recommender import Recommender
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.text import HashingTextEncoder, encode_items
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit

FAST = {
    "scenario": "item-cold", "num_epochs": 3, "meta_epochs": 1, "trans_epochs": 1, "inner_steps": 2,
    "keep_best": False, "device": "cpu",
}
N_NEW = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Items described only by title and description (their category words); 12 items with no interactions at all.

    Tags and price are dropped, so without text a new item has no feature
    at all and only the text can tell its category.
    """
    scenario = make_synthetic(SyntheticConfig(n_users=120, n_items=100, cold_items=N_NEW, affinity=1.5, seed=0))
    data = scenario.dataset
    data = dataclasses.replace(
        data,
        item_table=data.item_table[["title", "description"]],
        item_features=(FeatureSpec("title", "text"), FeatureSpec("description", "text")),
    )
    root = tmp_path_factory.mktemp("text")
    vectors = encode_items(data, HashingTextEncoder(dim=64), cache_dir=root / "cache")
    torch.set_num_threads(1)
    config = config_from_dict(TrainConfig, FAST)
    with_text = fit(
        dataclasses.replace(config, use_text=True, text_encoder="hashing"), data,
        out_dir=root / "run", text_vectors=vectors,
    )
    without = fit(config, data)
    return scenario, data, vectors, with_text, without, root / "run"


def test_brand_new_items_get_finite_distinct_scores_from_text(trained):
    scenario, data, vectors, _, _, run_dir = trained
    rec = Recommender.from_run_dir(run_dir)
    new_items = np.arange(data.n_items - N_NEW, data.n_items)
    assert not np.isin(new_items, data.ratings["item"]).any()  # never rated by anyone
    assert not rec.model.item_known[torch.as_tensor(new_items)].any()
    warm = data.ratings.loc[data.ratings["user"] == 0, ["item", "rating"]]
    state = rec.adapt_user([(data.items.external(i), r) for i, r in warm.itertuples(index=False)])
    scores = rec.score_items(state, new_items, clip=False)
    assert np.isfinite(scores).all()
    assert np.std(scores) > 1e-3  # their texts tell them apart
    top = rec.recommend(state, k=len(data.items))
    assert set(new_items) <= set(top["item"])  # new items take part in the ranking


def test_text_beats_no_text_on_item_cold(trained):
    _, _, _, with_text, without, _ = trained
    assert with_text.final_metrics["test_mae"] < without.final_metrics["test_mae"] - 0.1
    assert with_text.final_metrics["test_ndcg@3"] > without.final_metrics["test_ndcg@3"]


def test_new_items_nearest_neighbours_share_their_category(trained):
    scenario, data, _, with_text, _, run_dir = trained
    vectors = Recommender.from_run_dir(run_dir).item_vectors()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    new = np.union1d(np.asarray(with_text.artifacts.cold_items), np.arange(data.n_items - N_NEW, data.n_items))
    known = np.setdiff1d(np.arange(data.n_items), new)
    nearest = known[np.argmax(unit[new] @ unit[known].T, axis=1)]
    share = float(np.mean(scenario.item_category[nearest] == scenario.item_category[new]))
    # Chance: the share of known items in a new item's category, averaged over the new items (about 1/5).
    chance = float(np.mean([np.mean(scenario.item_category[known] == c) for c in scenario.item_category[new]]))
    assert share > 2 * chance, (share, chance)
