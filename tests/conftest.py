"""Small shared fixtures: tiny synthetic scenarios and files, built in milliseconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from metarec_core.synthetic import SyntheticConfig, SyntheticScenario, make_synthetic


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


@pytest.fixture()
def ratings_csv(tmp_path: Path) -> Path:
    """A small valid ratings CSV (user_id,item_id,rating,timestamp) with 4 users and 3 items."""
    path = tmp_path / "ratings.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n"
        "1,10,4,100\n1,11,3,101\n2,10,5,102\n2,12,1,103\n3,11,2,104\n3,12,4,105\n4,10,3,106\n"
    )
    return path
