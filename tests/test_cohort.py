"""Manifest loading: relative paths, label mapping, and every structural error at once."""

from __future__ import annotations

import pickle

import pytest

from fusion.cohort import Case, load_cohort
from fusion.config import load_study
from fusion.errors import ManifestError


def rows(n: int = 4) -> list[dict]:
    return [
        {
            "case_id": f"c{i:03d}",
            "image": f"img/c{i}.nii.gz",
            "roi": f"roi/c{i}.nii.gz",
            "label": i % 2,
            "split": "train" if i < n - 1 else "test",
        }
        for i in range(n)
    ]


def test_cases_resolve_paths_against_the_manifest_folder(make_study, tmp_path) -> None:
    cases = load_cohort(load_study(make_study(rows())))
    assert [c.case_id for c in cases] == ["c000", "c001", "c002", "c003"]
    assert cases[1].image == tmp_path / "cohort" / "img" / "c1.nii.gz"
    assert cases[1].roi == tmp_path / "cohort" / "roi" / "c1.nii.gz"
    assert [c.label for c in cases] == [0, 1, 0, 1]
    assert [c.split for c in cases] == ["train", "train", "train", "test"]
    assert cases[0].row == 2
    # a case travels to worker processes and Dask workers
    assert pickle.loads(pickle.dumps(cases[2])) == cases[2]


def test_case_ids_keep_leading_zeros(make_study) -> None:
    cases = load_cohort(load_study(make_study(rows(2))))
    assert isinstance(cases[0], Case) and cases[0].case_id == "c000"


def test_every_structural_problem_is_reported_together(make_study) -> None:
    r = rows(5)
    r[1]["case_id"] = "c000"  # duplicate, same split
    r[2]["label"] = 2  # not binary
    r[3]["split"] = "tets"  # misspelt split
    r[4]["case_id"] = "c000"
    r[4]["split"] = "test"  # the same case in two splits
    with pytest.raises(ManifestError) as err:
        load_cohort(load_study(make_study(r)))
    msg = str(err.value)
    assert "4 problem(s)" in msg
    assert "line 3: duplicate case id 'c000' (first on line 2)" in msg
    assert "line 4, case 'c002': label '2' in column 'label' is not binary; allowed: 0, 1" in msg
    assert "split 'tets' is not one of train, test. Did you mean 'test'?" in msg
    assert "line 6: case 'c000' is in two splits (train on line 2, test here)" in msg


def test_label_map_turns_text_labels_into_0_1(make_study) -> None:
    r = rows(3)
    for row, text in zip(r, ["yes", "no", "maybe"], strict=True):
        row["label"] = text
    study = {"cohort": {"label_map": {"yes": 1, "no": 0}}}
    with pytest.raises(ManifestError, match="label 'maybe' .* allowed: no, yes"):
        load_cohort(load_study(make_study(r, study)))
    r[2]["label"] = "yes"
    cases = load_cohort(load_study(make_study(r, study)))
    assert [c.label for c in cases] == [1, 0, 1]


def test_missing_label_is_an_error(make_study) -> None:
    r = rows(2)
    r[0]["label"] = None
    with pytest.raises(ManifestError, match="label in column 'label' is blank; allowed"):
        load_cohort(load_study(make_study(r)))


def test_patient_with_cases_in_two_splits_is_leakage(make_study) -> None:
    r = rows(4)
    for row, patient in zip(r, ["p1", "p2", "p3", "p1"], strict=True):
        row["patient"] = patient
    study = {"cohort": {"columns": {"patient": "patient"}}}
    with pytest.raises(ManifestError, match=r"patient 'p1' has cases in several splits"):
        load_cohort(load_study(make_study(r, study)))


def test_missing_column_suggests_the_closest_name(make_study) -> None:
    r = [{k if k != "label" else "lable": v for k, v in row.items()} for row in rows()]
    with pytest.raises(ManifestError) as err:
        load_cohort(load_study(make_study(r)))
    assert "missing label column 'label'" in str(err.value)
    assert "Did you mean 'lable'?" in str(err.value)


def test_external_institution_forms_an_external_set(make_study) -> None:
    r = rows(4)
    for row, site in zip(r, ["A", "A", "B", "A"], strict=True):
        row["site"] = site
    study = {"cohort": {"columns": {"institution": "site"}, "external_institutions": ["B"]}}
    cases = load_cohort(load_study(make_study(r, study)))
    assert [c.split for c in cases] == ["train", "train", "external", "test"]
    assert cases[2].is_external and cases[2].institution == "B"


def test_clinical_covariates_are_typed(make_study) -> None:
    r = rows(3)
    for row, age, sex in zip(r, ["61", "", "70.5"], ["m", "f", "m"], strict=True):
        row["age"], row["sex"] = age, sex
    study = {
        "clinical": [
            {"name": "age", "type": "continuous"},
            {"name": "sex", "type": "categorical"},
        ]
    }
    cases = load_cohort(load_study(make_study(r, study)))
    assert [c.clinical["age"] for c in cases] == [61.0, None, 70.5]
    assert [c.clinical["sex"] for c in cases] == ["m", "f", "m"]
    r[0]["age"] = "sixty"
    with pytest.raises(ManifestError, match="covariate 'age' = 'sixty' is not a number"):
        load_cohort(load_study(make_study(r, study)))


def test_empty_and_unreadable_manifest(make_study, tmp_path) -> None:
    path = make_study(rows(1))
    (tmp_path / "cohort" / "manifest.csv").write_text("case_id,image,label,split\n")
    with pytest.raises(ManifestError, match="holds no cases"):
        load_cohort(load_study(path))
    (tmp_path / "cohort" / "manifest.csv").write_text("")
    with pytest.raises(ManifestError, match="cannot read the table: the file is empty"):
        load_cohort(load_study(path))
