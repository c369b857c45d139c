"""Per-case quality control, run before any feature stage.

Each check yields a :class:`Problem` with a stable code (documented in the README), a
severity and a message that carries the numbers. A case with any ``fail`` problem is
excluded from later stages, and the report lists it with its reasons; ``warn`` problems
are reported but the case stays. Checking a case never raises: whatever goes wrong,
including an unexpected exception, becomes a problem of that case, and the next case is
checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import SimpleITK as sitk

from fusion.config import QCSpec, Study
from fusion.engine import (
    CASE_COHORT_EXCLUDES,
    Store,
    Task,
    cache_key,
    run_tasks,
    stage_settings,
)
from fusion.errors import FusionError
from fusion.io.dicom_series import TILT_KEY
from fusion.io.images import read_image
from fusion.io.orientation import obliquity_deg
from fusion.io.qc_result import Problem, QCResult
from fusion.io.rois import file_geometry, read_roi, roi_names

if TYPE_CHECKING:
    from fusion.cohort import Case  # the record of a case: QC reads its paths

# geometry differences below this are float32 rounding (NIfTI stores float32) and pass
# without a warning
ROUNDING = 1e-4
QC_VERSION = 5  # bump when a check changes, so cached QC results are recomputed

# study fields that cannot change a case's QC result, each with the reason
QC_KEY_EXCLUDES = {
    "qc": (),
    "cohort": CASE_COHORT_EXCLUDES,
}


def qc_settings(study: Study, needs_roi: bool = True) -> dict:
    """Everything in the study that can change a case's QC result: the qc and cohort
    sections, the labels the feature stages use (other labels get a warning), whether
    every case needs a drawn ROI and whether planes are cut for deep features (then the
    slice axis must be near axial)."""
    return stage_settings(
        study, QC_KEY_EXCLUDES, version=QC_VERSION, used_labels=_used_labels(study),
        needs_roi=needs_roi,
        cuts_planes=study.deep is not None, radiograph=study.classifier is not None,
        pyradiomics_roi_limits=_roi_limits(study),
    )  # fmt: skip


def _used_labels(study: Study) -> list[int]:
    from fusion.io.radiomics_params import roi_labels

    return sorted({study.cohort.roi_label, *roi_labels(study)})


def _roi_limits(study: Study) -> tuple[int, int, dict]:
    from fusion.io.radiomics_params import roi_limits

    return roi_limits(study)


def qc_key(settings: dict, case: Case, digest: tuple[str, str]) -> str:
    return cache_key("qc", settings, digest, case.series_uid)


def _geometry_problems(image: sitk.Image, roi: sitk.Image, spec: QCSpec) -> Iterator[Problem]:
    """Compare the ROI file's grid with the image's, printing both values when they
    differ beyond the tolerance; within it, :func:`read_roi` has put the ROI on the
    image's grid, which a warning says when the difference is more than rounding."""
    if image.GetDimension() != roi.GetDimension():
        yield Problem(
            "geometry",
            "fail",
            f"image is {image.GetDimension()}-D but ROI is {roi.GetDimension()}-D",
        )
        return
    found = file_geometry(roi)
    checks = [
        ("size", image.GetSize(), roi.GetSize(), 0.0),
        ("spacing (mm)", image.GetSpacing(), found["spacing"], spec.spacing_tolerance_mm),
        ("origin (mm)", image.GetOrigin(), found["origin"], spec.origin_tolerance_mm),
        ("direction", image.GetDirection(), found["direction"], spec.direction_tolerance),
    ]
    snapped = []
    for name, a, b, tol in checks:
        diff = np.max(np.abs(np.subtract(a, b)))
        if diff > tol:
            yield Problem(
                "geometry",
                "fail",
                f"{name} differs: image {_fmt(a)} vs ROI {_fmt(b)} "
                f"(max difference {diff:.4g} > tolerance {tol:g})",
            )
        elif diff > ROUNDING:
            snapped.append(f"{name} by {diff:.3g}")
    if snapped:
        yield Problem(
            "roi_regridded",
            "warn",
            f"the ROI file's grid differs from the image's ({', '.join(snapped)}), within "
            "the qc tolerances; the ROI is used on the image's grid",
        )


def _reference_problems(reference: sitk.Image, image: sitk.Image, study: Study) -> list[Problem]:
    """A segmentation reference must lie on the image grid and hold only the study's
    labels; it may be empty (a case without a lesion)."""
    problems = [Problem(p.code, p.severity, "reference: " + p.message)
                for p in _geometry_problems(image, reference, study.qc)]  # fmt: skip
    known = set(study.segmentation.labels)
    present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(reference))} - {0}
    if unknown := sorted(present - known):
        problems.append(Problem(
            "unknown_label", "fail",
            f"the reference holds label(s) {unknown} that segmentation.labels does not name "
            f"({sorted(known)}); name them or remove them from the reference",
        ))  # fmt: skip
    return problems


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _roi_problems(
    roi_array: np.ndarray, label: int, spec: QCSpec, limits: tuple[int, int] = (1, 0)
) -> tuple[list[Problem], int | None]:
    """``limits``: PyRadiomics' minimumROIDimensions and minimumROISize (roi_limits)."""
    min_dimensions, min_size = limits
    problems: list[Problem] = []
    if not np.issubdtype(roi_array.dtype, np.integer) and not np.all(
        np.equal(np.mod(roi_array, 1), 0)
    ):
        problems.append(
            Problem(
                "roi_not_label_map",
                "fail",
                "ROI holds non-integer values (a probability map?); threshold it into a label map",
            )
        )
        return problems, None
    if not np.any(roi_array):
        problems.append(Problem("empty_roi", "fail", "ROI has no non-zero voxel"))
        return problems, 0
    inside = roi_array == label
    n = int(np.count_nonzero(inside))
    if n == 0:
        present = ", ".join(str(v) for v in np.unique(roi_array) if v != 0)
        problems.append(
            Problem(
                "label_absent",
                "fail",
                f"label {label} not in ROI; labels present: {present} "
                "(set cohort.roi_label in the study)",
            )
        )
        return problems, 0
    if n < spec.min_roi_voxels:
        problems.append(
            Problem(
                "small_roi",
                "fail",
                f"ROI has {n} voxels, fewer than qc.min_roi_voxels = {spec.min_roi_voxels}",
            )
        )
    elif n < min_size:
        problems.append(
            Problem(
                "small_roi",
                "fail",
                f"ROI has {n} voxels, fewer than the parameter file's minimumROISize = "
                f"{min_size} (PyRadiomics would reject it)",
            )
        )
    if (thin := _thin_problem(inside, min_dimensions)) is not None:
        problems.append(thin)
    if spec.roi_at_border != "ignore":
        faces = _border_faces(inside)
        if faces:
            problems.append(
                Problem(
                    "roi_at_border",
                    spec.roi_at_border,
                    f"ROI touches the volume border at {', '.join(faces)}; it may be cut off",
                )
            )
    return problems, n


def _resampled_problems(image: sitk.Image, roi: sitk.Image, label: int, resampling: dict,
                        spec: QCSpec, limits: tuple[int, int]) -> list[Problem]:  # fmt: skip
    """The ROI checks again on the grid PyRadiomics resamples to: a thin ROI can vanish
    or become too thin there."""
    from fusion.io.radiomics_params import resampled_roi

    mask = resampled_roi(image, roi, label, resampling)
    spacing = resampling["resampledPixelSpacing"]
    if mask is None:
        why = f"nothing of the ROI is left after PyRadiomics resamples it to {spacing} mm"
        return [Problem("roi_too_thin", "fail", why + " (resampledPixelSpacing)")]
    # PyRadiomics' own rules there (qc.min_roi_voxels is about the drawn ROI)
    lenient = spec.model_copy(update={"min_roi_voxels": 1})
    found, _ = _roi_problems(sitk.GetArrayViewFromImage(mask), label, lenient, limits)
    return [Problem(p.code, p.severity, f"after resampling to {spacing} mm: {p.message}")
            for p in found if p.severity == "fail"]  # fmt: skip


def _thin_problem(inside: np.ndarray, min_dimensions: int) -> Problem | None:
    """PyRadiomics rejects an ROI spanning more than one voxel in fewer than
    ``minimumROIDimensions`` axes ("mask has too few dimensions"); say so per axis."""
    extents = [int(i.max() - i.min()) + 1 for i in np.nonzero(inside)][::-1]  # x, y, z
    wide = sum(e > 1 for e in extents)
    if wide >= min_dimensions:
        return None
    sizes = ", ".join(f"{n} {e}" for n, e in zip("xyz", extents, strict=False))
    return Problem(
        "roi_too_thin", "fail",
        f"ROI is 1 voxel thick in {len(extents) - wide} of {len(extents)} axes (extent in "
        f"voxels: {sizes}); PyRadiomics needs it wider than one voxel in at least "
        f"{min_dimensions} axes (its minimumROIDimensions setting)",
    )  # fmt: skip


def _border_faces(inside: np.ndarray) -> list[str]:
    """Names of the volume faces the ROI touches, in image index order (x, y, z)."""
    faces = []
    axis_names = "zyx"[-inside.ndim :]  # numpy order is reversed from ITK's
    for axis in range(inside.ndim):
        touched = inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis))
        if touched[0]:
            faces.append(f"{axis_names[axis]}=first")
        if touched[-1]:
            faces.append(f"{axis_names[axis]}=last")
    return sorted(faces)


def _intensity_problems(array: np.ndarray, modality: str, spec: QCSpec) -> list[Problem]:
    problems: list[Problem] = []
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        problems.append(Problem("nonfinite", "fail", f"{bad} voxel(s) are NaN or infinite"))
        array = array[finite]
        if array.size == 0:
            return problems
    if modality == "CT":
        lo, hi = float(array.min()), float(array.max())
        if lo > spec.ct_min_below_hu:
            problems.append(
                Problem(
                    "ct_range",
                    "warn",
                    f"no voxel below {spec.ct_min_below_hu:g} HU (minimum {lo:g}): no air in "
                    "the volume, or values not in HU (rescale slope/intercept not applied?)",
                )
            )
        if hi > spec.ct_max_above_hu:
            problems.append(
                Problem(
                    "ct_range",
                    "warn",
                    f"voxels above {spec.ct_max_above_hu:g} HU (maximum {hi:g}): metal, or "
                    "stored values without the rescale intercept",
                )
            )
    return problems


def check_case(case: Case, study: Study, needs_roi: bool = True) -> QCResult:
    """Run every check on one case; never raises. ``needs_roi``: whether the study needs
    the manifest's ROI of every case (:func:`fusion.rois.needs_drawn_roi`)."""
    try:
        return _check_case(case, study, needs_roi)
    except FusionError as exc:  # a series' geometry error carries its own code
        code = getattr(exc, "code", "unreadable")
        return QCResult(case.case_id, (Problem(code, "fail", str(exc)),))
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the cohort
        return QCResult(
            case.case_id,
            (Problem("error", "fail", f"{type(exc).__name__}: {exc} (image {case.image})"),),
        )


def _check_case(case: Case, study: Study, needs_roi: bool) -> QCResult:
    spec = study.qc
    missing = [
        f"{what} file not found: {path} (manifest line {case.row})"
        for what, path in (("image", case.image), ("ROI", case.roi))
        if path is not None and not path.exists()
    ]
    if case.reference is not None and not case.reference.exists():
        missing.append(f"reference file not found: {case.reference} (manifest line {case.row})")
    if missing:
        return QCResult(case.case_id, tuple(Problem("missing_file", "fail", m) for m in missing))
    if study.classifier is not None:  # a 2D radiograph
        from fusion.io.radiograph_qc import check_radiograph

        return check_radiograph(case, study)
    image = read_image(case.image, case.series_uid)
    if image.GetNumberOfComponentsPerPixel() != 1:
        return QCResult(
            case.case_id,
            (
                Problem(
                    "not_scalar",
                    "fail",
                    f"{case.image}: image has {image.GetNumberOfComponentsPerPixel()} "
                    "components per voxel; expected a grey-level image",
                ),
            ),
        )
    problems = _intensity_problems(sitk.GetArrayViewFromImage(image), study.cohort.modality, spec)
    if image.HasMetaDataKey(TILT_KEY):
        problems.append(Problem("gantry_tilt", "warn", image.GetMetaData(TILT_KEY)))
    if study.deep is not None and (tilt := obliquity_deg(image)) > spec.max_obliquity_deg:
        problems.append(
            Problem(
                "oblique",
                "fail",
                f"the slice axis is {tilt:.1f} degrees from the head-feet axis (more than "
                f"qc.max_obliquity_deg = {spec.max_obliquity_deg:g}): axial planes for the "
                "deep features cannot be cut; resample the image to an axial grid",
            )
        )
    if case.reference is not None and study.segmentation is not None:
        problems += _reference_problems(read_roi(case.reference, image), image, study)
    if case.roi is None:
        if needs_roi:
            problems.append(Problem("no_roi", "fail", "the manifest gives no ROI file"))
        return QCResult(case.case_id, tuple(problems))
    structures = study.cohort.structures
    roi = read_roi(case.roi, image, structures)
    if roi.HasMetaDataKey("fusion_warning"):
        problems.append(Problem("roi_clipped", "warn", roi.GetMetaData("fusion_warning")))
    problems.extend(_geometry_problems(image, roi, spec))
    array = sitk.GetArrayViewFromImage(roi)
    names = roi_names(roi)
    primary = study.cohort.roi_label
    labels = _used_labels(study)
    if not structures:
        present = {int(v) for v in np.unique(array)} - {0}
        used = set(_used_labels(study))
        extra = sorted(present - used)
        if extra and present & used and np.issubdtype(array.dtype, np.integer):
            problems.append(
                Problem(
                    "extra_labels",
                    "warn",
                    f"the ROI holds labels {sorted(present)}; only {_used_labels(study)} "
                    f"are used and {extra} are ignored (set cohort.roi_label or "
                    "radiomics.labels to use them)",
                )
            )
    n = None
    min_dimensions, min_size, resampling = _roi_limits(study)
    for label in labels:  # each label a stage uses must hold a usable ROI
        found, voxels = _roi_problems(array, label, spec, (min_dimensions, min_size))
        if resampling and voxels and not any(p.severity == "fail" for p in found):
            found += _resampled_problems(image, roi, label, resampling, spec,
                                         (min_dimensions, min_size))  # fmt: skip
        prefix = f"{names[label]}: " if label in names else ""
        problems += [Problem(p.code, p.severity, prefix + p.message) for p in found]
        if label == primary:
            n = voxels
    volume = None if n is None else n * float(np.prod(roi.GetSpacing())) / 1000.0
    return QCResult(case.case_id, tuple(problems), n, volume)


def check_cohort(cases: Iterable[Case], study: Study, needs_roi: bool = True) -> list[QCResult]:
    """Check every case in this process; a failing case never stops the others."""
    return [check_case(case, study, needs_roi) for case in cases]


def _check_payload(payload: tuple[Case, Study, bool]) -> dict:
    return _to_dict(check_case(*payload))


def _to_dict(result: QCResult) -> dict:
    return {
        "case_id": result.case_id,
        "problems": [[p.code, p.severity, p.message] for p in result.problems],
        "roi_voxels": result.roi_voxels,
        "roi_volume_ml": result.roi_volume_ml,
        "content": result.content,
    }


def _from_dict(case_id: str, value: dict) -> QCResult:
    problems = tuple(Problem(*p) for p in value["problems"])
    return QCResult(
        case_id, problems, value["roi_voxels"], value["roi_volume_ml"], value.get("content")
    )


def run_qc(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    cache_root: Path | None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    needs_roi: bool = True,
) -> list[QCResult]:
    """Check every case through the engine (parallel, cached by file content + settings)."""
    settings = qc_settings(study, needs_roi)
    tasks = [Task(c.case_id, qc_key(settings, c, digests[c.case_id]), (c, study, needs_roi))
             for c in cases]  # fmt: skip
    cache = Store(cache_root, "qc") if cache_root else None
    run = run_tasks(_check_payload, tasks, cache, jobs=jobs, scheduler=scheduler, desc="QC")
    died = {f.case_id: f for f in run.failures}
    results = [
        _from_dict(c.case_id, run.results[c.case_id])
        if c.case_id in run.results
        else QCResult(c.case_id, (Problem("error", "fail", died[c.case_id].message),))
        for c in cases
    ]
    if study.classifier is not None:
        from fusion.io.radiograph_qc import flag_duplicates

        return flag_duplicates(results, cases)
    return results


def qc_table(results: Iterable[QCResult]) -> pd.DataFrame:
    """One row per case: case_id, status, problems (codes and messages), ROI size."""
    rows = [
        {
            "case_id": r.case_id,
            "status": r.status,
            "problem_codes": ";".join(sorted({p.code for p in r.problems})),
            "problems": " | ".join(str(p) for p in r.problems),
            "roi_voxels": r.roi_voxels,
            "roi_volume_ml": None if r.roi_volume_ml is None else round(r.roi_volume_ml, 4),
        }
        for r in results
    ]
    return pd.DataFrame(
        rows,
        columns=["case_id", "status", "problem_codes", "problems", "roi_voxels", "roi_volume_ml"],
    )
