"""ROI generators: the peritumoral ring and the habitats (per case and cohort-level)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

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
    assert out.notes[0].endswith("(habitat1 outermost)")  # the dark rim
    again = Habitats(k=3, seed=1)(image, roi)
    assert np.array_equal(sitk.GetArrayFromImage(again.image), labels)


def test_habitats_by_position_name_the_boundary_one_in_each_case() -> None:
    """The dark rim is the outermost habitat: by position it is label 1, 'boundary'."""
    image, roi = _blob()
    by_intensity = sitk.GetArrayFromImage(Habitats(k=3, seed=1)(image, roi).image)
    out = Habitats(k=3, seed=1, order="position")(image, roi)
    assert out.names == {1: "boundary", 2: "intermediate", 3: "core"}
    labels = sitk.GetArrayFromImage(out.image)
    assert np.array_equal(labels == 1, by_intensity == 1)  # the rim: darkest and outermost
    listed = out.notes[0].split(": ", 1)[1].split(" (")[0].split(", ")
    assert [item.split()[0] for item in listed] == ["boundary", "intermediate", "core"]
    mm = [float(item.split()[1]) for item in listed]
    assert mm == sorted(mm) and mm[0] < mm[-1]
    with pytest.raises(ValueError, match="order must be"):
        Habitats(order="size")


def test_habitat_depth_is_in_mm_on_an_anisotropic_grid() -> None:
    from fusion.rois.habitat import depths, position_names

    inside = np.ones((5, 5, 5), dtype=bool)
    labels = np.ones((5, 5, 5), dtype=np.uint8)
    labels[2, 2, 2] = 2  # the centre: 3 voxels from the outside on every axis
    d = depths(labels, inside, (2.0, 1.0, 1.0))  # z slices 2 mm apart
    assert d[2] == pytest.approx(3.0)  # nearest outside along y or x: 3 x 1 mm
    shell = labels == 1
    expected = np.mean([min(2 * min(z + 1, 5 - z), min(y + 1, 5 - y), min(x + 1, 5 - x))
                        for z, y, x in zip(*np.nonzero(shell), strict=True)])  # fmt: skip
    assert d[1] == pytest.approx(expected)
    assert position_names(2) == ["boundary", "core"]
    assert position_names(4) == ["boundary", "intermediate1", "intermediate2", "core"]


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


def _spy_checked(real):  # noqa: ANN001, ANN202
    """_checked that fails if the label map would have to be read to count voxels."""

    def checked(path, value, min_voxels):  # noqa: ANN001, ANN202
        assert "counts" in value
        return real(path, value, min_voxels)

    return checked


def test_generated_rois_feed_radiomics_like_drawn_ones(make_study, tmp_path) -> None:
    """qc -> rois -> radiomics on a small cohort: every generated label map is written
    under reports/<study>/rois/, listed in rois.csv, and its ROIs become radiomics rows
    (whole, habitat1-3, cohort1-3, ring) whose features equal PyRadiomics on the written
    mask. A case too small to split keeps its whole ROI and ring, with a note."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from fusion.config import load_study
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions
    from tests.conftest import write_image

    rows = []
    for i in range(6):
        image, roi = _blob(seed=i)
        mask = sitk.GetArrayFromImage(roi)
        if i == 5:  # too small for 3 habitats of 20 voxels
            mask = np.zeros_like(mask)
            mask[8, 22:26, 22:26] = 1
        write_image(tmp_path / "cohort" / f"i{i}.nii.gz", sitk.GetArrayFromImage(image), SPACING)
        write_image(tmp_path / "cohort" / f"r{i}.nii.gz", mask, SPACING)
        rows.append({"case_id": f"c{i}", "image": f"i{i}.nii.gz", "roi": f"r{i}.nii.gz",
                     "label": i % 2, "split": "test" if i >= 4 else "train"})  # fmt: skip
    (tmp_path / "cohort" / "params.yaml").write_text(
        "imageType: {Original: {}}\nfeatureClass: {firstorder:}\nsetting: {binWidth: 10}\n"
    )
    study = load_study(make_study(rows, {
        "qc": {"min_roi_voxels": 10, "roi_at_border": "ignore"},
        "radiomics": {"params": "cohort/params.yaml"},
        "rois": {
            "habitat": {"generator": "habitat", "settings": {"k": 3, "min_voxels": 20}},
            "cohort": {"generator": "habitat", "mode": "cohort", "supervoxels": 8,
                       "settings": {"k": 3, "min_voxels": 20}},
            "ring": {"generator": "ring", "settings": {"outer_mm": 3}},
        },
    }))  # fmt: skip
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", jobs=2)
    assert run_study(study, options, only="rois").stages == ["rois"]
    assert run_study(study, options, only="radiomics").stages == ["radiomics"]
    import fusion.rois.stage as stage  # a warm run reads no case: all from the cache

    def no_reading(*args):  # noqa: ANN002, ANN202
        raise AssertionError("a warm rois stage read a case")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage, "_read_case", no_reading)
        patch.setattr(stage, "_checked", _spy_checked(stage._checked))
        assert run_study(study, options, only="rois").stages == ["rois"]
    folder = tmp_path / "reports" / "unit"
    assert (folder / "rois" / "habitat" / "c0.nii.gz").is_file()
    rois = pd.read_csv(folder / "tables" / "rois.csv", dtype=str).fillna("")
    small = rois[(rois.case_id == "c5") & (rois.roi == "habitat")].iloc[0]
    assert "fewer than k x min_voxels" in small.notes and small.kept == ""
    features = pd.read_csv(folder / "tables" / "radiomics_features.csv")
    assert set(features[features.case_id == "c0"].roi) == {
        "whole", "habitat1", "habitat2", "habitat3", "cohort1", "cohort2", "cohort3", "ring"
    }  # fmt: skip
    assert set(features[features.case_id == "c5"].roi) == {"whole", "ring"}
    from fusion.stages import STAGES

    assert set(STAGES["rois"].settings(study, "cpu")) == {"habitat", "cohort", "ring"}
    row = features[(features.case_id == "c1") & (features.roi == "habitat2")].iloc[0]
    params = yaml.safe_load((tmp_path / "cohort" / "params.yaml").read_text())
    direct = RadiomicsFeatureExtractor(params).execute(
        str(tmp_path / "cohort" / "i1.nii.gz"),
        str(folder / "rois" / "habitat" / "c1.nii.gz"),
        label=2,
    )
    assert row["radiomics:original_firstorder_Mean"] == pytest.approx(
        float(direct["original_firstorder_Mean"]), rel=1e-9
    )


def test_k_is_chosen_by_silhouette_on_the_training_supervoxels() -> None:
    from fusion.rois.habitat import Supervoxels, choose_k

    rng = np.random.default_rng(0)
    centres = np.array([[20.0, 20, 2], [50, 50, 8], [80, 80, 3]])
    cases = [Supervoxels(np.zeros(1, int), centres[rng.integers(0, 3, 30)]
                         + rng.normal(0, 1, (30, 3))) for _ in range(4)]  # fmt: skip
    assert choose_k(cases, [2, 3, 4, 5], seed=0) == 3


def test_generated_masks_fit_a_float64_grid(make_study, tmp_path) -> None:
    """A generated .nii.gz stores geometry in float32; on an NRRD image whose origin
    float32 cannot hold, its features are still extracted (the image's grid is restored)."""
    from fusion.config import load_study
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    image, roi = _blob(seed=4)
    for im in (image, roi):
        im.SetOrigin((-12.123456789012, 7.000000123456, 3.3333333333333))
    (tmp_path / "cohort").mkdir()
    sitk.WriteImage(image, str(tmp_path / "cohort" / "i.nrrd"))
    sitk.WriteImage(roi, str(tmp_path / "cohort" / "r.nrrd"))
    (tmp_path / "cohort" / "params.yaml").write_text(
        "imageType: {Original: {}}\nfeatureClass: {firstorder:}\nsetting: {binWidth: 10}\n"
    )
    row = {"case_id": "a", "image": "i.nrrd", "roi": "r.nrrd", "label": 0}
    study = load_study(make_study([row], {
        "qc": {"roi_at_border": "ignore"}, "radiomics": {"params": "cohort/params.yaml"},
        "rois": {"ring": {"generator": "ring", "settings": {"outer_mm": 2}}},
    }))  # fmt: skip
    run_study(study, RunOptions(reports=tmp_path / "r", cache=None, jobs=1), only="radiomics")
    features = pd.read_csv(tmp_path / "r" / "unit" / "tables" / "radiomics_features.csv")
    assert set(features.roi) == {"whole", "ring"}


def test_report_shows_only_the_notes_that_need_attention() -> None:
    from fusion.report.html import _roi_notes

    rois = pd.DataFrame({
        "case_id": ["a", "b", "c"], "roi": "habitat", "labels": "", "kept": "",
        "notes": ["mean depth from the ROI boundary: habitat1 1.0 mm, habitat2 2.5 mm "
                  "(habitat1 outermost)",
                  "mean depth from the ROI boundary: habitat1 3.0 mm, habitat2 1.5 mm "
                  "(habitat2 outermost) | habitat3: 4 voxels, fewer than "
                  "qc.min_roi_voxels = 20; left out", None],
        "error": [None, None, "ValueError: boom"],
    })  # fmt: skip
    shown, boundary = _roi_notes(rois)
    assert boundary == "habitat1 in 1 cases, habitat2 in 1 cases"
    assert shown.case_id.tolist() == ["b", "c"]
    assert shown.notes.tolist()[0].startswith("habitat3: 4 voxels")
