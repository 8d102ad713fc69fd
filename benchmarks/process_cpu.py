"""CPU seconds of this process and of every process under it while a block runs, by role (Linux ``/proc``).

A local Ray's processes (GCS, raylet, its agents, the log monitor, the
workers) are all descendants of the process that started it, so sampling the
process tree twice a second and keeping each process's last reading
accounts for processes that start and end during the block as well. The
driver's own threads are split into the main thread (Ray Tune's loop) and the
others, by their Python thread names.
"""
from __future__ import annotations

import os
import threading
from collections import Counter

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Ray's workers name themselves ``ray::ActorClass`` (``ray::IDLE`` while they have no actor); the rest are known by program.
_WORKERS = {"ray::TrialRecorder": "recorder", "ray::ImplicitFunc": "trial workers", "ray::IDLE": "idle Ray workers"}
_PROGRAMS = {
    "raylet": "raylet", "gcs_server": "GCS", "agent.py": "dashboard agent", "main.py": "runtime-env agent",
    "log_monitor.py": "log monitor", "monitor.py": "autoscaler monitor", "dashboard.py": "API server",
    "default_worker.py": "idle Ray workers", "setup_worker.py": "idle Ray workers",
}


def _cpu(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from ``/proc/PID/task/TID/children``)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def role(pid: int) -> str:
    """What a process is: a Ray worker by the name it gives itself, the others by the program or script they run."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "other"
    if not argv:
        return "other"
    for prefix, name in _WORKERS.items():
        if argv[0].startswith(prefix):
            return name
    if argv[0].startswith("ray::"):
        return "Ray workers (" + argv[0].split()[0] + ")"
    program = os.path.basename(argv[0])
    if program.startswith("python"):
        program = next((os.path.basename(a) for a in argv[1:] if a.endswith(".py")), program)
    return _PROGRAMS.get(program, "other")


class ProcessCPU(threading.Thread):
    """Samples the CPU seconds of this process's descendants (and its own threads) until :meth:`stop`; :meth:`by_role` sums them."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(name="process-cpu", daemon=True)
        self.period = period
        self._me = os.getpid()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._threads0: dict[int, float] = {}
        self._threads1: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._done = threading.Event()
        self._counting = False
        self._sample()  # processes already running count from now
        self._threads0 = self._threads()
        self._counting = True

    def _sample(self) -> None:
        for pid in _descendants(self._me):
            try:
                value = _cpu(f"/proc/{pid}/stat")
            except OSError:
                continue
            if pid not in self._first:
                self._first[pid] = value if not self._counting else 0.0
            self._last[pid] = value
            if self._roles.get(pid, "other") in ("other", "idle Ray workers"):  # a worker renames itself once it has an actor
                self._roles[pid] = role(pid)

    def _threads(self) -> dict[int, float]:
        self._names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})
        out = dict(self._threads1)  # a thread that ended keeps its last reading
        for tid in os.listdir(f"/proc/{self._me}/task"):
            try:
                out[int(tid)] = _cpu(f"/proc/{self._me}/task/{tid}/stat")
            except OSError:
                continue
        return out

    def run(self) -> None:
        while not self._done.wait(self.period):
            self._sample()
            self._threads1 = self._threads()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._done.set()
        self.join()
        self._sample()
        self._threads1 = self._threads()

    def by_role(self) -> dict[str, float]:
        """CPU seconds by role: Ray's processes, the trial workers, the recorder, and this process (main thread, other threads)."""
        totals: Counter[str] = Counter()
        for pid, value in self._last.items():
            totals[self._roles.get(pid, "other")] += value - self._first.get(pid, 0.0)
        names = self._names
        for tid, value in self._threads1.items():
            used = value - self._threads0.get(tid, 0.0)
            if tid == self._me:
                totals["driver: main thread (Ray Tune's loop)"] += used
            elif names.get(tid, "").startswith("metarec-sweep-"):
                totals["driver: sweep heartbeat"] += used
            elif names.get(tid) in ("epoch-watch", "process-cpu"):
                totals[f"driver: benchmark's {names[tid]}"] += used
            else:
                totals["driver: Ray's threads"] += used
        return {k: round(v, 2) for k, v in totals.most_common()}
