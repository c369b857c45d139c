"""``deep.weights: finetune``: train the deep stage's ResNet50 on the study's own crops
before extracting features, with the image-classifier loop of :mod:`fusion.learn.cnn`.

Offline there are no pretrained CT weights, and random convolutions carry little
signal; fine-tuning on the outcome is the way to features that do. Leakage is avoided by
construction: the cases are the training set of the study's one split
(``tables/sets.csv``, so test and external cases never enter),
each crop plane is one image with its case's label, and a share of the training cases
(whole cases, so a case's planes stay together) stops training early. The fine-tuned
backbone is cached by what it depends on (the crop settings, the training cases'
contents and labels, the fine-tuning settings, seed and device), and its weights'
digest enters every case's feature key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusion.cohort import Case
from fusion.config import ClassifierSpec, Study
from fusion.engine import Store, cache_key
from fusion.errors import FusionError
from fusion.seeds import stream


def _crops(cases: list[Case], study: Study) -> tuple[list[str], np.ndarray]:
    """Every plane of every case's crops as one image (case id repeated per plane). A
    case that cannot be cropped is left out here; the extraction that follows records
    it as that case's failure."""
    from fusion.features.crops import prepare_case, roi_source

    label, structures = roi_source(study)
    ids, planes = [], []
    for case in cases:
        try:
            crops, _ = prepare_case(case, study.deep, label, structures)
        except Exception:  # noqa: BLE001, S112 - reported by the extraction, per case
            continue
        ids += [case.case_id] * len(crops)
        planes.append(crops)
    if not planes:
        raise FusionError("deep.finetune: no training case could be cropped")
    return ids, np.concatenate(planes).astype(np.float32)


def finetune_backbone(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    roi_digests: dict[str, str],
    cache_root: Path | None,
    device: str,
) -> tuple[Any, Path]:
    """The ResNet50 fine-tuned on ``cases`` (the study's training cases) as
    :class:`fusion.nets.weights.Weights`, and its checkpoint (what a cluster worker
    loads). Without a cache folder it trains in a temporary folder, removed at exit."""
    from fusion.checkpoint import read
    from fusion.learn.cnn.data import Images
    from fusion.learn.cnn.train import finished, train_classifier
    from fusion.learn.splits import draw_split
    from fusion.nets.weights import Weights, load_weights, weights_digest

    spec, ft = study.deep, study.deep.finetune
    train_cases = cases
    fit_ids, val_ids = draw_split(
        train_cases, ft.validation_size, stream(study.seed, "split/finetune")
    )
    base = study.source.parent if study.source else None
    start = load_weights(spec.model_copy(update={"weights": ft.start}), base)
    training = ClassifierSpec(
        architectures=["resnet50"], image_size=spec.size, batch_size=ft.batch_size,
        max_epochs=ft.max_epochs, patience=ft.patience, learning_rate=ft.learning_rate,
        freeze=ft.freeze, augment=ft.augment, validation_size=0.15, test_size=0.15,
    )  # fmt: skip
    key = cache_key("deep-finetune", spec.model_dump(mode="json", exclude={"device"}),
                    study.seed, device, start.sha256 or start.source,
                    study.reproducible and study.reproducible.model_dump(),
                    sorted((c.case_id, c.label, digests[c.case_id], roi_digests.get(c.case_id))
                           for c in train_cases), sorted(val_ids))  # fmt: skip
    folder = Store(cache_root or _scratch(), "deep_finetune").folder(key)
    meta = {"architecture": "resnet50", "purpose": "deep features (fine-tuned)",
            "study": study.name, "start": start.source, "key": key}  # fmt: skip
    trained = finished(folder)  # a finished fine-tuning is not cropped again
    if trained is None:
        by_id = {c.case_id: c for c in train_cases}
        images = {}
        for name, ids in (("fit", fit_ids), ("validation", val_ids)):
            plane_ids, pixels = _crops([by_id[c] for c in ids], study)  # (planes, 3, h, w)
            labels = np.array([by_id[c].label for c in plane_ids], np.float32)
            none = np.zeros((len(plane_ids), *pixels.shape[-2:]), bool)
            images[name] = Images(plane_ids, pixels, labels, none, none[:, 0, 0])
        trained = train_classifier("resnet50", images["fit"], images["validation"], training,
                                   start, meta, folder, study.seed, device,
                                   desc="fine-tuning ResNet50")  # fmt: skip
    state = read(trained.checkpoint, "classifier")["state_dict"]
    source = (f"fine-tuned from {start.source} on the crops of {len(fit_ids)} training cases "
              f"(best epoch {trained.best_epoch} of {len(trained.history)}, validation AUC "
              f"{trained.history[trained.best_epoch - 1]['val_auc']:.3f} on "
              f"{len(val_ids)} held-back training cases)")  # fmt: skip
    weights = Weights(state, source, weights_digest(state), start.pretrained, start.warning)
    return weights, trained.checkpoint


def _scratch() -> Path:
    """A temporary folder for a run without a cache, removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fusion-finetune-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
