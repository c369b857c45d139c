"""Lung outline, involvement percentages and agreement statistics (seed 003)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.demo_chest import LUNG_PIXEL_MM, LUNG_SLICE_MM, render_lung_case
from fusion.errors import FusionError
from fusion.report.check import structure_problems
from fusion.rois import make_generator
from fusion.seg.involvement import involvement, zones
from fusion.stats.agreement import bland_altman, icc_agreement


def _image(array: np.ndarray, spacing=(LUNG_PIXEL_MM, LUNG_PIXEL_MM, LUNG_SLICE_MM)):  # noqa: ANN001, ANN202
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(
    ("severity", "offset", "table"),
    [(0.3, 0.0, True), (0.95, 0.0, True), (0.5, 28.0, True), (0.2, -25.0, False)],
    ids=["typical", "lung-full-of-disease", "off-centre-on-table", "off-centre-no-table"],
)
def test_lung_outline_matches_the_truth(severity, offset, table) -> None:  # noqa: ANN001
    volume, lungs, _ = render_lung_case(7, 3, severity, offset, table)
    out = make_generator("lung")(_image(volume), None)
    labels = sitk.GetArrayFromImage(out.image)
    assert out.names == {1: "right_lung", 2: "left_lung"}
    for k in (1, 2):  # right lung at negative x (LPS): label 1
        assert _dice(labels == k, lungs == k) >= 0.97, k


def test_a_lung_full_of_dense_ggo_is_still_lung() -> None:
    volume, lungs, _ = render_lung_case(1, 5, 0.0)
    dense = volume.copy()
    dense[lungs > 0] = -350  # hazy, dense GGO everywhere, just inside the air range
    labels = sitk.GetArrayFromImage(make_generator("lung")(_image(dense), None).image)
    assert _dice(labels > 0, lungs > 0) >= 0.97


def test_no_lungs_in_the_field_of_view_is_an_error_not_zero_percent() -> None:
    z, y, x = np.mgrid[:20, :64, :64]
    head = np.full((20, 64, 64), -1000.0)
    head[(y - 32) ** 2 + (x - 32) ** 2 < 26**2] = 1000  # skull
    head[(y - 32) ** 2 + (x - 32) ** 2 < 23**2] = 35  # brain: no air inside the body
    with pytest.raises(FusionError, match="no lung in the field of view"):
        make_generator("lung")(_image(head.astype(np.int16), (1.0, 1.0, 5.0)), None)


def test_an_image_without_hu_values_is_refused_with_the_reason() -> None:
    mri = np.random.default_rng(0).uniform(0, 800, (10, 32, 32)).astype(np.float32)
    with pytest.raises(FusionError, match="not a CT in HU"):
        make_generator("lung")(_image(mri), None)


def test_involvement_equals_the_analytic_value_on_anisotropic_voxels() -> None:
    lungs = np.zeros((30, 20, 40), np.uint8)
    lungs[:, :, :20] = 1  # right lung: 30 x 20 x 20 voxels
    lungs[:, :, 20:] = 2
    patterns = np.zeros_like(lungs)
    patterns[:6, :, :20] = 1  # GGO: the lowest 6 of 30 slices of the right lung
    patterns[:, :5, 20:] = 2  # reticulation: a quarter of the left lung's rows
    patterns[29, 0, 0] = 2  # one voxel more
    spacing = (2.5, 0.7, 0.7)  # z, y, x in mm
    rows = involvement(patterns, lungs, spacing, {1: "ggo", 2: "reticulation"},
                       {1: "right_lung", 2: "left_lung"})  # fmt: skip
    got = {(r["region"], r["pattern"]): r["percent"] for r in rows}
    total = 30 * 20 * 40
    assert got[("both lungs", "ggo")] == pytest.approx(100 * 6 * 20 * 20 / total, abs=0.1)
    assert got[("both lungs", "reticulation")] == pytest.approx(100 * (30 * 5 * 20 + 1) / total,
                                                               abs=0.1)  # fmt: skip
    assert got[("right_lung", "ggo")] == pytest.approx(20.0, abs=0.1)
    assert got[("left_lung", "reticulation")] == pytest.approx(25.0, abs=0.1)
    assert got[("both lungs", "combined")] == pytest.approx(
        got[("both lungs", "ggo")] + got[("both lungs", "reticulation")], abs=1e-9
    )
    # zones are thirds of the height in mm: 10 slices each; GGO fills 6 of the lower 10
    assert got[("lower", "ggo")] == pytest.approx(100 * 6 * 20 * 20 / (10 * 20 * 40), abs=0.1)
    assert got[("upper", "ggo")] == 0
    lung_ml = {r["region"]: r["lung_ml"] for r in rows}
    assert lung_ml["both lungs"] == pytest.approx(total * 2.5 * 0.49 / 1000)


def test_zones_split_the_height_in_mm_not_in_slices() -> None:
    lung = np.zeros((9, 4, 4), bool)
    lung[:, 1:3, 1:3] = True
    parts = zones(lung, (3.0, 1.0, 1.0))
    assert [int(parts[z].any(axis=(1, 2)).sum()) for z in ("upper", "middle", "lower")] == [3, 3, 3]
    assert parts["upper"][-1].any() and parts["lower"][0].any()  # LPS: the top is the last z


def test_icc_and_bland_altman_against_published_values() -> None:
    # Shrout and Fleiss (1979), table 2: 6 targets x 4 judges; ICC(2,1) = 0.29, with the
    # F = 11.03 of the targets and the CI 0.02 to 0.76 that pingouin's documentation lists
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    icc = icc_agreement(ratings)
    assert icc.icc == pytest.approx(0.2898, abs=1e-4)
    assert icc.f == pytest.approx(11.027, abs=1e-3)
    assert (icc.ci_low, icc.ci_high) == pytest.approx((0.019, 0.761), abs=1e-3)
    ba = bland_altman([11, 12, 15, 9], [10, 10, 12, 10])  # differences 1, 2, 3, -1
    assert ba.bias == pytest.approx(1.25)
    assert ba.sd == pytest.approx(np.std([1, 2, 3, -1], ddof=1))
    assert ba.loa_high - ba.bias == pytest.approx(1.959964 * ba.sd, rel=1e-6)


@pytest.mark.slow
def test_lung_involvement_study_end_to_end(tmp_path) -> None:
    """Eight synthetic patients (two held out), a tiny 2D U-Net: every table and the
    report section."""
    import pandas as pd
    import yaml

    from fusion.config import load_study
    from fusion.demo_chest import generate_lung_cohort
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    generate_lung_cohort(tmp_path / "data", n=8, seed=2, jobs=1)
    root = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "pipelines" / "demo_lung_involvement.yaml").read_text())
    spec["cohort"]["manifest"] = str(tmp_path / "data" / "manifest.csv")
    spec["segmentation"].update(network={"dims": 2, "channels": [4, 8], "strides": [2]},
                                max_epochs=2, tuning_fraction=0.25)  # fmt: skip
    spec["evaluation"]["bootstrap"] = 50
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "study.yaml")
    study._source = tmp_path / "study.yaml"
    result = run_study(study, RunOptions(reports=tmp_path / "r", cache=tmp_path / "c", jobs=1))
    assert result.stages == ["qc", "splits", "segmentation", "rois", "involvement", "report"]
    tables = tmp_path / "r" / study.name / "tables"
    outline = pd.read_csv(tables / "lung_outline.csv")
    assert len(outline) == 16 and outline.dice.min() >= 0.97  # every case, both lungs
    wide = pd.read_csv(tables / "involvement.csv")
    truth = pd.read_csv(tmp_path / "data" / "truth.csv").set_index("case_id")
    ref = wide[(wide.region == "both lungs") & (wide.pattern == "ggo")].set_index("case_id")
    # the reference percentages use the automatic outline: within a point of the truth
    assert (ref.reference - truth.ggo_pct[ref.index]).abs().max() < 1.0
    assert set(wide.set) <= {"tuning", "test"}
    agreement = pd.read_csv(tables / "involvement_agreement.csv")
    assert {"combined", "ggo", "reticulation"} <= set(agreement.pattern)
    cases = pd.read_csv(tables / "seg_cases.csv")
    assert "all classes" in set(cases["class"])
    html = (tmp_path / "r" / study.name / "index.html").read_text()
    assert structure_problems(html) == []  # no empty section, placeholder, blank figure
    assert "Lung involvement" in html and "Lesion-wise detection" not in html


@pytest.mark.slow
def test_lung_outline_on_a_real_chest_ct() -> None:
    """PyRadiomics' lung1 (512 x 512 x 48, 0.57 x 0.57 x 5 mm): no reference lungs, so
    plausible volumes, the right lung on the patient's right, and the nodule inside."""
    from fusion.io.images import read_image
    from tests.conftest import needs_shared

    folder = needs_shared("pyradiomics")
    image = read_image(folder / "lung1_image.nrrd")
    labels = sitk.GetArrayFromImage(make_generator("lung")(image, None).image)
    litres = {k: (labels == k).sum() * np.prod(image.GetSpacing()) / 1e6 for k in (1, 2)}
    assert 0.8 < litres[1] < 4 and 0.8 < litres[2] < 4  # 1.8 and 1.1 l (240 mm of chest)
    columns = {k: np.argwhere(labels == k)[:, 2].mean() for k in (1, 2)}
    assert columns[1] < columns[2]  # LPS: the patient's right has the smaller x
    nodule = sitk.Resample(sitk.ReadImage(str(folder / "lung1_label.nrrd")), image,
                           sitk.Transform(), sitk.sitkNearestNeighbor)  # fmt: skip
    assert (labels[sitk.GetArrayFromImage(nodule) > 0] > 0).mean() > 0.95
