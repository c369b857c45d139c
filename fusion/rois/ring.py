"""Peritumoral ring: the shell between ``inner_mm`` and ``outer_mm`` outside the ROI.

Distances are physical: SimpleITK's signed Maurer distance map with the image spacing,
so a 3 mm ring is 3 mm thick along a 5 mm slice axis as along a 0.8 mm in-plane axis.
A voxel belongs to the ring when the distance from its centre to the nearest ROI voxel
centre lies in (inner_mm, outer_mm]. ``hu_range`` keeps only ring voxels whose intensity
lies in the range (e.g. [-100, 200] HU drops air and bone). A ring that would reach
beyond the image is clipped at the border and a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from fusion.rois.base import LabelMap, label_image, register


@register("ring")
@dataclass(frozen=True, slots=True)
class Ring:
    needs_roi = True  # made from the drawn ROI

    inner_mm: float = 0.0
    outer_mm: float = 3.0
    hu_range: tuple[float, float] | None = None
    label: int = 1  # the ROI's label in the drawn mask
    name: str = "ring"

    def __post_init__(self) -> None:
        if not 0 <= self.inner_mm < self.outer_mm:
            raise ValueError(
                f"ring needs 0 <= inner_mm < outer_mm, got {self.inner_mm} and {self.outer_mm}"
            )

    def __call__(self, image: sitk.Image, roi: sitk.Image) -> LabelMap:
        inside = sitk.Cast(roi == self.label, sitk.sitkUInt8)
        distance = sitk.GetArrayFromImage(
            sitk.SignedMaurerDistanceMap(
                inside, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
            )
        )
        ring = (distance > self.inner_mm) & (distance <= self.outer_mm)
        notes = []
        if self.hu_range is not None:
            hu = sitk.GetArrayViewFromImage(image)
            ring &= (hu >= self.hu_range[0]) & (hu <= self.hu_range[1])
        reach = _border_clearance_mm(sitk.GetArrayViewFromImage(inside) > 0, roi.GetSpacing())
        if reach < self.outer_mm:
            notes.append(
                f"{self.name}: the ROI lies {reach:.1f} mm from the image border, so the "
                f"{self.inner_mm:g}-{self.outer_mm:g} mm ring is clipped there"
            )
        if not ring.any():
            notes.append(f"{self.name}: the ring is empty (no voxel in range)")
        return LabelMap(label_image(ring, roi), {1: self.name}, tuple(notes))


def _border_clearance_mm(inside: np.ndarray, spacing_xyz: tuple[float, ...]) -> float:
    """Smallest distance in mm from a ROI voxel centre to the outermost voxel centre."""
    if not inside.any():
        return float("inf")
    clearance = float("inf")
    for axis, sp in zip(range(inside.ndim), spacing_xyz[::-1], strict=True):
        present = np.flatnonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        first, last = present[0], inside.shape[axis] - 1 - present[-1]
        clearance = min(clearance, min(first, last) * sp)  # centre to outermost centre
    return clearance
