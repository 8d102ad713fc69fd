"""Small shared fixtures: tiny synthetic scenarios and files, built in milliseconds, and one tiny trained run."""
from __future__ import annotations

from pathlib import Path

import pytest

from metarec_core.dataset import Dataset
from metarec_core.synthetic import SyntheticConfig, SyntheticScenario, make_synthetic

#: Settings of the shared tiny run: one short epoch, three inner steps, K = 5 (tiny users have 5-20 ratings).
TINY_RUN = {
    "num_epochs": 1, "meta_epochs": 1, "trans_epochs": 1, "inner_steps": 3, "support_size": 5, "eval_support_size": 5,
    "meta_batch_size": 16, "batch_size": 128, "device": "cpu",
}


@pytest.fixture(scope="session")
def small_scenario() -> SyntheticScenario:
    """300 users x 200 items, 4 taste groups, 5 categories, 20-60 ratings per user (seed 0)."""
    return make_synthetic(SyntheticConfig(seed=0))


@pytest.fixture(scope="session")
def tiny_scenario() -> SyntheticScenario:
    """60 users x 40 items, 5-20 ratings per user, plus 3 side-table-only users and items (seed 1)."""
    return make_synthetic(
        SyntheticConfig(n_users=60, n_items=40, ratings_per_user=(5, 20), cold_users=3, cold_items=3, seed=1)
    )


@pytest.fixture(scope="session")
def tiny_run(tiny_scenario, tmp_path_factory) -> tuple:
    """One run fitted for one epoch on ``tiny_scenario`` and saved: ``(TrainResult, run_dir, dataset)``.

    For tests that need *some* trained model (loading, scoring, recommending,
    evaluating); tests of training quality train their own. Treat the run
    directory as read-only: copy it (``shutil.copytree``) before changing files.
    """
    from metarec_core.train_config import TrainConfig
    from metarec_core.training import fit

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    dataset: Dataset = tiny_scenario.dataset
    result = fit(TrainConfig(**TINY_RUN), dataset, out_dir=run_dir)
    return result, run_dir, dataset


@pytest.fixture()
def ratings_csv(tmp_path: Path) -> Path:
    """A small valid ratings CSV (user_id,item_id,rating,timestamp) with 4 users and 3 items."""
    path = tmp_path / "ratings.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n"
        "1,10,4,100\n1,11,3,101\n2,10,5,102\n2,12,1,103\n3,11,2,104\n3,12,4,105\n4,10,3,106\n"
    )
    return path


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the whole test session (sweeps in this process reuse it), shut down at the end."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
