"""CLI sub-command ``evaluate``: a run, its no-adaptation variant and baselines across K shots."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metarec_core.builtin import BUILTIN_DATASETS, is_builtin, load_builtin
from metarec_core.cli.data import add_file_options, load_files
from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError
from metarec_core.splits import SCENARIOS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a run and baselines on the run's own cold-start split for several K shots",
        description=(
            "Split the run's dataset with the run's seed for each K, adapt the run on every test user's K support "
            "ratings, score the query ratings, and compare with the run without adaptation and with baselines "
            "fitted on the same training rows."
        ),
    )
    p.add_argument("--run", type=Path, required=True, help="run directory")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in dataset (default: the run's, if built in)")
    source.add_argument("--interactions", type=Path, help="interactions file the run was trained on")
    p.add_argument("--users", type=Path, help="user table (with --interactions)")
    p.add_argument("--items", type=Path, help="item table (with --interactions)")
    add_file_options(p)
    p.add_argument("--scenario", choices=SCENARIOS, help="cold-start scenario (default and only choice: the run's)")
    p.add_argument("--shots", default="1,3,5,10,20", help="comma-separated support sizes K (default 1,3,5,10,20)")
    p.add_argument("--baselines", default="all", help="all, none, or a comma list of global-mean,item-mean,bias,genre,mf")
    p.add_argument("--metrics", help="comma-separated metrics to print in the table (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON (config, results, summary, split sizes, warnings)")
    p.set_defaults(func=run_evaluate)


def parse_shots(text: str) -> tuple[int, ...]:
    """``"1,3,5"`` -> ``(1, 3, 5)``; anything but whole numbers >= 0 is a :class:`ConfigError`."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        shots = tuple(int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"--shots expects whole numbers separated by commas, e.g. 1,3,5,10,20; got '{text}'") from None
    if not shots or any(k < 0 for k in shots):
        raise ConfigError(f"--shots expects whole numbers >= 0, e.g. 1,3,5,10,20; got '{text}'")
    return tuple(dict.fromkeys(shots))


def dataset_for_run(args: argparse.Namespace, meta: dict) -> Dataset:
    """The dataset named on the command line, or the run's own when it is built in."""
    if args.dataset:
        return load_builtin(args.dataset)
    if args.interactions:
        return load_files(args)
    name = str(meta.get("dataset_name", ""))
    if is_builtin(name):
        return load_builtin(name)
    raise DataError(
        f"run '{args.run}' was trained on dataset '{name}', which is not built in; "
        "pass the same data with --interactions FILE [--users FILE] [--items FILE]"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: print a metric × method × K table, or JSON."""
    from metarec_core.artifacts import load_run
    from metarec_core.evaluation_report import EvaluationConfig, parse_baselines
    from metarec_core.evaluation import evaluate_run

    config = EvaluationConfig(scenario=args.scenario, shots=parse_shots(args.shots), baselines=parse_baselines(args.baselines))
    run = load_run(args.run)
    dataset = dataset_for_run(args, run.meta)
    result = evaluate_run(run, dataset, config)
    if args.json:
        print(json.dumps({"run": str(args.run), "dataset": dataset.name, **result.to_dict()}, indent=2))
        return 0
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sizes = result.splits
    print(
        f"run {args.run} on {dataset.name}, {config.scenario or run.config.scenario}, seed {run.config.seed}: "
        f"{int(sizes['n_users'].max())} test users, K = {', '.join(str(k) for k in config.shots)}"
    )
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
        print(result.table(metrics).to_string())
    return 0
