"""Every QC check on a crafted bad case, with the numbers in the message; and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.cli import main
from fusion.cohort import load_cohort
from fusion.config import load_study
from fusion.io.qc import check_case, check_cohort
from tests.conftest import ct_volume, cube_roi, write_image


def _one(make_study, tmp_path, image, roi, study=None, roi_kwargs=None, image_kwargs=None):
    # the image is NRRD: ITK's NIfTI reader turns NaN into 0, NRRD keeps them
    folder = tmp_path / "cohort"
    write_image(folder / "img.nrrd", image, **(image_kwargs or {}))
    if roi is not None:
        write_image(folder / "roi.nii.gz", roi, **(roi_kwargs or {}))
    row = {"case_id": "x1", "image": "img.nrrd", "roi": "roi.nii.gz", "label": 1}
    s = load_study(make_study([row], study))
    return check_case(load_cohort(s)[0], s)


def codes(result) -> dict[str, str]:
    return {p.code: p.severity for p in result.problems}


def test_good_case_passes_with_volume(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), cube_roi())
    assert r.status == "ok" and r.problems == ()
    assert r.roi_voxels == 4 * 8 * 8
    assert r.roi_volume_ml == pytest.approx(256 * 2.0 / 1000)  # 1 x 1 x 2 mm voxels


@pytest.mark.parametrize(
    ("roi_kwargs", "expected"),
    [
        ({"spacing": (1.0, 1.0, 2.5)}, "spacing (mm) differs: image (1, 1, 2) vs ROI (1, 1, 2.5)"),
        ({"origin": (0.0, 3.0, 0.0)}, "origin (mm) differs: image (0, 0, 0) vs ROI (0, 3, 0)"),
        (
            {"direction": (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)},
            "direction differs: image (1, 0, 0, 0, 1, 0, 0, 0, 1) vs ROI (1, 0, 0, 0, -1, 0,",
        ),
    ],
)
def test_geometry_mismatch_shows_both_values(make_study, tmp_path, roi_kwargs, expected) -> None:
    r = _one(make_study, tmp_path, ct_volume(), cube_roi(), roi_kwargs=roi_kwargs)
    assert r.status == "fail" and codes(r) == {"geometry": "fail"}
    assert expected in str(r.problems[0])


def test_geometry_within_tolerance_passes_with_a_warning(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), cube_roi(), roi_kwargs={"origin": (0, 0, 0.005)})
    assert r.status == "warn" and codes(r) == {"roi_regridded": "warn"}
    assert "differs from the image's (origin (mm) by 0.005), within" in str(r.problems[0])
    # float32 rounding (a NIfTI header) is not worth a warning
    r = _one(make_study, tmp_path, ct_volume(), cube_roi(), roi_kwargs={"origin": (0, 0, 2e-6)})
    assert r.status == "ok"


def test_size_mismatch(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), cube_roi((10, 32, 32)))
    assert "size differs: image (32, 32, 12) vs ROI (32, 32, 10)" in str(r.problems[0])


def test_empty_roi(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), np.zeros((12, 32, 32), np.uint8))
    assert codes(r) == {"empty_roi": "fail"} and r.roi_voxels == 0


def test_label_absent_lists_labels_present(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), cube_roi(label=2) + 0)
    assert codes(r) == {"label_absent": "fail"}
    assert "label 1 not in ROI; labels present: 2" in str(r.problems[0])
    ok = _one(make_study, tmp_path, ct_volume(), cube_roi(label=2), {"cohort": {"roi_label": 2}})
    assert ok.status == "ok"


def test_small_roi(make_study, tmp_path) -> None:
    roi = np.zeros((12, 32, 32), np.uint8)
    roi[5, 10:13, 10:13] = 1
    r = _one(make_study, tmp_path, ct_volume(), roi, {"qc": {"min_roi_voxels": 10}})
    assert codes(r) == {"small_roi": "fail"}
    assert "ROI has 9 voxels, fewer than qc.min_roi_voxels = 10" in str(r.problems[0])


def test_roi_at_border_warns_by_default_and_can_fail(make_study, tmp_path) -> None:
    roi = cube_roi()
    roi[0, 12:20, 12:20] = 1
    r = _one(make_study, tmp_path, ct_volume(), roi)
    assert r.status == "warn" and codes(r) == {"roi_at_border": "warn"}
    assert "z=first" in str(r.problems[0])
    strict = _one(make_study, tmp_path, ct_volume(), roi, {"qc": {"roi_at_border": "fail"}})
    assert strict.status == "fail"


def test_nan_and_infinite_voxels(make_study, tmp_path) -> None:
    image = ct_volume()
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    r = _one(make_study, tmp_path, image, cube_roi())
    assert codes(r) == {"nonfinite": "fail"}
    assert "4 voxel(s) are NaN or infinite" in str(r.problems[0])


def test_ct_range_warnings(make_study, tmp_path) -> None:
    no_air = ct_volume() + 1024  # stored values without the rescale intercept
    r = _one(make_study, tmp_path, no_air, cube_roi())
    assert r.status == "warn" and codes(r) == {"ct_range": "warn"}
    assert "no voxel below -500 HU (minimum 24" in str(r.problems[0])
    metal = ct_volume()
    metal[6, 6, 6] = 3500
    r = _one(make_study, tmp_path, metal, cube_roi())
    assert "voxels above 3000 HU (maximum 3500)" in str(r.problems[0])
    mr = _one(make_study, tmp_path, no_air, cube_roi(), {"cohort": {"modality": "MR"}})
    assert mr.status == "ok"


def test_probability_map_is_not_a_label_map(make_study, tmp_path) -> None:
    roi = cube_roi().astype(np.float32) * 0.7
    r = _one(make_study, tmp_path, ct_volume(), roi)
    assert codes(r) == {"roi_not_label_map": "fail"}


def test_missing_and_unreadable_files_name_the_file(make_study, tmp_path) -> None:
    r = _one(make_study, tmp_path, ct_volume(), None)
    assert codes(r) == {"missing_file": "fail"}
    assert "ROI file not found:" in str(r.problems[0]) and "manifest line 2" in str(r.problems[0])
    (tmp_path / "cohort" / "roi.nii.gz").write_bytes(b"not a nifti")
    r = _one(make_study, tmp_path, ct_volume(), None)
    assert codes(r) == {"unreadable": "fail"}
    assert "roi.nii.gz: cannot read ROI" in str(r.problems[0])


def test_checking_never_stops_at_a_bad_case(make_study, good_case, tmp_path) -> None:
    rows = [good_case("a"), good_case("b", 1), good_case("c"), good_case("d", 1, "test")]
    rows[1]["image"] = "img/absent.nii.gz"
    (tmp_path / "cohort" / "roi" / "c.nii.gz").write_bytes(b"garbage")
    study = load_study(make_study(rows))
    results = check_cohort(load_cohort(study), study)
    assert [r.status for r in results] == ["ok", "fail", "fail", "ok"]


def test_cli_check_prints_writes_and_exits_nonzero_on_failure(
    make_study, good_case, tmp_path, capsys
) -> None:
    rows = [good_case("a"), good_case("b", 1)]
    path = make_study(rows)
    out = tmp_path / "qc.csv"
    assert main(["check", str(path), "--out", str(out), "--no-cache"]) == 0
    assert "unit: 2 cases: 2 ok, 0 with warnings, 0 failed" in capsys.readouterr().out
    rows[1]["roi"] = "roi/none.nii.gz"
    path = make_study(rows)
    assert main(["check", str(path), "--out", str(out), "--no-cache"]) == 1
    printed = capsys.readouterr().out
    assert "b     fail    missing_file: ROI file not found" in printed
    table = pd.read_csv(out)
    assert table.status.tolist() == ["ok", "fail"]
    assert table.problem_codes.tolist()[1] == "missing_file"


def test_cli_reports_bad_study_without_traceback(tmp_path, capsys) -> None:
    assert main(["check", str(tmp_path / "none.yaml")]) == 2
    assert "fusion check: error: study file not found" in capsys.readouterr().err
