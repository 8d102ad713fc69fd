"""CLI sub-commands of the run store and background workers: ``runs ...`` and ``worker``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec_core.configs import flatten_settings
from metarec_core.errors import StoreBusyError
from metarec_core.jobs import EVALUATION_SHOTS, EvaluationState, delete_run
from metarec_core.store import RUN_STATUSES, RunRecord, RunStore


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``worker`` and ``runs list|show|cancel|delete|rename|compare|export|import|dispatch|wait|evaluate|recover|datasets``."""
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", type=Path, help="run store directory (default: METAREC_HOME or the user data dir)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    worker = subparsers.add_parser("worker", parents=[home], help="train one queued run in this process (started by the queue)")
    worker.add_argument("run_id", metavar="RUN_ID")
    worker.set_defaults(func=cmd_worker)

    runs = subparsers.add_parser("runs", help="list, inspect, cancel, export and import training runs")
    sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", parents=[home, as_json], help="list runs, newest first")
    p.add_argument("--status", choices=RUN_STATUSES, action="append", help="only runs with this status (repeatable)")
    p.add_argument("--sweep", metavar="ID", help="only the trials of this sweep (its ID or first 4+ characters)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[home, as_json], help="one run: settings, progress, final metrics, problems")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", parents=[home], help="stop a queued or running run")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="wait until the worker has stopped")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("delete", parents=[home], help="delete a run and its artifacts")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("rename", parents=[home], help="rename a run")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("name")
    p.set_defaults(func=cmd_rename)
    p = sub.add_parser("default", parents=[home], help="show the run new app sessions open on, or pin one (ID) as its dataset's default")
    p.add_argument("run_id", metavar="ID", nargs="?")
    p.add_argument("--dataset", default="builtin:movielens-100k", help="with no ID: the dataset reference to show the default of")
    p.set_defaults(func=cmd_default)
    p = sub.add_parser("compare", parents=[home, as_json], help="settings that differ and final metrics of runs")
    p.add_argument("run_ids", metavar="ID", nargs="+")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("export", parents=[home], help="write a finished run to a zip file")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--to", type=Path, required=True, metavar="FILE.zip")
    p.add_argument("--no-dataset", action="store_true", help="leave out the saved dataset the run was trained on")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", parents=[home, as_json], help="add a run from a zip file written by `runs export`")
    p.add_argument("zip", type=Path, metavar="FILE.zip")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("dispatch", parents=[home, as_json], help="start queued runs while worker slots are free")
    p.add_argument("--max-concurrent", type=int, help="runs allowed at once (default METAREC_MAX_WORKERS or 1)")
    p.set_defaults(func=cmd_dispatch)
    p = sub.add_parser("wait", parents=[home, as_json], help="wait until a run has finished")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("evaluate", parents=[home, as_json], help="shots curve of a completed run and the baselines, kept with the run (what the Runs page shows)")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--shots", default=",".join(map(str, EVALUATION_SHOTS)), help="comma-separated support sizes K (default %(default)s)")
    p.add_argument("--background", action="store_true", help="run it in a background process and return at once")
    p.add_argument("--state", action="store_true", help="only print the state of the run's evaluation: none, running, done or failed")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser(
        "recover", parents=[home, as_json],
        help="rebuild a damaged or lost store.sqlite3 from runs/ and datasets/ (the old file is kept aside), "
        "or add run folders a healthy store has no record of",
    )
    p.set_defaults(func=cmd_recover)
    p = sub.add_parser("datasets", parents=[home, as_json], help="list saved datasets, or delete one")
    p.add_argument("--delete", metavar="DATASET_ID", help="delete this saved dataset")
    p.add_argument("--force", action="store_true", help="delete even if finished runs used it")
    p.set_defaults(func=cmd_datasets)


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(args.home)


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker RUN_ID``: train the run here; exit code 0 unless it failed."""
    import logging

    from metarec_core.jobs import run_worker

    for handler in logging.getLogger().handlers:  # the worker log gets timestamps
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    status = run_worker(_store(args), args.run_id)
    return 0 if status in ("completed", "cancelled") else 1


def cmd_list(args: argparse.Namespace) -> int:
    """``runs list``."""
    from metarec_core.jobs import mark_stale_jobs

    store = _store(args)
    try:
        mark_stale_jobs(store)
    except StoreBusyError:  # listing is a read: it does not wait for a writer to mark dead workers' runs
        print("note: the store is busy; runs whose worker died may still show as running", file=sys.stderr)
    runs = store.list_runs(args.status, sweep_id=store.find_sweep(args.sweep).id if args.sweep else None)
    if args.json:
        _print_json([r.to_json() for r in runs])
        return 0
    unrecorded = store.unrecorded_run_folders()
    if unrecorded:
        shown = ", ".join(unrecorded[:3]) + (", ..." if len(unrecorded) > 3 else "")
        print(
            f"note: runs/ holds {len(unrecorded)} run folder(s) the store has no record of ({shown}); add them back with "
            f"`python -m metarec_core runs recover --home '{store.home}'`",
            file=sys.stderr,
        )
    if not runs:
        if not unrecorded:
            print("no runs yet; queue one with: python -m metarec_core train --background ...")
        return 0
    rows = [
        [r.id, r.name, _listed_status(store, r), _progress_text(r), r.dataset_ref, r.device or "", _when(r.created), _duration(r), r.error or ""]
        for r in runs
    ]
    print(format_table(["id", "name", "status", "progress", "dataset", "device", "created", "duration", "error"], rows))
    return 0


def _listed_status(store: RunStore, run: RunRecord) -> str:
    """A run's status, marked when a finished run's folder or weights are gone (``runs show`` says more)."""
    if run.status not in ("completed", "cancelled"):
        return run.status
    run_dir = store.run_dir(run.id)
    if not run_dir.is_dir():
        return f"{run.status} (folder missing)"
    return run.status if (run_dir / "weights.safetensors").is_file() else f"{run.status} (no weights)"


def cmd_recover(args: argparse.Namespace) -> int:
    """``runs recover``: rebuild the database from the folders (or add what a healthy one lacks)."""
    from metarec_core.store import default_home
    from metarec_core.store.recovery import recover_store

    report = recover_store(args.home if args.home is not None else default_home())
    if args.json:
        _print_json({"kept_aside": str(report.kept_aside) if report.kept_aside else None, "runs": list(report.runs),
                     "datasets": list(report.datasets), "notes": list(report.notes)})
        return 0
    if report.kept_aside is not None:
        print(f"the old database is kept as '{report.kept_aside}' (nothing was deleted)")
    print(f"recovered {len(report.runs)} run(s) and {len(report.datasets)} dataset(s) from their folders")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``runs show ID``."""
    store = _store(args)
    run = store.find_run(args.run_id)
    final = store.final_metrics(run.id)
    problems = store.check_run(run.id)
    if args.json:
        _print_json({**run.to_json(), "run_dir": str(store.run_dir(run.id)), "final_metrics": final, "problems": list(problems)})
        return 0
    damaged = run.status in ("completed", "cancelled") and any("artifact" in p or "run directory" in p for p in problems)
    status = f"{run.status}, files damaged (see problems)" if damaged else run.status
    fields = [
        ("id", run.id), ("name", run.name), ("status", status), ("dataset", run.dataset_ref),
        ("dataset fingerprint", run.dataset_fingerprint or ""), ("device", run.device or ""),
        ("created", _when(run.created)), ("started", _when(run.started)), ("finished", _when(run.finished)),
        ("duration", _duration(run)), ("progress", _progress_text(run)), ("artifacts", str(store.run_dir(run.id))),
    ]
    if run.status == "running":
        fields += [("worker", f"pid {run.pid} on {run.host}"), ("heartbeat", f"{time.time() - (run.heartbeat or 0):.1f} s ago")]
    if run.cancel_requested and run.status == "running":
        fields.append(("cancel", "requested"))
    print(format_table(["field", "value"], fields, header=False))
    if run.error:
        print(f"error message: {run.error}")  # whole (it says where the checkpoint and the log are), not cut to a column
    print("\nsettings")
    print(format_table(["setting", "value"], [(k, json.dumps(v)) for k, v in sorted(flatten_settings(run.config).items())], header=False))
    if final:
        print("\nfinal metrics")
        print(format_table(["metric", "value"], [(k, f"{v:.4f}") for k, v in sorted(final.items())], header=False))
    for problem in problems:
        print(f"problem: {problem}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """``runs cancel ID``."""
    store = _store(args)
    run = store.find_run(args.run_id)
    status = store.request_cancel(run.id)
    if status == "running":
        print(f"cancel requested for run {run.id}; its worker stops within a few seconds")
        if args.wait:
            from metarec_core.jobs import wait

            status = wait(store, run.id, timeout=120).status
            print(f"run {run.id} {status}")
    elif status == "cancelled":
        print(f"run {run.id} cancelled")
    else:
        print(f"run {run.id} had already {status}; nothing to cancel")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """``runs delete ID``."""
    store = _store(args)
    run = store.find_run(args.run_id)
    delete_run(store, run.id)
    print(f"deleted run {run.id} ({run.name}) and its artifacts")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    """``runs rename ID NAME``."""
    store = _store(args)
    run = store.find_run(args.run_id)
    store.rename(run.id, args.name)
    print(f"run {run.id} is now named '{store.get_run(run.id).name}'")
    return 0


def cmd_default(args: argparse.Namespace) -> int:
    """``runs default [ID]``: the run new sessions open on, or pin one."""
    from metarec_core.default_runs import default_run, pin_default_run, pinned_run

    store = _store(args)
    if args.run_id:
        run = store.find_run(args.run_id)
        ref = pin_default_run(store, run.id)
        print(f"run {run.id} ('{run.name}') is now the default of {ref}")
        return 0
    run_id = default_run(store, args.dataset)
    if run_id is None:
        print(f"no completed run on {args.dataset}")
        return 0
    how = "pinned" if pinned_run(store, args.dataset) == run_id else "newest completed run of the default kind"
    print(f"{run_id} ('{store.get_run(run_id).name}'): {how}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``runs compare ID ID ...``."""
    store = _store(args)
    ids = [store.find_run(r).id for r in args.run_ids]
    comparison = store.compare(ids)
    if args.json:
        _print_json(
            {
                "params": {run_id: comparison.params[run_id].to_dict() for run_id in comparison.params.columns},
                "metrics": json.loads(comparison.metrics.to_json(orient="index")),
            }
        )
        return 0
    if comparison.params.empty:
        print("the runs have the same settings")
    else:
        rows = [[key] + [json.dumps(v) for v in comparison.params.loc[key]] for key in comparison.params.index]
        print(format_table(["setting"] + ids, rows))
    print()
    metric_columns = [c for c in comparison.metrics.columns if c not in ("name", "status")]
    rows = [
        [run_id, row["name"], row["status"]] + [_number(row[c]) for c in metric_columns]
        for run_id, row in comparison.metrics.iterrows()
    ]
    print(format_table(["run", "name", "status"] + metric_columns, rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``runs export ID --to FILE.zip``."""
    store = _store(args)
    run = store.find_run(args.run_id)
    path = store.export_run(run.id, args.to, include_dataset=not args.no_dataset)
    print(f"exported run {run.id} to {path}")
    for problem in store.check_run(run.id):
        print(f"problem: {problem}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``runs import FILE.zip``."""
    store = _store(args)
    imported = store.import_run(args.zip)
    if args.json:
        _print_json({"run_id": imported.run_id, "warnings": list(imported.warnings)})
        return 0
    print(f"imported run {imported.run_id} ({store.get_run(imported.run_id).name})")
    for warning in imported.warnings:
        print(f"warning: {warning}")
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    """``runs dispatch``."""
    from metarec_core.jobs import dispatch

    store = _store(args)
    started = dispatch(store, args.max_concurrent)
    if args.json:
        _print_json({"started": started})
    elif started:
        print("started run(s) " + ", ".join(started))
    else:
        queued = len(store.list_runs("queued"))
        print(f"no run started ({queued} queued, {len(store.list_runs('running'))} running)")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """``runs wait ID``: exit code 0 if the run completed."""
    from metarec_core.jobs import wait

    store = _store(args)
    run = wait(store, store.find_run(args.run_id).id, timeout=args.timeout)
    if args.json:
        _print_json(run.to_json())
    else:
        print(f"run {run.id} {run.status}" + (f": {run.error}" if run.error else ""))
    return 0 if run.status == "completed" else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``runs evaluate ID [--shots K,..] [--background | --state]``: exit code 0 once the result is saved (or the process started)."""
    from metarec_core.cli.evaluate import parse_shots
    from metarec_core.jobs import evaluation_dir, evaluation_state, run_evaluation, start_evaluation

    store = _store(args)
    run_id = store.find_run(args.run_id).id
    shots = parse_shots(args.shots)
    if args.state:
        state = evaluation_state(store, run_id)
        if args.json:
            _print_json({"run": run_id, "state": state.status, "error": state.error, "progress": state.job.progress if state.job else None})
        else:
            print(_evaluation_text(state))
        return 1 if state.status == "failed" else 0
    if args.background:
        started = start_evaluation(store, run_id, shots=shots)
        state = evaluation_state(store, run_id)
        if args.json:
            _print_json({"run": run_id, "started": started, "state": state.status, "error": state.error})
        else:
            print(f"evaluation of run {run_id} {'started' if started else 'already running'}; "
                  f"check it with: python -m metarec_core runs evaluate {run_id} --state")
        return 0
    result = run_evaluation(store, run_id, shots=shots)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.table(["mae", "ndcg@3"]).to_string())
        print(f"saved in {evaluation_dir(store, run_id)}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """``runs datasets [--delete ID [--force]]``."""
    store = _store(args)
    if args.delete:
        store.delete_dataset(args.delete, force=args.force)
        print(f"deleted dataset {args.delete}")
        return 0
    datasets = store.list_datasets()
    if args.json:
        _print_json([d.to_json() for d in datasets])
        return 0
    if not datasets:
        print("no saved datasets")
        return 0
    rows = [
        [d.id, d.name, d.n_users, d.n_items, d.n_ratings, "implicit" if d.implicit else "explicit", d.fingerprint,
         len(store.runs_using_dataset(d.id)), _when(d.created)]
        for d in datasets
    ]
    print(format_table(["id", "name", "users", "items", "ratings", "kind", "fingerprint", "runs", "saved"], rows))
    return 0


# ---------------------------------------------------------------------- formatting
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, header: bool = True, max_width: int = 48) -> str:
    """Plain-text table with aligned columns; long cells are cut with an ellipsis."""
    def cell(value: Any) -> str:
        text = " ".join(str(value).split())
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    table = ([list(headers)] if header else []) + body
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(len(headers))).rstrip() for r in table]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else ""


def _duration(run: RunRecord) -> str:
    if not run.started:
        return ""
    seconds = (run.finished or time.time()) - run.started
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _progress_text(run: RunRecord) -> str:
    progress = run.progress or {}
    if run.status != "running" or not progress:
        return ""
    eta = progress.get("eta")
    text = f"{progress.get('step', 0)}/{progress.get('total_steps', '?')} {progress.get('phase', '')} epoch {progress.get('epoch', '')}"
    return text + (f", eta {eta:.0f}s" if isinstance(eta, (int, float)) else "")


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if number != number else f"{number:.4f}"


def _evaluation_text(state: EvaluationState) -> str:
    """``none``, ``done``, ``running`` (with the splits done so far) or ``failed: <reason>``."""
    if state.status == "failed":
        return f"failed: {state.error}"
    progress = (state.job.progress if state.job else None) or {}
    if state.status == "running" and progress.get("total"):
        return f"running ({progress.get('done', 0)}/{progress['total']} splits)"
    return state.status
