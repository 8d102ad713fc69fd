"""CUDA against CPU on real data: train the same config with the same seed on each device, then compare times and predictions.

For each device of ``--devices`` (default ``cuda,cpu``) ``fit`` trains
``TrainConfig(num_epochs=--epochs, seed=0, device=DEVICE)`` (defaults otherwise)
on ``--dataset`` (default MovieLens-1M, fetched at first use) into a temporary
run directory, timed. Both runs are then read back on the CPU and score the
held-out test pairs of their (identical, seeded) cold-start split: adapted on
each test user's support ratings, scored on the query ratings. Reported: the
training time per device, the max and mean |Δ prediction| between the two
runs over every test pair, their test metrics, and the max |Δ| of the first
device's run scored on its own device instead of the CPU (kernels alone, no
training). Written to ``--out`` (``benchmarks/results/gpu_check.json``).

Float32 training on two devices sums in different orders, and a few hundred
optimiser steps carry those differences along, so predictions agree closely
but not bit for bit. The check fails (exit code 1) when the runs' test MAE
differs by more than ``--mae-tolerance`` (default 0.02 stars) or a prediction by
more than ``--max-tolerance`` (default 0.5 stars).

Run from the repository root on a CUDA machine::

    python benchmarks/gpu_check.py [--epochs 1] [--dataset movielens-1m] [--devices cuda,cpu]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import code_version, machine  # noqa: E402  (benchmarks/machine.py, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"


def test_predictions(run_dir: Path, dataset, device: str = "cpu") -> np.ndarray:
    """A run's predictions of its split's test query ratings (adapted on the support), in query row order."""
    from metarec_core.artifacts import load_run
    from metarec_core.splits import SplitConfig, split_cold_start
    from metarec_core.tasks import tasks_from_frames
    from metarec_core.scoring import predict_tasks

    run = load_run(run_dir, device=device)
    c = run.config
    split = split_cold_start(dataset, SplitConfig(scenario=c.scenario, cold_fraction=c.cold_fraction, support_size=c.eval_support_size, seed=c.seed))
    tasks, positions = tasks_from_frames(split.support, split.query, warm=c.scenario in ("warm", "item-cold"))
    predictions = predict_tasks(run.model, run.inner_lr, c, tasks.to(device), run.context, run.loss)
    return predictions.reshape(-1)[positions].astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m", help="a built-in dataset (default movielens-1m)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per device (default 1)")
    parser.add_argument("--devices", default="cuda,cpu", help="two devices to compare (default cuda,cpu)")
    parser.add_argument("--mae-tolerance", type=float, default=0.02)
    parser.add_argument("--max-tolerance", type=float, default=0.5)
    parser.add_argument("--out", default=str(RESULTS / "gpu_check.json"), help="the JSON report")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if len(devices) != 2:
        parser.error(f"--devices needs two devices, e.g. cuda,cpu; got '{args.devices}'")

    import torch

    from metarec_core.builtin import load_builtin
    from metarec_core.configs import config_from_dict
    from metarec_core.errors import MetarecError
    from metarec_core.train_config import TrainConfig
    from metarec_core.training import fit

    if "cuda" in devices and not torch.cuda.is_available():
        print(f"error: no CUDA device is visible to torch {torch.__version__}; run this on a CUDA machine (or pass --devices cpu,cpu)", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        dataset = load_builtin(args.dataset)
        load_s = time.perf_counter() - t0
    except MetarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{dataset!r} loaded in {load_s:.1f}s", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="metarec-gpu-check-") as tmp:
        for i, device in enumerate(devices):
            config = config_from_dict(TrainConfig, {"num_epochs": args.epochs, "seed": 0, "device": device})
            run_dir = Path(tmp) / f"{i}-{device}"
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = fit(config, dataset, out_dir=run_dir)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            runs[f"{i}-{device}"] = {"device": result.device, "train_s": seconds, "run_dir": run_dir, "metrics": result.final_metrics,
                                     "cuda_peak_allocated": int(torch.cuda.max_memory_allocated()) if device == "cuda" else None}
            print(f"{device}: trained {result.epochs_completed} epoch(s) in {seconds:.1f}s, test MAE {result.final_metrics.get('test_mae', float('nan')):.4f}", flush=True)
        (ka, a), (kb, b) = runs.items()
        pa, pb = test_predictions(a["run_dir"], dataset), test_predictions(b["run_dir"], dataset)
        diff = np.abs(pa - pb)
        on_device = test_predictions(a["run_dir"], dataset, device=devices[0])
        kernel = float(np.abs(on_device - pa).max()) if len(pa) else 0.0
    mae_gap = abs(a["metrics"].get("test_mae", np.nan) - b["metrics"].get("test_mae", np.nan))
    ok = bool(len(diff) and diff.max() <= args.max_tolerance and mae_gap <= args.mae_tolerance)
    report = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "code": code_version(), "load_at_start": load_at_start, "load_at_end": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "dataset": {"name": dataset.name, "n_users": dataset.n_users, "n_items": dataset.n_items, "n_ratings": len(dataset.ratings), "load_s": load_s},
        "epochs": args.epochs, "torch_threads": torch.get_num_threads(),
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "run_dir"} for k, v in runs.items()},
        "speed_up": b["train_s"] / a["train_s"] if a["train_s"] else None,
        "n_test_pairs": int(len(diff)),
        "max_abs_diff_prediction": float(diff.max()) if len(diff) else None,
        "mean_abs_diff_prediction": float(diff.mean()) if len(diff) else None,
        "test_mae_gap": float(mae_gap),
        "kernel_max_abs_diff": kernel,
        "tolerances": {"test_mae": args.mae_tolerance, "max_prediction": args.max_tolerance},
        "passed": ok,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{ka} {a['train_s']:.1f}s vs {kb} {b['train_s']:.1f}s ({report['speed_up']:.2f}x); over {len(diff):,} test pairs "
        f"max |Δ prediction| {report['max_abs_diff_prediction']:.2e}, mean {report['mean_abs_diff_prediction']:.2e}; "
        f"test MAE gap {mae_gap:.2e}; {devices[0]} kernels alone max |Δ| {kernel:.2e} -> {'ok' if ok else 'FAILED'} ({out})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
