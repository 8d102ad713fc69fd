"""Memory of the machine: what is available (RAM, a CUDA device's free memory) and what this process has used at its peak."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")


def available_ram() -> int | None:
    """Bytes of RAM a new allocation can get without swapping, or ``None`` when the system does not say.

    ``psutil.virtual_memory().available`` when psutil is installed, else
    ``MemAvailable`` of ``/proc/meminfo``; in a container with a memory limit
    (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) the room left
    under that limit, when it is smaller.
    """
    values: list[int] = []
    try:
        import psutil  # type: ignore[import-not-found]

        values.append(int(psutil.virtual_memory().available))
    except ImportError:
        meminfo = _meminfo_available()
        if meminfo is not None:
            values.append(meminfo)
    limit = _cgroup_room()
    if limit is not None:
        values.append(limit)
    return min(values) if values else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Room under this process's cgroup memory limit (``None`` without a limit)."""
    for limit_file, usage_file in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current"),
        (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        limit = _read_int(limit_file)
        if limit is None or limit >= 1 << 60:  # "max", or v1's "no limit" (a huge number)
            continue
        usage = _read_int(usage_file) or 0
        return max(limit - usage, 0)
    return None


def available_cuda(device: int | str | None = None) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``), or ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError) as exc:  # a broken driver is "unknown", not a crash
        log.warning("cannot read the free CUDA memory: %s", exc)
        return None
    return int(free)


def peak_rss(children: bool = False) -> int:
    """The peak resident memory in bytes of this process (or of its finished, waited-for children)."""
    import resource

    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports kilobytes


def current_rss() -> int | None:
    """This process's resident memory in bytes now (``/proc/self/statm``), or ``None`` where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'``; GB with one decimal for anything large (binary units)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover
