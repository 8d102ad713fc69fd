"""Where a run computes: the torch device a setting names, and the CPU threads a run uses."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from metarec_core.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use device=auto or cpu")
    return torch.device(device)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0 keeps torch's choice), then restore the previous number.

    This is the one place the core sets torch's thread count: ``fit`` and the
    ``Recommender`` apply the run's ``cpu_threads`` setting with it. On this model's small tensors one
    thread is fastest; two threads on a busy 2-core machine were several times
    slower.
    """
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
