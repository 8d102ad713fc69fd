"""CLI sub-commands of sweeps on Ray Tune: ``sweep`` (start one) and ``sweeps list|show|cancel|drive``."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from metarec_core.builtin import BUILTIN_DATASETS
from metarec_core.cli.data import add_file_options
from metarec_core.cli.runs import format_table
from metarec_core.presets import PRESETS
from metarec_core.store import SWEEP_STATUSES, RunStore
from metarec_core.sweep import EARLY_STOPPING, METRICS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``sweeps list|show|cancel|drive``."""
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", type=Path, help="run store directory (default: METAREC_HOME or the user data dir)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sweep = subparsers.add_parser(
        "sweep", parents=[home, as_json], help="try many settings on Ray Tune: each trial is a run in the run store",
        description="Train one run per setting of a search space on Ray Tune (a local Ray by default, a cluster with "
        "--ray-address or RAY_ADDRESS), optimising a validation metric; every trial is an ordinary run of the store.",
    )
    source = sweep.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in dataset")
    source.add_argument("--interactions", type=Path, help="interactions file (CSV, TSV or Parquet)")
    sweep.add_argument("--users", type=Path, help="user table (optional)")
    sweep.add_argument("--items", type=Path, help="item table (optional)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="grid values of a setting (repeatable)")
    sweep.add_argument(
        "--random", action="append", default=[], metavar="KEY=DIST(...)",
        help="a setting drawn at random: uniform(A,B), loguniform(A,B) or choice(X,Y,...) (repeatable)",
    )
    sweep.add_argument("--trials", type=int, metavar="N", help="random trials (each grid point N times with --grid; default 1)")
    sweep.add_argument("--preset", choices=list(PRESETS), help="base settings from a named preset")
    sweep.add_argument("--config", type=Path, help="base settings from a config JSON file")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a base setting (repeatable)")
    sweep.add_argument("--metric", choices=list(METRICS), default="valid_mae", help="what to optimise (default %(default)s)")
    sweep.add_argument("--max-concurrent", type=int, default=0, metavar="N", help="trials at once (default: the cluster's CPUs)")
    sweep.add_argument("--early-stop", choices=EARLY_STOPPING, default="none", help="stop poor trials early with ASHA (default none)")
    sweep.add_argument("--max-trials", type=int, metavar="N", help="refuse sweeps with more trials (default METAREC_SWEEP_MAX_TRIALS or 64)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of the random draws (the runs' own seed is --set seed=...)")
    sweep.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (HOST:PORT or auto; default RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--name", help="the sweep's name (its trials are named after it)")
    sweep.add_argument("--background", action="store_true", help="record the sweep and drive it from a background process")
    sweep.add_argument("--quiet", action="store_true", help="no line per trial on stderr")
    add_file_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    sweeps = subparsers.add_parser("sweeps", help="list, inspect and cancel sweeps")
    sub = sweeps.add_subparsers(dest="sweeps_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", parents=[home, as_json], help="every sweep, newest first")
    p.add_argument("--status", choices=SWEEP_STATUSES, action="append", help="only sweeps with this status (repeatable)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[home, as_json], help="one sweep: its space, its trials and the best one")
    p.add_argument("sweep_id", metavar="ID")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", parents=[home], help="stop a sweep and all its trials")
    p.add_argument("sweep_id", metavar="ID")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting until it has stopped")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("drive", parents=[home], help="drive a queued sweep in this process (started by sweep --background)")
    p.add_argument("sweep_id", metavar="ID")
    p.set_defaults(func=cmd_drive)


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(args.home)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``sweep``: check everything, record the sweep, drive it here (or in the background), print the result."""
    from metarec_core.cli.data import fetch_notice, load_files
    from metarec_core.cli.train import build_config
    from metarec_core.cluster import check_reachable, resolve_address
    from metarec_core.configs import parse_set_arguments
    from metarec_core.sweep import build_spec, check_metric_for_data, parse_grid, parse_random
    from metarec_core.sweep_driver import run_sweep, start_background, submit_sweep, sweep_summary

    config = build_config(args)
    grid = [parse_grid(text) for text in args.grid]
    random = [parse_random(text) for text in args.random]
    address = resolve_address(args.ray_address)
    spec = build_spec(
        config, grid=grid, random=random, metric=args.metric, samples=args.trials, max_concurrent=args.max_concurrent,
        early_stopping=args.early_stop, seed=args.seed, ray_address=address, max_trials=args.max_trials,
        fixed=list(parse_set_arguments(args.overrides)),
    )
    if args.dataset:
        fetch_notice(args.dataset)
        from metarec_core.builtin import load_builtin

        dataset = load_builtin(args.dataset)
    else:
        dataset = load_files(args)
    check_metric_for_data(spec, dataset.implicit)
    check_reachable(address)  # before anything is recorded: nothing is queued when Ray is not there
    store = _store(args)
    ref = f"builtin:{args.dataset}" if args.dataset else "stored:" + store.save_dataset(dataset, name=args.interactions.stem)
    sweep_id = submit_sweep(store, spec, ref, name=args.name, background=args.background)
    if args.background:
        start_background(store, sweep_id)
        if args.json:
            _print_json(sweep_summary(store, sweep_id))
        else:
            print(f"sweep {sweep_id} started in the background ({spec.n_trials} trials); "
                  f"follow it with: python -m metarec_core sweeps show {sweep_id}")
        return 0
    echo = (lambda _line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with contextlib.redirect_stdout(sys.stderr):  # whatever Ray prints must not mix with this command's output
        summary = run_sweep(store, sweep_id, dataset=dataset, echo=echo)
    if args.json:
        _print_json(summary)
    else:
        _print_summary(summary)
    return 0 if summary["status"] == "completed" else 1


def cmd_list(args: argparse.Namespace) -> int:
    """``sweeps list``."""
    from metarec_core.sweep_driver import mark_stale_sweeps, sweep_summary

    store = _store(args)
    mark_stale_sweeps(store)
    summaries = [sweep_summary(store, s.id) for s in store.list_sweeps(args.status)]
    if args.json:
        _print_json(summaries)
        return 0
    if not summaries:
        print("no sweeps yet; start one with: python -m metarec_core sweep --dataset synthetic --grid lambda_meta=0,1")
        return 0
    rows = []
    for s in summaries:
        sweep = store.get_sweep(s["sweep_id"])
        done = sum(t["status"] not in ("queued", "running") for t in s["trials"])
        best = s["best"] or {}
        rows.append([
            s["sweep_id"], s["name"], s["status"], f"{done}/{s['n_trials']}", s["metric"],
            _number(best.get("metric")), best.get("run_id", ""), _when(sweep.created), s["error"] or "",
        ])
    print(format_table(["id", "name", "status", "trials", "metric", "best", "best run", "created", "error"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``sweeps show ID``."""
    from metarec_core.sweep_driver import mark_stale_sweeps, sweep_summary

    store = _store(args)
    mark_stale_sweeps(store)
    summary = sweep_summary(store, store.find_sweep(args.sweep_id).id)
    if args.json:
        _print_json(summary)
    else:
        _print_summary(summary)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """``sweeps cancel ID``."""
    from metarec_core.sweep_driver import cancel_sweep

    store = _store(args)
    sweep = store.find_sweep(args.sweep_id)
    if not sweep.is_active:
        print(f"sweep {sweep.id} had already {sweep.status}; nothing to cancel")
        return 0
    status = cancel_sweep(store, sweep.id, wait=not args.no_wait)
    if status == "running":
        print(f"cancel requested for sweep {sweep.id}; its trials stop within a few seconds")
    else:
        print(f"sweep {sweep.id} {status}")
    return 0


def cmd_drive(args: argparse.Namespace) -> int:
    """``sweeps drive ID``: the background driver; exit code 0 unless the sweep failed."""
    import logging

    from metarec_core.sweep_driver import run_sweep

    for handler in logging.getLogger().handlers:  # the driver log gets timestamps
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    summary = run_sweep(_store(args), args.sweep_id, echo=lambda line: logging.getLogger("metarec_core.sweep").info("%s", line))
    return 0 if summary["status"] in ("completed", "cancelled") else 1


# ---------------------------------------------------------------------- formatting
def _print_summary(summary: dict[str, Any]) -> None:
    fields = [("sweep", summary["sweep_id"]), ("name", summary["name"]), ("status", summary["status"]),
              ("dataset", summary["dataset"]), ("metric", f"{summary['metric']} ({summary['mode']})"),
              ("trials", str(summary["n_trials"]))]
    fields += [(f"  {key}", values) for key, values in summary["space"].items()]
    print(format_table(["field", "value"], fields, header=False))
    if summary["error"]:
        print(f"error message: {summary['error']}")
    if summary["trials"]:
        keys = list(summary["space"])
        rows = [[t["run_id"], t["status"], *(_setting(t["settings"].get(k)) for k in keys), _number(t["metric"]), t["error"] or ""]
                for t in summary["trials"]]
        print()
        print(format_table(["run", "status", *keys, summary["metric"], "error"], rows))
    best = summary["best"]
    if best:
        settings = " ".join(f"{k}={_setting(v)}" for k, v in best["settings"].items())
        print(f"\nbest: run {best['run_id']} {settings}: {summary['metric']} {best['metric']:.4f}")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _setting(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (list, bool)) else str(value)


def _number(value: Any) -> str:
    return "" if value is None else f"{float(value):.4f}"


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else ""
