"""Where a run computes: the torch device a setting names, and the CPU threads, float mode and allocator a run uses."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterator

import torch

from metarec_core.errors import ConfigError

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the block with denormal (subnormal) floats flushed to zero on the CPU, then turn flushing off again.

    Adam's moment estimates and the weight average of rows that stop moving
    decay towards zero and pass through the subnormal range, where x86 CPUs
    take a slow path for every multiply: on ML-1M the transfer phase slowed
    from 4.6 s an epoch to 14 s by epoch 8 with it, and held 4.7 s without it
    (same metrics to the third decimal). Values below about 1e-38 carry nothing
    the model uses. It applies to the calling thread (all of the work with one
    torch thread); on a CPU without the switch it does nothing.
    """
    if not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` gives them.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to 32 MB come from the heap, and are reused
_TRIM_THRESHOLD = 1 << 30  # freed heap memory is kept for reuse up to 1 GB
_TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Have the C allocator keep freed memory for reuse instead of returning it to the system at once.

    Scoring and evaluation allocate and free tens-of-megabyte arrays in a
    loop; by default glibc hands each one back to the kernel and page-faults
    fresh zeroed pages in for the next. ``evaluate`` on ML-1M spent a third of
    its wall time in the kernel that way (7.3M page faults; 0.27M with this).
    Meant for short-lived command-line processes: a process keeps up to 1 GB
    of freed memory mapped. Returns whether the settings took (glibc only;
    elsewhere it does nothing).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = all(mallopt(p, v) == 1 for p, v in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))
    log.debug("allocator keeps freed memory: %s", took)
    return took
