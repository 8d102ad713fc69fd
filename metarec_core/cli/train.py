"""CLI sub-commands of training and inference: ``train``, ``score`` and ``recommend``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from metarec_core.builtin import BUILTIN_DATASETS, BUILTIN_PAIRS, load_builtin, load_builtin_pair
from metarec_core.cli.data import add_file_options, fetch_notice, load_files
from metarec_core.configs import config_from_dict, config_to_dict, flatten_settings, load_config, parse_set_arguments, unflatten_settings
from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError
from metarec_core.presets import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``score`` and ``recommend``."""
    train = subparsers.add_parser(
        "train", help="train a model (meta-learning + transfer learning) and evaluate it",
        description="Train on a built-in dataset or on your files: L_total = λ1·L_meta + λ2·L_trans + L0 on the chosen schedule, "
        "validated every epoch on held-out new users, then tested on the split's new users. Writes a run directory "
        "(--out) or, with --background, queues the run in the run store.",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in dataset")
    source.add_argument("--interactions", type=Path, help="interactions file (CSV, TSV or Parquet)")
    source.add_argument(
        "--cross-domain", choices=BUILTIN_PAIRS, metavar="PAIR",
        help=f"a built-in cross-domain scenario ({', '.join(BUILTIN_PAIRS)}): train on the source domain, then on the "
        "target domain starting from and anchored to the source run (--out DIR gets DIR/source and DIR/target)",
    )
    train.add_argument("--users", type=Path, help="user table (optional)")
    train.add_argument("--items", type=Path, help="item table (optional)")
    train.add_argument("--preset", choices=list(PRESETS), help="start from a named preset")
    train.add_argument("--config", type=Path, help="a config JSON file (keys of TrainConfig)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one setting (repeatable)")
    train.add_argument("--out", type=Path, help="run directory to write (with --background: the run's name)")
    train.add_argument("--background", action="store_true", help="queue the run in the run store and return at once")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_file_options(train)
    train.set_defaults(func=run_train)

    score = subparsers.add_parser("score", help="adapt to users from support ratings and score item pairs")
    score.add_argument("--run", type=Path, required=True, help="run directory")
    score.add_argument("--support", type=Path, required=True, help="CSV user_id,item_id,rating")
    score.add_argument("--pairs", type=Path, required=True, help="CSV user_id,item_id")
    score.add_argument("--out", type=Path, required=True, help="output CSV user_id,item_id,score")
    score.set_defaults(func=run_score)

    rec = subparsers.add_parser("recommend", help="top-K unseen items for a user, or for every user into a CSV")
    rec.add_argument("--run", type=Path, required=True, help="run directory")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user ID (known or new)")
    who.add_argument("--all-users", action="store_true", help="every user of the run (or of --cohort), into --out")
    who.add_argument("--users-file", type=Path, metavar="FILE", help="a CSV with a user_id column: those users, into --out")
    rec.add_argument("--cohort", choices=("new", "warm", "validation"), help="with --all-users: only this cohort of the run's users")
    rec.add_argument("--support", type=Path, help="CSV user_id,item_id,rating with the users' ratings to adapt on")
    rec.add_argument("--k", type=_at_least_one, default=10, help="how many items (default 10)")
    rec.add_argument("--out", type=Path, help="CSV user_id,rank,item_id,name,score (many users; default: printed)")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table (one user)")
    rec.set_defaults(func=run_recommend)


def build_config(args: argparse.Namespace):
    """The TrainConfig from ``--preset``, ``--config`` and ``--set`` (applied in that order)."""
    from metarec_core.configs import ConfigError
    from metarec_core.train_config import TrainConfig

    values: dict = dict(PRESETS[args.preset]) if args.preset else {}
    if args.config:
        values.update(config_to_dict(load_config(TrainConfig, args.config)))
    values = unflatten_settings({**flatten_settings(values), **parse_set_arguments(args.overrides)})
    if "model" in values and not isinstance(values["model"], dict):
        raise ConfigError("'model' must be a mapping of model settings")
    return config_from_dict(TrainConfig, values)


def load_cli_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset named by ``--dataset`` or read from ``--interactions/--users/--items``."""
    if args.dataset:
        fetch_notice(args.dataset)
        return load_builtin(args.dataset)
    return load_files(args)


class ProgressBar:
    """A one-line progress bar on stderr for ``fit``'s progress events."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.last = 0.0

    def __call__(self, event) -> None:
        now = time.perf_counter()
        if event.phase == "validate":
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self.stream.write(f"\repoch {event.epoch}: {shown}" + " " * 20 + "\n")
            return
        if event.phase == "done" or now - self.last < 0.2:
            return
        self.last = now
        width = 24
        filled = int(width * event.step / max(event.total_steps, 1))
        loss = event.losses.get("total", float("nan"))
        eta = f"{event.eta:.0f}s" if event.eta is not None else "?"
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {event.step}/{event.total_steps} {event.phase:<8} epoch {event.epoch} loss {loss:.4f} eta {eta}  ")
        self.stream.flush()


def _at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--k 0`` used to print an empty table)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value}")
    return value


def run_train(args: argparse.Namespace) -> int:
    """``train``: fit, save the run directory, print a summary."""
    from metarec_core.training import fit

    config = build_config(args)
    if getattr(args, "cross_domain", None):
        return run_train_cross_domain(args, config)
    if args.out is None and not args.background:
        raise ConfigError("train needs --out RUN_DIR (or --background to queue the run in the run store)")
    if args.background:
        from metarec_core.jobs import dispatch, submit
        from metarec_core.store import RunStore

        store = RunStore()
        if args.dataset:
            ref = f"builtin:{args.dataset}"
        else:
            dataset = load_cli_dataset(args)
            _auto_note(config, dataset)
            ref = "stored:" + store.save_dataset(dataset, name=args.interactions.stem)
        run_id = submit(store, config, ref, name=args.out.name if args.out else (args.dataset or args.interactions.stem))
        dispatch(store)
        print(f"queued run {run_id}; follow it with: python -m metarec_core runs show {run_id}")
        return 0
    dataset = load_cli_dataset(args)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _auto_note(config, dataset)
    result = fit(config, dataset, out_dir=args.out, on_progress=None if args.quiet else ProgressBar())
    print(("stopped" if result.stopped else "finished") + f" after {result.epochs_completed} epoch(s) on {result.device}; run saved to {args.out}")
    for key, value in sorted(result.final_metrics.items()):
        print(f"  {key:<16} {value:.4f}")
    return 0


def _auto_note(config, dataset: Dataset) -> None:
    """Say on stderr when ``scenario="auto"`` switches the run to training for new items."""
    from metarec_core.train_config import resolve_scenario

    message = resolve_scenario(config, dataset).message
    if message:
        print(f"note: {message}; name a scenario (--set scenario=user-cold) to keep the new-users protocol", file=sys.stderr)


def run_train_cross_domain(args: argparse.Namespace, config) -> int:
    """``train --cross-domain PAIR``: the source run, then the target run started from it (``train_cross_domain``)."""
    from metarec_core.domains import train_cross_domain

    if args.background:
        raise ConfigError("--cross-domain trains two runs in this process and cannot be queued; leave out --background")
    if args.out is None:
        raise ConfigError("train --cross-domain needs --out DIR (the runs go to DIR/source and DIR/target)")
    if config.source_run:
        raise ConfigError("--cross-domain sets source_run itself (to DIR/source); leave it out of --set and --config")
    fetch_notice(args.cross_domain)
    split = load_builtin_pair(args.cross_domain)
    print(split.description, file=sys.stderr)
    for warning in split.warnings:
        print(f"note: {warning}", file=sys.stderr)
    bar = None if args.quiet else ProgressBar()
    current = {"domain": ""}

    def relay(domain: str, event) -> None:
        if domain != current["domain"]:
            current["domain"] = domain
            sys.stderr.write(f"\n{domain} domain ({split.source.name if domain == 'source' else split.target.name}):\n")
        bar(event)

    result = train_cross_domain(config, split, args.out, on_progress=None if bar is None else relay)
    for domain, run in (("source", result.source), ("target", result.target)):
        if run is None:
            print(f"{domain}: not trained (the source run was stopped)")
            continue
        state = "stopped" if run.stopped else "finished"
        print(f"{domain}: {state} after {run.epochs_completed} epoch(s) on {run.device}; run saved to {run.run_dir}")
        for key, value in sorted(run.final_metrics.items()):
            print(f"  {key:<16} {value:.4f}")
    return 0


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    from metarec_core.loaders import read_table

    frame = read_table(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; this file needs exactly the header {','.join(required)} "
            f"(found: {', '.join(map(str, frame.columns)) or 'no columns'}); rename the columns", source=str(path),
        )
    frame = frame.copy()
    for column in ("user_id", "item_id"):
        if column in frame:
            frame[column] = frame[column].astype(str).str.strip()
    if "rating" in required:
        ratings = pd.to_numeric(frame["rating"], errors="coerce")
        bad = np.flatnonzero(ratings.isna().to_numpy())
        if len(bad):
            # Data rows from 1 (the header is not counted), as every other data message numbers them.
            raise DataError(f"rating '{frame['rating'].iloc[bad[0]]}' is not a number; fix or remove that row", source=str(path), column="rating", row=int(bad[0]) + 1)
        frame["rating"] = ratings.astype(np.float32)
    return frame


def run_score(args: argparse.Namespace) -> int:
    """``score``: adapt each user on their support rows and score their pairs (users batched)."""
    from metarec_core.recommender import Recommender

    if args.out.is_dir():
        raise DataError(f"--out '{args.out}' is a folder; give a file name for the scores, e.g. {args.out / 'scores.csv'}")
    rec = Recommender.from_run_dir(args.run)
    support = _read_csv(args.support, ("user_id", "item_id", "rating"))
    pairs = _read_csv(args.pairs, ("user_id", "item_id"))
    rec.item_indices(pairs["item_id"].tolist(), source=args.pairs.name)
    supported = set(support["user_id"])
    unsupported = [u for u in pairs["user_id"].unique() if u not in supported and u not in rec.users]
    if unsupported:
        # Not an error (a new user without ratings is scored from the meta-learned start), but a mistyped ID looks the same.
        print(
            f"note: {len(unsupported)} user(s) in {args.pairs} have no rows in {args.support} and are not users of the run "
            f"(e.g. '{unsupported[0]}'); they were scored from the meta-learned start, as brand-new users",
            file=sys.stderr,
        )
    rec.item_indices(support["item_id"].tolist(), source=args.support.name)
    scores = rec.score_pairs(support, pairs)
    out = pd.DataFrame({"user_id": pairs["user_id"], "item_id": pairs["item_id"], "score": scores})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False)
    print(f"scored {len(out)} pairs for {pairs['user_id'].nunique()} user(s) -> {args.out}")
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    """``recommend``: top-K unseen items for one user, or for many users as CSV rows."""
    from metarec_core.recommender import Recommender

    if args.user is None:
        return _recommend_many(args)
    if args.cohort or args.out:
        raise DataError("--cohort and --out go with --all-users or --users-file; for one --user the list is printed")
    rec = Recommender.from_run_dir(args.run)
    support: pd.DataFrame | list = []
    user = str(args.user).strip()
    if args.support:
        frame = _read_csv(args.support, ("user_id", "item_id", "rating"))
        support = frame[frame["user_id"] == user]
        if not len(support):
            print(f"note: {args.support} has no rows for user '{user}' (it has {frame['user_id'].nunique()} other user(s))", file=sys.stderr)
    if user not in rec.users and not len(support):
        # Not an error (the meta-learned start is what a brand-new user gets), but a mistyped ID looks the same.
        print(f"note: '{user}' is not a user of this run; recommending for a brand-new user with no ratings", file=sys.stderr)
    state = rec.adapt_user(support, user_id=user)
    top = rec.recommend(state, k=args.k)
    titles = _titles(rec)
    top = top.assign(title=[titles.get(i, "") for i in top["item_id"]]) if titles else top
    if args.json:
        print(json.dumps({"user_id": args.user, "known_user": state.known, "support_size": len(state.support_items), "items": top.drop(columns=["item"]).to_dict(orient="records")}, indent=2))
    else:
        kind = "known user" if state.known else "new user"
        print(f"top {len(top)} for {kind} {args.user} (adapted on {len(state.support_items)} rating(s)):")
        print(top.drop(columns=["item"]).to_string(index=False))
    return 0


def _recommend_many(args: argparse.Namespace) -> int:
    """``recommend --all-users`` / ``--users-file``: every user's top-K, streamed to ``--out`` (or stdout) in chunks."""
    from metarec_core.recommender import Recommender
    from metarec_core.titles import run_titles
    from metarec_core.top_lists import cohort_users, top_lists

    if args.json:
        raise DataError("--json prints one user's list; for many users use --out recs.csv (CSV)")
    if args.cohort and not args.all_users:
        raise DataError("--cohort picks among the run's users: use it with --all-users")
    if args.out is not None and args.out.is_dir():
        raise DataError(f"--out '{args.out}' is a folder; give a file name for the recommendations, e.g. {args.out / 'recs.csv'}")
    rec = Recommender.from_run_dir(args.run)
    if args.all_users:
        users = cohort_users(rec, args.cohort)
    else:
        users = list(dict.fromkeys(_read_csv(args.users_file, ("user_id",))["user_id"]))
    if not users:
        raise DataError(f"no users to recommend for (the run has no {args.cohort or ''} users); check --cohort or --users-file")
    support = _read_csv(args.support, ("user_id", "item_id", "rating")) if args.support else None
    listed: set[str] = set()

    def counted(frames):
        for frame in frames:
            listed.update(frame["user_id"])
            yield frame

    frames = counted(top_lists(rec, users, k=args.k, support=support, names=run_titles(rec.run)))
    try:
        return _write_many(args, frames, len(users))
    finally:
        if 0 < len(listed) < len(users):
            print(f"note: {len(users) - len(listed)} user(s) have no list: they have rated every item of the run", file=sys.stderr)


def _write_many(args: argparse.Namespace, frames, n_users: int) -> int:
    if args.out is None:
        from metarec_core.top_lists import TOP_LIST_COLUMNS

        print(",".join(TOP_LIST_COLUMNS))
        for frame in frames:
            sys.stdout.write(frame.to_csv(header=False, index=False, float_format="%.4f", lineterminator="\n"))
        return 0
    from metarec_core.top_lists import write_top_lists

    rows = write_top_lists(frames, args.out)
    print(f"top {args.k} for {n_users} user(s): {rows} rows -> {args.out}")
    return 0


def _titles(rec) -> dict[str, str]:
    titles = rec.run.meta.get("item_titles") or {}
    return {str(k): str(v) for k, v in titles.items()}
