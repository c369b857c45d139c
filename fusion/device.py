"""Where torch runs and in what precision: one rule for every stage that uses a network.

``device: auto`` means CUDA when there is one, else the CPU. On CUDA, networks run under
autocast in bfloat16 where the GPU supports it (float16 otherwise, with a gradient
scaler when training); on the CPU in float32. The precision is part of every cache key
of a stage whose output it can change.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any


def pick_device(name: str) -> str:
    """``auto``: CUDA when there is one, else the CPU; anything else as given."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def precision(device: str) -> str:
    """The numeric precision a forward pass runs in on ``device`` (autocast on CUDA)."""
    import torch

    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def autocast(device: str) -> Any:
    """Mixed precision on CUDA (see :func:`precision`), nothing on the CPU."""
    import torch

    if not device.startswith("cuda"):
        return nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, precision(device)))


def grad_scaler(device: str) -> Any:
    """A gradient scaler that is active only for float16 training on CUDA."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=precision(device) == "float16")
