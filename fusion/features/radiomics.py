"""Radiomics stage: PyRadiomics features per case and ROI label, through the engine.

The study's PyRadiomics parameter file is handed to ``RadiomicsFeatureExtractor`` as it
is (PyRadiomics validates it with its own schema); only the label comes from the study.
Feature columns are ``radiomics:<pyradiomics name>``; PyRadiomics' ``diagnostics_*``
entries go to a separate table and never become features. PyRadiomics turns a failing
feature class into NaN plus a log line; we list such NaN features per case instead of
letting them pass silently.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.cohort import Case
from fusion.config import Study
from fusion.engine import (
    CASE_COHORT_EXCLUDES,
    StageRun,
    Store,
    Task,
    cache_key,
    failures_frame,
    run_tasks,
    stage_settings,
)
from fusion.errors import ConfigError, FusionError
from fusion.io.images import read_image
from fusion.io.intensity import apply_op
from fusion.io.radiomics_params import load_params, roi_labels
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


# a generated ROI handed to the worker: its label map file, the labels to extract with
# their row names, and the intensity change its features are computed on (or None)
Generated = tuple[Path, tuple[tuple[int, str], ...], dict[str, Any] | None]


def extract_case(
    payload: tuple[
        Case, dict[str, Any], tuple[int, ...], list[str] | None, str, tuple[Generated, ...]
    ],
) -> dict[str, Any]:
    """Worker: read the case from disk and run PyRadiomics on every ROI of it (the drawn
    ROI's labels, then each generated label map's), each filter computed once per image
    (a map with an intensity change has its own image, :mod:`fusion.io.intensity`)."""
    import radiomics
    import SimpleITK as sitk
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    case, params, labels, structures, default_name, generated = payload
    radiomics.setVerbosity(logging.ERROR)
    image = read_image(case.image, case.series_uid)
    rois = []  # (image, mask, label, row name)
    if case.roi is not None:  # a study whose ROIs all come from a segmenter has none
        roi = read_roi(case.roi, image, structures)
        names = roi_names(roi)
        rois = [(image, roi, label, names.get(label, default_name.format(label=label)))
                for label in labels]  # fmt: skip
    for path, wanted, op in generated:
        mask = on_grid(sitk.ReadImage(str(path)), image, path)
        source = image if op is None or not wanted else apply_op(image, mask, op)
        rois += [(source, mask, label, name) for label, name in wanted]
    extractor = RadiomicsFeatureExtractor(params)
    results: list[Any] = [None] * len(rois)
    for source in {id(r[0]): r[0] for r in rois}.values():
        at = [i for i, r in enumerate(rois) if r[0] is source]
        done = execute_rois(extractor, source, [(rois[i][1], rois[i][2]) for i in at])
        for i, result in zip(at, done, strict=True):
            results[i] = result
    out = []
    for (*_, name), result in zip(rois, results, strict=True):
        features = {
            k: feature_value(k, v) for k, v in result.items() if not k.startswith("diagnostics_")
        }
        diagnostics = {
            k.removeprefix("diagnostics_"): str(v)
            for k, v in result.items()
            if k.startswith("diagnostics_")
        }
        out.append({"roi": name, "features": features, "diagnostics": diagnostics})
    return {"rois": out}


def feature_value(name: str, value: Any) -> float:
    """A PyRadiomics feature value as a float.

    PyRadiomics 3.0.1 takes its axis lengths, elongation and flatness from
    ``numpy.linalg.eigvals`` of the ROI's covariance; for an ROI with two equal
    eigenvalues (a 6 x 6 x 8 mm box) that general routine returns them as a complex pair,
    and the features come back complex with a ~1e-17 imaginary part, on which
    ``float()`` raises. A negligible imaginary part (below 1e-9 of the magnitude, or
    1e-12 absolute) is rounding and the real part is kept; anything larger is an error
    naming the feature.
    """
    array = np.asarray(value)
    if np.iscomplexobj(array):
        real, imag = float(array.real), float(array.imag)
        if abs(imag) > max(1e-12, 1e-9 * abs(real)):
            raise FusionError(
                f"PyRadiomics returned {name} = {complex(array)!r}, a complex number; "
                "its imaginary part is not rounding error"
            )
        return real
    return float(array)


def on_grid(mask: Any, image: Any, path: Path, tolerance: float = 1e-4) -> Any:
    """A label map generated on ``image``'s grid, with the image's exact geometry.

    NIfTI stores origin, spacing and direction in float32, so a mask written as
    ``.nii.gz`` on a float64 grid (DICOM, NRRD) comes back off by ~1e-6, which PyRadiomics
    rejects; anything beyond that rounding is a real mismatch and an error."""
    import SimpleITK as sitk

    same_size = mask.GetSize() == image.GetSize()
    drift = max(
        max(abs(a - b) for a, b in zip(f(mask), f(image), strict=True))
        for f in (sitk.Image.GetOrigin, sitk.Image.GetSpacing, sitk.Image.GetDirection)
    ) if same_size else float("inf")  # fmt: skip
    if drift > tolerance:
        raise FusionError(
            f"{path}: the generated ROI is not on the image's grid (size or geometry differs "
            f"by {drift:.3g}); delete it to have it generated again"
        )
    mask.CopyInformation(image)
    return mask


# filters whose output depends on the mask, not only on the image: never shared
MASK_DEPENDENT_IMAGE_TYPES = {"LBP3D"}  # LBP3D is computed inside the mask only


def shares_filters(extractor: Any, n_rois: int) -> bool:
    """Whether several ROIs of one image can share each filtered image: the image must
    not be resampled or pre-cropped per ROI (both crop to the ROI's bounding box first)
    and no enabled filter may look at the mask."""
    s = extractor.settings
    return (
        n_rois > 1
        and not s.get("resampledPixelSpacing")
        and not s.get("preCrop")
        and not MASK_DEPENDENT_IMAGE_TYPES & set(extractor.enabledImagetypes)
    )


def execute_rois(extractor: Any, image: Any, rois: list[tuple[Any, int]]) -> list[dict[str, Any]]:
    """PyRadiomics' ``execute`` for several ROIs (mask, label) of one image, each filter
    run once.

    ``RadiomicsFeatureExtractor.execute`` (3.0.1) loads and checks the image and mask,
    computes shape, then runs every enabled filter (LoG, wavelet...) on the whole image
    and crops its output to the ROI. Called once per label it recomputes every filter for
    every ROI. When :func:`shares_filters` holds, the filtered image does not depend on
    the label, so this runs execute's steps per label up to shape, then each filter once
    and every label's feature classes on its output. Features and diagnostics equal
    per-label ``execute`` (``tests/test_radiomics.py`` checks to 1e-6 with LoG and
    wavelet); otherwise this simply calls ``execute`` per ROI.
    """
    from itertools import chain

    from radiomics import featureextractor, imageoperations

    if not shares_filters(extractor, len(rois)):
        return [extractor.execute(image, roi, label=label) for roi, label in rois]
    if featureextractor.geometryTolerance != extractor.settings.get("geometryTolerance"):
        extractor._setTolerance()  # as execute does: another extractor may have changed it
    prepared = []
    once: dict[tuple, Any] = {}  # what does not depend on the label, by image or map
    for roi, label in rois:  # execute's steps 1-5, per ROI
        settings = {**extractor.settings, "label": label}
        info = None
        if settings.get("additionalInfo", False):
            info = _shared_info_class()(once)
            info.addGeneralSettings(settings)
            info.addEnabledImageTypes(extractor.enabledImagetypes)
        loaded, mask = _load(image, roi, info, once, settings)
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
        prepared.append((label, loaded, mask, box, vector))
    _, loaded, first_mask = prepared[0][:3]  # the same loaded image for every ROI
    generators = chain.from_iterable(
        getattr(imageoperations, f"get{kind}Image")(
            loaded, first_mask, **{**extractor.settings, "label": prepared[0][0], **custom}
        )
        for kind, custom in extractor.enabledImagetypes.items()
    )
    for filtered, name, kwargs in generators:  # each filtered image once, all ROIs
        for label, _, mask, box, vector in prepared:
            cropped, cropped_mask = imageoperations.cropToTumorMask(filtered, mask, box)
            vector.update(
                extractor.computeFeatures(cropped, cropped_mask, name, **{**kwargs, "label": label})
            )
    return [vector for *_, vector in prepared]


def _load(image: Any, roi: Any, info: Any, once: dict[tuple, Any], settings: dict) -> tuple:
    """``RadiomicsFeatureExtractor.loadImage`` (3.0.1) for an image that several ROIs share
    (no resampling, no pre-crop: :func:`shares_filters`), with what does not depend on
    the label done once: a map's UInt32 cast and the labels in it (``getMask``), the
    normalised image. The same errors as ``getMask`` for a label the map lacks."""
    import SimpleITK as sitk
    from radiomics import imageoperations

    label = settings["label"]
    if ("cast", id(roi)) not in once:
        cast = imageoperations.getMask(roi, **settings)  # raises if ``label`` is absent
        once["cast", id(roi)] = cast, np.unique(sitk.GetArrayViewFromImage(cast))
    mask, present = once["cast", id(roi)]
    if label not in present:
        raise ValueError(f"Label ({label:g}) not present in mask. Choose from "
                         f"{present[present != 0]}")  # fmt: skip
    if info is not None:
        info.addImageElements(image)
        info.addMaskElements(None, mask, label)
    if settings.get("normalize", False):
        if ("normalized", id(image)) not in once:
            once["normalized", id(image)] = imageoperations.normalizeImage(image, **settings)
        image = once["normalized", id(image)]
    return image, mask


@functools.cache
def _shared_info_class() -> type:  # built on first use: radiomics is imported lazily
    from radiomics import generalinfo

    class SharedInfo(generalinfo.GeneralInfo):
        """PyRadiomics' diagnostics of one ROI, with the entries that do not depend on
        the ROI computed once per image or map (``once``): the whole image's entries and
        a map's hash. ``sitk.Hash`` takes 15 ms for the demo's image and 31 ms for a
        map's UInt32 cast, and was paid for every label. Keys, values and their order are
        PyRadiomics' own (``tests/test_radiomics.py``)."""

        SCRATCH = "\x00"  # a prefix no PyRadiomics entry uses

        def __init__(self, once: dict[tuple, Any]) -> None:
            super().__init__()
            self.once = once

        def addImageElements(self, image: Any, prefix: str = "original") -> None:  # noqa: N802
            key = ("image entries", id(image), prefix)
            if key not in self.once:
                self.once[key] = self._added(lambda: super(SharedInfo, self)
                                             .addImageElements(image, prefix))  # fmt: skip
            self.generalInfo.update(self.once[key])

        def addMaskElements(self, image: Any, mask: Any, label: int,  # noqa: N802
                            prefix: str = "original") -> None:  # fmt: skip
            if prefix != "original" or mask is None:
                super().addMaskElements(image, mask, label, prefix)
                return
            import SimpleITK as sitk

            key = ("mask hash", id(mask))
            if key not in self.once:
                self.once[key] = sitk.Hash(mask)
            self.generalInfo[f"{self.generalInfo_prefix}Mask-original_Hash"] = self.once[key]
            # the other entries, under a scratch prefix (which skips the hash), renamed
            added = self._added(lambda: super(SharedInfo, self)
                                .addMaskElements(image, mask, label, self.SCRATCH))  # fmt: skip
            self.generalInfo.update((k.replace(self.SCRATCH, "original"), v) for k, v in added)

        def _added(self, add: Any) -> list[tuple[str, Any]]:
            """The entries ``add`` puts in, taken out again, in their order."""
            before = set(self.generalInfo)
            add()
            added = [(k, v) for k, v in self.generalInfo.items() if k not in before]
            for k, _ in added:
                del self.generalInfo[k]
            return added

    return SharedInfo


def radiomics_tasks(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    generated: dict[str, dict[str, Any]] | None = None,
) -> list[Task]:
    """One task per case, keyed by file contents (generated label maps included) and
    :func:`radiomics_settings`. ``generated``: case -> ROI name -> GeneratedRoi."""
    from fusion.hashing import file_digest

    if study.radiomics is None:
        raise ConfigError(f"{study.source}: the study has no radiomics section")
    params = load_params(study.radiomics.params)
    settings = radiomics_settings(study, params)
    labels = roi_labels(study)
    structures = study.cohort.structures
    default_name = "whole" if study.rois else "label{label}"
    tasks = []
    for c in cases:
        extra = tuple(
            (roi.path, tuple((k, row_name(name, roi.names, k)) for k in roi.kept), roi.image_op)
            for name, roi in (generated or {}).get(c.case_id, {}).items()
        )
        # an intensity change enters the key; a plain map's entry is as it always was
        maps = [(str(path), list(wanted), file_digest(path), *([op] if op else []))
                for path, wanted, op in extra]  # fmt: skip
        key = cache_key("radiomics", settings, digests[c.case_id], c.series_uid, maps)
        tasks.append(Task(c.case_id, key, (c, params, labels, structures, default_name, extra)))
    return tasks


def row_name(roi: str, names: dict[int, str], label: int) -> str:
    """The row name of a generated map's label: the ROI's own name for a single label
    (``ring``); the ROI name and the label for numbered labels (``habitat1``...); the
    ROI name and the label's name for named ones (``habitat_boundary``)."""
    if len(names) == 1:
        return roi
    name = names[label]
    return f"{roi}{label}" if name.endswith(str(label)) else f"{roi}_{name}"


def run_radiomics(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    cache_root: Path | None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    generated: dict[str, dict[str, Any]] | None = None,
) -> RadiomicsOutput:
    """Extract every case (cached ones are read back) and assemble the tidy tables."""
    tasks = radiomics_tasks(study, cases, digests, generated)
    cache = Store(cache_root, "radiomics") if cache_root else None
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
