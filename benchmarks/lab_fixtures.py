"""Run stores for the lab benchmark and screenshots: a trained run (and its comparison run) on ML-100K and on an uploaded CSV.

The uploaded dataset is a small synthetic ratings file with an item table whose
titles carry Markdown, HTML and LaTeX payloads (they must show literally).

Run from the repository root::

    python benchmarks/lab_fixtures.py HOME [--epochs 3]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Titles of the uploaded file's first items: each must appear literally in the lab.
PAYLOADS = ("![pic](http://127.0.0.1:1/x.png) item13", "[clickme](http://127.0.0.1:1/) item2", r"$\href{http://127.0.0.1:1/}{tex}$ item3",
            "<b>bold</b> item4", "**star** _under_ item5")


def upload_files() -> tuple[bytes, bytes]:
    """A small explicit ratings file (120 users, 60 items) and its item table (title, category)."""
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    data = make_synthetic(SyntheticConfig(n_users=120, n_items=60, ratings_per_user=(12, 30), seed=7)).dataset
    r = data.ratings
    ratings = pd.DataFrame({
        "user_id": [data.users.external(int(u)) for u in r["user"]],
        "item_id": [data.items.external(int(i)) for i in r["item"]],
        "rating": r["rating"].astype(int),
        "timestamp": r["timestamp"],
    })
    ids = list(data.items.external_ids)
    titles = [PAYLOADS[n] if n < len(PAYLOADS) else f"item {i}" for n, i in enumerate(ids)]
    items = pd.DataFrame({"item_id": ids, "title": titles, "category": [("books", "music", "films")[n % 3] for n in range(len(ids))]})
    return ratings.to_csv(index=False).encode(), items.to_csv(index=False).encode()


def train_pair(store, ref: str, epochs: int, name: str) -> tuple[str, str]:
    """A transfer-only run, then a meta + transfer run on ``ref``, trained here."""
    from metarec_core import jobs

    base = {"num_epochs": epochs, "device": "cpu"}
    other = jobs.submit(store, {**base, "lambda_meta": 0.0}, ref, name=f"{name} (transfer only)")
    assert jobs.run_worker(store, other) == "completed", other
    main = jobs.submit(store, base, ref, name=f"{name} (meta + transfer)")  # the newest: the one the sidebar picks
    assert jobs.run_worker(store, main) == "completed", main
    return main, other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ["METAREC_HOME"] = str(args.home)
    from metarec_core.loaders import build_dataset, read_table
    from metarec_core.store import RunStore

    store = RunStore(args.home)
    ratings, items = upload_files()
    dataset = build_dataset(read_table(ratings, name="ratings.csv"), None, read_table(items, name="items.csv"), name="uploaded shop")
    dataset_id = store.save_dataset(dataset, name="uploaded shop")
    upload = train_pair(store, f"stored:{dataset_id}", args.epochs, "upload")
    builtin = train_pair(store, "builtin:movielens-100k", args.epochs, "ml100k")
    (args.home / "lab_fixtures.txt").write_text(f"stored:{dataset_id} {upload[0]} {upload[1]}\nbuiltin:movielens-100k {builtin[0]} {builtin[1]}\n")
    print((args.home / "lab_fixtures.txt").read_text())


if __name__ == "__main__":
    main()
