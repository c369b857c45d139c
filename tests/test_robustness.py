"""Perturbed ROIs and the robustness of features to them: exact erosion in mm on an
anisotropic grid, each perturbation kind, the ICC table and a selector that looks at
the training cases only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fusion.errors import ConfigError
from fusion.learn.robust import RobustSelector, feature_robustness
from fusion.rois import make_generator
from fusion.rois.perturb import dilate_mm, erode_mm

SPACING_XYZ = (0.8, 0.8, 3.0)  # in-plane 0.8 mm, slices 3 mm apart


def _box(shape=(9, 30, 30), box=(slice(2, 7), slice(8, 22), slice(8, 22))) -> np.ndarray:  # noqa: ANN001
    mask = np.zeros(shape, bool)
    mask[box] = True
    return mask


def test_erosion_removes_exactly_the_voxels_within_d_mm_of_the_outside() -> None:
    mask = _box()
    spacing = SPACING_XYZ[::-1]
    eroded = erode_mm(mask, spacing, 2.0)
    # brute force: a voxel goes when an outside voxel centre lies within 2 mm of it
    inside, outside = np.argwhere(mask), np.argwhere(~np.pad(mask, 1)) - 1
    scale = np.asarray(spacing)
    removed = {tuple(p) for p in inside
               if (np.sqrt((((outside - p) * scale) ** 2).sum(axis=1)) <= 2.0).any()}  # fmt: skip
    expected = mask.copy()
    for p in removed:
        expected[p] = False
    assert np.array_equal(eroded, expected)
    # slices 3 mm apart: 2 mm removes none of them; in-plane (0.8 mm) two voxels go
    assert eroded[2, 10:20, 10:20].all() and not eroded[:, 9].any() and eroded[4, 10, 15]
    grown = dilate_mm(mask, spacing, 2.0)
    assert not grown[1, 10, 10] and dilate_mm(mask, spacing, 3.0)[1, 10, 10]  # next slice: 3 mm
    assert grown[4, 6, 10] and not grown[4, 5, 10]  # 2 voxels of 0.8 mm in-plane


@pytest.mark.parametrize("kind", ["erode", "dilate", "translate", "rotate", "contour"])
def test_each_perturbation_changes_the_roi_a_little_and_is_seeded(kind: str) -> None:
    rng = np.random.default_rng(0)
    mask = _box()
    image = sitk.GetImageFromArray(rng.normal(40, 10, mask.shape).astype(np.float32))
    image.SetSpacing(SPACING_XYZ)
    roi = sitk.GetImageFromArray(mask.astype(np.uint8))
    roi.CopyInformation(image)
    gen = make_generator("perturb", kind=kind, distance_mm=1.6, angle_deg=10, seed=3)
    out = sitk.GetArrayFromImage(gen(image, roi).image) > 0
    dice = 2 * (out & mask).sum() / (out.sum() + mask.sum())
    assert 0.6 < dice < 1.0, dice  # perturbed, not replaced
    again = sitk.GetArrayFromImage(gen(image, roi).image) > 0
    assert np.array_equal(out, again)
    with pytest.raises(ConfigError, match="kind must be one of"):
        make_generator("perturb", kind="shrink")


def _perturbed_table(rng: np.random.Generator, n: int = 30) -> pd.DataFrame:
    """Case ids c0..; feature 'stable' barely moves between ROIs, 'shaky' a lot."""
    rows = []
    for i in range(n):
        truth = rng.normal(0, 1, 2)
        for roi in ("whole", "erode1", "dilate1"):
            rows.append({"case_id": f"c{i}", "roi": roi,
                         "radiomics:stable": truth[0] + rng.normal(0, 0.05),
                         "radiomics:shaky": truth[1] + rng.normal(0, 2.0)})  # fmt: skip
    return pd.DataFrame(rows)


def test_robustness_table_and_selector_use_training_cases_only() -> None:
    table = _perturbed_table(np.random.default_rng(1))
    robust = feature_robustness(table, ["whole", "erode1", "dilate1"]).set_index("feature")
    assert robust.loc["stable", "icc"] > 0.95 and robust.loc["shaky", "icc"] < 0.5
    assert robust.loc["stable", "cases"] == 30
    whole = table[table.roi == "whole"].set_index("case_id")
    X = whole[["radiomics:stable", "radiomics:shaky"]].assign(**{"clinical:age": 60.0})
    train = [f"c{i}" for i in range(20)]
    selector = RobustSelector(table, ("whole", "erode1", "dilate1")).fit(X.loc[train], None)
    assert list(selector.transform(X).columns) == ["radiomics:stable", "clinical:age"]
    assert selector.robustness_.cases.iloc[0] == 20  # the training cases only
    # the test cases' perturbed features replaced by noise: the same ICCs, the same choice
    noisy = table.copy()
    test_rows = ~noisy.case_id.isin(train)
    noisy.loc[test_rows, ["radiomics:stable", "radiomics:shaky"]] = np.random.default_rng(
        9).normal(0, 50, (test_rows.sum(), 2))  # fmt: skip
    again = RobustSelector(noisy, ("whole", "erode1", "dilate1")).fit(X.loc[train], None)
    pd.testing.assert_frame_equal(again.robustness_, selector.robustness_)
    assert np.array_equal(again.support_, selector.support_)


def test_perturbed_rois_run_through_the_study_and_give_a_robustness_table(
    make_study,
    tmp_path,  # noqa: ANN001
) -> None:
    """Perturbed ROIs are generated ROIs: measured by the multi-ROI radiomics path, then
    compared with the drawn ROI feature by feature."""
    from fusion.config import load_study
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    rng = np.random.default_rng(5)
    (tmp_path / "cohort").mkdir()
    rows = []
    for i in range(6):
        z, y, x = np.mgrid[:10, :40, :40]
        radius = 6 + i
        inside = ((y - 20) ** 2 + (x - 20) ** 2 <= radius**2) & (z > 2) & (z < 8)
        hu = np.where(inside, 60 + 3 * i, 20) + rng.normal(0, 4, inside.shape)
        image = sitk.GetImageFromArray(hu.astype(np.float32))
        image.SetSpacing(SPACING_XYZ)
        roi = sitk.GetImageFromArray(inside.astype(np.uint8))
        roi.CopyInformation(image)
        sitk.WriteImage(image, str(tmp_path / "cohort" / f"i{i}.nrrd"))
        sitk.WriteImage(roi, str(tmp_path / "cohort" / f"r{i}.nrrd"))
        rows.append({"case_id": f"c{i}", "image": f"i{i}.nrrd", "roi": f"r{i}.nrrd",
                     "label": i % 2})  # fmt: skip
    (tmp_path / "cohort" / "params.yaml").write_text(
        "imageType: {Original: {}}\nfeatureClass: {firstorder:, shape:}\nsetting: {binWidth: 10}\n"
    )
    study = load_study(make_study(rows, {
        "radiomics": {"params": "cohort/params.yaml"},
        "rois": {"erode1": {"generator": "perturb",
                            "settings": {"kind": "erode", "distance_mm": 1}},
                 "contour1": {"generator": "perturb",
                              "settings": {"kind": "contour", "distance_mm": 2, "seed": 1}}},
    }))  # fmt: skip
    run_study(study, RunOptions(reports=tmp_path / "r", cache=None, jobs=1), only="radiomics")
    features = pd.read_csv(tmp_path / "r" / "unit" / "tables" / "radiomics_features.csv")
    assert set(features.roi) == {"whole", "erode1", "contour1"}
    table = feature_robustness(features, ["whole", "erode1", "contour1"]).set_index("feature")
    assert table.loc["original_shape_VoxelVolume", "cases"] == 6
    # the volume follows the radius through every perturbation; its ICC is high
    assert table.loc["original_shape_VoxelVolume", "icc"] > 0.8


@pytest.mark.parametrize("mm", [0.5, 1.0, 2.5, 4.0])
def test_erosion_and_dilation_in_the_bounding_box_equal_the_whole_image(mm: float) -> None:
    """Both run in the ROI's grown bounding box; the voxels are those of the distance
    transforms over the whole image, for blobs inside it and touching its border."""
    from scipy import ndimage

    from fusion.rois.perturb import distance_inside

    rng = np.random.default_rng(int(mm * 10))
    spacing = SPACING_XYZ[::-1]
    for _ in range(6):
        blob = ndimage.gaussian_filter(rng.normal(size=(9, 40, 40)), 2) > 0.15
        blob[:, :, : rng.integers(0, 12)] = False  # some clear of the border, some not
        if not blob.any():
            continue
        whole_erode = distance_inside(blob, spacing) > mm
        whole_dilate = ndimage.distance_transform_edt(~blob, sampling=spacing) <= mm
        assert np.array_equal(erode_mm(blob, spacing, mm), whole_erode)
        assert np.array_equal(dilate_mm(blob, spacing, mm), whole_dilate)
