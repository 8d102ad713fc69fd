"""Built-in datasets by name: MovieLens-100K (fetched and cached) and the synthetic scenario."""
from __future__ import annotations

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError

#: Names accepted wherever a built-in dataset can be chosen.
BUILTIN_DATASETS = ("movielens-100k", "synthetic", "synthetic-two-domains")


def load_builtin(name: str) -> Dataset:
    """Load a built-in dataset by name (see :data:`BUILTIN_DATASETS`).

    Raises
    ------
    DataError
        For an unknown name, or when MovieLens-100K cannot be fetched (the
        message says how to point the loader at a local copy).
    """
    if name == "movielens-100k":
        from metarec_core.movielens import load_movielens_100k

        return load_movielens_100k()
    if name in ("synthetic", "synthetic-two-domains"):
        from metarec_core.synthetic import SyntheticConfig, make_synthetic

        return make_synthetic(SyntheticConfig(two_domains=name.endswith("two-domains"))).dataset
    raise DataError(f"unknown built-in dataset '{name}'; choose one of {', '.join(BUILTIN_DATASETS)}")
