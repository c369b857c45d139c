"""Segmentation models as ROI generators: the command and unet generators, checkpoints,
training resume, and the segmentation stage end to end on tiny volumes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fusion.config import NormaliseSpec, SegmentationSpec, UNetSpec, VariantSpec, load_study
from fusion.errors import FusionError
from fusion.report.check import structure_problems
from tests.conftest import KillAtEpoch, write_image

TINY = {"dims": 3, "channels": [4, 8], "strides": [2], "res_units": 0}


def _blob_case(folder: Path, case_id: str, seed: int, lesion: bool = True,
               spacing=(2.0, 2.0, 3.0)) -> dict:  # fmt: skip
    """A 24 x 24 x 12 body with one bright cube (the reference)."""
    rng = np.random.default_rng(seed)
    image = np.full((12, 24, 24), -1000.0, np.float32)
    image[:, 2:-2, 2:-2] = 0 + rng.normal(0, 10, (12, 20, 20))
    ref = np.zeros(image.shape, np.uint8)
    if lesion:
        z, y, x = rng.integers(3, 6), rng.integers(5, 13), rng.integers(5, 13)
        ref[z : z + 4, y : y + 6, x : x + 6] = 1
        image[ref == 1] += 120
    write_image(folder / "img" / f"{case_id}.nii.gz", image, spacing)
    write_image(folder / "ref" / f"{case_id}.nii.gz", ref, spacing)
    return {"case_id": case_id, "image": f"img/{case_id}.nii.gz",
            "reference": f"ref/{case_id}.nii.gz", "label": int(lesion)}  # fmt: skip


# ------------------------------------------------------------------ command generator

SCRIPT = """
import sys, SimpleITK as sitk, numpy as np
image = sitk.ReadImage(sys.argv[1]); a = sitk.GetArrayFromImage(image)
mode = round(float(a.max()))
if mode == 999:
    print("segmenter: out of memory", file=sys.stderr); sys.exit(3)
mask = sitk.GetImageFromArray((a > 60).astype(np.uint8))
mask.CopyInformation(image)
if mode == 998:
    mask.SetSpacing((9.0, 9.0, 9.0))
sitk.WriteImage(mask, sys.argv[2])
"""


def test_command_generator_checks_exit_code_output_and_grid(make_study, tmp_path) -> None:
    from fusion.cohort import load_cohort
    from fusion.hashing import case_digests
    from fusion.learn.splits import assign_sets
    from fusion.rois.stage import run_rois

    folder = tmp_path / "cohort"
    rows = []
    for i, peak in enumerate([150, 999, 998, 140]):  # ok, exits 3, wrong grid, ok
        row = _blob_case(folder, f"c{i}", i)
        image = sitk.ReadImage(str(folder / row["image"]))
        array = sitk.GetArrayFromImage(image)
        array[0, 0, 0] = peak
        write_image(folder / row["image"], array, image.GetSpacing())
        rows.append(row)
    script = tmp_path / "seg.py"
    script.write_text(SCRIPT)
    command = f"{sys.executable} {script} {{image}} {{out}}"
    study = load_study(make_study(rows, {"rois": {"auto": {
        "generator": "command", "settings": {"command": command, "labels": {1: "lesion"}}}},
        "cohort": {"columns": {"reference": "reference"}}}))  # fmt: skip
    cases = load_cohort(study)
    generated, table = run_rois(study, cases, assign_sets(cases, 0.25, 0),
                                case_digests(cases), tmp_path / "out", tmp_path / "cache",
                                jobs=1)  # fmt: skip
    errors = table.set_index("case_id").error.fillna("")
    assert set(generated["c0"]) == {"auto"} and set(generated["c3"]) == {"auto"}
    assert "exited with 3" in errors["c1"] and "out of memory" in errors["c1"]
    assert str(script) in errors["c1"]  # the command is named
    assert "another grid" in errors["c2"] and "spacing" in errors["c2"]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(generated["c0"]["auto"].path)))
    assert mask.sum() > 0 and generated["c0"]["auto"].names == {1: "lesion"}


def test_command_needs_both_placeholders() -> None:
    from fusion.rois import make_generator

    with pytest.raises(FusionError, match=r"\{out\}"):
        make_generator("command", command="segment {image}")


def test_features_of_a_generated_mask_equal_those_of_the_same_mask_as_a_file(
    make_study, tmp_path
) -> None:
    """The feature stage cannot tell a generated ROI from a drawn one."""
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    folder = tmp_path / "cohort"
    rows = []
    for i in range(2):
        row = _blob_case(folder, f"c{i}", i)
        row["roi"] = row["reference"]  # the same mask, drawn
        rows.append(row)
    (tmp_path / "params.yaml").write_text(
        "imageType: {Original: {}}\nfeatureClass: {firstorder: , shape: , glcm: }\n"
        "setting: {binWidth: 10, label: 1}\n"
    )
    for row in rows:  # the command's threshold (> 60 HU) reproduces each drawn mask exactly
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["image"])))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["roi"])))
        assert ((image > 60) == (mask > 0)).all()
    script = tmp_path / "seg.py"
    script.write_text(SCRIPT)
    study = make_study(rows, {
        "radiomics": {"params": str(tmp_path / "params.yaml")},
        "rois": {"auto": {"generator": "command",
                          "settings": {"command": f"{sys.executable} {script} {{image}} {{out}}"}}},
    })  # fmt: skip
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", jobs=1)
    run_study(load_study(study), options, only="qc")
    run_study(load_study(study), options, only="radiomics")
    features = pd.read_csv(tmp_path / "reports" / "unit" / "tables" / "radiomics_features.csv")
    assert set(features.roi) == {"whole", "auto"}
    for case_id, part in features.groupby("case_id"):
        drawn = part[part.roi == "whole"].drop(columns=["case_id", "roi"]).iloc[0]
        made = part[part.roi == "auto"].drop(columns=["case_id", "roi"]).iloc[0]
        pd.testing.assert_series_equal(drawn, made, check_names=False)
        assert drawn.filter(like="shape_VoxelVolume").iloc[0] > 0, case_id


# ------------------------------------------------------------------ checkpoints


def _meta(classes=None, spacing=(2.0, 2.0, 3.0)) -> dict:  # noqa: ANN001
    from fusion.seg.network import model_meta

    return model_meta(UNetSpec(**TINY), classes or {1: "lesion"}, list(spacing), [16, 16, 8],
                      NormaliseSpec(mode="zscore"), VariantSpec(), {"study": "unit"})  # fmt: skip


def test_checkpoint_of_another_architecture_or_classes_is_refused(tmp_path) -> None:
    import torch

    from fusion.checkpoint import save as save_checkpoint
    from fusion.seg.network import build_unet, load_model

    torch.manual_seed(0)
    model = build_unet(UNetSpec(**TINY), 2)
    save_checkpoint(tmp_path / "m.pt", model, _meta())
    loaded, meta = load_model(tmp_path / "m.pt")
    assert meta["classes"] == {"1": "lesion"}
    with pytest.raises(FusionError, match=r"classes is \{'1': 'lesion'\}, the study expects"):
        load_model(tmp_path / "m.pt", expect={"classes": {"1": "lesion", "2": "node"}})
    wider = build_unet(UNetSpec(**{**TINY, "channels": [8, 16]}), 2)
    save_checkpoint(tmp_path / "lie.pt", wider, _meta())  # declares TINY, holds wider weights
    with pytest.raises(FusionError, match="do not fit the architecture"):
        load_model(tmp_path / "lie.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FusionError, match="not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_prediction_on_another_spacing_is_resampled_and_said(tmp_path) -> None:
    import torch

    from fusion.seg.infer import predict_image
    from fusion.seg.network import build_unet

    torch.manual_seed(0)
    model = build_unet(UNetSpec(**TINY), 2)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 1, (10, 20, 20)))
    image.SetSpacing((1.5, 1.5, 4.0))
    pred = predict_image(model, _meta(), image, "cpu", 0.5)
    assert pred.labels.GetSize() == image.GetSize()  # back on the case's own grid
    assert pred.labels.GetSpacing() == image.GetSpacing()
    assert pred.probabilities.shape == (2, 10, 20, 20)
    assert np.allclose(pred.probabilities.sum(axis=0), 1, atol=1e-4)
    assert "differs from training" in pred.notes[0] and "resampled" in pred.notes[0]
    same = sitk.Image(image)
    same.SetSpacing((2.0, 2.0, 3.0))
    assert predict_image(model, _meta(), same, "cpu", 0.5).notes == ()


# ------------------------------------------------------------------ training


def _spec(**overrides) -> SegmentationSpec:  # noqa: ANN003
    base = {"labels": {1: "lesion"}, "network": TINY, "patch_size": [16, 16, 8],
            "batch_size": 2, "patches_per_case": 1, "max_epochs": 4, "patience": 10,
            "normalise": {"mode": "zscore"}, "cv_folds": 0}  # fmt: skip
    return SegmentationSpec.model_validate({**base, **overrides})


def _prepared(tmp_path: Path, n: int) -> list:
    from fusion.seg.data import prepare

    out = []
    for i in range(n):
        row = _blob_case(tmp_path / "cases", f"t{i}", 100 + i)
        image = sitk.ReadImage(str(tmp_path / "cases" / row["image"]))
        ref = sitk.ReadImage(str(tmp_path / "cases" / row["reference"]))
        out.append(
            prepare(image, ref, (2.0, 2.0, 3.0), VariantSpec(), NormaliseSpec(mode="zscore"))
        )
    return out


@pytest.mark.parametrize(("dims", "shape", "patch"), [
    (3, (20, 40, 40), [16, 16, 8]),  # x, y, z: 18 windows, all in one pass
    (2, (6, 40, 40), [16, 16]),  # six slices of nine windows: two passes
])  # fmt: skip
def test_windows_in_one_pass_give_the_probabilities_of_four_a_pass(
    monkeypatch, dims: int, shape: tuple[int, ...], patch: list[int]
) -> None:  # fmt: skip
    """Many windows a forward pass on the CPU (the default since the demos' U-Nets ran
    30-40% faster so) give the probabilities of four a pass, the old default, to the
    bit. One a pass differs in the last float32 bits: oneDNN picks other kernels for a
    batch of one."""
    import torch

    import fusion.seg.infer as infer
    from fusion.reproducible import torch_mode
    from fusion.seg.network import build_unet

    assert infer.window_batch("cpu", tuple(reversed(patch))) == 32
    assert infer.window_batch("cpu", (96, 96, 96)) == 1  # about a million voxels a pass
    assert infer.window_batch("cuda:0", (96, 96, 96)) == 32
    torch.manual_seed(0)
    model = build_unet(UNetSpec(dims=dims, channels=[4, 8], strides=[2], res_units=1), 2)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    with torch_mode({"threads": 2, "kernels": "onednn"}):
        batched = infer.window_inference(model, image, dims, patch, "cpu")
        monkeypatch.setattr(infer, "window_batch", lambda device, patch: 4)
        alone = infer.window_inference(model, image, dims, patch, "cpu")
    assert batched.shape == (2, *shape)
    assert np.array_equal(batched, alone)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    import torch

    import fusion.seg.train as seg_train
    from fusion.seg.network import read_checkpoint

    cases = _prepared(tmp_path, 3)
    meta = _meta()

    def train(folder: str):  # noqa: ANN202
        return seg_train.train_unet(cases[:2], cases[2:], _spec(), meta, tmp_path / folder, 5,
                                    "cpu")  # fmt: skip

    whole = train("whole")
    assert not (tmp_path / "whole" / "last.pt").exists()  # a finished run keeps best.pt only
    kill = KillAtEpoch(monkeypatch, seg_train, 3)
    with pytest.raises(KeyboardInterrupt):  # the same run killed during epoch 3
        train("cut")
    assert (tmp_path / "cut" / "last.pt").is_file()
    kill.disarm()
    resumed = train("cut")
    assert kill.ran == [3, 4]  # epochs 1 and 2 came from last.pt
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    a, b = (read_checkpoint(t.checkpoint)["state_dict"] for t in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_dimensional_unet_trains_on_slices_and_predicts_every_slice(tmp_path) -> None:
    from fusion.seg.infer import window_inference
    from fusion.seg.network import build_unet, model_meta, read_checkpoint
    from fusion.seg.train import _items, train_unet

    cases = _prepared(tmp_path, 3)
    spec = _spec(network={**TINY, "dims": 2}, patch_size=[16, 16], skip_empty_slices=True,
                 max_epochs=2)  # fmt: skip
    assert len(_items(cases[:2], 2, True)) == sum(int(c.label[z].any()) for c in cases[:2]
                                                  for z in range(12))  # fmt: skip
    meta = model_meta(spec.network, spec.labels, [2.0, 2.0, 3.0], spec.patch_size,
                      spec.normalise, VariantSpec(), {})  # fmt: skip
    trained = train_unet(cases[:2], cases[2:], spec, meta, tmp_path / "2d", 0, "cpu")
    model = build_unet(spec.network, 2)
    model.load_state_dict(read_checkpoint(trained.checkpoint)["state_dict"])
    probs = window_inference(model, cases[2].image, 2, spec.patch_size, "cpu")
    assert probs.shape == (2, *cases[2].image.shape)  # every slice, empty ones included


@pytest.mark.slow
def test_segmentation_stage_end_to_end(make_study, tmp_path, capsys) -> None:
    """Train (2 folds + final), evaluate test cases; a case without a reference is
    predicted and listed as not evaluated; a reference with an unknown label fails QC;
    the unet generator then feeds radiomics; a warm run reuses the models."""
    from fusion.cli import main
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    folder = tmp_path / "cohort"
    rows = [{**_blob_case(folder, f"c{i}", i, lesion=i % 5 != 4),
             "split": "train" if i < 8 else "tuning" if i < 10 else "test",
             "grade": "severe" if i % 2 else "mild"}  # a manifest column, not a covariate
            for i in range(14)]  # fmt: skip
    rows[12]["reference"] = ""  # no reference: predicted, not evaluated
    odd = sitk.ReadImage(str(folder / rows[13]["reference"]))
    write_image(folder / "ref" / "odd.nii.gz", sitk.GetArrayFromImage(odd) * 3, odd.GetSpacing())
    rows[13]["reference"] = "ref/odd.nii.gz"  # label 3: not a class of the study
    params = "imageType: {Original: {}}\nfeatureClass: {shape: }\nsetting: {label: 1}\n"
    (tmp_path / "params.yaml").write_text(params)
    study = load_study(make_study(rows, {
        "cohort": {"columns": {"reference": "reference"}},
        "segmentation": {**_spec(cv_folds=2, max_epochs=3, subgroup="grade")
                         .model_dump(mode="json"),
                         "variants": {"plain": {"filter": "none"},
                                      "smooth": {"filter": "denoise", "strength": 2}}},
        "rois": {"auto": {"generator": "unet", "settings": {"model": "plain"}}},
        "radiomics": {"params": str(tmp_path / "params.yaml")},
        "deep": {"weights": "random", "allow_random_weights": True, "roi": "auto",
                 "size": 64, "offsets_mm": [0], "max_failures": 14},
        "evaluation": {"bootstrap": 50},
    }))  # fmt: skip
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", jobs=1)
    result = run_study(study, options)
    assert result.stages == ["qc", "splits", "segmentation", "rois", "radiomics", "deep", "report"]
    tables = tmp_path / "reports" / "unit" / "tables"
    qc = pd.read_csv(tables / "qc.csv").set_index("case_id")
    assert qc.status["c13"] == "fail" and "unknown_label" in qc.problems["c13"]
    skipped = pd.read_csv(tables / "seg_skipped.csv")
    assert set(skipped.case_id) == {"c12"} and "no reference" in skipped.reason.iloc[0]
    cases = pd.read_csv(tables / "seg_cases.csv")
    assert set(cases[cases.model == "final"].case_id) == {"c8", "c9", "c10", "c11"}
    assert set(cases.model) == {"final", "fold 1", "fold 2"}
    assert set(cases[cases.model == "fold 1"].variant) == {"plain", "smooth"}
    assert not cases[list(("dice", "iou", "hd95"))].isna().any().any()
    assert len(pd.read_csv(tables / "seg_variants.csv")) == 1
    groups = pd.read_csv(tables / "seg_subgroups.csv")
    assert set(groups[groups.by == "subgroup"].group) == {"mild", "severe"}
    froc = pd.read_csv(tables / "seg_froc.csv")
    assert set(froc.iou_threshold) == {0.1, 0.2, 0.3, 0.4, 0.5}
    rois = pd.read_csv(tables / "rois.csv")
    assert "c12" in set(rois.case_id)  # the generator ran on the unevaluated case too
    # deep features are cut around the generated ROI; a case where the U-Net found
    # nothing is a named failure of that case, not a crash
    deep = pd.read_csv(tables / "deep_features.csv")
    failed = pd.read_csv(tables / "deep_failures.csv")
    kept = rois[rois.kept.fillna("").astype(str) != ""].case_id
    assert set(deep.case_id) == set(kept) and len(kept) > 0
    assert len(deep) + len(failed) == 13  # every case that passed QC
    assert failed.message.str.contains("generated ROI 'auto'").all()
    html = (tmp_path / "reports" / "unit" / "index.html").read_text()
    assert structure_problems(html) == []  # no empty section, placeholder, blank figure
    assert "Lesion-wise detection" in html and "Cases not evaluated" in html
    models = tmp_path / "reports" / "unit" / "segmentation" / "models" / "plain.pt"
    before = models.stat().st_mtime_ns
    assert run_study(study, options).stages[:3] == ["qc", "splits", "segmentation"]
    assert models.stat().st_mtime_ns == before  # warm: nothing retrained or rewritten
    args = ["seg", "evaluate", str(study.source), "--reports", str(tmp_path / "reports"),
            "--cache", str(tmp_path / "cache"), "-j", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "seg evaluate done" in out and "with a lesion" in out and "Dice" in out
