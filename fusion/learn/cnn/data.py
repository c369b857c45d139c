"""Radiographs as network inputs: square, fixed-size, augmented only when training.

Each image is padded to a square with black (so anatomy keeps its proportions) and
resized to ``image_size`` once, when the cohort is loaded; its lesion mask goes through
the same steps, so Grad-CAM maps and masks share one grid. Training batches are
augmented on the fly by one affine warp per image (rotation, zoom, horizontal flip) and
a contrast change, all drawn from a ``torch.Generator`` the training loop seeds per
epoch: an epoch's batches depend on the seed and the epoch alone. Evaluation never
augments: :func:`as_input` is the only path from images to a network, and only the
training loop passes it a generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.cohort import Case
from fusion.config import ImageAugmentSpec
from fusion.io.radiograph import read_mask, read_radiograph

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class Images:
    """Images as an (n, size, size) float32 stack in [0, 1] (or (n, 3, size, size): CT
    crops), with labels and masks (all-False where an image has none; ``has_mask`` says
    which have one). ``case_ids`` name each image's case."""

    case_ids: list[str]
    pixels: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray

    def subset(self, ids: list[str]) -> Images:
        index = {c: i for i, c in enumerate(self.case_ids)}
        rows = [index[c] for c in ids]
        return Images(list(ids), self.pixels[rows], self.labels[rows], self.masks[rows],
                      self.has_mask[rows])  # fmt: skip


def square(array: np.ndarray, size: int, *, mask: bool = False) -> np.ndarray:
    """Pad to a square (centred, black) and resize to ``size`` x ``size`` (area-averaged
    when shrinking; a mask is resized as a fraction and thresholded at one half)."""
    import torch
    import torch.nn.functional as F

    rows, cols = array.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    padded = np.zeros((side, side), dtype=np.float32)
    padded[top : top + rows, left : left + cols] = array
    tensor = torch.from_numpy(padded)[None, None]
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=side > size,
                        align_corners=False)[0, 0].numpy()  # fmt: skip
    return out >= 0.5 if mask else np.clip(out, 0.0, 1.0)


def load_case(case: Case, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One case's square image and mask (None without one); raises FusionError."""
    image = read_radiograph(case.image)
    mask = None
    if case.roi is not None:
        mask = square(read_mask(case.roi, image.pixels.shape).astype(np.float32), size, mask=True)
    return square(image.pixels, size), mask


def load_images(cases: list[Case], size: int) -> Images:
    """Every case's square image (cases come from QC, so each decodes)."""
    pixels = np.zeros((len(cases), size, size), dtype=np.float32)
    masks = np.zeros((len(cases), size, size), dtype=bool)
    has = np.zeros(len(cases), dtype=bool)
    for i, case in enumerate(cases):
        image, mask = load_case(case, size)
        pixels[i] = image
        if mask is not None:
            masks[i], has[i] = mask, True
    labels = np.array([c.label for c in cases], dtype=np.float32)
    return Images([c.case_id for c in cases], pixels, labels, masks, has)


def augment(batch, spec: ImageAugmentSpec, generator):  # noqa: ANN001, ANN201 - tensors
    """A random rotation, zoom and horizontal flip per image (one bilinear warp, black
    outside) and a contrast factor around each image's mean; (n, 1, h, w) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]

    def uniform(half_width: float):  # noqa: ANN202
        return (torch.rand(n, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(spec.rotate_deg))
    zoom = 1 + uniform(spec.scale)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if spec.flip \
        else torch.ones(n)  # fmt: skip
    contrast = 1 + uniform(spec.contrast)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros(n)], 1),
                         torch.stack([sin * flip, cos, torch.zeros(n)], 1)], 1)  # fmt: skip
    grid = F.affine_grid(theta.to(batch), list(batch.shape), align_corners=False)
    warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # fmt: skip
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    return ((warped - mean) * contrast.to(batch).view(n, 1, 1, 1) + mean).clamp(0, 1)


def as_input(
    pixels: Any, device: str, augmentation: ImageAugmentSpec | None = None, generator=None
):  # noqa: ANN001, ANN201 - a torch tensor
    """(n, size, size) grey or (n, 3, size, size) (CT crops in three windows) in [0, 1],
    a NumPy array or a tensor -> the network's (n, 3, size, size) ImageNet-normalised
    input on ``device`` (where the warp runs too); augmented only when the training
    loop passes its generator."""
    import torch

    if isinstance(pixels, torch.Tensor):  # the training loop's images, already in place
        batch = pixels.to(device, non_blocking=True).float()
    else:
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device)
    batch = batch[:, None] if batch.ndim == 3 else batch
    if augmentation is not None and generator is not None:
        batch = augment(batch, augmentation, generator)
    batch = batch.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std
