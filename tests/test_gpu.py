"""The same numbers on CUDA as on the CPU: adaptation, a training step's gradients, and a trained run's recommendations.

Marked ``gpu`` and skipped where ``torch.cuda.is_available()`` is false (run
them with ``pytest -m gpu`` on a CUDA machine; ``benchmarks/gpu_check.sh``
does). Float32 kernels differ between devices in their order of summation, so
numbers agree within a tolerance, not bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.configs import config_from_dict
from metarec_core.losses import pointwise_loss
from metarec_core.meta import adapt, meta_loss, score
from metarec_core.models import FeatureContext, PreferenceModel
from metarec_core.recommender import Recommender
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.tasks import UserRatings, sample_tasks
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit
from metarec_core.training_data import prepare_data

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on the CPU (two epochs), its data, and its model, split and tasks."""
    dataset = make_synthetic(SyntheticConfig(n_users=200, n_items=120, seed=7)).dataset
    config = config_from_dict(TrainConfig, {"num_epochs": 2, "device": "cpu", "seed": 3})
    run_dir = tmp_path_factory.mktemp("gpu") / "run"
    result = fit(config, dataset, out_dir=run_dir)
    data = prepare_data(config, dataset)
    rng = np.random.default_rng(0)
    ratings = UserRatings(data.train, dataset.n_users)
    users = np.flatnonzero(ratings.count() > config.support_size)[:32]
    tasks = sample_tasks(ratings, users, support_size=config.support_size, query_size=config.query_size, rng=rng)
    return config, dataset, data, result.model, tasks, run_dir


def _on(model: PreferenceModel, context: FeatureContext, device: str):
    return copy.deepcopy(model).to(device), context.to(device)


@pytest.mark.parametrize("solver, scope", [("newton", "user"), ("gradient", "user+head")])
def test_adapt_gives_the_same_parameters_and_scores_on_cuda(trained, solver, scope):
    config, _, data, model, tasks, _ = trained
    out = {}
    for device in ("cpu", "cuda"):
        m, ctx = _on(model, data.context, device)
        batch = tasks.to(device)
        with torch.no_grad():
            adapted = adapt(m, dict(m.named_parameters()), batch.support(), ctx, steps=2, lr=0.3, scope=scope, solver=solver, reduction="sum")
            out[device] = ({n: adapted[n].cpu() for n in m.scope_names(scope)}, score(m, adapted, batch.query(), ctx).cpu())
    (params_cpu, scores_cpu), (params_gpu, scores_gpu) = out["cpu"], out["cuda"]
    for name in params_cpu:
        torch.testing.assert_close(params_gpu[name], params_cpu[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores_gpu, scores_cpu, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(params_cpu["user_taste"], model.user_taste.detach().expand_as(params_cpu["user_taste"]))  # it adapted


def test_a_training_step_has_the_same_gradients_on_cuda(trained):
    """L_meta + L_trans of one batch, backward: every parameter's gradient agrees."""
    config, _, data, model, tasks, _ = trained
    warm = data.train[["user", "item", "rating"]].to_numpy()[:512]
    grads = {}
    for device in ("cpu", "cuda"):
        m, ctx = _on(model, data.context, device)
        m.train()
        rates = {n: torch.full_like(p, 0.3).requires_grad_(True) for n, p in m.named_parameters() if n in m.scope_names("user")}
        meta = meta_loss(m, dict(m.named_parameters()), tasks.to(device), ctx, lr=rates, loss="mse", **config.inner_loop())
        users = torch.as_tensor(warm[:, 0], dtype=torch.long, device=device)
        items = torch.as_tensor(warm[:, 1], dtype=torch.long, device=device)
        targets = torch.as_tensor(warm[:, 2], dtype=torch.float32, device=device)
        trans = pointwise_loss(m(users, items.unsqueeze(1), ctx, warm=True).squeeze(1), targets, "mse")
        (meta + trans).backward()
        grads[device] = {n: p.grad.cpu() for n, p in m.named_parameters() if p.grad is not None}
        grads[device].update({f"inner_lr.{n}": r.grad.cpu() for n, r in rates.items()})
    assert grads["cpu"].keys() == grads["cuda"].keys() and len(grads["cpu"]) > 10
    for name, value in grads["cpu"].items():
        scale = float(value.abs().max()) or 1.0
        torch.testing.assert_close(grads["cuda"][name], value, rtol=1e-3, atol=1e-4 * scale, msg=name)


def test_recommender_on_cuda_ranks_like_the_cpu(trained):
    _, dataset, _, _, _, run_dir = trained
    cpu = Recommender.from_run_dir(run_dir, device="cpu")
    gpu = Recommender.from_run_dir(run_dir, device="cuda")
    first = dataset.ratings.groupby("user").head(6)
    for user in first["user"].unique()[:5]:
        rows = first[first["user"] == user]
        support = pd.DataFrame({"item_id": dataset.items.externals(rows["item"]), "rating": rows["rating"]})
        support = list(zip(support["item_id"], support["rating"]))
        a, b = cpu.adapt_user(support), gpu.adapt_user(support)
        np.testing.assert_allclose(gpu.score_items(b), cpu.score_items(a), rtol=1e-4, atol=1e-4)
        top_cpu, top_gpu = cpu.recommend(a, k=10), gpu.recommend(b, k=10)
        assert len(set(top_cpu["item_id"]) & set(top_gpu["item_id"])) >= 9  # ties aside, the same list


@pytest.mark.parametrize("table_updates", ["dense", "rows"])
def test_training_steps_move_the_weights_alike_on_cuda(trained, table_updates):
    """A few meta and transfer steps of the Trainer (sparse table lookups, its table updates) end at the same weights."""
    from metarec_core.training import Trainer

    config, dataset, *_ = trained
    weights = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        trainer = Trainer(dataclasses.replace(config, device=device, table_updates=table_updates), dataset)
        meta_order = trainer.rng.permutation(trainer.meta_users)
        warm_order = torch.as_tensor(trainer.rng.permutation(len(trainer.warm_users)), device=trainer.device)
        for b in range(3):
            trainer.train_step("meta", 0, b, meta_order, warm_order)
            trainer.train_step("transfer", 0, b, meta_order, warm_order)
        weights[device] = {n: p.detach().cpu() for n, p in trainer.model.named_parameters()}
    for name, value in weights["cpu"].items():
        torch.testing.assert_close(weights["cuda"][name], value, rtol=1e-3, atol=1e-4, msg=name)
