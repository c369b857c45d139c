"""The ``perturb`` generator: the drawn ROI as another reader might have drawn it, for
the robustness of features to the contour (IBSI and CLEAR ask for it; Zwanenburg et
al., Sci Rep 2019, describe the perturbations MIRP makes).

One perturbed ROI per generated ROI, so a study lists as many as it wants (each is
measured by the multi-ROI radiomics path, its features named
``radiomics:<roi>:<feature>``, and :mod:`fusion.stats.icc` compares them with the drawn
ROI's):

- ``erode`` / ``dilate`` by ``distance_mm``: erosion removes exactly the ROI voxels
  whose centre lies within that distance of the nearest voxel centre outside the ROI
  (the image border counts as outside); dilation adds the outside voxels within that
  distance of an ROI voxel. Euclidean distances in mm on the image's spacing, so an
  anisotropic grid is honoured.
- ``translate``: the ROI moved by ``distance_mm`` in a direction drawn with ``seed``
  (in the axial plane), rounded to whole voxels.
- ``rotate``: the ROI turned by ``angle_deg`` (sign drawn with ``seed``) about its
  centroid in the axial plane, nearest-neighbour.
- ``noise``: the drawn ROI unchanged, on the image with Gaussian noise of SD
  ``noise_hu`` added (seeded; :mod:`fusion.io.intensity`), MIRP's image perturbation.
- ``contour``: contour randomisation: the region within ``distance_mm`` of the ROI's
  edge is split into supervoxels (k-means on position and intensity, seeded), and each
  supervoxel is kept with probability equal to the share of it inside the ROI; the
  interior further than ``distance_mm`` from the edge is always kept.

A perturbation that leaves nothing (erosion of a thin ROI) gives an empty map and a
note; that case then has no features for it, and the robustness table says how many
cases each perturbation kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from fusion.rois.base import LabelMap, label_image, register

KINDS = ("erode", "dilate", "translate", "rotate", "contour", "noise")


def distance_inside(mask: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """For each ROI voxel, the distance in mm from its centre to the nearest voxel
    centre outside the ROI (beyond the image border counts as outside); 0 outside."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return ndimage.distance_transform_edt(padded, sampling=spacing_zyx)[inner]


def _around(mask: np.ndarray, spacing_zyx: tuple[float, ...], mm: float) -> tuple[slice, ...]:
    """The ROI's bounding box grown by ``mm`` and one voxel on every side (clipped to
    the image): the distance transforms below are exact inside it, because every voxel
    beyond it is outside the ROI and farther than the box's own outside layer (clamping
    a voxel to the box brings it nearer to every voxel in the box)."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    grow = [int(np.ceil(mm / s)) + 1 for s in spacing_zyx]
    return tuple(slice(max(b.start - g, 0), min(b.stop + g, n))
                 for b, g, n in zip(box, grow, mask.shape, strict=True))  # fmt: skip


def erode_mm(mask: np.ndarray, spacing_zyx: tuple[float, ...], mm: float) -> np.ndarray:
    """The ROI without the voxels within ``mm`` of its outside (computed in the ROI's
    bounding box, the same voxels as over the whole image)."""
    out = np.zeros_like(mask, dtype=bool)
    if mask.any():
        box = _around(mask, spacing_zyx, 0.0)
        out[box] = distance_inside(mask[box], spacing_zyx) > mm
    return out


def dilate_mm(mask: np.ndarray, spacing_zyx: tuple[float, ...], mm: float) -> np.ndarray:
    """The ROI and the outside voxels within ``mm`` of an ROI voxel."""
    if not mask.any():
        return mask.copy()
    box = _around(mask, spacing_zyx, mm)
    out = np.zeros_like(mask, dtype=bool)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx) <= mm
    return out


def _contour(hu: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, ...], mm: float,
             rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Supervoxels of the band within ``mm`` of the edge, each kept with probability
    equal to its overlap with the ROI."""
    from sklearn.cluster import KMeans

    band = dilate_mm(mask, spacing_zyx, mm) & ~erode_mm(mask, spacing_zyx, mm)
    keep = mask & ~band
    points = np.argwhere(band)
    if len(points) < 2:
        return mask.copy()
    coords = points * np.asarray(spacing_zyx)
    values = hu[band].astype(float)
    scale = values.std() or 1.0
    features = np.column_stack([coords / max(mm, 1e-6), (values - values.mean()) / scale])
    n = max(2, min(len(points) // 8, 50))
    labels = KMeans(n, n_init=3, random_state=int(rng.integers(2**31))).fit_predict(features)
    inside = mask[band]
    out = keep.copy()
    for s in range(n):
        members = labels == s
        if members.any() and rng.random() < inside[members].mean():
            out[tuple(points[members].T)] = True
    return out


@register("perturb")
@dataclass(frozen=True, slots=True)
class Perturb:
    kind: str = "erode"
    distance_mm: float = 1.0
    angle_deg: float = 5.0
    noise_hu: float = 10.0
    seed: int = 0
    label: int = 1  # the ROI's label in the drawn mask
    name: str = "perturbed"

    needs_roi = True  # made from the drawn ROI

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"perturb: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.distance_mm < 0:
            raise ValueError("perturb: distance_mm must be >= 0")
        if self.noise_hu <= 0:
            raise ValueError("perturb: noise_hu must be > 0")

    def __call__(self, image: sitk.Image, roi: sitk.Image) -> LabelMap:
        mask = sitk.GetArrayFromImage(roi) == self.label
        spacing = roi.GetSpacing()[::-1]
        rng = np.random.default_rng(self.seed)
        if self.kind == "erode":
            out = erode_mm(mask, spacing, self.distance_mm)
        elif self.kind == "dilate":
            out = dilate_mm(mask, spacing, self.distance_mm)
        elif self.kind == "translate":
            angle = rng.uniform(0, 2 * np.pi)
            shift = [0.0, self.distance_mm * np.sin(angle) / spacing[1],
                     self.distance_mm * np.cos(angle) / spacing[2]][-mask.ndim :]  # fmt: skip
            out = ndimage.shift(mask.astype(np.uint8), np.round(shift), order=0) > 0
        elif self.kind == "rotate":
            out = _rotate(mask, self.angle_deg * rng.choice([-1, 1]))
        elif self.kind == "contour":
            hu = sitk.GetArrayFromImage(image)
            out = _contour(hu, mask, spacing, self.distance_mm, rng)
        else:
            op = {"op": "noise", "sd_hu": self.noise_hu, "seed": self.seed}
            return LabelMap(label_image(mask, roi), {1: self.name}, (), op)
        notes = () if out.any() else (f"{self.name}: the perturbed ROI is empty",)
        return LabelMap(label_image(out, roi), {1: self.name}, notes)


def _rotate(mask: np.ndarray, degrees: float) -> np.ndarray:
    """Each axial slice turned about the ROI's centroid (nearest neighbour)."""
    if not mask.any():
        return mask.copy()
    centre = np.array(ndimage.center_of_mass(mask))[-2:]
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    offset = centre - rotation @ centre
    planes = mask if mask.ndim == 3 else mask[None]
    out = np.stack([ndimage.affine_transform(p.astype(np.uint8), rotation, offset, order=0)
                    for p in planes]) > 0  # fmt: skip
    return out if mask.ndim == 3 else out[0]
