"""The ROI stage: every generated ROI of a study, for every case that passed QC.

A study's ``rois`` section names ROIs made from each case's drawn ROI (label
``cohort.roi_label``) by a generator of :mod:`fusion.rois` (``ring``, ``habitat``...).
Each is a label map written once under ``reports/<study>/rois/<roi>/<case>.nii.gz`` and
kept in the per-case cache under a key of the image and ROI content and the generator's
settings. A per-case generator runs on the engine like any per-case stage; a cohort
habitat runs in two steps: supervoxels per case on the engine, then one population
clustering fitted on the training cases only and applied to every case.

``rois.csv`` lists per case and generated ROI every label with its name and voxel count,
and the generator's notes (a ring clipped at the border, an ROI too small to split). A
sub-region with fewer voxels than ``qc.min_roi_voxels`` is left out of that case's
features, with a note; the case and its other ROIs go on.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from fusion.atomic import atomic_path, write_text_atomic
from fusion.cohort import Case
from fusion.config import AUXILIARY_GENERATORS, Study
from fusion.engine import (
    CASE_COHORT_EXCLUDES,
    Store,
    Task,
    cache_key,
    run_tasks,
    stage_settings,
)
from fusion.errors import FusionError

ROI_CACHE_VERSION = 3  # 3: the lung outline closes by distance transforms

# study fields that cannot change a generated label map, each with the reason
ROIS_KEY_EXCLUDES = {
    "cohort": (*CASE_COHORT_EXCLUDES, "modality"),  # modality: QC's HU checks only
}


@dataclass(frozen=True, slots=True)
class GeneratedRoi:
    """One case's generated label map: where it is, its labels' names, the labels kept
    for features, the notes, and the intensity change its features are computed on
    (:mod:`fusion.io.intensity`; None: the image as it is)."""

    path: Path
    names: dict[int, str]
    kept: tuple[int, ...]
    notes: tuple[str, ...]
    image_op: dict[str, Any] | None = None


def _read_case(case: Case, study: Study) -> tuple[sitk.Image, sitk.Image | None]:
    """The image, and the drawn ROI as a 0/1 mask of ``cohort.roi_label`` (None when the
    manifest gives none: a segmenter needs only the image)."""
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi

    image = read_image(case.image, case.series_uid)
    if case.roi is None:
        return image, None
    roi = read_roi(case.roi, image, study.cohort.structures)
    mask = sitk.Cast(roi == study.cohort.roi_label, sitk.sitkUInt8)
    mask.CopyInformation(image)
    return image, mask


def _write(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def generate_case(payload: tuple[Case, Study, str, dict, Path]) -> dict[str, Any]:
    """Worker: one per-case generator on one case; the label map is written to ``out``."""
    from fusion.rois import GENERATORS, make_generator

    case, study, name, settings, out = payload
    spec = study.rois[name]
    image, mask = _read_case(case, study)
    if mask is None and getattr(GENERATORS[spec.generator], "needs_roi", True):
        raise FusionError(f"ROI {name!r} ({spec.generator}) is made from the drawn ROI, and "
                          "the manifest gives none for this case")  # fmt: skip
    result = make_generator(spec.generator, **settings)(image, mask)
    _write(result.image, out)
    return _describe(result)


def _describe(result: Any, extra_notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the stage keeps of a generated label map besides the file: names, voxel
    counts and notes, so a warm run never reads the map again to decide what to keep."""
    array = sitk.GetArrayViewFromImage(result.image)
    return {
        "names": {str(k): v for k, v in result.names.items()},
        "counts": {str(k): int((array == k).sum()) for k in result.names},
        "notes": [*result.notes, *extra_notes],
        "image_op": result.image_op,
    }


def supervoxel_case(payload: tuple[Case, Study, str, Path]) -> dict[str, Any]:
    """Worker: step 1 of a cohort habitat, saved to ``out`` (.npz)."""
    from fusion.rois import make_generator
    from fusion.rois.habitat import supervoxels

    case, study, name, out = payload
    spec = study.rois[name]
    habitat = make_generator("habitat", **generator_settings(study, name))
    image, mask = _read_case(case, study)
    inside = sitk.GetArrayFromImage(mask) > 0
    if not inside.any():
        raise FusionError(f"case {case.case_id}: the ROI is empty")
    step = supervoxels(image, inside, spec.supervoxels, habitat.neighbourhood_mm, habitat.seed)
    with atomic_path(out) as tmp, tmp.open("wb") as f:
        np.savez(f, assignment=step.assignment, means=step.means)
    return {"voxels": int(inside.sum())}


def generator_settings(study: Study, name: str, folder: Path | None = None) -> dict[str, Any]:
    """ROI ``name``'s generator settings, with ``model: <variant>`` of a ``unet`` resolved
    to this study's trained checkpoint under ``folder`` (reports/<study>) and its device
    resolved, and a habitat's seed, unless the study gives one, the study seed's
    ``habitat/<name>`` stream (a perturbation's or negative control's ``rois/<name>``;
    :mod:`fusion.seeds`)."""
    from fusion.reproducible import mode_of
    from fusion.seeds import stream

    spec = study.rois[name]
    settings = dict(spec.settings)
    if spec.generator == "habitat" and "seed" not in settings:
        settings["seed"] = stream(study.seed, f"habitat/{name}")
    if spec.generator in AUXILIARY_GENERATORS and "seed" not in settings:
        settings["seed"] = stream(study.seed, f"rois/{name}")
    if spec.generator == "unet":
        settings["device"] = roi_device(study, name)
        settings["reproducible"] = mode_of(study)
        if settings.get("model") is not None and folder is not None:
            from fusion.seg.stage import model_path

            settings["checkpoint"] = str(model_path(folder, settings.pop("model")))
    return settings


def roi_device(study: Study, name: str) -> str | None:
    """The resolved device of a network generator (``unet``), None for the others."""
    from fusion.device import pick_device

    spec = study.rois[name]
    return pick_device(spec.settings.get("device", "auto")) if spec.generator == "unet" else None


def rois_settings(
    study: Study, name: str, folder: Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Everything that can change ROI ``name``'s label map of a case: its own spec, the
    cohort fields that pick the drawn ROI, the content of a segmenter's checkpoint, the
    device and precision it runs in (``device`` overrides the resolved one), the seed
    of a habitat's clustering and the study's reproducible mode for a network."""
    from fusion.device import precision
    from fusion.hashing import file_digest

    resolved = generator_settings(study, name, folder)
    checkpoint = None
    if folder is not None and "checkpoint" in resolved:
        checkpoint = file_digest(Path(resolved["checkpoint"]))
    device = device or roi_device(study, name)
    return stage_settings(
        study, ROIS_KEY_EXCLUDES, roi=study.rois[name].model_dump(mode="json"),
        version=ROI_CACHE_VERSION, checkpoint=checkpoint, device=device,
        precision=precision(device) if device else None,
        seed=resolved.get("seed"),  # a habitat's clustering, a control's draws
        reproducible=resolved.get("reproducible"),
    )  # fmt: skip


def run_rois(
    study: Study,
    cases: list[Case],
    sets: pd.Series,
    digests: dict[str, tuple[str, str]],
    folder: Path,
    cache_root: Path | None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> tuple[dict[str, dict[str, GeneratedRoi]], pd.DataFrame]:
    """case -> ROI name -> :class:`GeneratedRoi`, and the ``rois.csv`` table."""
    store = Store(cache_root or folder / ".work", "rois")
    generated: dict[str, dict[str, GeneratedRoi]] = {c.case_id: {} for c in cases}
    failures = []
    for name, spec in study.rois.items():
        settings = rois_settings(study, name, folder)
        keys = {c.case_id: cache_key("rois", name, settings, digests[c.case_id], c.series_uid)
                for c in cases}  # fmt: skip
        if spec.mode == "cohort":
            results, failed = _cohort(study, name, cases, sets, keys, store, jobs, scheduler)
        else:
            resolved = generator_settings(study, name, folder)
            results, failed = _per_case(study, name, resolved, cases, keys, store, jobs, scheduler)
        failures += failed
        for case_id, (source, value) in results.items():
            target = folder / "rois" / name / f"{case_id}.nii.gz"
            if not (target.is_file() and filecmp.cmp(source, target, shallow=True)):
                with atomic_path(target) as tmp:
                    shutil.copy2(source, tmp)  # keeps mtime: the next run's cmp is a stat
            generated[case_id][name] = _checked(target, value, study.qc.min_roi_voxels)
    return generated, _table(generated, failures)


def _per_case(study, name, settings, cases, keys, store, jobs, scheduler):  # noqa: ANN001, ANN202
    """Per-case generator through the engine; cached label maps are reused."""
    results, todo = {}, []
    for case in cases:
        path, meta = _paths(store, keys[case.case_id], ".nii.gz")
        if path.is_file() and meta.is_file():
            results[case.case_id] = (path, json.loads(meta.read_text()))
        else:
            todo.append(Task(case.case_id, "", (case, study, name, settings, path)))
    mode = settings.get("reproducible")  # a network's threads, whatever it is allotted
    run = run_tasks(generate_case, todo, None, jobs=jobs, scheduler=scheduler, desc=f"ROI {name}",
                    task_threads=int(mode["threads"]) if mode else None)  # fmt: skip
    for case_id, value in run.results.items():
        path, meta = _paths(store, keys[case_id], ".nii.gz")
        write_text_atomic(json.dumps(value), meta)
        results[case_id] = (path, value)
    return results, [(f.case_id, name, f"{f.error}: {f.message}") for f in run.failures]


def _cohort(study, name, cases, sets, keys, store, jobs, scheduler):  # noqa: ANN001, ANN202
    """Cohort habitats: supervoxels per case (engine, cached), a population fitted on the
    training cases only, then every case assigned and written here."""
    from fusion.rois import make_generator
    from fusion.rois.habitat import Supervoxels, choose_k, fit_population, too_small, unsplit

    spec = study.rois[name]
    habitat = make_generator("habitat", **generator_settings(study, name))
    todo = [Task(c.case_id, "", (c, study, name, _paths(store, keys[c.case_id], ".npz")[0]))
            for c in cases if not _paths(store, keys[c.case_id], ".npz")[0].is_file()]  # fmt: skip
    run = run_tasks(supervoxel_case, todo, None, jobs=jobs, scheduler=scheduler,
                    desc=f"ROI {name} (supervoxels)")  # fmt: skip
    failed = {f.case_id: f"{f.error}: {f.message}" for f in run.failures}
    steps = {}
    for case in cases:
        if case.case_id in failed:
            continue
        with np.load(_paths(store, keys[case.case_id], ".npz")[0]) as data:
            steps[case.case_id] = Supervoxels(data["assignment"], data["means"])
    training = [steps[c] for c in steps if sets.get(c) == "train"]
    if not training:
        raise FusionError(f"rois.{name}: no training case to define the habitats on")
    k = habitat.k
    if spec.k_candidates:  # chosen on the training cases only, like the clustering
        k = choose_k(training, spec.k_candidates, habitat.seed)
    population = fit_population(training, k, habitat.seed)
    chosen = (
        (f"k = {k} chosen by silhouette among {spec.k_candidates}",) if spec.k_candidates else ()
    )
    results = {}
    for case in cases:
        if case.case_id not in steps:
            continue
        path, meta = _paths(store, cache_key(keys[case.case_id], population.centroids.tolist()),
                            ".nii.gz")  # fmt: skip
        if path.is_file() and meta.is_file():  # this case under this population: done
            results[case.case_id] = (path, json.loads(meta.read_text()))
            continue
        _, mask = _read_case(case, study)
        inside = sitk.GetArrayFromImage(mask) > 0
        note = too_small(inside, k, habitat.min_voxels)
        out = (
            unsplit(mask, note)
            if note
            else population.assign(steps[case.case_id], inside, mask, habitat.order)
        )
        _write(out.image, path)
        value = _describe(out, chosen)
        write_text_atomic(json.dumps(value), meta)
        results[case.case_id] = (path, value)
    return results, [(cid, name, message) for cid, message in failed.items()]


def _paths(store: Store, key: str, suffix: str) -> tuple[Path, Path]:
    """A generated label map (or a habitat's supervoxels) and its notes, under one key."""
    return store.path(key, suffix), store.path(key)


def _checked(path: Path, value: dict[str, Any], min_voxels: int) -> GeneratedRoi:
    """Keep the labels with at least ``min_voxels`` voxels; say which were left out."""
    names = {int(k): v for k, v in value["names"].items()}
    counts = {int(k): n for k, n in value["counts"].items()}
    kept = tuple(label for label in names if counts[label] >= min_voxels)
    notes = list(value["notes"])
    notes += [f"{names[label]}: {counts[label]} voxels, fewer than qc.min_roi_voxels = "
              f"{min_voxels}; left out of this case's features" for label in names
              if label not in kept]  # fmt: skip
    return GeneratedRoi(path, names, kept, tuple(notes), value.get("image_op"))


def _table(generated: dict[str, dict[str, GeneratedRoi]], failures: list) -> pd.DataFrame:  # noqa: ANN001
    rows = []
    for case_id, rois in generated.items():
        for name, roi in rois.items():
            rows.append({"case_id": case_id, "roi": name,
                         "labels": " ".join(f"{k}={v}" for k, v in roi.names.items()),
                         "kept": " ".join(roi.names[k] for k in roi.kept),
                         "notes": " | ".join(roi.notes), "error": ""})  # fmt: skip
    rows += [{"case_id": c, "roi": n, "labels": "", "kept": "", "notes": "", "error": e}
             for c, n, e in failures]  # fmt: skip
    return pd.DataFrame(rows, columns=["case_id", "roi", "labels", "kept", "notes", "error"])
