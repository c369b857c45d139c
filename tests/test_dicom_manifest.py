"""`fusion manifest`: a synthetic PACS-like export (three patients, two CT series per
study, RTSTRUCTs and a DICOM-SEG, an RTSTRUCT of a series not exported, a series split
across folders) becomes a manifest that `fusion check` accepts, with no DICOM identifier
in it; and the eight shared STS cases give eight rows with their GTV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

from fusion.cli import main
from fusion.errors import FusionError
from fusion.io.dicom_crawl import Header, _stem, crawl, structure_table, write_manifest
from fusion.io.images import read_image
from tests.conftest import needs_shared
from tests.test_dicom_series import axial, write_rtstruct, write_seg, write_series


def pacs_export(root: Path) -> None:
    zs = np.arange(-10, 11, 2.0)
    for number, (patient, structure) in enumerate(
        [("MRN-0001", "GTV"), ("MRN-0002", "gtv_1"), ("MRN-0003", "GTV-1")], start=1
    ):
        study = generate_uid()
        folder = root / f"patient{number}" / "study"
        series, frame = write_series(folder / "ct_a", axial(zs), patient=patient, study=study)
        write_series(folder / "ct_b", axial(zs), patient=patient, study=study)  # no ROI
        if number == 2:  # the first series split across two folders by the export
            for f in sorted((folder / "ct_a").glob("*.dcm"))[6:]:
                (folder / "ct_a_part2").mkdir(exist_ok=True)
                f.rename(folder / "ct_a_part2" / f.name)
        if number == 3:
            write_seg(folder / "seg.dcm", folder / "ct_a", structure)
        else:
            write_rtstruct(folder / "rtstruct.dcm", series, frame, zs[3:8])
            ds = pydicom.dcmread(folder / "rtstruct.dcm")
            ds.PatientID, ds.StudyInstanceUID = patient, study
            ds.StructureSetROISequence[0].ROIName = structure
            ds.save_as(folder / "rtstruct.dcm", enforce_file_format=True)
    # an RTSTRUCT whose series and frame of reference are not in the export
    stray = root / "patient1" / "study" / "stray_rtstruct.dcm"
    write_rtstruct(stray, generate_uid(), generate_uid(), [0.0])
    (root / "README.txt").write_text("exported by a PACS")


def test_a_pacs_export_becomes_a_manifest_fusion_check_accepts(tmp_path, capsys) -> None:
    root = tmp_path / "export"
    pacs_export(root)
    outcomes = pd.DataFrame({"PatientID": ["MRN-0001", "MRN-0002", "MRN-0003"],
                             "label": [0, 1, 1], "age": ["61,5", "70", "55"]})  # fmt: skip
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False, sep=";")
    out = tmp_path / "study" / "manifest.csv"
    argv = ["manifest", str(root), "--out", str(out), "--outcomes",
            str(tmp_path / "outcomes.csv"), "-j", "2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    manifest = pd.read_csv(out, dtype=str)
    assert manifest.case_id.tolist() == ["case0001", "case0002", "case0003"]
    assert manifest.roi_kind.tolist() == ["RTSTRUCT", "RTSTRUCT", "SEG"]
    assert manifest.label.tolist() == ["0", "1", "1"]
    assert manifest.image.tolist()[1] == "../export/patient2/study"  # split: the parent
    assert manifest.structures.tolist() == ["GTV", "gtv_1", "GTV-1"]
    # no DICOM identifier in the manifest: PatientIDs only in the mapping file
    assert "MRN" not in out.read_text()
    mapping = pd.read_csv(out.with_name("manifest.patients.csv"))
    assert mapping.PatientID.tolist() == ["MRN-0001", "MRN-0002", "MRN-0003"]
    assert "MRN" not in out.with_name("manifest.crawl.jsonl").read_text()
    unpaired = pd.read_csv(out.with_name("manifest.unpaired.csv"))
    assert unpaired.file.tolist() == ["patient1/study/stray_rtstruct.dcm"]
    assert "which is not in the export" in unpaired.reason[0]
    assert "'gtv*': GTV (2, 2), GTV-1 (1, 1), gtv_1 (1, 1)" in printed  # the stray one too
    assert "stray_rtstruct.dcm: references series" in printed
    # the manifest as written is a cohort `fusion check` accepts
    study = {"name": "pacs", "seed": 1,
             "cohort": {"manifest": "manifest.csv", "structures": ["gtv*"],
                        "columns": {"series": "series", "patient": "patient"}},
             "clinical": [{"name": "age", "type": "continuous"}]}  # fmt: skip
    (tmp_path / "study" / "study.yaml").write_text(yaml.safe_dump(study))
    argv = ["check", str(tmp_path / "study" / "study.yaml"), "--no-cache",
            "--out", str(tmp_path / "qc.csv")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr()
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert qc.status.tolist() == ["ok"] * 3


def test_a_second_crawl_reads_only_new_or_changed_files(tmp_path) -> None:
    root = tmp_path / "export"
    pacs_export(root)
    cache = tmp_path / "crawl.jsonl"
    first, skipped = crawl(root, cache)
    assert skipped == 1  # the README
    lines = len(cache.read_text().splitlines())
    assert crawl(root, cache) == (first, skipped)
    assert len(cache.read_text().splitlines()) == lines  # nothing read again
    write_series(root / "patient4" / "ct", axial([0.0, 2.0]), patient="MRN-0004")
    assert len(crawl(root, cache)[0]) == len(first) + 2
    assert len(cache.read_text().splitlines()) == lines + 2


def test_a_rerun_keeps_the_rows_the_user_filled_in_and_adds_new_series(tmp_path, capsys) -> None:
    root = tmp_path / "export"
    pacs_export(root)
    out = tmp_path / "study" / "manifest.csv"
    mapping = tmp_path / "private" / "ids.csv"
    argv = ["manifest", str(root), "--out", str(out), "--mapping", str(mapping)]
    assert main(argv) == 0
    edited = pd.read_csv(out, dtype=str)
    edited["label"] = ["1", "0", "1"]
    edited.to_csv(out, index=False)
    # a new patient whose folder sorts first
    series, frame = write_series(root / "patient0" / "ct", axial(np.arange(-4, 5, 2.0)),
                                 patient="MRN-0000")  # fmt: skip
    write_rtstruct(root / "patient0" / "rs.dcm", series, frame, [0.0])
    assert main(argv) == 0
    assert "3 row(s) of the existing manifest kept as they were, 1 added" in (
        capsys.readouterr().out
    )
    again = pd.read_csv(out, dtype=str)
    pd.testing.assert_frame_equal(again.iloc[:3], edited)
    assert again.case_id.tolist()[3] == "case0004" and again.patient.tolist()[3] == "P0004"
    ids = pd.read_csv(mapping)
    assert ids.PatientID.tolist() == ["MRN-0001", "MRN-0002", "MRN-0003", "MRN-0000"]
    assert not out.with_name("manifest.patients.csv").exists()


@pytest.mark.parametrize(
    ("sheet", "message"),
    [
        ({"PatientID": ["MRN-0001", "MRN-0001"], "label": [0, 1]},
         "lists 1 PatientID(s) more than once"),
        ({"PatientID": ["MRN-0001"], "patient": ["x"], "label": [0]},
         "has column(s) 'patient', which the manifest writes itself"),
    ],
)  # fmt: skip
def test_an_outcome_sheet_the_manifest_cannot_use_is_an_exit_2_error(
    tmp_path, capsys, sheet, message
) -> None:
    root = tmp_path / "export"
    pacs_export(root)
    pd.DataFrame(sheet).to_csv(tmp_path / "outcomes.csv", index=False)
    argv = ["manifest", str(root), "--out", str(tmp_path / "m.csv"), "--outcomes",
            str(tmp_path / "outcomes.csv")]  # fmt: skip
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_folders_are_exit_2_errors(tmp_path, capsys) -> None:
    root = tmp_path / "export"
    root.mkdir()
    cases = [
        (["manifest", str(tmp_path / "none"), "--out", str(tmp_path / "m.csv")], "not a folder"),
        (["manifest", str(root), "--out", str(tmp_path)], "is a folder"),
        (["manifest", str(root), "--out", str(root / "m.csv")], "inside the DICOM export"),
    ]
    for argv, message in cases:  # fmt: skip
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_files_without_the_dicom_preamble_are_read(tmp_path) -> None:
    """GDCM reads DICOM files written without the 128-byte preamble and 'DICM'; so must
    the crawl, or their series vanish and its RTSTRUCT looks unpaired."""
    root = tmp_path / "export"
    series, frame = write_series(root / "ct", axial([0.0, 2.0, 4.0]))
    for f in (root / "ct").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        ds.save_as(f, enforce_file_format=False)
        assert f.read_bytes()[128:132] != b"DICM"
    write_rtstruct(root / "rs.dcm", series, frame, [2.0])
    headers, skipped = crawl(root, tmp_path / "c.jsonl")
    assert skipped == 0 and [h.kind for h in headers].count("image") == 3
    # ITK cannot read these pixels: the reader's error names the file, as QC shows it
    with pytest.raises(FusionError, match="Unable to determine ImageIO reader for .*ct000.dcm"):
        read_image(root / "ct")


def test_structure_spellings_are_grouped_into_patterns() -> None:
    assert {_stem(n) for n in ["GTV", "gtv_1", "GTV-1", "GTV 2"]} == {"gtv"}
    assert _stem("GTV_Mass") == "gtv_mass"
    headers = [Header("a", "rtstruct", structures=["GTV", "CTV"]),
               Header("b", "rtstruct", structures=["gtv_1"]),
               Header("c", "rtstruct", structures=["PTV_1", "PTV_2"]),
               Header("d", "rtstruct", structures=["PTV_1"])]  # fmt: skip
    table = structure_table(headers).set_index("structure")
    assert table.loc["GTV", "suggested_pattern"] == "gtv*"
    assert table.loc["CTV", "suggested_pattern"] == "CTV"
    # a pattern would match PTV_1 and PTV_2 in file c: the commonest name instead
    assert table.loc["PTV_2", "suggested_pattern"] == "PTV_1"
    assert "1 ROI file(s) hold several of these names" in table.loc["PTV_2", "note"]


@pytest.mark.slow
def test_the_shared_sts_cases_give_eight_rows_with_their_gtv(tmp_path) -> None:
    sts = needs_shared("sts")
    result = write_manifest(sts, tmp_path / "manifest.csv", jobs=2)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert len(manifest) == 8 and not result.unpaired
    assert all(s.startswith("GTV_Mass") for s in manifest.structures)
    assert sorted(p.split("/")[-2] for p in manifest.image) == [f"STS_00{i}" for i in range(1, 9)]
