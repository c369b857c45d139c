"""Study files: valid ones load; every invalid one names the file, the key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion.config import load_study, study_hash
from fusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_demo_study_schema_is_valid(tmp_path: Path) -> None:
    # the demo manifest may not exist yet: point the study at a stand-in manifest
    text = (ROOT / "pipelines" / "demo_hematoma.yaml").read_text()
    (tmp_path / "manifest.csv").write_text("case_id,image,roi,expansion,split,scanner\n")
    (tmp_path / "radiomics").mkdir()
    (tmp_path / "radiomics" / "head_ct_hematoma.yaml").write_text("setting: {}\n")
    text = text.replace("../data/demo_hematoma/manifest.csv", "manifest.csv")
    (tmp_path / "demo.yaml").write_text(text)
    study = load_study(tmp_path / "demo.yaml")
    assert study.name == "demo_hematoma"
    assert study.cohort.columns.label == "expansion"
    assert study.cohort.manifest == (tmp_path / "manifest.csv").resolve()
    assert study.deep is not None and study.deep.offsets_mm == [-2, -1, 0, 1, 2]
    assert list(study.models)[:5] == ["radiomics", "deep", "fused", "clinical", "combined"]
    assert [m for m, s in study.models.items() if s.control_of] == [
        "control_shuffled", "control_elsewhere", "control_permuted"]  # fmt: skip
    assert study.auxiliary_rois() == frozenset({"shuffled", "elsewhere", "perturbed1-erode",
                                                "perturbed2-dilate"})  # fmt: skip
    assert study.source == (tmp_path / "demo.yaml").resolve()
    assert len(study_hash(study)) == 64


def test_paths_resolve_against_the_study_file_not_the_cwd(make_study, tmp_path, monkeypatch):
    path = make_study([{"case_id": "a"}])
    monkeypatch.chdir("/")
    assert load_study(path).cohort.manifest == tmp_path / "cohort" / "manifest.csv"


def test_unknown_key_names_file_path_allowed_keys_and_suggestion(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"cohort": {"columns": {"labl": "y"}}})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "cohort.columns.labl: unknown key 'labl'" in msg
    assert "allowed keys here: case_id, image, roi, label" in msg
    assert "Did you mean 'label'?" in msg


def test_unknown_top_level_key(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"sed": 3})
    with pytest.raises(ConfigError, match=r"sed: unknown key 'sed'.*Did you mean 'seed'"):
        load_study(path)


def test_wrong_type_names_key_and_value(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"seed": "seven", "qc": {"min_roi_voxels": -3}})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert "seed: Input should be a valid integer" in msg and "'seven'" in msg
    assert "qc.min_roi_voxels: Input should be greater than or equal to 1" in msg


def test_wrong_choice_lists_allowed_values(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"cohort": {"modality": "PET"}})
    with pytest.raises(ConfigError, match=r"cohort.modality: Input should be 'CT', 'MR' or"):
        load_study(path)


def test_missing_manifest_file(make_study, tmp_path) -> None:
    path = make_study([{"case_id": "a"}], {"cohort": {"manifest": "nowhere.csv"}})
    with pytest.raises(ConfigError, match=r"cohort.manifest: file not found: .*nowhere.csv"):
        load_study(path)


def test_missing_radiomics_parameter_file(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"radiomics": {"params": "params.yaml"}})
    with pytest.raises(ConfigError, match=r"radiomics.params: file not found"):
        load_study(path)


def test_missing_required_key(make_study) -> None:
    path = make_study([{"case_id": "a"}], {"cohort": None})
    with pytest.raises(ConfigError, match="cohort: "):
        load_study(path)


def test_model_with_unknown_feature_block_suggests_spelling(make_study) -> None:
    models = {"m1": {"features": ["radiomics"]}, "m2": {"features": ["m1-scor", "clinical"]}}
    path = make_study([{"case_id": "a"}], {"models": models})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert "unknown features 'm1-scor'" in str(err.value)
    assert "allowed: radiomics, deep, clinical, m1-score" in str(err.value)
    assert "Did you mean 'm1-score'?" in str(err.value)


def test_model_score_must_come_from_an_earlier_model(make_study) -> None:
    models = {"m2": {"features": ["m1-score"]}, "m1": {"features": ["radiomics"]}}
    with pytest.raises(ConfigError, match="unknown features 'm1-score'"):
        load_study(make_study([{"case_id": "a"}], {"models": models}))


def test_invalid_yaml_and_missing_study_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(bad)
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a mapping of keys, got list"):
        load_study(tmp_path / "list.yaml")


def test_study_hash_changes_with_settings(make_study) -> None:
    a = load_study(make_study([{"case_id": "a"}], {"seed": 1}, name="a.yaml"))
    b = load_study(make_study([{"case_id": "a"}], {"seed": 2}, name="b.yaml"))
    assert study_hash(a) != study_hash(b)
