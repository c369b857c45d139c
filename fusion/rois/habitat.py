"""Habitats: sub-regions of a ROI from voxel-wise intensity and local texture.

Each ROI voxel is described by its intensity and by the mean and standard deviation of
the intensities in a neighbourhood of ``neighbourhood_mm`` (a box of that half-width on
each axis, in voxels rounded from mm, so anisotropic spacing is honoured). Two modes, as
the habitat literature uses them:

- ``per_case``: k-means into ``k`` clusters within each ROI (features standardised
  within the case);
- ``cohort`` (two-step): each case's voxels are first grouped into ``supervoxels``
  (k-means within the case), then one population k-means of the supervoxels'
  mean features is fitted on the **training cases only** (:func:`fit_population`) and
  applied unchanged to every case (:meth:`Population.assign`), so no test image and no
  label shapes the habitat definition.

Labels mean the same sub-region in every case, in one of two orders (``order``):

- ``intensity`` (default): by the cluster's mean intensity, ascending (``habitat1`` is
  the darkest); which one lies at the boundary varies from case to case, and each case's
  notes say which;
- ``position``: by depth, the mean distance in mm of a cluster's voxels from the outside
  of the ROI (:func:`depths`, on the image's spacing), ascending: ``boundary`` (the
  outermost), ``intermediate`` (``intermediate1``, ``intermediate2``... for k > 3) and
  ``core`` (the innermost). This is the order of habitat papers that model a boundary
  sub-region (the hematoma seed's ROIsub3): the boundary habitat is found per case, so
  a model of ``<roi>_boundary`` is always of the outermost one.

Everything is seeded, and k-means sees the feature rows sorted by value, so the result
does not depend on the order of the voxels (a flipped image gives the flipped habitats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from fusion.rois.base import LabelMap, label_image, register

FEATURES = ("intensity", "local_mean", "local_sd")
Order = Literal["intensity", "position"]


def voxel_features(image: sitk.Image, inside: np.ndarray, neighbourhood_mm: float) -> np.ndarray:
    """(voxels in raster order, 3): intensity, local mean and local SD."""
    hu = sitk.GetArrayFromImage(image).astype(np.float64)
    spacing_zyx = image.GetSpacing()[::-1]
    size = [2 * max(0, int(round(neighbourhood_mm / sp))) + 1 for sp in spacing_zyx]
    mean = ndimage.uniform_filter(hu, size=size, mode="nearest")
    square = ndimage.uniform_filter(hu**2, size=size, mode="nearest")
    sd = np.sqrt(np.clip(square - mean**2, 0, None))
    return np.column_stack([hu[inside], mean[inside], sd[inside]])


def _standardise(x: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (x - centre) / np.where(scale > 0, scale, 1.0)


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means on the rows sorted by value, so that the partition depends on the
    set of feature rows only, not on the order the voxels were listed in."""
    from sklearn.cluster import KMeans

    order = np.lexsort(x.T[::-1])
    model = KMeans(k, n_init=10, random_state=seed).fit(x[order])
    labels = np.empty(len(x), dtype=int)
    labels[order] = model.labels_
    return labels, model.cluster_centers_


def _by_intensity(assignment: np.ndarray, intensity: np.ndarray, k: int) -> np.ndarray:
    """Relabel clusters 1..k in ascending order of their mean intensity."""
    means = [intensity[assignment == c].mean() if (assignment == c).any() else np.inf
             for c in range(k)]  # fmt: skip
    rank = np.empty(k, dtype=int)
    rank[np.argsort(means, kind="stable")] = np.arange(1, k + 1)
    return rank[assignment]


def depths(
    labels: np.ndarray, inside: np.ndarray, spacing_zyx: tuple[float, ...]
) -> dict[int, float]:
    """Per habitat present: the mean distance (mm) of its voxels from the nearest voxel
    outside the ROI (a voxel on the ROI's edge is one voxel spacing deep)."""
    depth = ndimage.distance_transform_edt(np.pad(inside, 1), sampling=spacing_zyx)
    depth = depth[tuple(slice(1, -1) for _ in range(inside.ndim))]
    return {int(h): float(depth[labels == h].mean()) for h in np.unique(labels[inside])}


def position_names(n: int) -> list[str]:
    """The names of ``n`` habitats ordered from the boundary inwards."""
    if n == 1:
        return ["boundary"]
    middle = ["intermediate"] if n == 3 else [f"intermediate{i}" for i in range(1, n - 1)]
    return ["boundary", *middle, "core"]


def unsplit(roi: sitk.Image, note: str) -> LabelMap:
    """No sub-regions for this case (the caller keeps the whole ROI), and why."""
    return LabelMap(label_image(np.zeros(sitk.GetArrayViewFromImage(roi).shape), roi), {},
                    (note,))  # fmt: skip


def too_small(inside: np.ndarray, k: int, min_voxels: int) -> str | None:
    """The note for a ROI with too few voxels for ``k`` habitats, or None."""
    n = int(inside.sum())
    if n < k * min_voxels:
        return (
            f"habitats: the ROI has {n} voxels, fewer than k x min_voxels = {k} x "
            f"{min_voxels}; no sub-regions for this case (the whole ROI is kept)"
        )
    return None


def _result(labels: np.ndarray, inside: np.ndarray, roi: sitk.Image, k: int,
            order: Order) -> LabelMap:  # fmt: skip
    """The label map of intensity-ordered ``labels`` (1..k), in ``order``, with a note
    giving each habitat's depth."""
    volume = np.zeros(inside.shape, dtype=np.uint8)
    volume[inside] = labels
    depth = depths(volume, inside, roi.GetSpacing()[::-1])
    if order == "intensity":
        names = {h: f"habitat{h}" for h in range(1, k + 1)}
    else:  # relabel 1..n from the boundary inwards
        outward = sorted(depth, key=lambda h: (depth[h], h))
        relabel = np.zeros(k + 1, dtype=np.uint8)
        relabel[outward] = np.arange(1, len(outward) + 1)
        volume = relabel[volume]
        depth = {int(relabel[h]): d for h, d in depth.items()}
        names = dict(enumerate(position_names(len(outward)), start=1))
    outermost = names[min(depth, key=lambda h: (depth[h], h))]
    note = (
        "mean depth from the ROI boundary: "
        + ", ".join(f"{names[h]} {depth[h]:.1f} mm" for h in sorted(depth))
        + f" ({outermost} outermost)"
    )
    return LabelMap(label_image(volume, roi), names, (note,))


@register("habitat")
@dataclass(frozen=True, slots=True)
class Habitats:
    """Per-case habitats (k-means within each ROI)."""

    needs_roi = True  # made from the drawn ROI
    k: int = 3
    neighbourhood_mm: float = 3.0
    min_voxels: int = 20
    seed: int = 0
    label: int = 1
    name: str = "habitat"
    order: Order = "intensity"

    def __post_init__(self) -> None:
        if self.order not in ("intensity", "position"):
            raise ValueError(f"order must be 'intensity' or 'position', not {self.order!r}")

    def __call__(self, image: sitk.Image, roi: sitk.Image) -> LabelMap:
        inside = sitk.GetArrayFromImage(roi) == self.label
        if note := too_small(inside, self.k, self.min_voxels):
            return unsplit(roi, note)
        x = voxel_features(image, inside, self.neighbourhood_mm)
        z = _standardise(x, x.mean(axis=0), x.std(axis=0))
        assignment, _ = _kmeans(z, self.k, self.seed)
        labels = _by_intensity(assignment, x[:, 0], self.k)
        return _result(labels, inside, roi, self.k, self.order)


@dataclass(frozen=True, slots=True)
class Supervoxels:
    """One case's first step: each ROI voxel's supervoxel and the supervoxel means."""

    assignment: np.ndarray  # supervoxel of each ROI voxel (raster order)
    means: np.ndarray  # (supervoxels, 3) mean voxel features


def supervoxels(
    image: sitk.Image, inside: np.ndarray, n: int, neighbourhood_mm: float, seed: int
) -> Supervoxels:
    """Step 1, per case: k-means of the voxel features into ``n`` supervoxels."""
    x = voxel_features(image, inside, neighbourhood_mm)
    n = min(n, len(x))
    z = _standardise(x, x.mean(axis=0), x.std(axis=0))
    assignment, _ = _kmeans(z, n, seed)
    means = np.array([x[assignment == s].mean(axis=0) for s in range(n)])
    return Supervoxels(assignment, means)


@dataclass(frozen=True, slots=True)
class Population:
    """Step 2: the population clustering of supervoxel means, fitted on training cases."""

    centre: np.ndarray  # standardisation of supervoxel features (training cases)
    scale: np.ndarray
    centroids: np.ndarray  # (k, 3), ordered by mean intensity (habitat1 first)

    @property
    def k(self) -> int:
        return len(self.centroids)

    def assign(
        self, case: Supervoxels, inside: np.ndarray, roi: sitk.Image, order: Order = "intensity"
    ) -> LabelMap:
        """Label every voxel of a case (training or not) by its supervoxel's nearest
        population centroid; the population is not changed. With ``order: position``
        the case's own habitats are then named from its boundary inwards."""
        z = _standardise(case.means, self.centre, self.scale)
        nearest = np.argmin(((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=2), axis=1)
        return _result(nearest[case.assignment] + 1, inside, roi, self.k, order)


def fit_population(training: list[Supervoxels], k: int, seed: int) -> Population:
    """Fit the population k-means on the supervoxels of the training cases only."""
    means = np.vstack([case.means for case in training])
    centre, scale = means.mean(axis=0), means.std(axis=0)
    z = _standardise(means, centre, scale)
    assignment, centroids = _kmeans(z, k, seed)
    order = np.argsort([means[assignment == c, 0].mean() for c in range(k)], kind="stable")
    return Population(centre, np.where(scale > 0, scale, 1.0), centroids[order])


def choose_k(training: list[Supervoxels], ks: list[int], seed: int) -> int:
    """The k with the best silhouette of the population clustering (training cases)."""
    from sklearn.metrics import silhouette_score

    means = np.vstack([case.means for case in training])
    z = _standardise(means, means.mean(axis=0), means.std(axis=0))
    scores = {k: silhouette_score(z, _kmeans(z, k, seed)[0], random_state=seed) for k in ks}
    return max(scores, key=scores.get)
