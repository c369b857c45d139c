"""Clinical exports as they really arrive: spreadsheets from Excel on Windows and in
locales with a decimal comma, workbooks, Windows paths, ROIs slightly off the image's
grid, box ROIs whose shape features come back complex, and ROIs too thin for
PyRadiomics. Each input is made here, small and synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fusion.cli import main
from fusion.cohort import load_cohort
from fusion.config import load_study
from fusion.errors import FusionError, ManifestError
from fusion.features.radiomics import extract_case, feature_value
from fusion.io.qc import check_case
from fusion.io.spreadsheet import decode, read_table, separator
from tests.conftest import ct_volume, cube_roi, write_image

FAST_PARAMS = {
    "imageType": {"Original": {}},
    "featureClass": {"shape": [], "firstorder": ["Mean"]},
    "setting": {"binWidth": 25, "label": 1},
}
ONE = {
    "case_id": "c0",
    "image": "img.nrrd",
    "roi": "roi.nrrd",
    "label": 1,
    "institution": "A",
    "age": 1,
}
ROWS = [
    {"case_id": "c0", "image": "img/c0.nrrd", "roi": "roi/c0.nrrd", "label": 0,
     "institution": "Hôpital Saint-Éloi", "age": "61,5"},
    {"case_id": "c1", "image": "img/c1.nrrd", "roi": "roi/c1.nrrd", "label": 1,
     "institution": "Klinikum Zürich", "age": "70"},
]  # fmt: skip


def cohort(tmp_path: Path, rows: list[dict] = ROWS) -> Path:
    folder = tmp_path / "cohort"
    for row in rows:
        write_image(folder / row["image"], ct_volume())
        write_image(folder / row["roi"], cube_roi())
    return folder


def study_file(tmp_path: Path, manifest: str, extra: dict | None = None) -> Path:
    spec = {
        "name": "exports", "seed": 1,
        "cohort": {"manifest": f"cohort/{manifest}", "columns": {"institution": "institution"}},
        "clinical": [{"name": "age", "type": "continuous"}], **(extra or {}),
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def expected_cases(cases) -> None:
    assert [c.case_id for c in cases] == ["c0", "c1"]
    assert [c.label for c in cases] == [0, 1]
    assert [c.institution for c in cases] == ["Hôpital Saint-Éloi", "Klinikum Zürich"]
    assert [c.clinical["age"] for c in cases] == [61.5, 70.0]
    assert all(c.image.is_file() and c.roi.is_file() for c in cases)


# ------------------------------------------------ 4. and 7. CSV as spreadsheets write it


@pytest.mark.parametrize(
    ("encoding", "sep", "bom"),
    [
        ("cp1252", ",", b""),  # Excel on Windows, "CSV (comma delimited)"
        ("cp1252", ";", b""),  # the same in a locale with a decimal comma
        ("utf-8", ";", b"\xef\xbb\xbf"),  # "CSV UTF-8", with its byte-order mark
        ("utf-16", "\t", b""),  # "Unicode text": UTF-16 with BOM, tab-separated
    ],
)
def test_manifests_as_excel_writes_them_are_read(tmp_path, encoding, sep, bom) -> None:
    folder = cohort(tmp_path)
    frame = pd.DataFrame(ROWS)
    if sep == ",":
        frame["age"] = frame["age"].str.replace(",", ".")
    text = frame.to_csv(index=False, sep=sep, lineterminator="\r\n")
    (folder / "manifest.csv").write_bytes(bom + text.encode(encoding))
    study = load_study(study_file(tmp_path, "manifest.csv"))
    expected_cases(load_cohort(study))


def test_a_missing_column_says_how_the_file_was_read(tmp_path) -> None:
    folder = cohort(tmp_path)
    frame = pd.DataFrame(ROWS).rename(columns={"label": "outcome"})
    (folder / "manifest.csv").write_bytes(frame.to_csv(index=False, sep=";").encode("cp1252"))
    study = load_study(study_file(tmp_path, "manifest.csv"))
    with pytest.raises(ManifestError) as error:
        load_cohort(study)
    message = str(error.value)
    assert "missing label column 'label'" in message
    assert "'case_id', 'image', 'roi', 'outcome', 'institution', 'age'" in message
    assert "encoding Windows-1252; semicolon-separated; decimal comma in age" in message


def test_cp1252_manifest_is_an_exit_2_error_not_a_traceback_when_broken(tmp_path, capsys) -> None:
    """A manifest Excel wrote with a missing column: the CLI prints one line, exits 2."""
    folder = cohort(tmp_path)
    frame = pd.DataFrame(ROWS).drop(columns="image")
    (folder / "manifest.csv").write_bytes(frame.to_csv(index=False).encode("cp1252"))
    assert main(["check", str(study_file(tmp_path, "manifest.csv")), "--no-cache"]) == 2
    assert "missing image column 'image'" in capsys.readouterr().err


def test_separator_and_encoding_detection() -> None:
    assert separator('a;b;"c;d"\n1;2;"3;4"\n') == ";"
    assert separator("a,b\n1,2\n") == ","
    assert separator("only\n1\n") is None
    assert decode("é".encode("cp1252")) == ("é", "Windows-1252")
    assert decode(b"\x81") == ("\x81", "Latin-1")  # undefined in Windows-1252


def test_decimal_commas_are_only_read_where_every_cell_is_a_number(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id;age;note\n007;61,5;a, b\n008;70;c\n", encoding="utf-8")
    table = read_table(path)
    assert table.frame.age.tolist() == ["61.5", "70"]
    assert table.frame.note.tolist() == ["a, b", "c"]  # text keeps its commas
    assert table.frame.id.tolist() == ["007", "008"]  # IDs keep their zeros


def test_trailing_empty_cells_of_a_spreadsheet_are_dropped(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id ; age ;;\n1;2;;\n;;;\n", encoding="utf-8")
    assert read_table(path).frame.to_dict("list") == {"id": ["1"], "age": ["2"]}


# ----------------------------------------------------------- 8. Windows path separators


def test_backslashes_in_relative_paths_are_folder_separators(tmp_path) -> None:
    folder = cohort(tmp_path)
    rows = [{**r, "image": r["image"].replace("/", "\\"), "roi": r["roi"].replace("/", "\\"),
             "age": r["age"].replace(",", ".")} for r in ROWS]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    study = load_study(study_file(tmp_path, "manifest.csv"))
    cases = load_cohort(study)
    expected_cases(cases)
    assert check_case(cases[0], study).status == "ok"


# ------------------------------------------------------------ 10. xlsx and ods workbooks


@pytest.mark.parametrize("suffix", [".xlsx", ".ods"])
def test_workbooks_are_read_with_their_ids_and_numbers_intact(tmp_path, suffix) -> None:
    folder = cohort(tmp_path)
    frame = pd.DataFrame(ROWS)
    frame["case_id"] = ["c0", "c1"]
    frame["age"] = [61.5, 70]  # numbers, as a spreadsheet holds them
    frame["label"] = [0, 1]
    frame.to_excel(folder / f"manifest{suffix}", index=False, sheet_name="Outcomes")
    study = load_study(study_file(tmp_path, f"manifest{suffix}"))
    expected_cases(load_cohort(study))
    numbered = pd.DataFrame({"id": [7, 8], "when": pd.to_datetime(["2020-01-02", "2021-03-04"])})
    numbered.to_excel(tmp_path / f"n{suffix}", index=False)
    cells = read_table(tmp_path / f"n{suffix}").frame
    assert cells.to_dict("list") == {"id": ["7", "8"], "when": ["2020-01-02", "2021-03-04"]}


def test_a_workbook_missing_a_column_names_the_sheet(tmp_path) -> None:
    folder = cohort(tmp_path)
    pd.DataFrame(ROWS).drop(columns="label").to_excel(
        folder / "manifest.xlsx", index=False, sheet_name="Outcomes"
    )
    study = load_study(study_file(tmp_path, "manifest.xlsx"))
    with pytest.raises(ManifestError, match=r"manifest.xlsx, sheet 'Outcomes': missing label"):
        load_cohort(study)


# --------------------------------------------- 5. mask geometry within the QC tolerance


@pytest.mark.parametrize(
    "roi_geometry", [{"origin": (0.0, 0.0, 0.005)}, {"spacing": (1.0, 1.0005, 2.0)}]
)
def test_a_roi_off_the_grid_within_tolerance_is_extracted_not_rejected(
    tmp_path, roi_geometry
) -> None:
    folder = tmp_path / "cohort"
    write_image(folder / "img.nrrd", ct_volume())
    write_image(folder / "roi.nrrd", cube_roi(), **roi_geometry)
    (folder / "params.yaml").write_text(yaml.safe_dump(FAST_PARAMS))
    pd.DataFrame([ONE]).to_csv(folder / "manifest.csv", index=False)
    study = load_study(
        study_file(tmp_path, "manifest.csv", {"radiomics": {"params": "cohort/params.yaml"}})
    )
    case = load_cohort(study)[0]
    qc = check_case(case, study)
    assert qc.passed and [p.code for p in qc.problems] == ["roi_regridded"]
    assert "within the qc tolerances" in qc.problems[0].message
    out = extract_case((case, FAST_PARAMS, (1,), None, "roi", ()))
    volume = out["rois"][0]["features"]["original_shape_VoxelVolume"]
    assert volume == pytest.approx(4 * 8 * 8 * 2.0)
    # beyond the tolerance, QC fails the case and says by how much
    write_image(folder / "roi.nrrd", cube_roi(), origin=(0.0, 0.0, 0.5))
    qc = check_case(case, study)
    assert not qc.passed and "max difference 0.5 > tolerance 0.01" in qc.problems[0].message


# ------------------------------------------- 6. complex shape features of a box ROI


def test_box_roi_shape_features_are_real_numbers(tmp_path) -> None:
    """A 6 x 6 x 8 mm box: two equal eigenvalues of the ROI's covariance, which numpy's
    general eigenvalue routine returns as a complex pair, so PyRadiomics 3.0.1 gives the
    axis lengths, elongation and flatness as complex numbers (imaginary part ~1e-17)."""
    folder = tmp_path / "cohort"
    roi = np.zeros((12, 32, 32), np.uint8)
    roi[4:8, 10:16, 10:16] = 1  # 6 x 6 voxels of 1 mm, 4 slices of 2 mm
    write_image(folder / "img.nrrd", ct_volume())
    write_image(folder / "roi.nrrd", roi)
    pd.DataFrame([ONE]).to_csv(folder / "manifest.csv", index=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(FAST_PARAMS))
    study = load_study(
        study_file(tmp_path, "manifest.csv", {"radiomics": {"params": "cohort/params.yaml"}})
    )
    out = extract_case((load_cohort(study)[0], FAST_PARAMS, (1,), None, "roi", ()))
    features = out["rois"][0]["features"]
    assert all(isinstance(v, float) for v in features.values())
    assert features["original_shape_LeastAxisLength"] == pytest.approx(6.8313005106)
    assert features["original_shape_MajorAxisLength"] == pytest.approx(8.9442719100)
    assert features["original_shape_Elongation"] == pytest.approx(0.7637626158)


def test_feature_values_keep_the_real_part_only_when_the_rest_is_rounding() -> None:
    assert feature_value("f", np.complex128(2.5 + 1e-17j)) == 2.5
    assert feature_value("f", np.float64(3.0)) == 3.0
    assert feature_value("f", np.array(4.0)) == 4.0
    with pytest.raises(FusionError, match="f = .*a complex number"):
        feature_value("f", np.complex128(2.5 + 0.1j))


# ------------------------------------------------- 9. a ROI one voxel wide in two axes


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((slice(6, 7), slice(16, 17), slice(10, 20)),
         "ROI is 1 voxel thick in 2 of 3 axes (extent in voxels: x 10, y 1, z 1)"),
        ((slice(6, 7), slice(16, 17), slice(16, 17)),
         "ROI is 1 voxel thick in 3 of 3 axes (extent in voxels: x 1, y 1, z 1)"),
    ],
)  # fmt: skip
def test_a_line_roi_fails_qc_with_its_extent_per_axis(tmp_path, box, message) -> None:
    folder = tmp_path / "cohort"
    roi = np.zeros((12, 32, 32), np.uint8)
    roi[box] = 1
    write_image(folder / "img.nrrd", ct_volume())
    write_image(folder / "roi.nrrd", roi)
    pd.DataFrame([ONE]).to_csv(folder / "manifest.csv", index=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(FAST_PARAMS))
    extra = {"qc": {"min_roi_voxels": 1}, "radiomics": {"params": "cohort/params.yaml"}}
    study = load_study(study_file(tmp_path, "manifest.csv", extra))
    qc = check_case(load_cohort(study)[0], study)
    assert not qc.passed and "roi_too_thin" in [p.code for p in qc.problems]
    assert message in str(qc.problems)
    # one slice thick is still an ROI PyRadiomics takes (minimumROIDimensions = 2)
    roi[:] = 0
    roi[6, 10:20, 10:20] = 1
    write_image(folder / "roi.nrrd", roi)
    assert check_case(load_cohort(study)[0], study).passed


def test_excel_separator_hint_and_a_workbook_under_a_csv_name_are_read(tmp_path) -> None:
    path = tmp_path / "hint.csv"
    path.write_text("sep=;\nid;age\n007;61,5\n", encoding="cp1252")
    assert read_table(path).frame.to_dict("list") == {"id": ["007"], "age": ["61.5"]}
    renamed = tmp_path / "outcomes.csv"  # an .xlsx saved with the wrong suffix
    with pd.ExcelWriter(renamed, engine="openpyxl") as writer:
        pd.DataFrame({"notes": ["x"]}).to_excel(writer, sheet_name="Notes", index=False)
        pd.DataFrame({"id": [7]}).to_excel(writer, sheet_name="Data", index=False)
    table = read_table(renamed)
    assert table.frame.to_dict("list") == {"notes": ["x"]}
    assert "the first sheet, 'Notes', of 2; the others: 'Data'" in table.detected[0]


def test_qc_checks_the_roi_on_the_grid_pyradiomics_resamples_to(tmp_path) -> None:
    """A 2 x 2 voxel rod and resampledPixelSpacing [4, 4, 4]: on its own grid the rod
    passes; PyRadiomics' resampling leaves too little of it, so QC fails it now."""
    folder = tmp_path / "cohort"
    roi = np.zeros((12, 32, 32), np.uint8)
    roi[2:10, 15:17, 15:17] = 1
    write_image(folder / "img.nrrd", ct_volume())
    write_image(folder / "roi.nrrd", roi)
    pd.DataFrame([ONE]).to_csv(folder / "manifest.csv", index=False)
    params = {**FAST_PARAMS, "setting": {"binWidth": 25, "resampledPixelSpacing": [4, 4, 4]}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    study = load_study(
        study_file(tmp_path, "manifest.csv", {"radiomics": {"params": "cohort/params.yaml"}})
    )
    case = load_cohort(study)[0]
    qc = check_case(case, study)
    assert not qc.passed and "after resampling to [4, 4, 4] mm" in str(qc.problems)
    with pytest.raises((RuntimeError, ValueError)):  # what PyRadiomics does with it
        extract_case((case, params, (1,), None, "roi", ()))
    # a cube survives the same resampling
    write_image(folder / "roi.nrrd", cube_roi())
    assert check_case(case, study).passed


def test_title_lines_and_placeholder_cells_of_a_spreadsheet_export(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("Outcomes 2024;;\nid;age;ok\n007;61,5;1\n008;-;0\n", encoding="cp1252")
    table = read_table(path)
    assert table.frame.to_dict("list") == {
        "id": ["007", "008"],
        "age": ["61.5", "-"],
        "ok": ["1", "0"],
    }
    assert "1 line(s) above the header skipped" in table.detected
