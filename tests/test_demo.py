"""The demo cohort: deterministic bytes, realistic HU, a stratified split, passes QC."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fusion.cli import main
from fusion.demo import SHAPE_XYZ, SPACING_MM, generate_demo_cohort


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate_demo_cohort(tmp_path / "a", n=3, seed=11, jobs=1)
    generate_demo_cohort(tmp_path / "b", n=3, seed=11, jobs=2)  # parallel or not
    generate_demo_cohort(tmp_path / "c", n=3, seed=12, jobs=1)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len(a) == 3 * 2 + 2  # images, masks, manifest.csv, truth.csv
    assert a == b
    assert a["images/ICH001.nii.gz"] != c["images/ICH001.nii.gz"]


def test_volumes_look_like_head_ct_with_a_hematoma(tmp_path: Path) -> None:
    generate_demo_cohort(tmp_path, n=2, seed=3, jobs=1)
    image = sitk.ReadImage(str(tmp_path / "images" / "ICH001.nii.gz"))
    mask = sitk.ReadImage(str(tmp_path / "masks" / "ICH001.nii.gz"))
    assert image.GetSize() == SHAPE_XYZ and image.GetSpacing() == SPACING_MM
    assert mask.GetSize() == SHAPE_XYZ and mask.GetOrigin() == image.GetOrigin()
    hu = sitk.GetArrayFromImage(image).astype(float)
    roi = sitk.GetArrayFromImage(mask).astype(bool)
    assert hu[0, 0, 0] < -950  # air in the corner
    assert 50 <= hu[roi].mean() <= 90
    assert hu.max() > 700  # skull
    truth = pd.read_csv(tmp_path / "truth.csv")
    volume_ml = roi.sum() * np.prod(SPACING_MM) / 1000
    # the irregular outline and clipping to the brain move the volume off the drawn one
    assert volume_ml == pytest.approx(truth.volume_ml[0], rel=0.5)


@pytest.mark.slow
def test_split_is_stratified_8_to_2(tmp_path: Path) -> None:
    generate_demo_cohort(tmp_path, n=20, seed=5, jobs=2)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert (manifest.split == "test").sum() == 4
    positives = manifest.expansion.sum()
    test_pos = manifest[manifest.split == "test"].expansion.sum()
    assert test_pos == round(4 * positives / 20)
    assert list(manifest.columns) == [
        "case_id", "image", "roi", "expansion", "split", "scanner", "age", "sex",
        "onset_to_ct_h", "gcs", "glucose_mmol_l", "sbp_mmhg",
    ]  # fmt: skip
    assert set(manifest.scanner) <= {"CT-A", "CT-B", "CT-C"}


def test_demo_study_runs_qc_cleanly(tmp_path: Path, capsys) -> None:
    """The shipped demo study, pointed at a small generated cohort, passes QC."""
    root = Path(__file__).resolve().parents[1]
    assert main(["demo-data", "--out", str(tmp_path / "data" / "demo_hematoma"), "--n", "6"]) == 0
    (tmp_path / "pipelines" / "radiomics").mkdir(parents=True)
    for rel in ("demo_hematoma.yaml", "radiomics/head_ct_hematoma.yaml"):
        (tmp_path / "pipelines" / rel).write_text((root / "pipelines" / rel).read_text())
    code = main(
        ["check", str(tmp_path / "pipelines" / "demo_hematoma.yaml"),
         "--reports", str(tmp_path / "reports"), "--cache", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code == 0
    assert "demo_hematoma: 6 cases: 6 ok, 0 with warnings, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "reports" / "demo_hematoma" / "tables" / "qc.csv").is_file()
