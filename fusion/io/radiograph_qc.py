"""Quality control of 2D radiographs (image-classifier studies).

Per case: the image decodes as one 2D grey image (not a volume), its shorter side has at
least ``qc.min_image_px`` pixels, it is not constant or nearly empty, its bit depth is
said, and a lesion mask, when given, fits its grid. Across the cohort: two cases with
the same pixels (hashed after decoding, so a PNG and a DICOM export of one radiograph
match) are duplicates; every copy after the first is excluded, since a duplicate across
training and test inflates the test AUC.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from fusion.config import Study
from fusion.io.qc_result import Problem, QCResult
from fusion.io.radiograph import read_mask, read_radiograph

if TYPE_CHECKING:
    from fusion.cohort import Case  # the record of a case: QC reads its paths

NEARLY_EMPTY = 0.95  # share of pixels at one value above which an image is "nearly empty"


def pixel_hash(pixels: np.ndarray) -> str:
    """Content hash of decoded display intensities (8-bit, so re-encodings agree)."""
    quantised = np.round(pixels * 255).astype(np.uint8)
    return hashlib.sha256(np.ascontiguousarray(quantised).tobytes()).hexdigest()


def check_radiograph(case: Case, study: Study) -> QCResult:
    """Every per-case check of a 2D image; raises FusionError when it cannot be read."""
    spec = study.qc
    image = read_radiograph(case.image)
    pixels = image.pixels
    problems: list[Problem] = []

    def add(code: str, severity: str, message: str) -> None:
        problems.append(Problem(code, severity, message))  # type: ignore[arg-type]

    rows, cols = pixels.shape
    if min(rows, cols) < spec.min_image_px:
        add("too_small", "fail", f"{rows} x {cols} pixels; the shorter side must be >= "
            f"qc.min_image_px = {spec.min_image_px}")  # fmt: skip
    if float(pixels.max()) == float(pixels.min()):
        add("constant", "fail", f"every pixel is {pixels.min():.3g}: an empty or blank image")
    else:
        _, counts = np.unique(pixels, return_counts=True)
        if counts.max() > NEARLY_EMPTY * pixels.size:
            add("nearly_empty", "warn", f"{counts.max() / pixels.size:.1%} of the pixels "
                "have one value")  # fmt: skip
    if image.bits < 8:
        add("low_bit_depth", "warn", f"{image.bits} bits per pixel")
    lesion = None
    if case.roi is not None:
        lesion = int(read_mask(case.roi, pixels.shape).sum())
        if lesion == 0 and case.label == 1:
            add("empty_mask", "warn", "a positive case whose lesion mask is empty: it is "
                "left out of the Grad-CAM localisation")  # fmt: skip
        if lesion and case.label == 0:
            add("mask_on_negative", "warn", f"a negative case with {lesion} lesion pixels "
                "in its mask")  # fmt: skip
    # roi_voxels holds the lesion's pixels; a 2D image has no ROI volume
    return QCResult(case.case_id, tuple(problems), lesion, None, pixel_hash(pixels))


def flag_duplicates(results: list[QCResult], cases: list[Case]) -> list[QCResult]:
    """Fail every case whose pixels repeat an earlier case's (manifest order)."""
    first: dict[str, Case] = {}
    rows = {c.case_id: c for c in cases}
    out = []
    for result in results:
        content = result.content
        if content is None:
            out.append(result)
            continue
        if content not in first:
            first[content] = rows[result.case_id]
            out.append(result)
            continue
        original = first[content]
        problem = Problem("duplicate", "fail", f"the same pixels as case {original.case_id!r} "
                          f"(manifest line {original.row}); excluded so that one image cannot "
                          "be in training and test")  # fmt: skip
        out.append(QCResult(result.case_id, (*result.problems, problem), result.roi_voxels,
                            result.roi_volume_ml, content))  # fmt: skip
    return out
