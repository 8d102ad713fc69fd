"""Fakes shared by the store tests: a small dataset, progress events as ``fit`` writes them, and a run finished by hand."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from metarec_core.artifacts import MODEL_KEYS

from metarec_core.dataset import Dataset
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap
from metarec_core.store import RunStore

CONFIG = {"num_epochs": 2, "seed": 0, "device": "cpu", "meta": {"inner_steps": 3, "inner_lr": 0.01}}


def small_dataset(seed: int = 0, *, with_tables: bool = True) -> Dataset:
    """7 users (u6 only in the user table) x 9 items, with side tables of every feature kind."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 7, 9
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 6, 40), rng.integers(0, n_items, 40))})
    ratings = pd.DataFrame(
        {
            "user": np.array([p[0] for p in pairs], dtype=np.int64),
            "item": np.array([p[1] for p in pairs], dtype=np.int64),
            "rating": rng.integers(1, 6, len(pairs)).astype(np.float32),
            "timestamp": rng.integers(10**9, 2 * 10**9, len(pairs)).astype(np.int64),
        }
    )
    users = IdMap([f"u{i}" for i in range(n_users)])
    items = IdMap([str(100 + i) for i in range(n_items)])
    if with_tables:
        user_table = pd.DataFrame(
            {"gender": rng.choice(["M", "F"], n_users), "age": [23.0, np.nan, 41.0, 35.0, 19.0, 60.0, 30.0]}
        )
        item_table = pd.DataFrame(
            {
                "genres": rng.choice(["Action|Comedy", "Drama", "Comedy|Drama|Romance"], n_items),
                "title": [f"A film number {i} about things" for i in range(n_items)],
                "year": rng.integers(1950, 2000, n_items),
            }
        )
        user_specs = (FeatureSpec("gender", "categorical"), FeatureSpec("age", "numeric"))
        item_specs = (FeatureSpec("genres", "multilabel"), FeatureSpec("title", "text"), FeatureSpec("year", "numeric"))
    else:
        user_table = pd.DataFrame(index=pd.RangeIndex(n_users))
        item_table = pd.DataFrame(index=pd.RangeIndex(n_items))
        user_specs = item_specs = ()
    return Dataset(
        name=f"tiny-{seed}",
        ratings=ratings,
        users=users,
        items=items,
        user_table=user_table,
        item_table=item_table,
        user_features=user_specs,
        item_features=item_specs,
        warnings=("2 duplicate ratings resolved by keeping the last",),
    )


def event(phase: str, epoch: int, step: int, *, losses: dict | None = None, metrics: dict | None = None, time: float = 0.0) -> dict[str, Any]:
    """One line of ``metrics.jsonl`` with the fields ``fit`` writes (a ``ProgressEvent`` and the time)."""
    return {
        "phase": phase, "epoch": epoch, "step": step, "total_steps": 4, "losses": losses or {}, "metrics": metrics or {},
        "elapsed": time, "eta": None, "time": time,
    }


def append_events(run_dir: Path, events: list[dict[str, Any]]) -> None:
    """Append events to a run's ``metrics.jsonl``, as ``fit`` does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in events))


def training_events(valid_mae: float = 0.9) -> list[dict[str, Any]]:
    """Two loss steps and two validations: 5 metric rows."""
    return [
        event("meta", 0, 1, losses={"total": 1.5}, time=1.0),
        event("meta", 0, 2, losses={"total": 1.2}, time=2.0),
        event("validate", 1, 2, metrics={"valid_mae": valid_mae + 0.1}, time=2.5),
        event("validate", 2, 4, metrics={"valid_mae": valid_mae, "valid_ndcg@3": 0.7}, time=4.5),
    ]


def finish_fake_run(store: RunStore, run_id: str, *, valid_mae: float = 0.9) -> None:
    """Drive a run through its life cycle by hand, as a worker would, with its artifacts and metrics."""
    assert store.claim_job(run_id, pid=12345)
    run_dir = store.run_dir(run_id)
    append_events(run_dir, training_events(valid_mae))
    (run_dir / "config.json").write_text(json.dumps(store.get_run(run_id).config))
    save_file({"weights": torch.arange(10, dtype=torch.float32)}, str(run_dir / "weights.safetensors"))
    save_file({"users.numeric": torch.zeros(2, 1)}, str(run_dir / "context.safetensors"))
    (run_dir / "model.json").write_text(json.dumps({key: [] for key in MODEL_KEYS}))
    (run_dir / "sub").mkdir()
    (run_dir / "sub" / "embeddings.npy").write_bytes(b"emb")
    assert store.finish(run_id, "completed", device="cpu")
