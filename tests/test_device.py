"""Tests of metarec_core.device: which torch device a setting names, and the CPU threads, float mode and allocator a run uses."""
import sys

import pytest
import torch

from metarec_core import device
from metarec_core.device import cpu_threads, flush_denormals, resolve_device
from metarec_core.errors import ConfigError


@pytest.fixture()
def threads():
    """Leave torch's thread count as it was, whatever the test does."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_cpu_threads_sets_the_count_inside_and_restores_it_after(threads):
    torch.set_num_threads(2)
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    with cpu_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_cpu_threads_restores_the_count_when_the_block_fails(threads):
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError):
        with cpu_threads(1):
            raise RuntimeError("training failed")
    assert torch.get_num_threads() == 2


def test_zero_threads_leaves_torchs_choice_alone(threads, monkeypatch):
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with cpu_threads(0):
        assert torch.get_num_threads() == 2
    assert calls == []


def test_cuda_without_a_gpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU.*auto or cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_picks_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_flush_denormals_zeroes_subnormal_arithmetic_only_inside_the_block():
    subnormal = torch.tensor([1e-40], dtype=torch.float32)
    assert (subnormal * 1.0).item() > 0  # off by default
    with flush_denormals():
        if torch.set_flush_denormal(True):  # this CPU has the switch (x86 with SSE3)
            assert (subnormal * 1.0).item() == 0.0
            assert (torch.tensor([1e-30]) * 1.0).item() > 0  # normal floats are untouched
    assert (subnormal * 1.0).item() > 0  # turned off again


#: Allocates and frees five 24 MB arrays at a time, ten times, and prints the page faults of the last nine rounds.
_FAULTS_OF_A_LOOP = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from metarec_core.device import keep_freed_memory
    assert keep_freed_memory()
def rounds(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        blocks = [np.ones(3_000_000) for _ in range(5)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
rounds(1)
print(rounds(9))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_keep_freed_memory_reuses_freed_blocks_instead_of_faulting_in_fresh_pages():
    import subprocess
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])

    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_LOOP, mode], capture_output=True, text=True, cwd=root, check=True)
        return int(done.stdout.split()[-1])

    by_default, kept = faults("default"), faults("keep")
    assert by_default > 5_000  # glibc hands the freed heap back and faults fresh pages in each round
    assert kept < by_default / 10


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    monkeypatch.setattr(device.ctypes, "CDLL", no_libc)
    assert device.keep_freed_memory() is False
