"""Negative-control ROIs (READII: Kazmierski et al., "Multi-institutional evaluation of
negative controls in radiomics", arXiv 2023): the same pipeline fed with features that
should carry no signal about the ROI's content. A model that does as well on them
learned volume, position or noise.

- ``shuffle``: the drawn ROI, with the image's voxels inside it shuffled (seeded;
  :mod:`fusion.io.intensity`): shape and histogram kept, texture destroyed.
- ``elsewhere``: a ROI of the drawn ROI's exact shape and volume, moved to a place drawn
  at random (seeded) among all the places where it lies wholly inside ``region`` and
  keeps ``margin_mm`` from the drawn ROI. ``region`` is the body (the largest connected
  part of the image above ``body_hu``, holes filled) and, with ``hu_range``, only its
  voxels in that range (an organ by its intensities, e.g. brain parenchyma), judged on
  the image smoothed by a Gaussian of ``smooth_mm`` (so image noise does not riddle the
  organ with holes a ROI cannot cover: a noisier scanner would lose more cases). Every
  admissible place is found at once by correlating the region with the ROI (an FFT),
  so the draw is uniform over them, not the first of a few random tries. A case with no
  admissible place gets an empty map and a note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, signal

from fusion.rois.base import LabelMap, label_image, register
from fusion.rois.perturb import dilate_mm


@register("shuffle")
@dataclass(frozen=True, slots=True)
class Shuffle:
    seed: int = 0
    label: int = 1  # the ROI's label in the drawn mask
    name: str = "shuffled"

    needs_roi = True

    def __call__(self, image: sitk.Image, roi: sitk.Image) -> LabelMap:
        mask = sitk.GetArrayFromImage(roi) == self.label
        return LabelMap(label_image(mask, roi), {1: self.name}, (),
                        {"op": "shuffle", "seed": self.seed})  # fmt: skip


@register("elsewhere")
@dataclass(frozen=True, slots=True)
class Elsewhere:
    body_hu: float = -300.0
    hu_range: tuple[float, float] | None = None
    margin_mm: float = 5.0
    smooth_mm: float = 2.0
    seed: int = 0
    label: int = 1
    name: str = "elsewhere"

    needs_roi = True

    def __post_init__(self) -> None:
        if self.margin_mm < 0 or self.smooth_mm < 0:
            raise ValueError("elsewhere: margin_mm and smooth_mm must be >= 0")
        if self.hu_range is not None and not self.hu_range[0] < self.hu_range[1]:
            raise ValueError(f"elsewhere: hu_range must be [low, high], got {self.hu_range}")

    def __call__(self, image: sitk.Image, roi: sitk.Image) -> LabelMap:
        mask = sitk.GetArrayFromImage(roi) == self.label
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = roi.GetSpacing()[::-1]
        allowed = region(hu, self.body_hu, self.hu_range, spacing, self.smooth_mm)
        allowed &= ~dilate_mm(mask, spacing, self.margin_mm)
        corner = draw_place(mask, allowed, np.random.default_rng(self.seed))
        if corner is None:
            note = f"{self.name}: no place for a copy of the ROI inside the region; no features"
            return LabelMap(label_image(np.zeros_like(mask), roi), {1: self.name}, (note,))
        return LabelMap(label_image(placed(mask, corner), roi), {1: self.name})


def region(
    hu: np.ndarray, body_hu: float, hu_range: tuple[float, float] | None,
    spacing_zyx: tuple[float, ...], smooth_mm: float = 2.0,
) -> np.ndarray:  # fmt: skip
    """The body (largest connected component above ``body_hu``, holes filled, per axial
    slice and in 3D), and within it the voxels in ``hu_range`` when given; both judged
    on ``hu`` smoothed by a Gaussian of SD ``smooth_mm`` (0: not smoothed)."""
    if smooth_mm > 0:
        hu = ndimage.gaussian_filter(hu, [smooth_mm / s for s in spacing_zyx])
    labels, n = ndimage.label(hu > body_hu)
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if body.ndim == 3:
        body = np.stack([ndimage.binary_fill_holes(plane) for plane in body])
    if hu_range is not None:
        body &= (hu >= hu_range[0]) & (hu <= hu_range[1])
    return body


def draw_place(mask: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple | None:
    """A corner for ``mask``'s bounding box drawn uniformly among those where every ROI
    voxel lands on ``allowed``; None when there is none."""
    if not mask.any():
        return None
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    shape = mask[box].astype(np.float32)
    # z[p] = sum_u allowed[p + u] * shape[u] for every corner p with the box inside
    hits = signal.correlate(allowed.astype(np.float32), shape, mode="valid", method="fft")
    corners = np.argwhere(np.rint(hits) >= shape.sum())
    if len(corners) == 0:
        return None
    return tuple(int(v) for v in corners[rng.integers(len(corners))])


def placed(mask: np.ndarray, corner: tuple[int, ...]) -> np.ndarray:
    """``mask``'s bounding-box content moved so the box starts at ``corner``."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    content = mask[box]
    out = np.zeros_like(mask)
    out[tuple(slice(c, c + s) for c, s in zip(corner, content.shape, strict=True))] = content
    return out
