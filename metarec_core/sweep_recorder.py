"""The recorder of a sweep's trials: writes each trial into the run store of the driver's machine.

Runs as a Ray actor pinned to the driver's node (see
:mod:`metarec_core.sweep_trials`, which starts it) but imports neither Ray
Tune nor torch (trials send their config as a dict): its worker does not
spend the seconds those imports take while the first trials' workers, which
need it to open their runs, start beside it.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarec_core.configs import config_to_dict
from metarec_core.errors import StoreError
from metarec_core.store import RunStore
from metarec_core.sweep import settings_text, spec_from_json
from metarec_core.sweep_driver import trial_metric


class TrialRecorder:
    """Writes a sweep's trials into the run store of the driver's machine (a Ray actor on that node, no CPU of its own).

    Trials call it with their progress, metric lines and checkpoint; the
    driver's callback calls it when Ray ends a trial. Every trial is a run
    whose ``sweep_id`` is the sweep's.
    """

    def __init__(self, home: str, sweep_id: str, spec_json: Mapping[str, Any], dataset_ref: str, fingerprint: str | None, name: str) -> None:
        self.store = RunStore(home)
        self.sweep_id, self.dataset_ref, self.fingerprint, self.name = sweep_id, dataset_ref, fingerprint, name
        self.spec = spec_from_json(spec_json)
        self.runs: dict[str, str] = {}

    def ready(self) -> bool:
        """True (the driver checks with it that the recorder started)."""
        return True

    def open_trial(self, trial_id: str, settings: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str | None:
        """The run of a trial (created running on its first call); None once the sweep is cancelled.

        ``config`` is the trial's full config as a dict; the trial sends it, as
        building it here would import torch into this process (the config
        module does), which holds up the first trials by seconds.
        """
        if trial_id in self.runs:
            return self.runs[trial_id]
        if self.store.is_sweep_cancel_requested(self.sweep_id):
            return None
        now = time.time()
        run_id = self.store.insert_run(
            self._name(settings), dict(config) if config is not None else config_to_dict(self.spec.trial_config(settings)),
            self.dataset_ref, status="running",
            dataset_fingerprint=self.fingerprint, created=now, started=now, heartbeat=now, sweep_id=self.sweep_id,
        )
        self.runs[trial_id] = run_id
        return run_id

    def update(self, run_id: str, progress: Mapping[str, Any] | None, lines: bytes) -> bool:
        """Record a trial's progress (its heartbeat) and new ``metrics.jsonl`` lines; True when it should stop."""
        if lines:
            with open(self.store.run_dir(run_id) / "metrics.jsonl", "ab") as out:
                out.write(lines)
        alive = self.store.heartbeat(run_id, progress=dict(progress) if progress else None)
        return not alive or self.store.is_cancel_requested(run_id) or self.store.is_sweep_cancel_requested(self.sweep_id)

    def save(self, run_id: str, files: Mapping[str, bytes]) -> None:
        """Write a trial's files (its checkpoint, or its finished run directory) into the run's folder."""
        folder = self.store.run_dir(run_id)
        for name, data in files.items():
            if Path(name).name != name or name.startswith("."):
                raise StoreError(f"trial file name '{name}' is not a plain file name")
            partial = folder / f".{name}.part"
            partial.write_bytes(data)
            os.replace(partial, folder / name)

    def finish(self, run_id: str, status: str, error: str | None, device: str | None, progress: Mapping[str, Any] | None) -> None:
        """A trial's end, as the trial saw it."""
        self.store.finish(run_id, status, error=error, device=device, progress=dict(progress) if progress else None)

    def close_trial(self, trial_id: str, settings: Mapping[str, Any], status: str, reason: str) -> tuple[str | None, str, float | None]:
        """A trial's end, as Ray saw it: a trial still running in the store gets ``status`` and ``reason``.

        A trial that failed before it could open its run gets a failed run of
        its own, so its error is kept. Returns the run ID, its final status and metric.
        """
        run_id = self.runs.get(trial_id)
        if run_id is None:
            if status != "failed":
                return None, status, None
            now = time.time()
            run_id = self.store.insert_run(
                self._name(settings), config_to_dict(self.spec.trial_config(settings)), self.dataset_ref, status="failed",
                dataset_fingerprint=self.fingerprint, created=now, started=now, finished=now, error=reason, sweep_id=self.sweep_id,
            )
            self.runs[trial_id] = run_id
        elif self.store.get_run(run_id).status == "running":
            self.store.finish(run_id, status, error=reason)
        run = self.store.get_run(run_id)
        return run_id, run.status, trial_metric(self.store, run, self.spec.metric)

    def close_all(self, status: str) -> int:
        """End every trial still running (the sweep is ending); returns how many."""
        closed = 0
        for run_id in self.runs.values():
            if self.store.get_run(run_id).status == "running":
                self.store.finish(run_id, status, error=f"the sweep ended ({status}) before this trial reported its end")
                closed += 1
        return closed

    def _name(self, settings: Mapping[str, Any]) -> str:
        return f"{self.name} · {settings_text(settings)}"[:200]
