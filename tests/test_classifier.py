"""Image classifiers on 2D radiographs: reading (DICOM display pipeline), 2D QC, the
training loop (no augmentation at evaluation, no test leakage, resume), Grad-CAM, and
the pneumothorax study end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fusion.config import ClassifierSpec, load_study
from fusion.errors import FusionError
from fusion.report.check import structure_problems
from tests.conftest import KillAtEpoch

TINY = {"architectures": ["resnet50"], "weights": "random", "image_size": 32, "batch_size": 8,
        "max_epochs": 2, "patience": 2, "learning_rate": 1e-3,
        "freeze": {"head_epochs": 1, "train_blocks": 1}}  # fmt: skip


def write_dicom(path: Path, stored: np.ndarray, photometric: str, **tags) -> Path:
    """A 12-bit DX file with the given photometry and display tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.PatientName = "Doe^Jane"  # must never come out of the reader
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))  # 0..4032 in 64 columns


def test_monochrome1_is_inverted_and_the_window_applied(tmp_path) -> None:
    from fusion.io.radiograph import read_radiograph

    window = {"WindowCenter": 2048, "WindowWidth": 1024, "ImagerPixelSpacing": [0.15, 0.2]}
    mono2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", RAMP, "MONOCHROME2", **window))
    mono1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1", **window))
    # DICOM PS3.3 C.11.2.1.2.1 (LINEAR): below c - 0.5 - (w-1)/2 black, above c - 0.5 +
    # (w-1)/2 white, linear in between
    x = RAMP[0].astype(float)
    c, w = 2048 - 0.5, 1024 - 1
    expected = np.clip((x - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(mono2.pixels[0], expected, atol=1e-6)
    np.testing.assert_allclose(mono1.pixels[0], 1 - expected, atol=1e-6)
    assert mono2.pixels[0, 0] == 0 and mono2.pixels[0, -1] == 1  # window clips both ends
    assert mono1.spacing_mm == (0.15, 0.2) and mono1.bits == 12
    assert "MONOCHROME1" in mono1.source and "window 2048/1024" in mono1.source
    assert "Doe" not in repr(mono1)


def test_voi_lut_sequence_is_applied(tmp_path) -> None:
    from pydicom.dataset import Dataset

    from fusion.io.radiograph import read_radiograph

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]  # 4096 entries from stored value 0, 12-bit output
    lut = np.sqrt(np.arange(4096) / 4095) * 4095  # a gamma-like VOI LUT
    item.add_new(0x00283006, "US", np.round(lut).astype(np.uint16).tolist())  # LUT Data
    path = write_dicom(tmp_path / "lut.dcm", RAMP, "MONOCHROME2", VOILUTSequence=[item])
    image = read_radiograph(path)
    expected = np.round(lut[RAMP[0]]) / 4095
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)
    assert image.source.endswith("VOI LUT")


def test_rescale_then_window_uses_the_rescaled_range(tmp_path) -> None:
    from fusion.io.radiograph import read_radiograph

    tags = {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 4000,
            "WindowWidth": 4000}  # fmt: skip
    image = read_radiograph(write_dicom(tmp_path / "r.dcm", RAMP, "MONOCHROME2", **tags))
    x = RAMP[0] * 2.0 - 100
    expected = np.clip((x - 3999.5) / 3999 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)


def test_reader_rejects_volumes_and_undecodable_files(tmp_path) -> None:
    import SimpleITK as sitk

    from fusion.io.radiograph import read_radiograph

    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 20, 20), np.int16)), str(volume))
    with pytest.raises(FusionError, match=r"ct.nii.gz: a 3D volume \(5 x 20 x 20\)"):
        read_radiograph(volume)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    with pytest.raises(FusionError, match="broken.png: cannot decode the image"):
        read_radiograph(broken)
    frames = write_dicom(tmp_path / "cine.dcm", np.zeros((3 * 4, 64)), "MONOCHROME2",
                         NumberOfFrames=3)  # fmt: skip
    frames_ds = __import__("pydicom").dcmread(frames)
    frames_ds.Rows = 4
    frames_ds.save_as(frames)
    with pytest.raises(FusionError, match="cine.dcm: a 3D volume"):
        read_radiograph(frames)


def _radiograph(seed: int, positive: bool, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a bright square in the top-left quadrant when positive."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.2, 0.5, (size, size))
    mask = np.zeros((size, size), bool)
    if positive:
        y, x = rng.integers(2, size // 2 - 12, 2)
        mask[y : y + 10, x : x + 10] = True
        image[mask] = 0.95
    return image, mask


def _cohort(folder: Path, n: int = 40, **study) -> Path:
    """n PNG radiographs with masks, a manifest and a classifier study file."""
    rows = []
    for i in range(n):
        image, mask = _radiograph(i, positive=i % 2 == 1)
        (folder / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / "img" / f"c{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "img" / f"m{i:02d}.png")
        rows.append({"case_id": f"c{i:02d}", "image": f"img/c{i:02d}.png",
                     "mask": f"img/m{i:02d}.png", "label": i % 2,
                     "patient": f"p{i // 2:02d}"})  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    spec = {"name": "cxr", "seed": 3,
            "cohort": {"manifest": "manifest.csv", "columns": {"roi": "mask", "patient": "patient"},
                       "modality": "other"},
            "qc": {"min_image_px": 32},
            "classifier": {**TINY, **study}, "evaluation": {"bootstrap": 50}}  # fmt: skip
    (folder / "study.yaml").write_text(yaml.safe_dump(spec))
    return folder / "study.yaml"


def test_qc_of_radiographs_names_each_bad_case_and_keeps_the_rest(tmp_path) -> None:
    import SimpleITK as sitk

    from fusion.cohort import load_cohort
    from fusion.io.qc import run_qc

    path = _cohort(tmp_path, n=8)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    (tmp_path / "img" / "c01.png").write_bytes(b"garbage")  # undecodable
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 48, 48), np.uint8)),
                    str(tmp_path / "img" / "vol.nii.gz"))  # fmt: skip
    manifest.loc[2, "image"] = "img/vol.nii.gz"  # a 3D volume
    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(tmp_path / "img" / "c03.png")  # constant
    Image.open(tmp_path / "img" / "c04.png").save(tmp_path / "img" / "copy.png")
    image, _ = _radiograph(4, False)  # c04's pixels again, as a DICOM (MONOCHROME2, 8 bit)
    write_dicom(tmp_path / "img" / "copy.dcm", np.round(image * 255).astype(np.uint16),
                "MONOCHROME2", BitsStored=8, HighBit=7)  # fmt: skip
    manifest.loc[6, "image"] = "img/copy.png"  # a duplicate of c04
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    study = load_study(path)
    results = {r.case_id: r for r in run_qc(study, load_cohort(study), _digests(study), None)}
    assert "c01.png: cannot decode the image" in results["c01"].problems[0].message
    assert "a 3D volume (4 x 48 x 48)" in results["c02"].problems[0].message
    assert [p.code for p in results["c03"].problems] == ["constant"]
    assert [p.code for p in results["c06"].problems] == ["duplicate"]
    assert "case 'c04'" in results["c06"].problems[0].message
    assert {c for c, r in results.items() if r.passed} == {"c00", "c04", "c05", "c07"}
    assert results["c05"].roi_voxels == 100  # the lesion's pixels


def _digests(study):  # noqa: ANN001, ANN202
    from fusion.cohort import load_cohort
    from fusion.hashing import case_digests

    return case_digests(load_cohort(study))


def test_one_class_and_positive_free_sets_are_refused_by_name() -> None:
    from fusion.learn.cnn.data import Images
    from fusion.learn.cnn.train import check_sets

    def images(labels: list[int]) -> Images:
        n = len(labels)
        empty = np.zeros((n, 4, 4), bool)
        return Images([f"c{i}" for i in range(n)], np.zeros((n, 4, 4), np.float32),
                      np.array(labels, np.float32), empty, empty[:, 0, 0])  # fmt: skip

    with pytest.raises(FusionError, match=r"resnet50: the training set \(3 cases\) has no "
                       "positive case: a classifier cannot learn"):  # fmt: skip
        check_sets(images([0, 0, 0]), images([0, 1]), "resnet50")
    with pytest.raises(FusionError, match=r"the validation set \(2 cases\) has no positive"):
        check_sets(images([0, 1, 1]), images([0, 0]), "resnet50")
    check_sets(images([0, 1, 1]), images([0, 1]), "resnet50")


def test_splits_are_stratified_grouped_by_patient_and_disjoint(tmp_path) -> None:
    from fusion.cohort import load_cohort
    from fusion.learn.splits import classifier_sets

    study = load_study(_cohort(tmp_path, n=60))
    cases = load_cohort(study)
    sets = classifier_sets(cases, study.classifier, study.seed)
    counts = sets.value_counts()
    assert counts["train"] + counts["validation"] + counts["test"] == 60
    assert 6 <= counts["test"] <= 12 and 6 <= counts["validation"] <= 12
    patients = pd.Series({c.case_id: c.patient for c in cases})
    assert patients.groupby(sets).apply(set).pipe(lambda s: not (s["train"] & s["test"]))
    for name in ("train", "validation", "test"):
        labels = [c.label for c in cases if sets[c.case_id] == name]
        assert 0 < sum(labels) < len(labels)
    again = classifier_sets(cases, study.classifier, study.seed)
    assert again.equals(sets)


def test_augmentation_is_applied_in_training_and_never_at_evaluation(tmp_path, monkeypatch) -> None:
    import fusion.learn.cnn.data as data
    from fusion.cohort import load_cohort
    from fusion.learn.cnn.data import load_images
    from fusion.learn.cnn.gradcam import GradCam
    from fusion.learn.cnn.network import build_classifier
    from fusion.learn.cnn.train import predict, train_classifier

    calls = []
    original = data.augment
    monkeypatch.setattr(data, "augment", lambda *a: calls.append(1) or original(*a))
    study = load_study(_cohort(tmp_path, n=16))
    images = load_images(load_cohort(study), 32)
    train = images.subset(images.case_ids[:12])
    val = images.subset(images.case_ids[12:])
    spec = ClassifierSpec(**{**TINY, "max_epochs": 1})
    train_classifier("resnet50", train, val, spec, None, {}, tmp_path / "run", 0, "cpu")
    assert len(calls) == 2  # 12 images in batches of 8: two augmented batches, nothing else
    model = build_classifier("resnet50", None, 0)
    first = predict(model, val.pixels, "cpu", 4)
    cam = GradCam(model, "layer4")
    cam(data.as_input(val.pixels, "cpu"))
    cam.close()
    assert len(calls) == 2  # prediction and Grad-CAM never augment
    np.testing.assert_array_equal(first, predict(model, val.pixels, "cpu", 4))  # repeatable
    np.testing.assert_allclose(first, predict(model, val.pixels, "cpu", 3), rtol=1e-5)


def test_training_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    import torch

    import fusion.learn.cnn.train as cnn_train
    from fusion.checkpoint import read
    from fusion.cohort import load_cohort
    from fusion.learn.cnn.data import load_images

    study = load_study(_cohort(tmp_path, n=20))
    images = load_images(load_cohort(study), 32)
    train, val = images.subset(images.case_ids[:14]), images.subset(images.case_ids[14:])
    spec = ClassifierSpec(**{**TINY, "max_epochs": 3, "patience": 5})

    def fit(folder: str):  # noqa: ANN202
        return cnn_train.train_classifier("resnet50", train, val, spec, None, {},
                                          tmp_path / folder, 5, "cpu")  # fmt: skip

    whole = fit("whole")
    assert not (tmp_path / "whole" / "last.pt").exists()  # a finished run keeps best.pt only
    kill = KillAtEpoch(monkeypatch, cnn_train, 3)
    with pytest.raises(KeyboardInterrupt):  # the same run killed during epoch 3
        fit("cut")
    kill.disarm()
    resumed = fit("cut")
    assert kill.ran == [3]  # epochs 1 and 2 came from last.pt
    assert [h["phase"] for h in resumed.history] == ["head", "blocks", "blocks"]
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    a, b = (read(t.checkpoint, "classifier")["state_dict"] for t in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradcam_points_at_the_region_the_answer_depends_on() -> None:
    """A tiny CNN learns 'bright square in the top-left quadrant'; its Grad-CAM maximum
    must lie in that quadrant, and the energy there must beat chance."""
    import torch

    from fusion.learn.cnn.gradcam import GradCam, localisation

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),  # 24 x 24 maps
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 1),
    )  # fmt: skip
    pairs = [_radiograph(i, positive=i % 2 == 1) for i in range(64)]
    x = torch.tensor(np.stack([p[0] for p in pairs]), dtype=torch.float32)[:, None]
    y = torch.tensor([i % 2 for i in range(64)], dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.1
    cams = GradCam(model, "3")(x[1::2])  # the positives, at the second ReLU
    for cam, (_, mask) in zip(cams, pairs[1::2], strict=True):
        assert not cam.zero and cam.cells == (24, 24)
        assert cam.peak[0] < 24 and cam.peak[1] < 24  # top-left quadrant
        loc = localisation(cam, mask)
        assert loc.pointing_hit and loc.energy_in_mask > 3 * loc.chance


def test_an_all_zero_map_is_detected_not_drawn() -> None:
    import torch

    from fusion.learn.cnn.gradcam import GradCam, localisation, overlay

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(2, 1))  # fmt: skip
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.0)
        model[4].weight.fill_(-1.0)  # every channel argues against the positive class
    cam = GradCam(model, "1")(torch.rand(1, 1, 8, 8))[0]
    assert cam.zero and cam.peak == (-1, -1) and not cam.heatmap.any()
    assert localisation(cam, np.ones((8, 8), bool)) is None
    picture = overlay(np.full((8, 8), 0.5, np.float32), cam, None)
    assert (picture == 128).all()  # the image alone: no colour from an empty map


def test_no_test_image_reaches_training_validation_or_early_stopping(tmp_path, monkeypatch) -> None:
    """The trained weights do not change when every test image is replaced by noise, and
    the training loop is never handed a test case."""
    import fusion.learn.cnn.train as train_module
    from fusion.cohort import load_cohort
    from fusion.learn.cnn.stage import run_classifier
    from fusion.learn.splits import classifier_sets

    seen = []
    original = train_module.train_classifier

    def spy(arch, train, val, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append((set(train.case_ids), set(val.case_ids)))
        return original(arch, train, val, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_classifier", spy)
    study = load_study(_cohort(tmp_path, n=40))
    cases = load_cohort(study)
    sets = classifier_sets(cases, study.classifier, study.seed)
    test = set(sets.index[sets == "test"])
    digests = _digests(study)
    first = run_classifier(study, cases, digests, tmp_path / "a", "cpu", sets)
    rng = np.random.default_rng(9)
    for case_id in test:
        Image.fromarray(rng.integers(0, 255, (48, 48), np.uint8)).save(
            tmp_path / "img" / f"{case_id}.png")  # fmt: skip
    second = run_classifier(study, cases, _digests(study), tmp_path / "b", "cpu", sets)
    assert all(not (train & test) and not (val & test) for train, val in seen)
    assert len(seen) == 2
    sha = first["cnn_models"].set_index("model").weights_sha256
    assert sha.equals(second["cnn_models"].set_index("model").weights_sha256)
    scores = first["scores"]
    assert set(scores.set) == {"validation", "test"}  # the training set is never scored
    assert not scores[scores.set == "test"].case_id.isin(list(seen[0][0] | seen[0][1])).any()
    a, b = (f["scores"].set_index(["model", "case_id"]).prob for f in (first, second))
    validation = first["scores"].set_index(["model", "case_id"]).set == "validation"
    assert a[validation].equals(b[validation]) and not a[~validation].equals(b[~validation])


@pytest.mark.slow
def test_pneumothorax_study_end_to_end(tmp_path) -> None:
    """The demo generator's radiographs (PNG and MONOCHROME1 DICOM) through QC, both
    architectures, the ensemble, statistics, Grad-CAM and the report; a second run is
    served from the stage key."""
    from fusion.demo_radiograph import generate_pneumothorax_cohort
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    generate_pneumothorax_cohort(tmp_path / "data", n=80, seed=5, jobs=1)
    spec = yaml.safe_load((Path(__file__).parents[1] / "pipelines" /
                           "demo_pneumothorax.yaml").read_text())  # fmt: skip
    spec["cohort"]["manifest"] = str(tmp_path / "data" / "manifest.csv")
    spec["classifier"] |= {"image_size": 32, "max_epochs": 2, "batch_size": 16, "gallery": 2}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "study.yaml")
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", jobs=1)
    result = run_study(study, options)
    assert result.stages == ["qc", "splits", "classifier", "statistics", "report"]
    folder = tmp_path / "reports" / "demo_pneumothorax"
    perf = pd.read_csv(folder / "tables" / "performance.csv")
    assert set(perf.model) == {"resnet50", "densenet121", "ensemble"}
    assert set(perf.set) == {"validation", "test"}
    assert perf.auc_ci_low.notna().all()
    delong = pd.read_csv(folder / "tables" / "delong.csv")
    assert len(delong[delong.set == "test"]) == 3  # the two networks and the ensemble
    gradcam = pd.read_csv(folder / "tables" / "gradcam.csv")
    assert set(gradcam.model) == {"resnet50", "densenet121"}
    tested = int(perf[(perf.set == "test") & (perf.model == "resnet50")].n.iloc[0])
    assert gradcam.groupby("model").size().eq(tested).all()  # every test case, per network
    cohort = pd.read_csv(folder / "tables" / "cohort.csv")
    assert len(cohort) == 80 and cohort.included.all()
    html = (folder / "index.html").read_text()
    assert structure_problems(html) == []  # no empty section, placeholder, blank figure
    for text in ("DeLong comparison", "Does the model look at the lesion?", "true positives",
                 "Pointing game", "RANDOM weights"):  # fmt: skip
        assert text in html
    provenance = __import__("json").loads((folder / "provenance.json").read_text())
    assert {m["model"] for m in provenance["classifier_models"]} == {"resnet50", "densenet121"}
    digest = hashlib.sha256((folder / "tables" / "scores.csv").read_bytes()).hexdigest()
    again = run_study(study, options)
    assert again.stages == ["qc", "splits", "classifier", "statistics", "report"]
    assert hashlib.sha256((folder / "tables" / "scores.csv").read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("arch", ["resnet50", "densenet121"])
def test_torchvision_and_fusion_checkpoints_load_as_the_deep_stage_does(tmp_path, arch) -> None:
    """A torchvision state dict (1000-class head, DenseNet's old key names) fills the
    backbone and leaves the new head to the seed; a fusion checkpoint fills the head
    too; anything else is an error naming the file."""
    import torch
    import torchvision

    from fusion.checkpoint import save
    from fusion.learn.cnn.network import HEADS, build_classifier
    from fusion.nets.weights import load_weights

    reference = getattr(torchvision.models, arch)(weights=None)  # ImageNet's layout
    state = reference.state_dict()
    if arch == "densenet121":  # the names the ImageNet file really uses
        state = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
                 for k, v in state.items()}  # fmt: skip
    torch.save(state, tmp_path / "imagenet_like.pth")
    spec = ClassifierSpec(weights=str(tmp_path / "imagenet_like.pth"))
    weights = load_weights(spec, None, arch, "classifier")
    model = build_classifier(arch, weights.state_dict, 0, weights.source)
    ours, theirs = model.state_dict(), reference.state_dict()
    head = HEADS[arch]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if not k.startswith(head))
    assert ours[f"{head}.weight"].shape == (1, theirs[f"{head}.weight"].shape[1])
    save(tmp_path / "fusion.pt", model, {"architecture": arch})
    checkpoint = ClassifierSpec(weights=str(tmp_path / "fusion.pt"))
    again = build_classifier(arch, load_weights(checkpoint, None, arch, "classifier").state_dict, 5)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.items())
    other = "densenet121" if arch == "resnet50" else "resnet50"
    with pytest.raises(FusionError, match=f"imagenet_like.pth.*not a {other} state dict"):
        build_classifier(other, weights.state_dict, 0, weights.source)


def test_manifest_split_with_validation_is_used_as_given(tmp_path) -> None:
    from fusion.cohort import load_cohort
    from fusion.learn.splits import classifier_sets

    path = _cohort(tmp_path, n=12)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    manifest["split"] = ["train"] * 6 + ["validation"] * 2 + ["test"] * 4
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    study = load_study(path)
    sets = classifier_sets(load_cohort(study), study.classifier, study.seed)
    assert sets.tolist() == manifest.split.tolist()
    manifest["split"] = ["train"] * 8 + ["test"] * 4  # no validation: drawn from train
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    sets = classifier_sets(load_cohort(load_study(path)), study.classifier, study.seed)
    assert (sets[8:] == "test").all() and (sets[:8] == "validation").sum() >= 2
