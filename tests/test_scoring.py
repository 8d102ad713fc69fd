"""Tests of metarec_core.scoring: batched held-out scoring, query metrics and the catalogue AUC of implicit data."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.artifacts import load_run
from metarec_core.meta import adapt, score
from metarec_core.models import EntityTensors, FeatureContext, ModelConfig, ModelShape, PreferenceModel
from metarec_core.scoring import catalogue_auc, evaluate_held_out, predict_tasks, query_metrics
from metarec_core.tasks import UserRatings, sample_tasks
from metarec_core.train_config import TrainConfig
from metarec_core.training_data import prepare_data


def no_features(n: int) -> EntityTensors:
    return EntityTensors(torch.zeros(n, 0, dtype=torch.long), (), torch.zeros(n, 0))


@pytest.fixture()
def model_and_tasks():
    torch.manual_seed(0)
    shape = ModelShape(n_users=20, n_items=30, user_categorical=(3,), item_categorical=(4,), global_mean=3.0)
    model = PreferenceModel(shape, ModelConfig(factor_dim=4, feature_dim=3, hidden=(6,)))
    with torch.no_grad():
        model.head[-1].weight.normal_(std=0.3)
    g = torch.Generator().manual_seed(1)
    context = FeatureContext(
        EntityTensors(torch.randint(0, 3, (20, 1), generator=g), (), torch.zeros(20, 0)),
        EntityTensors(torch.randint(0, 4, (30, 1), generator=g), (), torch.zeros(30, 0)),
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user": rng.integers(0, 20, 500), "item": rng.integers(0, 30, 500), "rating": rng.integers(1, 6, 500).astype(np.float32),
    }).drop_duplicates(["user", "item"])
    model.mark_known(frame["user"].to_numpy(), frame["item"].to_numpy())
    tasks = sample_tasks(UserRatings(frame, 20), np.arange(20), support_size=5, query_size=7, rng=rng)
    return model, context, tasks


def test_predict_tasks_equals_adapting_and_scoring_each_task_alone(model_and_tasks):
    model, context, tasks = model_and_tasks
    config = TrainConfig(inner_steps=2)
    rates = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters() if n in model.scope_names("user")}
    batched = predict_tasks(model, rates, config, tasks, context, "mse", chunk=3)  # chunks of 3 tasks, the last short
    assert batched.shape == tuple(tasks.query_items.shape) and isinstance(batched, np.ndarray)
    start = dict(model.named_parameters())
    for t in range(len(tasks)):
        one = tasks.select([t])
        with torch.no_grad():
            adapted = adapt(model, start, one.support(), context, lr=rates, loss="mse", **config.inner_loop())
            alone = score(model, adapted, one.query(), context).numpy()[0]
        assert np.allclose(batched[t], alone, atol=1e-5), t
    with torch.no_grad():
        unadapted = score(model, start, tasks.query(), context).numpy()
    assert not np.allclose(batched, unadapted, atol=1e-3)  # the support sets were used
    assert np.allclose(predict_tasks(model, rates, config, tasks, context, "mse"), batched, atol=1e-5)


def test_predict_tasks_cuts_chunks_to_their_longest_query_and_keeps_every_score(model_and_tasks, monkeypatch):
    """Users with very different query lengths: chunks sorted by length and capped in slots score as each task alone."""
    import metarec_core.scoring as scoring
    from metarec_core.tasks import tasks_from_frames

    model, context, _ = model_and_tasks
    rng = np.random.default_rng(2)
    rows = [(u, i) for u in range(12) for i in rng.choice(30, size=3 + (27 if u == 5 else u), replace=False)]
    frame = pd.DataFrame(rows, columns=["user", "item"]).assign(rating=rng.integers(1, 6, len(rows)).astype(np.float32))
    support = frame.groupby("user").head(2)
    query = frame.drop(support.index)
    tasks, positions = tasks_from_frames(support, query)
    config = TrainConfig()
    rates = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters() if n in model.scope_names("user")}
    monkeypatch.setattr(scoring, "SLOTS_PER_CHUNK", 40)  # a few tasks per chunk; the longest query (28) alone
    chunked = predict_tasks(model, rates, config, tasks, context, "mse").reshape(-1)[positions]
    width = tasks.query_items.shape[1]
    alone = np.zeros(len(tasks) * width, np.float32)
    for t in range(len(tasks)):
        one = tasks.select([t])
        with torch.no_grad():
            adapted = adapt(model, dict(model.named_parameters()), one.support(), context, lr=rates, loss="mse", **config.inner_loop())
            alone[t * width:(t + 1) * width] = score(model, adapted, one.query(), context).numpy()[0]
    assert np.allclose(chunked, alone[positions], atol=1e-5)


def test_query_metrics_by_hand():
    query = pd.DataFrame({"user": [0, 0, 0, 1, 1], "rating": [5.0, 3.0, 1.0, 4.0, 2.0]})
    predictions = np.array([6.0, 3.0, 2.0, 2.5, 3.5])  # 6 is clipped to the top of the scale
    got = query_metrics(query, predictions, "mse", (1.0, 5.0))
    assert got["mae"] == pytest.approx((0 + 0 + 1 + 1.5 + 1.5) / 5)
    assert got["rmse"] == pytest.approx(math.sqrt((0 + 0 + 1 + 2.25 + 2.25) / 5))
    # User 0 is ranked perfectly; user 1 upside down: gains 2^r - 1 = 3 then 15.
    user1 = (3 + 15 / math.log2(3)) / (15 + 3 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx((1.0 + user1) / 2)


def test_query_metrics_on_implicit_data_is_the_mean_user_auc():
    query = pd.DataFrame({"user": [0, 0, 1, 1, 1], "rating": [1.0, 0.0, 1.0, 0.0, 0.0]})
    predictions = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
    assert query_metrics(query, predictions, "bce", (0.0, 1.0)) == {"auc": pytest.approx((1.0 + 0.5) / 2)}
    assert query_metrics(query.assign(rating=1.0), predictions, "bce", (0.0, 1.0)) == {}  # one class: no AUC


@pytest.fixture()
def ranked_model():
    """Scores that do not depend on the user: item i scores i (ten items, all known, no features, no head)."""
    model = PreferenceModel(ModelShape(n_users=3, n_items=10), ModelConfig(factor_dim=2, hidden=()))
    with torch.no_grad():
        model.user_taste.zero_()
        model.global_bias.zero_()
        model.item_bias.weight.copy_(torch.arange(10, dtype=torch.float32).reshape(-1, 1))
    model.mark_known(np.arange(3), np.arange(10))
    return model, FeatureContext(no_features(3), no_features(10))


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "item", "rating"]).astype({"user": np.int64, "item": np.int64, "rating": np.float32})


def test_catalogue_auc_ranks_query_items_against_items_the_user_never_touched(ranked_model):
    model, context = ranked_model
    config = TrainConfig(inner_steps=0)
    support = frame([(0, 9, 1.0)])
    query = frame([(0, 2, 1.0), (0, 5, 1.0), (1, 8, 1.0)])
    seen = frame([(0, 8, 1.0)])
    # User 0: negatives 0,1,3,4,6,7 (support 9 and seen 8 left out): 2 beats 2 of 6, 5 beats 4 of 6.
    # User 1: nothing of theirs is left out (user 0's items are not): 8 beats 8 of 9.
    full = catalogue_auc(model, {}, config, support, query, context, "bce", seen=seen)
    assert full == pytest.approx((6 / 12 + 8 / 9) / 2)
    # Without the seen rows, item 8 is a negative of user 0 too: 2 beats 2 of 7, 5 beats 4 of 7.
    assert catalogue_auc(model, {}, config, support, query, context, "bce") == pytest.approx((6 / 14 + 8 / 9) / 2)
    assert catalogue_auc(model, {}, config, support, query, context, "bce", seen=seen, chunk=1) == pytest.approx(full)


def test_catalogue_auc_is_nan_when_no_user_has_a_negative(ranked_model):
    model, context = ranked_model
    everything = frame([(0, i, 1.0) for i in range(10)])
    assert math.isnan(catalogue_auc(model, {}, TrainConfig(inner_steps=0), everything.iloc[:0], everything, context, "bce"))


def test_evaluate_held_out_is_what_fit_reports(tiny_run):
    result, run_dir, dataset = tiny_run
    run = load_run(run_dir)
    config = run.config
    data = prepare_data(config, dataset)
    metrics = evaluate_held_out(run.model, run.inner_lr, config, data, run.context, run.loss, run.rating_range)
    assert set(metrics) == {"test_mae", "test_rmse", "test_ndcg@3"}
    for name, value in metrics.items():
        assert value == pytest.approx(result.final_metrics[name], abs=1e-6), name
