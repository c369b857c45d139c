"""Real DICOM: the STS series and their reference masks read with matching geometry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from fusion.cohort import load_cohort
from fusion.config import load_study
from fusion.errors import FusionError
from fusion.io.images import dicom_series, read_image
from fusion.io.qc import check_cohort, qc_table
from tests.conftest import needs_shared

STS = [f"STS_{i:03d}" for i in range(1, 9)]


def test_sts_series_and_reference_masks_pass_qc(make_study) -> None:
    sts = needs_shared("sts")
    rows = [
        {
            "case_id": f"case{i}",  # the DICOM PatientName is "STS_00x": keep it apart
            "image": str(sts / case / "ct"),
            "roi": str(sts / case / "reference_mask.nii.gz"),
            "label": i % 2,
        }
        for i, case in enumerate(STS)
    ]
    study = load_study(make_study(rows))
    results = check_cohort(load_cohort(study), study)
    table = qc_table(results)
    assert (table.status != "fail").all(), table.to_string()
    assert (table.roi_voxels > 100).all()
    image = read_image(sts / "STS_001" / "ct")
    assert image.GetSize() == (198, 202, 59)
    assert image.GetSpacing() == pytest.approx((0.976562, 0.976562, 3.27), abs=1e-5)
    assert sitk.GetArrayViewFromImage(image).min() == -1000  # rescaled to HU

    # privacy: nothing from the DICOM patient module reaches the QC table
    header = pydicom.dcmread(next((sts / "STS_001" / "ct").iterdir()), stop_before_pixels=True)
    text = table.to_csv()
    for tag in ("PatientName", "PatientID", "PatientBirthDate"):
        value = str(header.get(tag, "") or "")
        if len(value) > 2:
            assert value not in text


def test_folder_with_two_series_lists_them_and_reads_the_named_one(tmp_path: Path) -> None:
    sts = needs_shared("sts")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for case in ("STS_001", "STS_002"):
        for f in (sts / case / "ct").iterdir():
            (folder / f"{case}_{f.name}").symlink_to(f)
    series = dicom_series(folder)
    assert sorted(len(files) for files in series.values()) == sorted(
        len(list((sts / c / "ct").iterdir())) for c in ("STS_001", "STS_002")
    )
    with pytest.raises(FusionError) as err:
        read_image(folder)
    assert "holds 2 DICOM series" in str(err.value)
    for uid in series:
        assert uid in str(err.value)
    uid_002 = pydicom.dcmread(next((sts / "STS_002" / "ct").iterdir())).SeriesInstanceUID
    image = read_image(folder, uid_002)
    assert image.GetSize() == read_image(sts / "STS_002" / "ct").GetSize()
    with pytest.raises(FusionError, match="series 1.2.3 not found"):
        read_image(folder, "1.2.3")


def test_manifest_series_column_selects_the_series(make_study, tmp_path: Path) -> None:
    sts = needs_shared("sts")
    folder = tmp_path / "cohort" / "mixed"
    folder.mkdir(parents=True)
    for case in ("STS_003", "STS_004"):
        for f in (sts / case / "ct").iterdir():
            (folder / f"{case}_{f.name}").symlink_to(f)
    uid = pydicom.dcmread(next((sts / "STS_004" / "ct").iterdir())).SeriesInstanceUID
    rows = [
        {"case_id": "s4", "image": "mixed", "roi": str(sts / "STS_004" / "reference_mask.nii.gz"),
         "label": 1, "series_uid": uid},
        {"case_id": "s3", "image": "mixed", "roi": str(sts / "STS_003" / "reference_mask.nii.gz"),
         "label": 0, "series_uid": ""},
    ]  # fmt: skip
    study = load_study(make_study(rows, {"cohort": {"columns": {"series": "series_uid"}}}))
    table = qc_table(check_cohort(load_cohort(study), study))
    assert table.status.tolist()[0] != "fail"
    assert table.status.tolist()[1] == "fail"
    assert "holds 2 DICOM series" in table.problems[1]
    assert isinstance(table, pd.DataFrame)
