"""A sweep against a real Ray head started with ``ray start --head`` (token authentication on), then the head is stopped.

Slow: starting a head, and trials in its workers, take tens of seconds on a busy machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from metarec_core.cluster import check_reachable
from metarec_core.errors import ClusterError
from metarec_core.store import RunStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture
def ray_head(tmp_path: Path):
    """A Ray head of its own (its own port and temp folder, 2 CPUs) with token auth on; yields (address, env); stopped after."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # RAY_AUTH_MODE unset and a token at hand: `ray start --head` turns token authentication on (Ray 2.60).
    env.update(RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(ROOT))
    temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths live under it
    port = _free_port()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--port", str(port), "--num-cpus", "2", "--temp-dir", str(temp),
         "--include-dashboard", "false", "--dashboard-agent-listen-port", str(_free_port()), "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                check_reachable(address, timeout=2)
                break
            except ClusterError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the Ray head did not come up at {address}") from None
                time.sleep(0.5)
        yield address, env
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)  # `ray start --block` stops every process it started
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(10)
        deadline = time.monotonic() + 30
        while _processes_mentioning(str(temp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _processes_mentioning(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"the head left processes behind: {left}"


def test_a_sweep_runs_on_a_ray_head_given_by_address(ray_head, tmp_path: Path) -> None:
    address, env = ray_head
    home = tmp_path / "home"
    env = {**env, "METAREC_HOME": str(home)}
    command = [
        sys.executable, "-m", "metarec_core", "sweep", "--dataset", "synthetic", "--grid", "lambda_meta=0.5,1",
        "--set", "num_epochs=1", "--set", "trans_epochs=1", "--set", "first_order=true", "--set", "device=cpu",
        "--max-concurrent", "2", "--ray-address", address, "--json",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # stdout is the one JSON object
    assert summary["status"] == "completed" and [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    assert sorted(t["settings"]["lambda_meta"] for t in summary["trials"]) == [0.5, 1.0]
    assert summary["best"]["metric"] == min(t["metric"] for t in summary["trials"])
    assert f"on the Ray cluster at {address}" in done.stderr
    store = RunStore(home)
    sweep = store.get_sweep(summary["sweep_id"])
    assert sweep.spec["ray_address"] == address and sweep.status == "completed"
    for trial in summary["trials"]:  # collected by the driver into this store's run folders
        assert store.check_run(trial["run_id"]) == () and store.get_run(trial["run_id"]).sweep_id == sweep.id
    # The head is still up after the sweep (a cluster is not ours to stop) ...
    check_reachable(address, timeout=2)
    # ... and the CLI lists the trials by sweep.
    listed = subprocess.run([sys.executable, "-m", "metarec_core", "runs", "list", "--sweep", sweep.id, "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(t["run_id"] for t in summary["trials"])
