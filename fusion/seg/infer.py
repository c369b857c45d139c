"""Prediction: sliding-window inference with Gaussian blending on the training grid,
probabilities resampled back onto the case's own grid, then labels.

A voxel is foreground when the probability of not being background reaches
``threshold``; it then takes the most probable foreground class (with one class this
is simply ``p >= threshold``). The probabilities are returned as well, since lesion
confidence (FROC) and the case score (max probability) are read from them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from fusion.config import NormaliseSpec, VariantSpec
from fusion.device import autocast
from fusion.seg.data import onto, prepare

OVERLAP = 0.25


WINDOW_VOXELS = 2**20  # input voxels of one forward pass on the CPU


def window_batch(device: str, patch: tuple[int, ...]) -> int:
    """Patches per forward pass: 32 on CUDA, where small batches leave the GPU waiting
    on launches; on the CPU as many as hold about a million input voxels, at most 32
    (the activations grow with the network's width too: 8 times those of 4 a pass).
    Four small patches a pass left the threads waiting between layers: the demos' U-Nets
    (32 x 32 x 24 and 64 x 64 patches) infer 30-40% faster with 32, with the
    probabilities of 4 a pass to the bit (a window's output does not depend on the others
    in its batch; only the kernels oneDNN picks for a batch size could move the last
    bits, as they do for a batch of one)."""
    if device.startswith("cuda"):
        return 32
    return max(1, min(32, WINDOW_VOXELS // math.prod(patch)))


@functools.lru_cache(maxsize=8)
def gaussian_weights(roi: tuple[int, ...], device: str) -> Any:
    """MONAI's Gaussian blending map of a patch, made once per patch size and device
    (MONAI would rebuild it on every call)."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(roi, mode="gaussian", sigma_scale=0.125, device=device)


def window_inference(
    model: Any, image: np.ndarray, dims: int, patch_xyz: list[int], device: str
) -> np.ndarray:
    """Softmax probabilities (C, z, y, x) of a normalised (z, y, x) image. 3D: patches of
    the volume; 2D: every axial slice, patched in-plane."""
    import torch
    from monai.inferers import sliding_window_inference

    roi = tuple(reversed(patch_xyz))
    tensor = torch.as_tensor(image, dtype=torch.float32, device=device)
    tensor = tensor[None, None] if dims == 3 else tensor[:, None]  # 2D: slices as a batch
    model = model.to(device).eval()
    with torch.inference_mode(), autocast(device):
        logits = sliding_window_inference(
            tensor, roi, window_batch(device, roi), model, overlap=OVERLAP, mode="gaussian",
            roi_weight_map=gaussian_weights(roi, device),
        )  # fmt: skip
        probs = torch.softmax(logits.float(), dim=1)
    probs = probs[0] if dims == 3 else probs.permute(1, 0, 2, 3)
    return probs.cpu().numpy()


def to_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 labels from (C, ...) probabilities, background first."""
    foreground = 1.0 - probs[0]
    labels = 1 + np.argmax(probs[1:], axis=0)
    return np.where(foreground >= threshold, labels, 0).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class Prediction:
    """Labels on the case's grid (SimpleITK), probabilities there (C, z, y, x) and notes."""

    labels: sitk.Image
    probabilities: np.ndarray
    names: dict[int, str]
    notes: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, mtime_ns: int) -> tuple[Any, dict[str, Any]]:
    """One load per checkpoint file and version per process (a worker segments many
    cases with one model)."""
    from fusion.seg.network import load_model

    return load_model(Path(path))


def model_from(path: Path) -> tuple[Any, dict[str, Any]]:
    path = Path(path)
    from fusion.seg.network import read_checkpoint

    if not path.is_file():
        read_checkpoint(path)  # raises the not-found message
    return _cached_model(str(path), path.stat().st_mtime_ns)


def predict_image(
    model: Any, meta: dict[str, Any], image: sitk.Image, device: str, threshold: float
) -> Prediction:
    """Segment one image with a loaded model and its checkpoint ``meta``."""
    spacing = meta["spacing"]
    prep = prepare(
        image,
        None,
        spacing,
        VariantSpec.model_validate(meta["variant"]),
        NormaliseSpec.model_validate(meta["normalise"]),
    )
    arch_dims = meta["architecture"]["dims"]
    probs = window_inference(model, prep.image, arch_dims, meta["patch_size"], device)
    notes = ()
    if prep.resampled:
        probs = onto(probs, image, prep.grid)
        probs /= np.clip(probs.sum(axis=0, keepdims=True), 1e-6, None)
        have = ", ".join(f"{s:.3g}" for s in image.GetSpacing())
        want = ", ".join(f"{s:.3g}" for s in spacing)
        notes = (
            f"spacing ({have}) mm differs from training ({want}) mm: resampled to the "
            "training grid for the network and back",
        )
    labels = sitk.GetImageFromArray(to_labels(probs, threshold))
    labels.CopyInformation(image)
    names = {int(k): v for k, v in meta["classes"].items()}
    return Prediction(labels, probs, names, notes)
