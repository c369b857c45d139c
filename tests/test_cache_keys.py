"""Every cache key covers every setting that can change a stage's output.

The tests walk every field of the study model, change it, and check that the stage's
settings (and so its key) change, unless the stage lists the field as excluded with a
reason. A field added to the study later is covered without touching these tests.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import BaseModel

from fusion.config import Study, load_study
from fusion.engine import stage_settings
from fusion.features.deep import DEEP_KEY_EXCLUDES, deep_settings
from fusion.features.radiomics import RADIOMICS_KEY_EXCLUDES, radiomics_settings
from fusion.io.qc import QC_KEY_EXCLUDES, qc_settings
from fusion.stages import STAGES
from fusion.stages.models import MODELS_KEY_SECTIONS
from fusion.stages.report import REPORT_KEY_SECTIONS
from fusion.stages.statistics import STATISTICS_KEY_SECTIONS
from tests.conftest import ct_volume, write_image

PARAMS = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None}}


@pytest.fixture
def study(tmp_path: Path) -> Study:
    (tmp_path / "manifest.csv").write_text("case_id,image,roi,label\n")
    (tmp_path / "params.yaml").write_text("imageType: {Original: {}}\n")
    (tmp_path / "study.yaml").write_text(
        "name: keys\ncohort: {manifest: manifest.csv}\n"
        "radiomics: {params: params.yaml}\ndeep: {weights: random}\n"
        "clinical: [{name: age, type: continuous}]\n"
        "models: {m: {features: [radiomics]}}\n"
    )
    return load_study(tmp_path / "study.yaml")


def _other(value: Any, annotation: Any) -> Any:
    """A different value of the same kind (validity does not matter for a key)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    choices = [a for a in typing.get_args(annotation) if typing.get_origin(annotation)
               is typing.Literal and a != value]  # fmt: skip
    if choices:
        return choices[0]
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, Path):
        return value.with_name("other.yaml")
    if isinstance(value, list | tuple):
        return type(value)([*value, value[0] if value else "x"])
    if isinstance(value, dict):  # one more entry, of the kind the others are
        return {**value, "x": next(iter(value.values())) if value else 1}
    if value is None:  # an optional field: a value of the type it would hold
        kinds = {typing.get_origin(a) or a for a in typing.get_args(annotation)}
        inner = [typing.get_args(a) for a in typing.get_args(annotation)]
        if list in kinds:
            return [1] if any(int in args for args in inner) else ["x"]
        if dict in kinds:
            return {"x": 1}
        return 1 if int in kinds else "x"
    raise TypeError(f"no other value for {value!r}")


def _leaves(model: BaseModel, prefix: tuple[str, ...] = ()):  # noqa: ANN202
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, (*prefix, name))
        else:
            yield (*prefix, name), value, field.annotation


def _replace(model: BaseModel, path: tuple[str, ...], value: Any) -> BaseModel:
    if len(path) == 1:
        return model.model_copy(update={path[0]: value})
    child = _replace(getattr(model, path[0]), path[1:], value)
    return model.model_copy(update={path[0]: child})


def _check_every_field(study: Study, settings, sections: dict) -> list[str]:  # noqa: ANN001
    """Change each field of the stage's sections; return the ones that left the key alone."""
    base = settings(study)
    unchanged = []
    for path, value, annotation in _leaves(study):
        if path[0] not in sections:
            continue
        changed = settings(_replace(study, path, _other(value, annotation)))
        excluded = len(path) > 1 and path[1] in sections[path[0]]
        if excluded:
            assert changed == base, f"{'.'.join(path)} is excluded but changes the key"
        elif changed == base:
            unchanged.append(".".join(path))
    return unchanged


def test_qc_key_covers_every_qc_and_cohort_field(study: Study) -> None:
    assert _check_every_field(study, qc_settings, QC_KEY_EXCLUDES) == []
    # the reproduced bug: a study switched to another structure kept its old QC result
    other = _replace(study, ("cohort", "structures"), ["tiny"])
    assert qc_settings(other) != qc_settings(study)


def test_radiomics_key_covers_every_field_and_the_parameter_content(study: Study) -> None:
    def settings(s: Study) -> dict:
        return radiomics_settings(s, PARAMS)

    assert _check_every_field(study, settings, RADIOMICS_KEY_EXCLUDES) == []
    params = {**PARAMS, "setting": {"binWidth": 5}}
    assert radiomics_settings(study, params) != radiomics_settings(study, PARAMS)


def test_deep_key_covers_every_field_device_and_precision(study: Study) -> None:
    def settings(s: Study) -> dict:
        return deep_settings(s, "cpu", "w1", 20)

    assert _check_every_field(study, settings, DEEP_KEY_EXCLUDES) == []
    cpu = deep_settings(study, "cpu", "w1", 20)
    assert cpu["precision"] == "float32"
    assert deep_settings(study, "cuda:0", "w1", 20) != cpu  # device (and its precision)
    assert deep_settings(study, "cpu", "w2", 20) != cpu  # the weights
    assert deep_settings(study, "cpu", "w1", 5) != cpu  # planes per forward pass


def test_generated_roi_key_covers_every_cohort_field_and_the_roi_spec(study: Study) -> None:
    from fusion.config import RoiSpec
    from fusion.rois.stage import ROIS_KEY_EXCLUDES, rois_settings

    ring = RoiSpec(generator="ring", settings={"outer_mm": 3})
    with_roi = study.model_copy(update={"rois": {"ring": ring}})

    def settings(s: Study) -> dict:
        return rois_settings(s, "ring")

    assert _check_every_field(with_roi, settings, ROIS_KEY_EXCLUDES) == []
    thicker = ring.model_copy(update={"settings": {"outer_mm": 6}})
    assert settings(with_roi.model_copy(update={"rois": {"ring": thicker}})) != settings(with_roi)


@pytest.mark.parametrize(
    "sections", [MODELS_KEY_SECTIONS, STATISTICS_KEY_SECTIONS, REPORT_KEY_SECTIONS]
)
def test_table_stage_keys_cover_their_sections(study: Study, sections: dict) -> None:
    def settings(s: Study) -> dict:
        return stage_settings(s, sections)

    assert _check_every_field(study, settings, sections) == []
    assert "seed" in sections  # the bootstrap CI and the CV folds depend on it


def test_qc_of_a_switched_structure_is_not_served_from_the_cache(tmp_path, make_study) -> None:
    """A Slicer segmentation with a 200-voxel and a 1-voxel segment: switching the study
    from one to the other must re-check the case, not return 'ok, 200 voxels'."""
    from fusion.config import load_study as load
    from fusion.stages.context import RunOptions, check_study

    folder = tmp_path / "cohort"
    write_image(folder / "img.nii.gz", ct_volume())
    seg = np.zeros((12, 32, 32), dtype=np.uint8)
    seg[4:6, 10:20, 10:20] = 1  # 200 voxels
    seg[9, 2, 2] = 2  # 1 voxel
    image = sitk.GetImageFromArray(seg)
    image.SetSpacing((1.0, 1.0, 2.0))
    for i, (name, value) in enumerate((("big", 1), ("tiny", 2))):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_LabelValue", str(value))
    sitk.WriteImage(image, str(folder / "roi.seg.nrrd"))
    row = {"case_id": "A", "image": "img.nii.gz", "roi": "roi.seg.nrrd", "label": 1}
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache")
    big = load(make_study([row], {"cohort": {"structures": ["big"]}}))
    assert check_study(big, options).qc[0].roi_voxels == 200
    tiny = load(make_study([row], {"cohort": {"structures": ["tiny"]}}))
    result = check_study(tiny, options).qc[0]
    assert result.roi_voxels == 1 and result.status == "fail"
    assert "small_roi" in {p.code for p in result.problems}


def test_segmentation_training_key_covers_every_field_and_the_device(study: Study) -> None:
    from fusion.config import SegmentationSpec
    from fusion.seg.stage import SEG_KEY_EXCLUDES, seg_settings

    spec = SegmentationSpec(labels={1: "tumour"}, patch_size=[32, 32, 16])
    with_seg = study.model_copy(update={"segmentation": spec})

    def settings(s: Study) -> dict:
        return seg_settings(s, "cpu")

    assert _check_every_field(with_seg, settings, SEG_KEY_EXCLUDES) == []
    assert seg_settings(with_seg, "cuda:0") != settings(with_seg)  # device and precision


def test_classifier_keys_cover_every_field_and_the_device(tmp_path: Path) -> None:
    from fusion.learn.cnn.stage import (
        CLASSIFIER_KEY_EXCLUDES,
        TRAINING_KEY_EXCLUDES,
        classifier_settings,
        training_key,
    )

    (tmp_path / "manifest.csv").write_text("case_id,image,label\n")
    (tmp_path / "study.yaml").write_text("name: cxr\ncohort: {manifest: manifest.csv}\n"
                                         "classifier: {}\n")  # fmt: skip
    study = load_study(tmp_path / "study.yaml")

    def settings(s: Study) -> dict:
        return classifier_settings(s, "cpu")

    assert _check_every_field(study, settings, CLASSIFIER_KEY_EXCLUDES) == []
    assert classifier_settings(study, "cuda:0") != settings(study)
    digests = {"a": ("1", "none"), "b": ("2", "none"), "t": ("3", "none")}

    def key(s: Study, test: str = "3") -> str:
        return training_key(s, "resnet50", ["a"], ["b"], {**digests, "t": (test, "none")}, "cpu")

    for path, value, annotation in _leaves(study.classifier):
        changed = _replace(study, ("classifier", *path), _other(value, annotation))
        if path[0] in TRAINING_KEY_EXCLUDES:
            assert key(changed) == key(study), ".".join(path)
        else:
            assert key(changed) != key(study), ".".join(path)
    assert key(study, test="changed") == key(study)  # a test case never enters training


UNKEYED = {"splits", "involvement"}  # recomputed every run, in seconds


def _full_study(study: Study, tmp_path: Path) -> Study:
    """The fixture with every section a CT study can have: generated ROIs (one from a
    network), a segmentation section, radiomics, deep features and models."""
    from fusion.config import RoiSpec, SegmentationSpec

    (tmp_path / "other.yaml").write_text((tmp_path / "params.yaml").read_text())
    rois = {"ring": RoiSpec(generator="ring", settings={"outer_mm": 3}),
            "net": RoiSpec(generator="unet", settings={"checkpoint": "net.pt"})}  # fmt: skip
    seg = SegmentationSpec(labels={1: "tumour"}, patch_size=[32, 32, 16])
    return study.model_copy(update={"rois": rois, "segmentation": seg})


def _classifier_study(tmp_path: Path) -> Study:
    (tmp_path / "cxr").mkdir()
    (tmp_path / "cxr" / "manifest.csv").write_text("case_id,image,label\n")
    (tmp_path / "cxr" / "study.yaml").write_text("name: cxr\ncohort: {manifest: manifest.csv}\n"
                                                 "classifier: {}\n")  # fmt: skip
    return load_study(tmp_path / "cxr" / "study.yaml")


@pytest.mark.parametrize("name", [n for n in STAGES if n not in UNKEYED])
def test_every_registered_stage_key_follows_every_field_it_reads(
    study: Study, tmp_path: Path, name: str
) -> None:
    """Driven by the registry: a stage added later is checked without editing this test.
    Each field of the sections a stage reads changes its settings unless the stage
    excludes it with a reason; a torch stage's settings change with the device and name
    its precision."""
    stage = STAGES[name]
    full = _full_study(study, tmp_path)
    subject = full if stage.applies(full) else _classifier_study(tmp_path)
    assert stage.applies(subject)
    assert stage.key_sections is not None

    def settings(s: Study) -> dict:
        return stage.settings(s, "cpu")

    assert _check_every_field(subject, settings, stage.key_sections) == []
    if stage.torch or name == "rois":  # the rois stage runs a unet generator here
        assert stage.settings(subject, "cuda:0") != settings(subject)
        assert "float32" in str(settings(subject))  # the precision is named


def test_the_stages_without_a_key_are_the_ones_recomputed_every_run() -> None:
    assert {n for n, s in STAGES.items() if s.key_sections is None} == UNKEYED
    assert not any(STAGES[n].keyed for n in UNKEYED)
