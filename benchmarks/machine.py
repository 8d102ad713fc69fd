"""Machine and code provenance that every benchmark report records."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def n_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> dict[str, object]:
    """The machine and software this ran on."""
    import torch

    return {"cpu": cpu_name(), "nproc": n_cores(), "python": platform.python_version(), "torch": torch.__version__}


def machine_line() -> str:
    """One line describing the machine and the numeric libraries already loaded (torch with its thread count)."""
    parts = [cpu_name(), f"{n_cores()} cores available", f"Python {platform.python_version()}", f"{platform.system()} {platform.release()}"]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} thread(s))")
    if "numpy" in sys.modules:
        parts.append(f"numpy {sys.modules['numpy'].__version__}")
    return ", ".join(parts)


def code_version() -> dict[str, object]:
    """The commit the benchmark ran on and any uncommitted changes to ``metarec_core``."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "metarec_core").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "metarec_core_uncommitted": dirty}


def write_report(out: str | Path, report: dict, markdown: str) -> None:
    """Write a benchmark's report as ``OUT.json`` and ``OUT.md`` (``out`` without extension) and print the Markdown."""
    import json

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
