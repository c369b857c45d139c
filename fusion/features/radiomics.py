"""Radiomics stage: PyRadiomics features per case and ROI label, through the engine.

The study's PyRadiomics parameter file is handed to ``RadiomicsFeatureExtractor`` as it
is (PyRadiomics validates it with its own schema); only the label comes from the study.
Feature columns are ``radiomics:<pyradiomics name>``; PyRadiomics' ``diagnostics_*``
entries go to a separate table and never become features. PyRadiomics turns a failing
feature class into NaN plus a log line; we list such NaN features per case instead of
letting them pass silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fusion.cohort import Case
from fusion.config import Study
from fusion.engine import (
    CASE_COHORT_EXCLUDES,
    CaseCache,
    StageRun,
    Task,
    cache_key,
    failures_frame,
    run_tasks,
    stage_settings,
)
from fusion.errors import ConfigError, did_you_mean
from fusion.io.images import read_image
from fusion.io.rois import read_roi, roi_names

PREFIX = "radiomics:"
RADIOMICS_CACHE_VERSION = 2  # bump when this module changes what a cached entry holds

# study fields that cannot change a case's features, each with the reason
RADIOMICS_KEY_EXCLUDES = {
    "radiomics": (
        "params",  # a path: the file's parsed content enters the key instead
        "max_failures",  # a budget for the run, not an input of any case
    ),
    "cohort": (
        *CASE_COHORT_EXCLUDES,
        "modality",  # QC's HU checks only; PyRadiomics takes its settings from params
    ),
}


def radiomics_settings(study: Study, params: dict[str, Any]) -> dict[str, Any]:
    """Everything that can change a case's features: study fields, parameter-file
    content, the labels extracted and PyRadiomics' version."""
    import radiomics

    return stage_settings(
        study, RADIOMICS_KEY_EXCLUDES, params=params, labels=list(roi_labels(study)),
        version=[RADIOMICS_CACHE_VERSION, radiomics.__version__],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RadiomicsOutput:
    """Tidy tables of the stage: one row per case and ROI label."""

    features: pd.DataFrame
    diagnostics: pd.DataFrame
    failures: pd.DataFrame
    nan_features: pd.DataFrame
    run: StageRun


def load_params(path: Path) -> dict[str, Any]:
    """The parameter file as a mapping; checked by PyRadiomics' schema before any case.

    pykwalify's report (``Key 'binWidht' was not defined. Path: '/setting'``) is turned
    into one line per problem naming the key, the keys allowed there and the closest one.
    """
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)  # we print its findings
    try:
        params = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        RadiomicsFeatureExtractor(params)
    except Exception as exc:  # pykwalify's SchemaError, YAML errors, bad values
        problems = _schema_problems(str(getattr(exc, "msg", exc)))
        raise ConfigError(
            f"{path}: invalid PyRadiomics parameter file:\n  - " + "\n  - ".join(problems)
        ) from None
    return params


def _schema_problems(message: str) -> list[str]:
    """pykwalify's lines, each with its key path and, for an unknown key, the keys allowed
    there (from PyRadiomics' own schema) and the closest spelling."""
    import re

    found = re.findall(r"- (.*?)\. Path: '(/[^']*)'", message)
    if not found:
        return [message.strip()]
    lines = []
    for text, where in found:
        key_path = where.strip("/").replace("/", ".")
        unknown = re.match(r"Key '(.+)' was not defined", text)
        if unknown:
            allowed = _schema_keys(where.strip("/").split("/") if where != "/" else [])
            key = unknown.group(1)
            lines.append(
                f"{key_path + '.' if key_path else ''}{key}: unknown key; allowed here: "
                f"{', '.join(allowed)}.{did_you_mean(key, allowed)}"
            )
        else:
            lines.append(f"{key_path or '<top level>'}: {text}")
    return lines


def _schema_keys(path: list[str]) -> list[str]:
    import radiomics

    schema = yaml.safe_load(
        (Path(radiomics.__file__).parent / "schemas" / "paramSchema.yaml").read_text()
    )
    for part in path:
        schema = schema.get("mapping", {}).get(part, {})
    return list(schema.get("mapping", {}))


def roi_labels(study: Study) -> tuple[int, ...]:
    """The labels to extract: the study's list, else every named structure, else the ROI
    label."""
    spec = study.radiomics
    if spec and spec.labels:
        return tuple(spec.labels)
    if study.cohort.structures:
        return tuple(range(1, len(study.cohort.structures) + 1))
    return (study.cohort.roi_label,)


def extract_case(
    payload: tuple[Case, dict[str, Any], tuple[int, ...], list[str] | None],
) -> dict[str, Any]:
    """Worker: read the case from disk, run PyRadiomics once per label."""
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    case, params, labels, structures = payload
    radiomics.setVerbosity(logging.ERROR)
    image = read_image(case.image, case.series_uid)
    roi = read_roi(case.roi, image, structures)
    names = roi_names(roi)
    extractor = RadiomicsFeatureExtractor(params)
    rois = []
    for label, result in execute_labels(extractor, image, roi, labels).items():
        features = {
            k: float(np.asarray(v)) for k, v in result.items() if not k.startswith("diagnostics_")
        }
        diagnostics = {
            k.removeprefix("diagnostics_"): str(v)
            for k, v in result.items()
            if k.startswith("diagnostics_")
        }
        name = names.get(label, f"label{label}")
        rois.append({"roi": name, "features": features, "diagnostics": diagnostics})
    return {"rois": rois}


# filters whose output depends on the mask, not only on the image: never shared
MASK_DEPENDENT_IMAGE_TYPES = {"LBP3D"}  # LBP3D is computed inside the mask only


def shares_filters(extractor: Any, labels: tuple[int, ...]) -> bool:
    """Whether several labels can share each filtered image: the image must not be
    resampled or pre-cropped per ROI (both crop to the ROI's bounding box first) and no
    enabled filter may look at the mask."""
    s = extractor.settings
    return (
        len(labels) > 1
        and not s.get("resampledPixelSpacing")
        and not s.get("preCrop")
        and not MASK_DEPENDENT_IMAGE_TYPES & set(extractor.enabledImagetypes)
    )


def execute_labels(
    extractor: Any, image: Any, roi: Any, labels: tuple[int, ...]
) -> dict[int, dict[str, Any]]:
    """PyRadiomics' ``execute`` for several labels of one mask, each filter run once.

    ``RadiomicsFeatureExtractor.execute`` (3.0.1) loads and checks the image and mask,
    computes shape, then runs every enabled filter (LoG, wavelet...) on the whole image
    and crops its output to the ROI. Called once per label it recomputes every filter for
    every ROI. When :func:`shares_filters` holds, the filtered image does not depend on
    the label, so this runs execute's steps per label up to shape, then each filter once
    and every label's feature classes on its output. Features and diagnostics equal
    per-label ``execute`` (``tests/test_radiomics.py`` checks to 1e-6 with LoG and
    wavelet); otherwise this simply calls ``execute`` per label.
    """
    from itertools import chain

    from radiomics import featureextractor, generalinfo, imageoperations

    if not shares_filters(extractor, labels):
        return {label: extractor.execute(image, roi, label=label) for label in labels}
    if featureextractor.geometryTolerance != extractor.settings.get("geometryTolerance"):
        extractor._setTolerance()  # as execute does: another extractor may have changed it
    prepared = {}
    for label in labels:  # execute's steps 1-5, per label
        settings = {**extractor.settings, "label": label}
        info = None
        if settings.get("additionalInfo", False):
            info = generalinfo.GeneralInfo()
            info.addGeneralSettings(settings)
            info.addEnabledImageTypes(extractor.enabledImagetypes)
        loaded, mask = extractor.loadImage(image, roi, info, **settings)
        box, corrected = imageoperations.checkMask(loaded, mask, **settings)
        if corrected is not None:
            if info is not None:
                info.addMaskElements(loaded, corrected, label, "corrected")
            mask = corrected
        resegmented = None
        if settings.get("resegmentRange") is not None:
            resegmented = imageoperations.resegmentMask(loaded, mask, **settings)
            box, _ = imageoperations.checkMask(loaded, resegmented, **settings)
            if info is not None:
                info.addMaskElements(loaded, resegmented, label, "resegmented")
        vector: dict[str, Any] = {}
        if info is not None:
            vector.update(info.getGeneralInfo())
        shape_on_resegmented = settings.get("resegmentShape", False)
        if shape_on_resegmented and resegmented is not None:
            mask = resegmented
        vector.update(extractor.computeShape(loaded, mask, box, **settings))
        if not shape_on_resegmented and resegmented is not None:
            mask = resegmented
        prepared[label] = (loaded, mask, box, vector)
    loaded, first_mask = prepared[labels[0]][:2]  # the same image for every label
    generators = chain.from_iterable(
        getattr(imageoperations, f"get{kind}Image")(
            loaded, first_mask, **{**extractor.settings, "label": labels[0], **custom}
        )
        for kind, custom in extractor.enabledImagetypes.items()
    )
    for filtered, name, kwargs in generators:  # each filtered image once, all labels
        for label, (_, mask, box, vector) in prepared.items():
            cropped, cropped_mask = imageoperations.cropToTumorMask(filtered, mask, box)
            vector.update(
                extractor.computeFeatures(cropped, cropped_mask, name, **{**kwargs, "label": label})
            )
    return {label: prepared[label][3] for label in labels}


def radiomics_tasks(
    study: Study, cases: list[Case], digests: dict[str, tuple[str, str]]
) -> list[Task]:
    """One task per case, keyed by file contents and :func:`radiomics_settings`."""
    if study.radiomics is None:
        raise ConfigError(f"{study.source}: the study has no radiomics section")
    params = load_params(study.radiomics.params)
    settings = radiomics_settings(study, params)
    labels = roi_labels(study)
    structures = study.cohort.structures
    return [
        Task(
            c.case_id,
            cache_key("radiomics", settings, digests[c.case_id], c.series_uid),
            (c, params, labels, structures),
        )
        for c in cases
    ]


def run_radiomics(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    cache_root: Path | None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> RadiomicsOutput:
    """Extract every case (cached ones are read back) and assemble the tidy tables."""
    tasks = radiomics_tasks(study, cases, digests)
    cache = CaseCache(cache_root, "radiomics") if cache_root else None
    run = run_tasks(extract_case, tasks, cache, jobs=jobs, scheduler=scheduler, desc="radiomics")
    feature_rows, diag_rows, nan_rows = [], [], []
    for case in cases:  # manifest order, whatever order results arrived in
        value = run.results.get(case.case_id)
        if value is None:
            continue
        for r in value["rois"]:
            ids = {"case_id": case.case_id, "roi": r["roi"]}
            feature_rows.append(ids | {PREFIX + k: v for k, v in r["features"].items()})
            diag_rows.append(ids | r["diagnostics"])
            nan_rows += [ids | {"feature": PREFIX + k} for k, v in r["features"].items() if v != v]
    return RadiomicsOutput(
        features=pd.DataFrame(feature_rows, columns=_columns(feature_rows)),
        diagnostics=pd.DataFrame(diag_rows, columns=_columns(diag_rows)),
        failures=failures_frame(run.failures, "radiomics"),
        nan_features=pd.DataFrame(nan_rows, columns=["case_id", "roi", "feature"]),
        run=run,
    )


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Union of the rows' keys in first-seen order, so the table's columns are stable."""
    return list(dict.fromkeys(k for row in rows for k in row)) or ["case_id", "roi"]
