"""Native thread budgets: worker processes times threads never exceed the cores.

BLAS, OpenMP (torch), ITK and torch each start one thread per core by default.
Inside a pool of worker processes that multiplies: on a busy 2-core machine one small
LASSO fit (then by glum) took 14-19 s with its default OpenMP threads and 0.5 s with one. Every
per-case worker and every model fit therefore runs inside :func:`native_threads`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def cores() -> int:
    """The cores this process may use (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Threads each of ``workers`` processes may use so that their product fits the cores."""
    return max(1, cores() // max(1, workers))


@contextmanager
def native_threads(n: int) -> Iterator[None]:
    """Cap BLAS/OpenMP (threadpoolctl), ITK and, if loaded, torch at ``n`` threads."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    itk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_before)
        if torch is not None and torch_before is not None:
            torch.set_num_threads(torch_before)
