"""The image-classifier stage: splits, one trained network per architecture, scores of
every held-out case, the ensemble, and Grad-CAM with its localisation figures.

Sets (seed 004's protocol): train / validation / test, 70/15/15 by default, stratified
by label and grouped by patient when the manifest has a patient column, or the
manifest's own split (``validation`` drawn from ``train`` when the manifest has none).
Networks see the training set; the validation set stops training, recalibrates each
model's probabilities (Platt scaling of the network's logit: a sigmoid output trained
with BCE on a few hundred images is rarely calibrated, and the decision curves need
calibrated risks) and sets its threshold (Youden, on the recalibrated probabilities);
the test and external sets are touched once, by the final models. The raw sigmoid
output stays in ``scores.csv`` (``raw_prob``) and its calibration in
``calibration_raw.csv``.
The statistics are fusion.stats' own (AUC with DeLong CI, paired DeLong between the
architectures and the ensemble, calibration, decision curves), on the same long
``scores`` table as the outcome-model studies.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from fusion.cohort import Case
from fusion.config import Study
from fusion.engine import CASE_COHORT_EXCLUDES, cache_key, stage_settings
from fusion.seeds import stream

ENSEMBLE = "ensemble"
CLASSIFIER_VERSION = 1
# study fields that cannot change the stage's output, each with the reason
CLASSIFIER_KEY_EXCLUDES = {
    "classifier": ("device",),  # replaced by the resolved device and precision
    "cohort": CASE_COHORT_EXCLUDES,
    "seed": (),
    "evaluation": (),
    "qc": (),  # acts through which cases pass, and those are hashed
    "reproducible": (),  # threads and kernels of every network
}
# classifier fields that cannot change a network's training: the device is resolved
# separately, the gallery and the ensemble act after training
TRAINING_KEY_EXCLUDES = {"device", "gallery", "ensemble"}
ESTIMATES = {"validation": "validation set (early stopping, recalibration and threshold "
                           "chosen on it)"}  # fmt: skip
RECALIBRATED_ON = {"validation": "apparent: the probabilities were recalibrated (Platt) on "
                                 "this set; judge calibration on the held-out sets"}  # fmt: skip


def classifier_settings(study: Study, device: str) -> dict[str, Any]:
    """The study fields the stage's output depends on, with the resolved device and
    precision (tests/test_cache_keys.py checks that every other field changes it)."""
    from fusion.device import precision

    return stage_settings(study, CLASSIFIER_KEY_EXCLUDES, device=device,
                          precision=precision(device), version=CLASSIFIER_VERSION)  # fmt: skip


def run_folder(folder: Path, arch: str, key: str) -> Path:
    """Where ``arch`` trains: one folder per training key, so a changed setting never
    resumes an incompatible run."""
    return folder / "classifier" / "runs" / f"{arch}-{key[:16]}"


def model_path(folder: Path, arch: str) -> Path:
    return folder / "classifier" / "models" / f"{arch}.pt"


def training_code() -> str:
    """Hash of the code a trained network depends on (images, network, loop): a change
    there retrains; a change to the report or the statistics does not."""
    import hashlib

    from fusion.learn.cnn import data, network, train

    h = hashlib.sha256()
    for module in (data, network, train):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def training_key(study: Study, arch: str, train_ids: list[str], val_ids: list[str],
                 digests: dict[str, tuple[str, str]], device: str) -> str:  # fmt: skip
    """What one network's training depends on: never the test cases."""
    from fusion.device import precision

    spec = study.classifier.model_dump(mode="json", exclude=TRAINING_KEY_EXCLUDES)
    mode = study.reproducible and study.reproducible.model_dump()
    return cache_key("cnn-train", arch, spec, study.seed, device, precision(device), mode,
                     training_code(),
                     [(c, digests[c], "train") for c in sorted(train_ids)],
                     [(c, digests[c], "validation") for c in sorted(val_ids)])  # fmt: skip


def run_classifier(
    study: Study, cases: list[Case], digests: dict[str, tuple[str, str]], folder: Path,
    device: str, sets: pd.Series, excluded: dict[str, str] | None = None,
) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Train, predict and explain the cases that passed QC (``excluded``: the others,
    with the reason, listed in ``cohort.csv``) on ``device``; ``sets``: case_id -> set
    (``tables/sets.csv``). Returns the stage's tables by name."""
    from fusion.learn.cnn.data import load_images
    from fusion.learn.cnn.train import logits, train_classifier
    from fusion.nets.weights import load_weights, weights_digest

    spec = study.classifier
    sets = sets[[c.case_id for c in cases]]
    images = load_images(cases, spec.image_size)
    ids = {name: [c for c in images.case_ids if sets[c] == name] for name in sets.unique()}
    train, val = images.subset(ids["train"]), images.subset(ids.get("validation", []))
    held = [c for c in images.case_ids if sets[c] not in ("train", "validation")]
    scored = images.subset(ids.get("validation", []) + held)
    base = study.source.parent if study.source else None
    logit: dict[str, np.ndarray] = {}
    rows, history, cams = [], [], []
    for arch in spec.architectures:
        weights = load_weights(spec, base, arch, "classifier")
        key = training_key(study, arch, ids["train"], ids.get("validation", []), digests, device)
        meta = {"architecture": arch, "image_size": spec.image_size, "study": study.name,
                "seed": study.seed, "weights": weights.source, "weights_sha256": weights.sha256,
                "training_key": key, "device": device, "versions": _versions()}  # fmt: skip
        trained = train_classifier(arch, train, val, spec, weights, meta,
                                   run_folder(folder, arch, key), study.seed, device)  # fmt: skip
        model_path(folder, arch).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trained.checkpoint, model_path(folder, arch))
        model = _load(arch, trained.checkpoint, device)
        logit[arch] = logits(model, scored.pixels, device, spec.batch_size).astype(float)
        rows.append({"model": arch, "weights": weights.source, "pretrained": weights.pretrained,
                     "weights_warning": weights.warning or "", "best_epoch": trained.best_epoch,
                     "epochs_run": len(trained.history), "stopped_early": trained.stopped_early,
                     "monitor": spec.monitor, "best_value": trained.best_value,
                     "weights_sha256": weights_digest(model.state_dict())})  # fmt: skip
        history += [{"model": arch, **h} for h in trained.history]
        cams.append((arch, model))
    ensemble = spec.ensemble and len(spec.architectures) > 1
    scores, thresholds, platt = _scores(scored, sets, logit, ensemble)
    models = pd.DataFrame(rows)
    models = pd.concat([models, pd.DataFrame([{"model": ENSEMBLE}])], ignore_index=True) \
        if ensemble else models  # fmt: skip
    models["threshold"] = models.model.map(thresholds)
    models["platt_intercept"] = models.model.map({m: ab[0] for m, ab in platt.items()})
    models["platt_slope"] = models.model.map({m: ab[1] for m, ab in platt.items()})
    tables = {"cohort": _cohort(cases, sets, excluded or {}), "scores": scores,
              "cnn_models": models, "cnn_training": pd.DataFrame(history)}  # fmt: skip
    tables |= _gradcam_tables(study, cams, images.subset(held), scores, thresholds, folder,
                              device)  # fmt: skip
    return tables


def _versions() -> dict[str, str]:
    import platform

    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}  # fmt: skip


def _load(arch: str, checkpoint: Path, device: str) -> Any:
    from fusion.checkpoint import read
    from fusion.learn.cnn.network import build_classifier

    model = build_classifier(arch, read(checkpoint, "classifier")["state_dict"], 0, str(checkpoint))
    return model.to(device).eval()


def _scores(scored, sets: pd.Series, logit: dict[str, np.ndarray], ensemble: bool = False):  # noqa: ANN001, ANN202
    """The long scores table, each model's validation-set Youden threshold and its Platt
    map. ``score`` is the network's logit (it ranks), ``raw_prob`` its sigmoid, ``prob``
    the probability recalibrated on the validation set (it feeds calibration, decision
    curves and the threshold). With ``ensemble``, the ensemble's raw probability is the
    mean of the architectures' recalibrated ones (averaging raw sigmoids would let one
    overconfident network, its outputs piled at 0 or 1, swamp the other), recalibrated
    on the validation set in turn."""
    from fusion.learn.calibrated import platt_fit
    from fusion.stats.metrics import youden_threshold

    frames, thresholds, platt, calibrated = [], {}, {}, {}
    case_sets = sets[scored.case_ids].to_numpy()
    validation = case_sets == "validation"
    labels = scored.labels.astype(int)
    models = dict(logit)
    if ensemble:
        models[ENSEMBLE] = None  # after its members
    for model, score in models.items():
        if score is None:
            mean = np.mean([calibrated[m] for m in logit], axis=0).clip(1e-12, 1 - 1e-12)
            score = np.log(mean / (1 - mean))
        a, b = platt_fit(score[validation], labels[validation])
        calibrated[model] = expit(a + b * score)
        platt[model] = (a, b)
        thresholds[model] = youden_threshold(labels[validation], calibrated[model][validation])
        frames.append(pd.DataFrame({
            "case_id": scored.case_ids, "set": case_sets, "label": labels,
            "model": model, "score": score, "raw_prob": expit(score),
            "prob": calibrated[model],
            "predicted": (calibrated[model] >= thresholds[model]).astype(int),
            "estimate": [ESTIMATES.get(s, "held-out") for s in case_sets],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True), thresholds, platt


def _cohort(cases: list[Case], sets: pd.Series, excluded: dict[str, str]) -> pd.DataFrame:
    included = pd.DataFrame({"case_id": [c.case_id for c in cases],
                             "set": [sets[c.case_id] for c in cases],
                             "label": [c.label for c in cases], "included": True, "reason": "",
                             "patient": [c.patient or "" for c in cases]})  # fmt: skip
    dropped = pd.DataFrame({"case_id": list(excluded), "set": "", "label": np.nan,
                            "included": False, "reason": list(excluded.values()),
                            "patient": ""})  # fmt: skip
    return pd.concat([included, dropped], ignore_index=True) if excluded else included


def _outcome(label: int, predicted: int) -> str:
    return {(1, 1): "TP", (0, 1): "FP", (1, 0): "FN", (0, 0): "TN"}[(label, predicted)]


def _gradcam_tables(study, cams, held, scores, thresholds, folder, device) -> dict:  # noqa: ANN001
    """Grad-CAM of every test and external case per architecture: ``gradcam`` (one row
    per case), ``gradcam_localisation`` (per model and case group), and overlays of the
    gallery cases under ``figures/gradcam/<model>/``."""
    from PIL import Image

    from fusion.atomic import atomic_path
    from fusion.learn.cnn.data import as_input
    from fusion.learn.cnn.gradcam import GradCam, localisation, overlay
    from fusion.learn.cnn.network import CAM_LAYER
    from fusion.stats.metrics import wilson_ci
    from fusion.stats.segmentation import bootstrap_mean_ci

    spec = study.classifier
    rows = []
    figures = folder / "figures" / "gradcam"
    shutil.rmtree(figures, ignore_errors=True)
    for arch, model in cams:
        cam_of = GradCam(model, CAM_LAYER[arch])
        part = scores[scores.model == arch].set_index("case_id")
        maps = []
        try:
            for start in range(0, len(held.case_ids), spec.batch_size):
                batch = as_input(held.pixels[start : start + spec.batch_size], device)
                maps += cam_of(batch)
        finally:
            cam_of.close()
        for i, case_id in enumerate(held.case_ids):
            cam, mask = maps[i], held.masks[i] if held.has_mask[i] else None
            loc = localisation(cam, mask) if mask is not None else None
            rows.append({
                "model": arch, "case_id": case_id, "set": part.at[case_id, "set"],
                "label": int(held.labels[i]), "prob": part.at[case_id, "prob"],
                "outcome": _outcome(int(held.labels[i]), int(part.at[case_id, "predicted"])),
                "zero_map": cam.zero, "peak_row": cam.peak[0], "peak_col": cam.peak[1],
                "map_cells": f"{cam.cells[0]}x{cam.cells[1]}",
                "has_mask": mask is not None and bool(mask.any()),
                "energy_in_mask": loc.energy_in_mask if loc else np.nan,
                "chance_energy": loc.chance if loc else np.nan,
                "pointing_hit": loc.pointing_hit if loc else np.nan,
                "_overlay": (held.pixels[i], cam, mask),
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return {"gradcam": frame, "gradcam_localisation": pd.DataFrame()}
    frame["gallery"] = False
    for (arch, outcome), part in frame.groupby(["model", "outcome"]):
        if outcome == "TN":
            continue
        confident = part.prob if outcome != "FN" else -part.prob
        chosen = part.loc[confident.sort_values(ascending=False).index[: spec.gallery]]
        for index, row in chosen.iterrows():
            frame.at[index, "gallery"] = True
            path = figures / arch / f"{row.case_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(overlay(*row["_overlay"])).save(tmp, format="PNG")
    frame = frame.drop(columns="_overlay")
    summary = []
    ev = study.evaluation
    for arch, part in frame.groupby("model", sort=False):
        for group, rows_ in (("positives with a mask", part[part.has_mask & (part.label == 1)]),
                             ("true positives with a mask",
                              part[part.has_mask & (part.outcome == "TP")])):  # fmt: skip
            measured = rows_[~rows_.zero_map]
            energy = measured.energy_in_mask.to_numpy(float)
            hits = measured.pointing_hit.astype(float).to_numpy()
            lo, hi = bootstrap_mean_ci(energy, ev.bootstrap, stream(study.seed, "bootstrap"),
                                       ev.conf_level)  # fmt: skip
            hit_lo, hit_hi = wilson_ci(int(hits.sum()), len(hits), ev.conf_level)
            summary.append({
                "model": arch, "cases": group, "n_cases": len(rows_),
                "zero_maps": int(rows_.zero_map.sum()), "n_measured": len(measured),
                "map_cells": part.map_cells.iloc[0],
                "energy_in_mask": float(energy.mean()) if len(energy) else np.nan,
                "energy_ci_low": lo, "energy_ci_high": hi,
                "chance_energy": float(measured.chance_energy.mean()) if len(energy) else np.nan,
                "pointing_hit_rate": float(hits.mean()) if len(hits) else np.nan,
                "pointing_ci_low": hit_lo, "pointing_ci_high": hit_hi,
            })  # fmt: skip
    return {"gradcam": frame, "gradcam_localisation": pd.DataFrame(summary)}
