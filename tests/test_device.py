"""Tests of metarec_core.device: which torch device a setting names, and the CPU threads and float mode a block runs with."""
import pytest
import torch

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
