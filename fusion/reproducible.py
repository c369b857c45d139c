"""The reproducible mode: bit-identical torch numbers on any x86-64 CPU with AVX2.

Which knobs move CPU torch training (measured with torch 2.14.1 on an AMD EPYC with
AVX-512, training a ResNet-18 and a MONAI 3D U-Net three steps each and hashing the
weights; ``/tmp`` script in the closing note of issue 22):

- the intra-op thread count: 1, 2 and 3 threads give three different sets of weights,
  because a full reduction (PReLU's weight gradient, a mean over a whole tensor) is split
  into one partial sum per thread;
- oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``): its convolutions block by ISA and by
  cache size, so they also differ between CPUs of the same ISA;
- MKL's code path (``MKL_CBWR``), chosen by the CPU it runs on;
- ATen's vector kernels (``ATEN_CPU_CAPABILITY``: DEFAULT against AVX2 or AVX-512).

The mode pins them: ATen and MKL take their AVX2 paths (every x86-64 CPU since 2013
has AVX2), oneDNN's convolutions are switched off (ATen's own im2col + MKL GEMM, which
the pins make machine-independent), every network runs on a fixed number of threads,
whatever the machine has, and ``torch.use_deterministic_algorithms`` is on (on CUDA also
cuDNN's deterministic kernels). A GPU's numbers are reproducible on the same GPU model
only, and never equal to the CPU's.

The environment pins must be set before torch runs its first kernel (MKL and ATen read
them once), so :func:`pin_environment` runs when a run context is built, before any
stage imports torch; a process that already ran torch without them gets an error that
says to start a new one.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from fusion.errors import FusionError

PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # deterministic cuBLAS (CUDA's own requirement)
}


def pin_environment() -> None:
    """Set :data:`PINS` in this process's environment (inherited by its workers).

    Raises:
        FusionError: torch is already loaded in this process with other values, so its
            kernels may have been chosen already.
    """
    missing = {k: v for k, v in PINS.items() if os.environ.get(k) != v}
    if not missing:
        return
    if "torch" in sys.modules:
        wanted = " ".join(f"{k}={v}" for k, v in PINS.items())
        raise FusionError(
            "this study asks for the reproducible mode, but torch was loaded in this "
            "process before its kernel settings were pinned; run it in a new process "
            f"(`fusion run`), or set {wanted} before importing torch"
        )
    os.environ.update(missing)


@contextmanager
def torch_mode(threads: int | None) -> Iterator[None]:
    """Inside: torch in the reproducible mode on ``threads`` intra-op threads (None: the
    process's torch settings are left alone). Restores the previous settings after."""
    if threads is None:
        yield
        return
    import torch

    before = (torch.get_num_threads(), torch.backends.mkldnn.enabled,
              torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cudnn.deterministic)  # fmt: skip
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.backends.mkldnn.enabled = before[1]
        torch.use_deterministic_algorithms(before[2])
        torch.backends.cudnn.benchmark = before[3]
        torch.backends.cudnn.deterministic = before[4]


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_state(threads: int | None) -> dict[str, Any]:
    """What can move torch's numbers on this machine, for the provenance: the torch build
    (with its CUDA version), the CPU and the vector ISA ATen uses, the threads, and the
    reproducible mode's pins (``threads`` None: the mode is off)."""
    import torch

    return {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "reproducible_mode": threads is not None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "onednn_convolutions": threads is None and torch.backends.mkldnn.is_available(),
        "deterministic_algorithms": threads is not None,
        "pins": {k: os.environ.get(k) for k in PINS},
    }
