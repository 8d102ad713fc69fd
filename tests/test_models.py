"""Tests of metarec_core.models: the score's terms, user and item vectors, ID switches, dropout, scopes, task-batched parameters."""
import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from metarec_core.models import EntityTensors, FeatureContext, ModelConfig, ModelShape, PreferenceModel
from metarec_core.recommender import Recommender

N_USERS, N_ITEMS = 12, 9
SHAPE = ModelShape(
    n_users=N_USERS, n_items=N_ITEMS, user_categorical=(3,), user_numeric=1,
    item_categorical=(4,), item_multilabel=(5,), item_numeric=2, global_mean=3.2,
)


def build(**config) -> tuple[PreferenceModel, FeatureContext]:
    """A model whose every term is non-zero, users 0-5 and items 0-5 known, and a feature context."""
    torch.manual_seed(0)
    model = PreferenceModel(SHAPE, ModelConfig(**{"factor_dim": 4, "feature_dim": 3, "hidden": (6,), **config}))
    with torch.no_grad():
        for p in (model.head[-1].weight, model.head[-1].bias, model.user_taste, model.item_bias.weight, model.user_bias.weight):
            p.normal_(std=0.3)
        model.user_offset.fill_(0.4)
    model.mark_known(np.arange(6), np.arange(6))
    g = torch.Generator().manual_seed(1)
    context = FeatureContext(
        EntityTensors(torch.randint(0, 3, (N_USERS, 1), generator=g), (), torch.randn(N_USERS, 1, generator=g)),
        EntityTensors(
            torch.randint(0, 4, (N_ITEMS, 1), generator=g), (torch.randint(0, 5, (N_ITEMS, 2), generator=g),),
            torch.randn(N_ITEMS, 2, generator=g),
        ),
    )
    return model.eval(), context


USERS = torch.tensor([0, 3, 8])  # two known users and a new one
ITEMS = torch.tensor([[0, 1, 7], [2, 6, 8], [5, 4, 3]])  # known and new items


def test_user_and_item_vectors_are_the_id_and_feature_terms_by_hand():
    model, ctx = build()
    x_user = model.user_features(ctx.users, USERS)
    x_item = model.item_features(ctx.items, ITEMS)
    taste, offset = model.user_vectors(USERS, x_user, warm=True)
    known_user = torch.tensor([1.0, 1.0, 0.0])
    expected_taste = model.user_taste + x_user @ model.user_feature_taste.weight.T + model.user_factor(USERS) * known_user[:, None]
    assert torch.allclose(taste, expected_taste, atol=1e-6)
    assert torch.allclose(offset, model.user_offset + model.user_bias(USERS).squeeze(-1) * known_user, atol=1e-6)
    cold_taste, cold_offset = model.user_vectors(USERS, x_user, warm=False)
    assert torch.allclose(cold_taste, model.user_taste + x_user @ model.user_feature_taste.weight.T, atol=1e-6)
    assert torch.allclose(cold_offset, model.user_offset.expand(3))
    q, b = model.item_vectors(ITEMS, x_item)
    known_item = (ITEMS < 6).float()
    assert torch.allclose(q, model.item_factor(ITEMS) * known_item[..., None] + x_item @ model.item_feature_factor.weight.T, atol=1e-6)
    assert torch.allclose(b, model.item_bias(ITEMS).squeeze(-1) * known_item + (x_item @ model.item_feature_bias.weight.T).squeeze(-1), atol=1e-6)


@pytest.mark.parametrize("warm", [False, True])
def test_forward_is_mu_plus_biases_plus_taste_dot_factor_plus_head(warm):
    model, ctx = build()
    x_user = model.user_features(ctx.users, USERS)
    x_item = model.item_features(ctx.items, ITEMS)
    taste, offset = model.user_vectors(USERS, x_user, warm=warm)
    q, b = model.item_vectors(ITEMS, x_item)
    interaction = taste[:, None, :] * q
    hidden = torch.cat([x_user[:, None, :].expand(-1, 3, -1), x_item, interaction], dim=-1)
    hidden = torch.relu(hidden @ model.head[0].weight.T + model.head[0].bias)
    head = (hidden @ model.head[1].weight.T + model.head[1].bias).squeeze(-1)
    expected = model.global_bias + b + offset[:, None] + (taste[:, None, :] * q).sum(-1) + head
    scores = model(USERS, ITEMS, ctx, warm=warm)
    assert scores.shape == (3, 3)
    assert torch.allclose(scores, expected, atol=1e-5)
    assert head.abs().max() > 1e-3 and (taste[:, None, :] * q).sum(-1).abs().max() > 1e-3  # every term counts here


def test_warm_scoring_changes_known_users_only():
    model, ctx = build()
    warm, cold = model(USERS, ITEMS, ctx, warm=True), model(USERS, ITEMS, ctx, warm=False)
    assert not torch.allclose(warm[:2], cold[:2]) and torch.equal(warm[2], cold[2])


def test_without_user_ids_a_known_user_has_no_id_factor():
    model, ctx = build(use_user_ids=False)
    assert model.user_factor.weight.abs().max() > 1e-3  # the table exists and is not zero, yet must not count
    x_user = model.user_features(ctx.users, USERS)
    warm_taste, warm_offset = model.user_vectors(USERS, x_user, warm=True)
    cold_taste, cold_offset = model.user_vectors(USERS, x_user, warm=False)
    assert torch.equal(warm_taste, cold_taste) and torch.equal(warm_offset, cold_offset)
    assert torch.equal(model(USERS, ITEMS, ctx, warm=True), model(USERS, ITEMS, ctx, warm=False))


def test_without_item_ids_items_are_their_features_only():
    model, ctx = build(use_item_ids=False)
    x_item = model.item_features(ctx.items, ITEMS)
    q, b = model.item_vectors(ITEMS, x_item)
    assert torch.allclose(q, x_item @ model.item_feature_factor.weight.T, atol=1e-6)
    assert torch.allclose(b, (x_item @ model.item_feature_bias.weight.T).squeeze(-1), atol=1e-6)


def without_user_ids(run_dir, tmp_path):
    """A copy of a trained run whose model config turns user IDs off (its user factor table stays trained)."""
    copy = tmp_path / "no-user-ids"
    shutil.copytree(run_dir, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["model_config"]["use_user_ids"] = False
    (copy / "model.json").write_text(json.dumps(meta))
    config = json.loads((copy / "config.json").read_text())
    config["model"]["use_user_ids"] = False
    (copy / "config.json").write_text(json.dumps(config))
    return Recommender.from_run_dir(copy)


def test_recommender_vectors_of_a_known_user_have_no_id_factor_without_user_ids(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    rec = without_user_ids(run_dir, tmp_path)
    model = rec.model
    assert not model.config.use_user_ids
    user = int(np.flatnonzero(model.user_known.numpy())[0])
    assert model.user_factor.weight[user].abs().max() > 1e-3
    idx = torch.tensor([user])
    x_user = model.user_features(rec.run.context.users, idx)
    with torch.no_grad():
        expected = (model.user_taste + x_user @ model.user_feature_taste.weight.T)[0].numpy()
    state = rec.adapt_user([], user_id=rec.users.external(user), steps=0)
    assert np.allclose(rec.user_vector(state), expected, atol=1e-6)
    batched = rec.user_vectors(pd.DataFrame({"user_id": [], "item_id": [], "rating": []}))
    assert np.allclose(batched[user], expected, atol=1e-6)
    # With user IDs on (the run as trained) the same user's vector does include the ID factor.
    trained = Recommender.from_run_dir(run_dir)
    with_ids = trained.user_vector(trained.adapt_user([], user_id=rec.users.external(user), steps=0))
    assert np.allclose(with_ids, expected + model.user_factor.weight[user].detach().numpy(), atol=1e-5)


def test_item_id_dropout_hides_ids_only_while_training():
    model, ctx = build(item_id_dropout=0.9)
    plain, _ = build()
    users, items = torch.arange(4), torch.arange(N_ITEMS).repeat(4, 1)
    a = model(users, items, ctx)
    assert torch.equal(a, model(users, items, ctx))  # no dropout when scoring: deterministic
    assert torch.allclose(a, plain(users, items, ctx))  # and the same as a model without dropout
    model.train()
    torch.manual_seed(0)
    c = model(users, items, ctx)
    assert not torch.allclose(a, c)
    # Dropout only hides IDs of known items: the new items' scores do not move.
    assert torch.allclose(a[:, 6:], c[:, 6:])
    assert ModelConfig(item_id_dropout=0.5).item_id_dropout == 0.5
    with pytest.raises(ValueError):
        ModelConfig(item_id_dropout=1.0)


def test_scope_names_per_scope():
    model, _ = build()
    head = ("head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias")
    assert model.scope_names("user") == ("user_offset", "user_taste")
    assert model.scope_names("head") == head
    assert model.scope_names("user+head") == ("user_offset", "user_taste") + head
    assert model.scope_names("dense") == ("user_offset", "user_taste") + head + (
        "user_feature_taste.weight", "item_feature_factor.weight", "item_feature_bias.weight",
    )
    names = dict(model.named_parameters())
    assert all(n in names for n in model.scope_names("dense"))
    bare = PreferenceModel(ModelShape(n_users=2, n_items=2), ModelConfig(hidden=()))
    assert bare.scope_names("dense") == ("user_offset", "user_taste", "head.0.weight", "head.0.bias")
    with pytest.raises(ValueError, match="adapt scope"):
        model.scope_names("everything")


def test_mark_known_sets_exactly_the_given_ids():
    model = PreferenceModel(ModelShape(n_users=6, n_items=5))
    assert not model.user_known.any() and not model.item_known.any()
    model.mark_known(np.array([4, 1, 4]), np.array([0, 0, 3]))
    assert model.user_known.tolist() == [False, True, False, False, True, False]
    assert model.item_known.tolist() == [True, False, False, True, False]
    model.mark_known(np.array([2]), np.array([], dtype=np.int64))
    assert model.user_known.nonzero().reshape(-1).tolist() == [1, 2, 4]


def test_batched_task_parameters_score_like_a_loop_over_tasks():
    model, ctx = build()
    g = torch.Generator().manual_seed(2)
    params = dict(model.named_parameters())
    names = model.scope_names("dense")
    per_task = {n: params[n].detach() + 0.2 * torch.randn((3,) + params[n].shape, generator=g) for n in names}
    batched = functional_call(model, {**params, **per_task}, (USERS, ITEMS, ctx), {"warm": True})
    for t in range(3):
        own = {n: v[t] for n, v in per_task.items()}
        alone = functional_call(model, {**params, **own}, (USERS[t:t + 1], ITEMS[t:t + 1], ctx), {"warm": True})
        assert torch.allclose(batched[t], alone[0], atol=1e-5), t
    assert not torch.allclose(batched, model(USERS, ITEMS, ctx, warm=True))  # the task parameters were used


@pytest.mark.parametrize("hidden", [(6,), (), (5, 4)])
@pytest.mark.parametrize("warm", [False, True])
def test_whole_catalogue_scoring_equals_scoring_each_user_alone(hidden, warm):
    # Many rows per item take the item-table path (item side once per item, head's first layer split by block).
    model, ctx = build(hidden=hidden)
    if hidden:
        with torch.no_grad():
            model.head[-1].weight.normal_(std=0.3)
    users = torch.tensor([0, 3, 8, 11])
    catalogue = torch.arange(N_ITEMS).expand(len(users), -1)
    g = torch.Generator().manual_seed(3)
    taste = model.user_taste.detach() + 0.3 * torch.randn(len(users), 4, generator=g)  # adapted per task, as after a fold-in
    params = {**dict(model.named_parameters()), "user_taste": taste}
    with torch.no_grad():
        together = functional_call(model, params, (users, catalogue, ctx), {"warm": warm})
        for t in range(len(users)):
            alone = functional_call(model, {**params, "user_taste": taste[t:t + 1]}, (users[t:t + 1], catalogue[t:t + 1], ctx), {"warm": warm})
            assert torch.allclose(together[t], alone[0], atol=1e-5), t
    assert together.std() > 0.05  # the scores differ by user and item
    # Many rows that are not whole catalogues (gathered from the item table), against halves scored row by row.
    mixed = torch.randint(0, N_ITEMS, (len(users), 2 * N_ITEMS), generator=g)
    with torch.no_grad():
        gathered = functional_call(model, params, (users, mixed, ctx), {"warm": warm})
        for t in range(len(users)):
            for half in (slice(0, N_ITEMS), slice(N_ITEMS, None)):
                alone = functional_call(model, {**params, "user_taste": taste[t:t + 1]}, (users[t:t + 1], mixed[t:t + 1, half], ctx), {"warm": warm})
                assert torch.allclose(gathered[t, half], alone[0], atol=1e-5), t


def test_user_vectors_take_task_parameters_by_name():
    model, ctx = build()
    x_user = model.user_features(ctx.users, USERS)
    taste = torch.randn(3, 4, generator=torch.Generator().manual_seed(3))
    got, offset = model.user_vectors(USERS, x_user, params={"user_taste": taste, "user_offset": torch.tensor([1.0, 2.0, 3.0])})
    assert torch.allclose(got, taste + x_user @ model.user_feature_taste.weight.T, atol=1e-6)
    assert offset.tolist() == [1.0, 2.0, 3.0]


def test_model_config_rejects_bad_sizes():
    for values in ({"factor_dim": 0}, {"feature_dim": 0}, {"hidden": (4, 0)}):
        with pytest.raises(ValueError):
            dataclasses.replace(ModelConfig(), **values)
