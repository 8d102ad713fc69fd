"""The Ray a sweep runs on: a local Ray started for it, or a running cluster at an address (auth token mode, reachability).

Ray is imported only here and in :mod:`metarec_core.sweep_driver`, and only
when a sweep starts, so the command line and the app start as fast without it.

Where the address comes from: the ``address`` argument (``--ray-address``),
else ``RAY_ADDRESS``; empty means a new local Ray with this machine's CPUs
(and GPUs), shut down when the sweep ends. ``auto`` is a Ray already started
on this machine (``ray start --head``). An address is checked before anything
is queued: nothing listening there is a one-line :class:`ClusterError` within
a few seconds (Ray itself keeps retrying for minutes).

Token authentication: Ray 2.60 starts a head (``ray start --head``) with
token authentication once a token exists (``~/.ray/auth_token``, which any
local ``ray.init()`` writes), while a client given an explicit address only
sends the token when ``RAY_AUTH_MODE=token``; without it the client fails
with an authentication error. So when ``RAY_AUTH_MODE`` is unset and a token
is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), connecting to an address sets ``RAY_AUTH_MODE=token``
for this process and its children. ``RAY_AUTH_MODE=disabled`` on both sides
turns it off.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metarec_core.errors import ClusterError

logger = logging.getLogger(__name__)

#: Seconds allowed to reach an address before the sweep is refused.
CONNECT_TIMEOUT = 4.0
#: The folder of the ``metarec_core`` package (shipped to a cluster's workers).
PACKAGE_DIR = Path(__file__).resolve().parent
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True)
class RaySession:
    """The Ray a sweep is connected to.

    Attributes
    ----------
    address
        The address given (empty for a local Ray started for the sweep).
    owned
        True when this process started it (and shuts it down).
    cpus, gpus
        The cluster's CPUs and GPUs.
    node_id
        The Ray node of this process (the driver): the recorder of trials runs there.
    """

    address: str
    owned: bool
    cpus: float
    gpus: float
    node_id: str


def resolve_address(address: str | None) -> str:
    """The address to use: ``address``, else ``RAY_ADDRESS``, else empty (a local Ray); ``ray://`` is refused."""
    text = (address if address is not None else os.environ.get("RAY_ADDRESS", "")).strip()
    if text.lower() == "local":
        return ""
    if text.startswith("ray://"):
        raise ClusterError(
            f"Ray address '{text}': Ray Client (ray://) is not supported, as trials report to the run store on the driver's machine; "
            "run the sweep on a node of the cluster (e.g. the head) with --ray-address HEAD_IP:6379"
        )
    return text


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse an address where no Ray head answers, within about ``timeout`` seconds.

    Connects to ``HOST:PORT`` and checks that a gRPC (HTTP/2) server answers
    there, as Ray's head does. ``auto`` (a Ray on this machine) is left to Ray.

    Raises
    ------
    ClusterError
        One line naming the address and what to do.
    """
    if not address or address == "auto":
        return
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
        raise ClusterError(f"Ray address '{address}' is not HOST:PORT (e.g. 10.0.0.5:6379, the address `ray start --head` prints)")
    hint = "start one with `ray start --head --port PORT` or leave out --ray-address (and RAY_ADDRESS) for a local Ray"
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # the preface and an empty SETTINGS frame
            answer = conn.recv(9)
    except socket.timeout:
        raise ClusterError(f"cannot reach Ray at {address}: no answer within {timeout:g} s; {hint}") from None
    except OSError as exc:
        raise ClusterError(f"cannot reach Ray at {address} ({exc.strerror or exc}); {hint}") from None
    if len(answer) < 4 or answer[3] != 0x04:  # an HTTP/2 server's first frame is SETTINGS (type 4)
        raise ClusterError(f"the server at {address} is not a Ray head (it does not speak gRPC); {hint}")


def token_available() -> bool:
    """Whether a Ray auth token is at hand: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    candidates = [Path(path).expanduser()] if path else []
    candidates.append(Path.home() / ".ray" / "auth_token")
    return any(p.is_file() and p.stat().st_size > 0 for p in candidates)


def match_auth_mode() -> str | None:
    """Before connecting to an address: ``RAY_AUTH_MODE=token`` when it is unset and a token is available; returns the mode."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None and token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray._raylet" in sys.modules:  # Ray read its settings already: make it read them again
            with contextlib.suppress(Exception):
                sys.modules["ray._raylet"].Config.initialize("")
        logger.info("a Ray auth token is available: connecting with RAY_AUTH_MODE=token")
        return "token"
    return mode


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[RaySession]:
    """Connect to Ray for the block: the one this process already has, a cluster at ``address``, or a new local one.

    A Ray this process started here is shut down at the end; one it had
    before (e.g. a test's) or a cluster is left running.

    Raises
    ------
    ClusterError
        If the address cannot be reached or Ray refuses the connection (one line).
    """
    address = resolve_address(address)
    if address:
        check_reachable(address)
        match_auth_mode()
    import ray

    owned = False
    if not ray.is_initialized():
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")) if p)}}
        if address:
            runtime_env["py_modules"] = [str(PACKAGE_DIR)]  # the same code on every node (its dependencies must be installed there)
        try:
            ray.init(
                address=address or "local", num_cpus=None if address else (num_cpus or os.cpu_count() or 1),
                include_dashboard=False if not address else None, log_to_driver=False, logging_level=logging.WARNING,
                runtime_env=runtime_env,
            )
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            auth = os.environ.get("RAY_AUTH_MODE", "unset")
            raise ClusterError(
                f"Ray at {address or 'a new local instance'} refused the connection ({' '.join(str(exc).split())[:200]}); "
                f"RAY_AUTH_MODE is {auth}: give the client the head's mode (and token), see docs/cli.md#sweeps-on-a-ray-cluster"
            ) from exc
        owned = True
    try:
        resources = ray.cluster_resources()
        yield RaySession(
            address=address, owned=owned, cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)),
            node_id=ray.get_runtime_context().get_node_id(),
        )
    finally:
        if owned:
            ray.shutdown()
