"""The segmentation stage: train, predict, evaluate (``fusion seg train|predict|evaluate``).

Splits follow the seeds. The training cases (manifest split ``train``) are cut into
``cv_folds`` folds by patient: each fold's model is trained on the others, stopped
early on its own fold, and predicts that fold (the CV table). The final model is
trained on all training cases and selected (early stopping, best epoch) on the tuning
set (manifest split ``tuning``, or a share of the training patients drawn with the
seed); it alone predicts the tuning, test and external cases. Each preprocessing
variant goes through the same folds and sets, so variants are compared case by case.

Trained models are cached by the content of their training and validation cases and
every setting that can change them; the final model of each variant is copied to
``reports/<study>/segmentation/models/<variant>.pt``, where the ``unet`` ROI generator
finds it (``settings: {model: <variant>}``). The stage's tables are recomputed only
when its key (settings, case contents, fusion's source) changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from fusion.atomic import atomic_path
from fusion.cohort import Case
from fusion.config import SegmentationSpec, Study
from fusion.engine import CASE_COHORT_EXCLUDES, Store, cache_key, stage_settings
from fusion.errors import FusionError
from fusion.seeds import stream
from fusion.seg.data import prepare
from fusion.seg.infer import predict_image
from fusion.stats.froc import CaseLesions, case_lesions

SEG_VERSION = 1
# study fields that cannot change a trained model, each with the reason
SEG_KEY_EXCLUDES = {
    "seed": (),
    "cohort": (*CASE_COHORT_EXCLUDES, "modality"),  # modality: QC's HU checks only
    "segmentation": (
        "device",  # replaced by the resolved device and precision
        # evaluation only
        *("case_score", "case_threshold", "iou_thresholds", "subgroup", "froc", "involvement"),
        # which cases train and validate a model is in its key as their contents
        "cv_folds",
        "cv_variants",
        "tuning_fraction",
        "variants",  # a model's own variant is in its key; the others are not its business
    ),
    "reproducible": (),  # threads and kernels of every network
}


def model_path(folder: Path, variant: str) -> Path:
    """Where the final model of a variant is published for the ``unet`` generator."""
    return folder / "segmentation" / "models" / f"{variant}.pt"


def seg_settings(study: Study, device: str) -> dict[str, Any]:
    from fusion.device import precision

    return stage_settings(
        study, SEG_KEY_EXCLUDES, device=device, precision=precision(device), version=SEG_VERSION
    )


@dataclass(frozen=True, slots=True)
class Sets:
    """case_id lists of each role."""

    train: list[str]
    tuning: list[str]
    evaluated: dict[str, str]  # case -> set name (tuning, test, external:<site>)
    folds: list[list[str]]
    tuning_source: str


def split_cases(cases: list[Case], sets: pd.DataFrame, spec: SegmentationSpec,
                seed: int) -> Sets:  # fmt: skip
    """Training, tuning and evaluation cases from the study's sets (``tables/sets.csv``;
    QC failures dropped), and the CV folds of the training cases, every split by
    patient. A study whose sets have no tuning set (it also fits outcome models) draws
    its tuning cases from the training patients."""
    from sklearn.model_selection import GroupKFold

    from fusion.learn.splits import draw_tuning

    named = {c.case_id: sets.at[c.case_id, "set"] for c in cases}
    patient = {c.case_id: c.patient or c.case_id for c in cases}
    train = [c for c, s in named.items() if s == "train"]
    tuning = [c for c, s in named.items() if s == "tuning"]
    if not train:
        raise FusionError("segmentation: no training case (manifest split 'train')")
    drawn = sets.loc[tuning, "source"].str.startswith("drawn")
    source = (
        "manifest"
        if tuning and not drawn.any()
        else (f"{spec.tuning_fraction:.0%} of the training patients, drawn with the seed")
    )
    if not tuning:
        tuning = draw_tuning(train, patient, spec.tuning_fraction, stream(seed, "split/tuning"))
        named |= dict.fromkeys(tuning, "tuning")
    train = [c for c in train if c not in set(tuning)]
    folds = []
    if spec.cv_folds >= 2:
        if len({patient[c] for c in train}) < spec.cv_folds:
            raise FusionError(
                f"segmentation.cv_folds = {spec.cv_folds} needs as many training patients"
            )
        rng = np.random.default_rng(stream(seed, "segmentation/cv"))
        order = [train[i] for i in rng.permutation(len(train))]
        splitter = GroupKFold(spec.cv_folds)
        folds = [
            [order[i] for i in held]
            for _, held in splitter.split(order, groups=[patient[c] for c in order])
        ]
    evaluated = {c: s for c, s in named.items() if s != "train"}
    return Sets(train, tuning, evaluated, folds, source)


def _read(case: Case) -> tuple[sitk.Image, sitk.Image | None]:
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi

    image = read_image(case.image, case.series_uid)
    reference = read_roi(case.reference, image) if case.reference is not None else None
    return image, reference


def training_spacing(images: list[sitk.Image]) -> list[float]:
    """The median spacing (x, y, z) of the training images."""
    return [float(v) for v in np.median([im.GetSpacing() for im in images], axis=0)]


@dataclass
class _Models:
    """What training produced for one variant: final checkpoint, fold checkpoints with
    the cases each predicts, and the training curves."""

    final: Path
    folds: list[tuple[Path, list[str]]]
    rows: list[dict]


def _train_variant(study, variant, sets, images, spacing, digests, store, device):  # noqa: ANN001, ANN202
    """The fold models and the final model of one variant (cached by content)."""
    from fusion.seg.network import model_meta
    from fusion.seg.train import train_unet

    spec = study.segmentation
    vspec = spec.variants[variant]
    prepared = {
        c: prepare(images[c][0], images[c][1], spacing, vspec, spec.normalise)
        for c in [*sets.train, *sets.tuning]
    }
    settings = seg_settings(study, device)
    cross_validate = spec.cv_variants == "all" or variant == next(iter(spec.variants))
    runs = [
        (f"fold {k + 1}", [c for c in sets.train if c not in fold], fold)
        for k, fold in enumerate(sets.folds if cross_validate else [])
    ]
    runs.append(("final", sets.train, sets.tuning))
    out = _Models(Path(), [], [])
    for name, train_ids, val_ids in runs:
        key = cache_key(
            "seg-train",
            settings,
            variant,
            vspec.model_dump(mode="json"),
            spacing,
            [(c, digests[c]) for c in sorted(train_ids)],
            [(c, digests[c]) for c in sorted(val_ids)],
        )
        meta = model_meta(
            spec.network,
            spec.labels,
            spacing,
            spec.patch_size,
            spec.normalise,
            vspec,
            {
                "study": study.name,
                "variant": variant,
                "model": name,
                "data_hash": key,
                "training_cases": len(train_ids),
                "validation_cases": len(val_ids),
                "seed": study.seed,
                "device": device,
            },
        )
        if not all(prepared[c].label is not None for c in [*train_ids, *val_ids]):
            raise FusionError("segmentation: every training and tuning case needs a reference")
        trained = train_unet(
            [prepared[c] for c in train_ids],
            [prepared[c] for c in val_ids],
            spec,
            meta,
            store.folder(key),
            study.seed,
            device,
            desc=f"U-Net {variant} {name}",
        )
        out.rows += [
            {"variant": variant, "model": name, **h, "best": h["epoch"] == trained.best_epoch}
            for h in trained.history
        ]
        if name == "final":
            out.final = trained.checkpoint
        else:
            out.folds.append((trained.checkpoint, val_ids))
    return out


@dataclass(frozen=True, slots=True)
class Predicted:
    """What evaluation keeps of one prediction: the labels on the case's grid, the notes,
    the highest foreground probability and, with a reference, the matched lesions. The
    probability volumes themselves are dropped as soon as these are read from them."""

    labels: sitk.Image
    notes: tuple[str, ...]
    max_probability: float
    lesions: CaseLesions | None


def _predict(model_file: Path, case_ids, images, threshold, device):  # noqa: ANN001, ANN202
    """case -> :class:`Predicted` with one model; a case that fails is its error."""
    from fusion.seg.infer import model_from

    model, meta = model_from(model_file)
    out = {}
    for c in case_ids:
        try:
            pred = predict_image(model, meta, images[c][0], device, threshold)
        except Exception as exc:  # noqa: BLE001 - one case's failure is that case's
            out[c] = FusionError(f"case {c}: prediction failed: {type(exc).__name__}: {exc}")
            continue
        foreground = 1.0 - pred.probabilities[0]
        reference = images[c][1]
        lesions = None
        if reference is not None:
            found = sitk.GetArrayViewFromImage(pred.labels) > 0
            lesions = case_lesions(c, found, foreground, sitk.GetArrayViewFromImage(reference) > 0)
        out[c] = Predicted(pred.labels, pred.notes, float(foreground.max()), lesions)
    return out


def run_segmentation(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    folder: Path,
    cache_root: Path | None,
    study_sets: pd.DataFrame,
    device: str,
) -> dict[str, pd.DataFrame]:
    """Train every variant on ``device``, predict the evaluation cases, and return the
    stage's tables (written by the caller under ``tables/seg_*.csv``). ``study_sets``:
    the study's ``sets.csv`` indexed by case_id."""
    from fusion.seg.evaluate import evaluation_tables

    spec = study.segmentation
    if spec is None:
        raise FusionError(f"{study.source}: the study has no segmentation section")
    store = Store(cache_root or folder / ".work", "seg")
    sets = split_cases(cases, study_sets, spec, study.seed)
    by_id = {c.case_id: c for c in cases}
    images = {c: _read(by_id[c]) for c in [*sets.train, *sets.tuning, *sets.evaluated]}
    spacing = spec.spacing or training_spacing([images[c][0] for c in sets.train])
    predictions, curves, models = {}, [], {}
    for variant in spec.variants:
        trained = _train_variant(study, variant, sets, images, spacing, digests, store, device)
        curves += trained.rows
        target = model_path(folder, variant)
        if not (target.is_file() and target.read_bytes() == trained.final.read_bytes()):
            with atomic_path(target) as tmp:
                shutil.copy2(trained.final, tmp)
        models[variant] = target
        final = _predict(target, list(sets.evaluated), images, spec.threshold, device)
        predictions[(variant, "final")] = final
        for k, (checkpoint, fold_ids) in enumerate(trained.folds):
            predictions[(variant, f"fold {k + 1}")] = _predict(
                checkpoint, fold_ids, images, spec.threshold, device
            )
        _save_predictions(folder, variant, final)
    tables = evaluation_tables(study, sets, by_id, images, predictions, spacing)
    tables["seg_training"] = pd.DataFrame(curves)
    tables["seg_models"] = _models_table(models, device, folder)
    return tables


def _save_predictions(folder: Path, variant: str, predictions: dict) -> None:
    """The final model's label maps of the evaluated cases, for the report's gallery."""
    for case_id, pred in predictions.items():
        if isinstance(pred, Exception):
            continue
        path = folder / "segmentation" / "predictions" / variant / f"{case_id}.nii.gz"
        with atomic_path(path) as tmp:
            sitk.WriteImage(pred.labels, str(tmp), useCompression=True)


def _models_table(models: dict[str, Path], device: str, folder: Path) -> pd.DataFrame:
    """Each final model: its checkpoint (relative to the study's report folder, so the
    table does not depend on where the reports were written), weights digest, kept
    epoch and tuning Dice, grid, patch, device and versions."""
    from fusion.nets.weights import weights_digest
    from fusion.seg.network import read_checkpoint

    rows = []
    for variant, path in models.items():
        saved = read_checkpoint(path)
        meta = saved["meta"]
        prov = meta["provenance"]
        rows.append(
            {
                "variant": variant,
                "checkpoint": os.path.relpath(path, folder),
                # the weights' digest: torch's zip container is not byte-stable
                "weights_sha256": weights_digest(saved["state_dict"]),
                "best_epoch": prov["epoch"],
                "tuning_dice": prov["val_dice"],
                "spacing_mm": " x ".join(f"{s:g}" for s in meta["spacing"]),
                "patch": " x ".join(map(str, meta["patch_size"])),
                "device": device,
                "torch": prov["versions"]["torch"],
                "monai": prov["versions"]["monai"],
            }
        )
    return pd.DataFrame(rows)
