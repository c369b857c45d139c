"""ROI generators: the peritumoral ring and the habitats (per case and cohort-level)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.errors import ConfigError
from fusion.rois import GENERATORS, make_generator
from fusion.rois.habitat import Habitats, fit_population, supervoxels

SPACING = (0.7, 0.9, 2.5)  # x, y, z in mm: anisotropic


def _grid(shape_zyx: tuple[int, int, int], spacing=SPACING) -> tuple[np.ndarray, ...]:  # noqa: ANN001
    """Voxel-centre coordinates in mm, centred on the volume (numpy z, y, x order)."""
    axes = [(np.arange(n) - (n - 1) / 2) * sp for n, sp in zip(shape_zyx, spacing[::-1],
                                                                  strict=True)]  # fmt: skip
    return np.meshgrid(*axes, indexing="ij")


def _image(array: np.ndarray, spacing=SPACING) -> sitk.Image:  # noqa: ANN001
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def _sphere(radius_mm: float, shape=(24, 64, 64)) -> tuple[sitk.Image, np.ndarray]:  # noqa: ANN001
    z, y, x = _grid(shape)
    r = np.sqrt(x**2 + y**2 + z**2)
    return _image((r <= radius_mm).astype(np.uint8)), r


def test_generators_are_registered_by_name() -> None:
    assert {"ring", "habitat"} <= set(GENERATORS)
    with pytest.raises(ConfigError, match="unknown ROI generator 'rnig'.*Did you mean 'ring'"):
        make_generator("rnig")
    with pytest.raises(ConfigError, match="ROI generator 'ring'"):
        make_generator("ring", thickness=3)


def test_ring_thickness_in_mm_on_an_anisotropic_grid() -> None:
    """A 3 mm shell around a 10 mm sphere, with 0.7 x 0.9 x 2.5 mm voxels: exactly the
    voxels outside the sphere whose centre lies within 3 mm of an ROI voxel centre
    (checked against a KD-tree in physical coordinates), 3 mm thick along every axis."""
    from scipy.spatial import cKDTree

    roi, r = _sphere(10.0, shape=(25, 65, 65))  # odd sizes: voxel centres on the axes
    hu = _image(np.zeros(sitk.GetArrayFromImage(roi).shape, np.float32))
    out = make_generator("ring", inner_mm=0, outer_mm=3)(hu, roi)
    ring = sitk.GetArrayFromImage(out.image) == 1
    assert out.names == {1: "ring"} and out.notes == ()
    assert not (ring & (sitk.GetArrayFromImage(roi) > 0)).any()  # outside the ROI only
    assert r[ring].min() > 10.0 - 1e-9
    z, y, x = _grid(ring.shape)
    points = np.column_stack([z.ravel(), y.ravel(), x.ravel()])
    inside = sitk.GetArrayFromImage(roi).ravel() > 0
    nearest, _ = cKDTree(points[inside]).query(points)
    expected = (~inside) & (nearest <= 3.0 + 1e-9)
    assert np.array_equal(ring.ravel(), expected)
    # thickness along each axis: the ring's extent beyond the sphere on the axis lines
    for axis_coords, sp in ((x, 0.7), (y, 0.9), (z, 2.5)):
        on_axis = ring & (np.abs(axis_coords) == r)
        assert r[on_axis].max() - 10.0 == pytest.approx(3.0, abs=sp)


def test_ring_hu_range_and_clipping_at_the_border_are_said() -> None:
    roi, r = _sphere(10.0, shape=(12, 40, 40))  # the volume ends 15 mm from the centre in z
    hu = np.where(r > 12, 1000.0, 40.0).astype(np.float32)  # "bone" beyond 12 mm
    out = make_generator("ring", outer_mm=6, hu_range=(-100, 200))(_image(hu), roi)
    ring = sitk.GetArrayFromImage(out.image) == 1
    assert ring.any() and r[ring].max() <= 12.0  # no bone in the ring
    assert any("clipped" in note for note in out.notes)


def _blob(seed: int = 0, shape=(16, 48, 48)) -> tuple[sitk.Image, sitk.Image]:  # noqa: ANN001
    """A 12 mm sphere whose core is bright and rim dark, with noise."""
    rng = np.random.default_rng(seed)
    z, y, x = _grid(shape)
    r = np.sqrt(x**2 + y**2 + z**2)
    hu = np.where(r <= 12, 80 - 3 * r, 20) + rng.normal(0, 3, shape)
    return _image(hu.astype(np.float32)), _image((r <= 12).astype(np.uint8))


def test_habitats_partition_the_roi_and_are_deterministic() -> None:
    image, roi = _blob()
    out = Habitats(k=3, seed=1)(image, roi)
    labels = sitk.GetArrayFromImage(out.image)
    inside = sitk.GetArrayFromImage(roi) == 1
    assert set(np.unique(labels[inside])) == {1, 2, 3}  # every ROI voxel in one habitat
    assert not labels[~inside].any()  # and no voxel outside
    assert out.names == {1: "habitat1", 2: "habitat2", 3: "habitat3"}
    hu = sitk.GetArrayFromImage(image)
    means = [hu[labels == h].mean() for h in (1, 2, 3)]
    assert means == sorted(means)  # ordered by mean intensity
    assert "habitat1 lies at the ROI boundary" in out.notes[0]  # the dark rim
    again = Habitats(k=3, seed=1)(image, roi)
    assert np.array_equal(sitk.GetArrayFromImage(again.image), labels)


def test_habitats_do_not_depend_on_the_order_of_the_voxels() -> None:
    """The same image stored flipped and transposed gives the same habitats, moved."""
    image, roi = _blob(seed=3)
    labels = sitk.GetArrayFromImage(Habitats(k=3, seed=0)(image, roi).image)
    hu, mask = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(roi)
    moved = (np.ascontiguousarray(a[::-1, :, ::-1].transpose(0, 2, 1)) for a in (hu, mask))
    image2, roi2 = (_image(a, (SPACING[1], SPACING[0], SPACING[2])) for a in moved)
    labels2 = sitk.GetArrayFromImage(Habitats(k=3, seed=0)(image2, roi2).image)
    assert np.array_equal(labels2, labels[::-1, :, ::-1].transpose(0, 2, 1))


def test_a_roi_too_small_for_k_habitats_is_said_and_left_whole() -> None:
    image, _ = _blob()
    tiny = np.zeros((16, 48, 48), np.uint8)
    tiny[8, 20:24, 20:24] = 1  # 16 voxels < 3 x 20
    out = Habitats(k=3, min_voxels=20)(image, _image(tiny))
    assert out.names == {} and not sitk.GetArrayFromImage(out.image).any()
    assert "fewer than k x min_voxels" in out.notes[0] and "whole ROI is kept" in out.notes[0]


def test_cohort_habitats_are_fitted_on_training_cases_only() -> None:
    """Perturbing the test cases' images changes neither the population clustering nor
    any training case's habitats."""
    cases = {f"c{i}": _blob(seed=i) for i in range(6)}
    train, test = ["c0", "c1", "c2", "c3"], ["c4", "c5"]

    def run(images: dict) -> tuple:  # noqa: ANN001
        steps = {cid: supervoxels(im, sitk.GetArrayFromImage(roi) == 1, 12, 3.0, seed=0)
                 for cid, (im, roi) in images.items()}  # fmt: skip
        population = fit_population([steps[c] for c in train], k=3, seed=0)
        maps = {cid: population.assign(steps[cid], sitk.GetArrayFromImage(roi) == 1, roi)
                for cid, (_, roi) in images.items()}  # fmt: skip
        return population, maps

    population, maps = run(cases)
    perturbed = dict(cases)
    for cid in test:
        image, roi = cases[cid]
        noisy = sitk.GetArrayFromImage(image) + np.random.default_rng(9).normal(0, 30, (16, 48, 48))
        perturbed[cid] = (_image(noisy.astype(np.float32)), roi)
    population2, maps2 = run(perturbed)
    assert np.array_equal(population.centroids, population2.centroids)
    for cid in train:
        assert np.array_equal(sitk.GetArrayFromImage(maps[cid].image),
                              sitk.GetArrayFromImage(maps2[cid].image))  # fmt: skip
    assert not np.array_equal(sitk.GetArrayFromImage(maps["c4"].image),
                              sitk.GetArrayFromImage(maps2["c4"].image))  # fmt: skip
    # labels mean the same in every case: habitat1 is the darkest everywhere
    for cid, (image, _) in cases.items():
        hu, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(maps[cid].image)
        present = [h for h in (1, 2, 3) if (labels == h).any()]
        means = [hu[labels == h].mean() for h in present]
        assert means == sorted(means)


def test_habitat_features_equal_pyradiomics_on_each_sub_region_alone() -> None:
    """Each habitat's features, with LoG and wavelet computed once for all three, equal
    PyRadiomics run on that habitat's mask by itself (to 1e-6)."""
    from tests.test_radiomics import FILTER_PARAMS, _compare_with_execute

    image, roi = _blob(seed=2)
    habitats = Habitats(k=3, seed=0)(image, roi).image
    _compare_with_execute(image, habitats, (1, 2, 3), FILTER_PARAMS)
