"""The reproducible mode: bit-identical torch numbers whatever threads and ISA the
machine offers (on any x86-64 CPU with AVX2 with ``kernels: portable``).

Which knobs move CPU torch training (measured with torch 2.14.1 on an AMD EPYC with
AVX-512, training a ResNet-18 and a MONAI 3D U-Net three steps each and hashing the
weights; ``tests/test_reproducible.py`` keeps the U-Net case):

- the intra-op thread count: 1, 2 and 3 threads give three different sets of weights,
  because a full reduction (PReLU's weight gradient, a mean over a whole tensor) is split
  into one partial sum per thread;
- oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``): its convolutions block by ISA and by
  cache size, so they also differ between CPUs of the same ISA;
- MKL's code path (``MKL_CBWR``), chosen by the CPU it runs on;
- ATen's vector kernels (``ATEN_CPU_CAPABILITY``: DEFAULT against AVX2 or AVX-512).

The mode pins them: ATen, MKL and oneDNN take their AVX2 paths (every x86-64 CPU since
2013 has AVX2), every network runs on a fixed number of threads whatever the machine
has, and ``torch.use_deterministic_algorithms`` is on (on CUDA also cuDNN's
deterministic kernels). The convolutions come in two kinds (``kernels``):

- ``portable``: oneDNN's convolutions are switched off, so they run as ATen's im2col +
  MKL GEMM, which MKL's conditional numerical reproducibility (``MKL_CBWR``) makes the
  same on every CPU with AVX2. Measured on this 2-core machine, CPU training then takes
  2-4 times as long (the README's cost table gives the studies' figures).
- ``onednn``: oneDNN's convolutions at the AVX2 ISA, in its deterministic mode. Exactly
  reproducible whatever threads or ISA the machine offers (both are pinned), as the
  tests show on this machine; across CPU models oneDNN does not promise it (some of its
  kernels block their loops by the size of the L2 cache), so two machines can differ in
  the last bits, which a LASSO or an early stop can turn into a different table.

A GPU's numbers are reproducible on the same GPU model only, and never equal the CPU's.

The environment pins must be set before torch runs its first kernel (MKL and ATen read
them once), so :func:`pin_environment` runs when a run context is built, before any
stage imports torch; a process that already ran torch without them gets an error that
says to start a new one.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator, Mapping
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


KERNELS = ("portable", "onednn")


def mode_of(study: Any) -> dict[str, Any] | None:
    """A study's reproducible mode as plain values (``threads``, ``kernels``), or None."""
    return study.reproducible.model_dump() if study.reproducible is not None else None


@contextmanager
def torch_mode(mode: Mapping[str, Any] | None) -> Iterator[None]:
    """Inside: torch in the reproducible ``mode`` (:func:`mode_of`: its ``threads``
    intra-op threads and ``kernels`` convolutions); None leaves the process's torch
    settings alone. Restores the previous settings after."""
    if mode is None:
        yield
        return
    threads, kernels = int(mode["threads"]), mode.get("kernels", "portable")
    if kernels not in KERNELS:
        raise FusionError(f"reproducible kernels must be one of {KERNELS}, not {kernels!r}")
    import torch

    mkldnn, cudnn = torch.backends.mkldnn, torch.backends.cudnn
    before = (torch.get_num_threads(), mkldnn.enabled, mkldnn.deterministic,
              torch.are_deterministic_algorithms_enabled(), cudnn.benchmark,
              cudnn.deterministic)  # fmt: skip
    torch.set_num_threads(threads)
    mkldnn.enabled = kernels == "onednn"
    mkldnn.deterministic = True
    torch.use_deterministic_algorithms(True)
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        mkldnn.enabled, mkldnn.deterministic = before[1], before[2]
        torch.use_deterministic_algorithms(before[3])
        cudnn.benchmark, cudnn.deterministic = before[4], before[5]


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


def torch_state(mode: Mapping[str, Any] | None) -> dict[str, Any]:
    """What can move torch's numbers on this machine, for the provenance: the torch build
    (with its CUDA version), the CPU and the vector ISA ATen uses, the threads, and the
    reproducible mode's pins and kernels (``mode`` None: the mode is off)."""
    import torch

    threads = None if mode is None else int(mode["threads"])
    kernels = None if mode is None else mode.get("kernels", "portable")
    return {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "reproducible_mode": threads is not None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "kernels": kernels if threads is not None else "default (oneDNN, this CPU's ISA)",
        "deterministic_algorithms": threads is not None,
        "pins": {k: os.environ.get(k) for k in PINS},
    }
