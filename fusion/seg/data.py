"""From a case's image (and reference) to the arrays a U-Net sees, and back.

Every image is resampled to the training grid (``segmentation.spacing``, default the
median spacing of the training cases) before a network sees it, and each prediction is
resampled back onto the case's own grid, so a scan with other slices than training is
segmented at the right scale and evaluated where its reference lives. A preprocessing
variant (none, gradient edge enhancement, curvature-flow denoising) runs on the native
image, before resampling and normalisation, exactly as at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from fusion.config import NormaliseSpec, VariantSpec


def apply_variant(image: sitk.Image, variant: VariantSpec) -> sitk.Image:
    """The image after the variant's filter (in HU, same grid)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    if variant.filter == "gradient":  # edge enhancement: the HU step over `strength` mm added
        edges = sitk.GradientMagnitudeRecursiveGaussian(image, sigma=float(min(image.GetSpacing())))
        return image + edges * variant.strength
    if variant.filter == "denoise":
        iterations = max(1, round(variant.strength))
        return sitk.CurvatureFlow(image, timeStep=0.0625, numberOfIterations=iterations)
    return image


def normalise(array: np.ndarray, spec: NormaliseSpec) -> np.ndarray:
    """CT window to 0..1, or z-score over the image (float32)."""
    array = array.astype(np.float32)
    if spec.mode == "window":
        low, high = spec.window
        return (np.clip(array, low, high) - low) / (high - low)
    return (array - array.mean()) / max(float(array.std()), 1e-6)


def same_spacing(a: Sequence[float], b: Sequence[float], tolerance: float = 1e-3) -> bool:
    return bool(np.allclose(a, b, atol=tolerance))


def resample(image: sitk.Image, spacing: Sequence[float], labels: bool = False) -> sitk.Image:
    """``image`` on a grid of ``spacing`` (x, y, z) covering the same extent."""
    size = [
        max(1, round(n * s / t))
        for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)
    ]
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        tuple(spacing),
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def onto(array: np.ndarray, grid: sitk.Image, source: sitk.Image) -> np.ndarray:
    """A (C, z, y, x) float array on ``source``'s grid, resampled onto ``grid`` (linear)."""
    out = []
    for channel in array:
        img = sitk.GetImageFromArray(channel.astype(np.float32))
        img.CopyInformation(source)
        out.append(
            sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear, 0.0))
        )
    return np.stack(out)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A case ready for the network: the normalised image on the training grid (z, y, x),
    its reference there (or None), and the grid it was resampled from and to."""

    image: np.ndarray
    label: np.ndarray | None
    native: sitk.Image
    grid: sitk.Image
    resampled: bool


def prepare(
    image: sitk.Image,
    reference: sitk.Image | None,
    spacing: Sequence[float],
    variant: VariantSpec,
    norm: NormaliseSpec,
) -> Prepared:
    """Filter, resample to ``spacing`` and normalise one case (and its reference)."""
    filtered = apply_variant(image, variant)
    moved = not same_spacing(image.GetSpacing(), spacing)
    grid = resample(filtered, spacing) if moved else filtered
    label = None
    if reference is not None:
        ref = resample(reference, spacing, labels=True) if moved else reference
        label = sitk.GetArrayFromImage(ref).astype(np.int64)
    return Prepared(normalise(sitk.GetArrayFromImage(grid), norm), label, image, grid, moved)
