"""The Ray side of a sweep: the trial body, the recorder of trials (an actor on the driver's node), Tune's callback and stopper.

Imported only once a sweep runs (it imports Ray), by the driver
(:func:`run_trials`) and by Ray's workers (which import the trial body and
the recorder by name). How a trial's run reaches the run store is described
in :mod:`metarec_core.sweep_driver`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from metarec_core.configs import config_to_dict, flatten_settings
from metarec_core.errors import ConfigError, MetarecError, StoreError
from metarec_core.jobs import ProgressRecorder
from metarec_core.store import RunStore
from metarec_core.sweep import SweepSpec, settings_text, spec_from_json
from metarec_core.sweep_driver import TRIAL_PULSE, DriverPulse
from metarec_core.sweep_recorder import TrialRecorder

logger = logging.getLogger(__name__)

#: Seconds a cancelled sweep's trials get to stop cleanly before Ray Tune stops them.
CANCEL_GRACE = 5.0
#: Files of a run directory a trial sends only at its end (the recorder appends ``metrics.jsonl`` line by line before).
_SENT_AT_END = {"metrics.jsonl"}
#: The driver's live state of each sweep it is running in this process (Tune pickles its callbacks and stoppers, so they keep only the ID).
_LIVE: dict[str, DriverPulse] = {}


def run_trials(store: RunStore, sweep: Any, spec: SweepSpec, dataset: Any, pulse: DriverPulse, echo: Callable[[str], None]) -> None:
    """Run a sweep's trials on Ray Tune, connected to Ray for the time of the sweep (see :func:`~metarec_core.cluster.ray_session`)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # results go to the run store, not to Tune's CSV/JSON files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables (stdout is the command's)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # it misses the CSV/JSON files
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from metarec_core.cluster import ray_session

    with ray_session(spec.ray_address) as session:
        concurrency = spec.max_concurrent or max(1, int(session.cpus))
        gpus = 0.0
        if session.gpus > 0 and spec.base.get("device", "auto") != "cpu":
            gpus = min(1.0, session.gpus / concurrency)
        recorder = ray.remote(num_cpus=0)(TrialRecorder).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(session.node_id, soft=False),
            enable_task_events=False,  # its calls (a few a second per trial) are not traced for Ray's dashboard
        ).remote(str(store.home.resolve()), sweep.id, sweep.spec, sweep.dataset_ref, dataset.fingerprint, sweep.name)
        ready = recorder.ready.remote()  # not waited for here: it starts while Ray Tune starts the trials' workers
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, recorder=recorder, spec_json=sweep.spec, dataset=dataset),
            {"cpu": max(1, int(flatten_settings(spec.base).get("cpu_threads", 1))), "gpu": gpus},  # a CPU per torch thread
        )
        scheduler = None
        if spec.early_stopping == "asha":
            from ray.tune.schedulers import ASHAScheduler

            epochs = [int(flatten_settings(spec.base)["num_epochs"])] + [int(v) for k, vs in spec.grid if k == "num_epochs" for v in vs]
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max(2, *epochs), grace_period=1, reduction_factor=2)
        folder = store.sweep_dir(sweep.id)
        folder.mkdir(parents=True, exist_ok=True)
        pulse.echo = echo
        _LIVE[sweep.id] = pulse
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.samples, scheduler=scheduler,
                reuse_actors=True,  # a worker (torch imported once) runs trial after trial
                search_alg=BasicVariantGenerator(max_concurrent=concurrency, random_state=spec.seed),
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(folder.resolve()), verbose=0,
                stop=CancelStopper(sweep.id, str(store.home.resolve())),
                callbacks=[TrialEvents(sweep.id, recorder, sweep.spec)],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        where = f"the Ray cluster at {session.address}" if session.address else f"a local Ray ({session.cpus:g} CPUs)"
        echo(f"sweep {sweep.id}: {spec.n_trials} trial(s), {concurrency} at a time, on {where}; optimising {spec.metric} ({spec.mode})")
        try:
            tuner.fit()
            _check_started(ready)
        finally:
            _LIVE.pop(sweep.id, None)
            try:
                ray.get(recorder.close_all.remote("cancelled" if pulse.cancelled.is_set() else "failed"), timeout=30)
            except Exception as exc:  # noqa: BLE001 - the driver fixes the store up after this
                logger.warning("sweep %s: the trial recorder did not close cleanly (%s)", sweep.id, exc)
            ray.kill(recorder)


def _check_started(ready: Any) -> None:
    """Raise a one-line :class:`~metarec_core.errors.StoreError` if the recorder never started (its trials failed for it)."""
    try:
        ray.get(ready, timeout=30)
    except Exception as exc:  # noqa: BLE001 - whatever kept it from starting, the sweep fails with it in one line
        raise StoreError(f"the sweep's trial recorder did not start ({' '.join(str(exc).split())[:300]})") from exc


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The search space in Ray Tune's terms: ``grid_search``, ``uniform``, ``loguniform``, ``choice`` (``randint`` / ``lograndint`` for whole numbers)."""
    space: dict[str, Any] = {key: tune.grid_search(list(values)) for key, values in spec.grid}
    for key, dist in spec.random:
        if dist.kind == "choice":
            space[key] = tune.choice(list(dist.args))
        elif dist.integer:
            low, high = (int(a) for a in dist.args)
            space[key] = tune.randint(low, high + 1) if dist.kind == "uniform" else tune.lograndint(low, high + 1)
        else:
            space[key] = (tune.uniform if dist.kind == "uniform" else tune.loguniform)(*map(float, dist.args))
    return space


class CancelStopper(tune.Stopper):
    """Ray Tune's stopper: once the sweep is cancelled, stop everything when its trials have stopped, or after :data:`CANCEL_GRACE`."""

    def __init__(self, sweep_id: str, home: str) -> None:
        self.sweep_id, self.home = sweep_id, home
        self._since: float | None = None
        self._store: RunStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "home": self.home, "_since": None, "_store": None}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        pulse = _LIVE.get(self.sweep_id)
        if pulse is None or not pulse.cancelled.is_set():
            return False
        if self._since is None:
            self._since = time.monotonic()
        if self._store is None:
            self._store = RunStore(self.home)
        running = self._store.list_runs("running", sweep_id=self.sweep_id)
        return not running or time.monotonic() - self._since > CANCEL_GRACE


class TrialEvents(tune.Callback):
    """Ray Tune's callback on the driver: says when trials end, and records a trial Ray stopped or lost before it could."""

    def __init__(self, sweep_id: str, recorder: Any, spec_json: Mapping[str, Any]) -> None:
        self.sweep_id, self.recorder, self.spec = sweep_id, recorder, spec_from_json(spec_json)
        self.ended = 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        pulse = _LIVE.get(self.sweep_id)
        if pulse is not None and pulse.cancelled.is_set():
            self._close(trial, "cancelled", "the sweep was cancelled")
        else:
            epoch = (trial.last_result or {}).get("epoch")
            self._close(trial, "cancelled", f"stopped early by ASHA after epoch {epoch}: its {self.spec.metric} was among the worse")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            error = " ".join(str(trial.get_error()).split())
        except Exception:  # noqa: BLE001 - whatever Ray kept, the trial is marked failed
            error = ""
        self._close(trial, "failed", error[-400:] or "the trial's process stopped")

    def _close(self, trial: Any, status: str, reason: str) -> None:
        self.ended += 1
        try:
            run_id, final, metric = ray.get(self.recorder.close_trial.remote(trial.trial_id, dict(trial.config), status, reason), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the driver fixes the store up at the end
            logger.warning("trial %s: could not record its end (%s)", trial.trial_id, exc)
            return
        pulse = _LIVE.get(self.sweep_id)
        if run_id and pulse is not None:
            value = "—" if metric is None else f"{metric:.4f}"
            pulse.echo(f"trial {self.ended}/{self.spec.n_trials} {final}: {settings_text(dict(trial.config))} "
                       f"{self.spec.metric} {value} (run {run_id})")


# ---------------------------------------------------------------------- one trial (runs in a Ray worker)
def train_trial(settings: dict[str, Any], recorder: Any = None, spec_json: Mapping[str, Any] | None = None, dataset: Any = None) -> None:
    """The body of one trial: an ordinary ``fit`` of the base config with the trial's settings, recorded through ``recorder``.

    Trains with the config's torch threads (one by default: one Ray CPU per
    trial) into a folder of this node, and reports the sweep's metric to Ray
    Tune after every epoch, once the epoch's checkpoint is with the recorder
    (so a trial ASHA stops keeps it). A failed trial is recorded with its
    one-line error and raises, so Tune counts it failed and goes on.
    """
    from metarec_core.training import fit

    spec = spec_from_json(spec_json or {})
    trial_id = tune.get_context().get_trial_id()
    config = spec.trial_config(settings)  # every setting was checked when the sweep was built
    run_id = ray.get(recorder.open_trial.remote(trial_id, dict(settings), config_to_dict(config)))
    if run_id is None:
        return  # the sweep was cancelled before this trial started
    folder = Path(tempfile.mkdtemp(prefix=f"metarec-trial-{run_id}-"))
    link = TrialLink(recorder, run_id, folder)
    reports = EpochReports(spec.metric, link, every_epoch=spec.early_stopping != "none")
    status, error, device = "failed", None, None
    try:
        link.start()
        result = fit(config, dataset, out_dir=folder, on_progress=reports, should_stop=link.stop.is_set)
        device = result.device
        status = "cancelled" if result.stopped else "completed"
        if result.stopped:
            error = "stopped: the sweep's driver is gone" if link.lost else "stopped: the sweep or this run was cancelled"
    except MetarecError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in one line; Ray keeps the traceback in the trial's log
        logger.exception("trial %s (run %s) failed", trial_id, run_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        link.finish()
        try:
            if not link.lost:
                ray.get(recorder.save.remote(run_id, link.changed_files(at_end=True)))
                ray.get(recorder.finish.remote(run_id, status, error, device, link.latest()))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if status == "failed":
        raise RuntimeError(error)
    if status == "completed":
        reports.final()  # the last epoch's report, now that the run is complete in the store


class EpochReports:
    """``on_progress`` of a trial: keeps the latest progress for the link, sends each epoch's checkpoint, and reports the metric to Ray Tune.

    With ``every_epoch`` (a scheduler such as ASHA decides after each epoch)
    every epoch's metric goes to Tune once its checkpoint is with the
    recorder; without it only the last epoch's, when the trial ends
    (:meth:`final`): a report holds the trial until the driver takes it, and
    nothing but a scheduler reads the ones in between.
    """

    def __init__(self, metric: str, link: "TrialLink", *, every_epoch: bool = True) -> None:
        self.metric, self.link, self.every_epoch = metric, link, every_epoch
        self.pending: dict[str, Any] | None = None  # the epoch whose checkpoint is not sent yet
        self.latest: dict[str, Any] | None = None  # the last epoch not reported to Tune yet

    def __call__(self, event: Any) -> None:
        self.link.progress(event)
        if event.phase == "validate":
            self.flush()  # an epoch without steps: the one before first
            value = event.metrics.get(self.metric)
            if value is None:
                given = ", ".join(sorted(event.metrics)) or "nothing"
                raise ConfigError(f"the sweep optimises {self.metric} but validation gave {given}; choose one of those with --metric")
            self.pending = {self.metric: float(value), "epoch": int(event.epoch)}
        elif event.phase != "done":
            self.flush()  # fit saves the epoch's checkpoint right after its validation event

    def flush(self, *, send: bool = True) -> None:
        """Send the pending epoch's checkpoint (unless ``send`` is false), then report it to Ray Tune if :attr:`every_epoch`."""
        if self.pending is None:
            return
        if send:
            self.link.send_checkpoint()
        self.latest, self.pending = self.pending, None
        if self.every_epoch:
            self.report()

    def final(self) -> None:
        """Report the last epoch (once the run is complete in the store)."""
        self.flush(send=False)
        self.report()

    def report(self) -> None:
        if self.latest is not None:
            latest, self.latest = self.latest, None
            tune.report(latest)


class TrialLink(threading.Thread):
    """A trial's line to the recorder: progress, heartbeat and new metric lines every second; the stop flag comes back."""

    def __init__(self, recorder: Any, run_id: str, folder: Path) -> None:
        super().__init__(name=f"metarec-trial-{run_id}", daemon=True)
        self.recorder, self.run_id, self.folder = recorder, run_id, folder
        self.stop = threading.Event()
        self.lost = False
        self._progress = ProgressRecorder()
        self._offset = 0
        self._sent: dict[str, tuple[int, int, bytes]] = {}  # each file the recorder has: size, mtime, digest
        self._lock = threading.Lock()
        self._done = threading.Event()

    def progress(self, event: Any) -> None:
        """Keep a progress event for the next message."""
        self._progress(event)

    def latest(self) -> dict[str, Any] | None:
        """The latest progress (None before the first event)."""
        return self._progress.latest()

    def _new_lines(self) -> bytes:
        try:
            with open(self.folder / "metrics.jsonl", "rb") as source:
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return b""
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return complete

    def send(self) -> None:
        """Send progress and new metric lines; set :attr:`stop` if the recorder says so or cannot be reached."""
        with self._lock:
            if self.lost:
                return
            lines = self._new_lines()
            try:
                if ray.get(self.recorder.update.remote(self.run_id, self.latest(), lines), timeout=30):
                    self.stop.set()
            except Exception as exc:  # noqa: BLE001 - the recorder (and so the driver) is gone: stop training
                logger.warning("run %s: the sweep's recorder is unreachable (%s); stopping", self.run_id, exc)
                self.lost = True
                self.stop.set()

    def send_checkpoint(self) -> None:
        """Send the new metric lines and the checkpoint's files that changed since the last epoch (after an epoch's save)."""
        self.send()
        if not self.lost:
            files = self.changed_files(at_end=False)
            if files:
                ray.get(self.recorder.save.remote(self.run_id, files), timeout=120)

    def changed_files(self, *, at_end: bool) -> dict[str, bytes]:
        """:func:`run_files` less those the recorder already has as they are (the context, the config: written once)."""
        return run_files(self.folder, at_end=at_end, sent=self._sent)

    def run(self) -> None:
        while not self._done.wait(TRIAL_PULSE):
            self.send()

    def finish(self) -> None:
        """Stop the thread and send what is left."""
        self._done.set()
        if self.is_alive():
            self.join()
        self.send()


def run_files(folder: Path, *, at_end: bool, sent: dict[str, tuple[int, int, bytes]] | None = None) -> dict[str, bytes]:
    """The files of a trial's run directory by name (``metrics.jsonl`` in full only ``at_end``).

    With ``sent`` (each file sent before: size, modification time, digest),
    only the files that changed since, and ``sent`` is brought up to date.
    """
    files: dict[str, bytes] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or (not at_end and path.name in _SENT_AT_END):
            continue
        if sent is None:
            files[path.name] = path.read_bytes()
            continue
        stat = path.stat()
        before = sent.get(path.name)
        if before is not None and before[:2] == (stat.st_size, stat.st_mtime_ns):
            continue
        data = path.read_bytes()
        digest = hashlib.blake2b(data, digest_size=16).digest()
        sent[path.name] = (stat.st_size, stat.st_mtime_ns, digest)
        if before is None or before[2] != digest:
            files[path.name] = data
    return files
