"""Check a DICOM series from its files' own geometry before any stage uses it.

ITK's series reader stacks the files of a series into a regular grid whatever their
positions say: a missing slice is averaged into the spacing (ITK only prints a warning),
two acquisitions stacked in one series interleave, a gantry tilt's shear is dropped, and
rescale slopes that differ per file are applied into an integer type. Each of these
gives an image whose voxels are not where the patient was, so ROIs drawn on the real
positions (an RTSTRUCT) land beside the lesion and the features are silently wrong.

:func:`series_layout` reads the headers (pydicom, no pixels) and measures, along the
slice normal ``n = row x column`` of ImageOrientationPatient, each file's position
``n . ImagePositionPatient``: the steps between neighbours must be equal, none zero,
and the in-plane part of each step zero. Whatever is wrong raises
:class:`SeriesGeometryError` with a QC problem code and the numbers:

- ``mixed_geometry``: files of several sizes, pixel spacings or orientations;
- ``duplicate_slices``: several files at one position (with the acquisition numbers or
  temporal positions when the series stacks several acquisitions or phases);
- ``slice_gap``: uneven steps, e.g. a missing slice, with the positions around it.

A sheared stack (gantry tilt) is not an error: :func:`regular_grid` translates each
slice within its plane by its shear, as dcm2niix's tilt correction does, so every voxel
lies where the file says, and the image carries a ``fusion_warning`` (QC: warn,
``gantry_tilt``, with the angle). Files whose rescale slope or intercept differ are read
as float so no slice is rounded.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fusion.errors import FusionError

POSITION_TOLERANCE_MM = 0.01  # steps may differ by this much (or 1 %) and still be even
SHEAR_TOLERANCE_MM = 0.01  # an in-plane step component below this is no shear
TILT_KEY = "fusion_tilt"  # image metadata: the warning QC shows for a tilted series
SHIFTS_KEY = "fusion_slice_shifts"  # image metadata: each slice's shift (rows, columns)


class SeriesGeometryError(FusionError):
    """A DICOM series whose files do not form one regular grid; ``code`` is the QC
    problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SeriesLayout:
    """What the headers say: the files in slice order, the in-plane shift of each
    slice against a regular stack (mm, along the row and column directions), the step
    along the normal (mm), the tilt (degrees), and whether the rescale differs."""

    files: list[str]
    shifts: np.ndarray  # (slices, 2): mm along row, column
    step_mm: float
    tilt_deg: float
    varying_rescale: bool
    row: np.ndarray
    column: np.ndarray
    normal: np.ndarray
    origin: np.ndarray


def _header(path: str):  # noqa: ANN202 - a pydicom Dataset
    import pydicom

    tags = ["ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
            "PixelSpacing", "RescaleSlope", "RescaleIntercept", "AcquisitionNumber",
            "TemporalPositionIdentifier", "EchoNumbers"]  # fmt: skip
    # force: a file GDCM listed in the series is read without its 128-byte preamble too;
    # whether ITK can then read its pixels is ITK's error, named with the file
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags, force=True)


def _values(datasets: list, keyword: str) -> list:
    return [tuple(np.atleast_1d(np.asarray(ds.get(keyword), dtype=object)).tolist())
            if ds.get(keyword) is not None else None for ds in datasets]  # fmt: skip


def _rounded(value: tuple | None) -> tuple | None:
    """A header value compared to 1e-4 (orientation cosines, spacings)."""
    if value is None:
        return None
    try:
        return tuple(round(float(v), 4) for v in value)
    except (TypeError, ValueError):
        return tuple(value)


def _show(value: tuple | None) -> str:
    if value is None:
        return "none"
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


def series_layout(files: list[str], where: str) -> SeriesLayout:
    """Validate a series' files (in ITK's order) and say how to stack them.

    Raises :class:`SeriesGeometryError` naming ``where`` (the folder and series).
    A single-file series, or files without positions, are returned as they are."""
    datasets = [_header(f) for f in files]
    for keyword, what in (("ImageOrientationPatient", "orientations"),
                          ("Rows", "row counts"), ("Columns", "column counts"),
                          ("PixelSpacing", "pixel spacings")):  # fmt: skip
        found = [_rounded(v) for v in _values(datasets, keyword)]
        counts = Counter(found)
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            odd = [Path(f).name for f, v in zip(files, found, strict=True) if v != common]
            raise SeriesGeometryError(
                "mixed_geometry",
                f"{where}: its files have {len(counts)} different {what}: {len(odd)} of "
                f"{len(files)} differ from the others ({', '.join(odd[:5])}"
                f"{', ...' if len(odd) > 5 else ''}; {_show(common)} in the rest). Remove "
                "them from the series folder (a localizer or a reformat stored under the "
                "same series?)",
            )
    positions = [ds.get("ImagePositionPatient") for ds in datasets]
    orientation = datasets[0].get("ImageOrientationPatient")
    slopes = {(float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0)))
              for ds in datasets}  # fmt: skip
    varying = len(slopes) > 1
    if len(files) < 2 or orientation is None or any(p is None for p in positions):
        eye = np.eye(3)
        return SeriesLayout(list(files), np.zeros((len(files), 2)), 0.0, 0.0, varying,
                            eye[0], eye[1], eye[2], np.zeros(3))  # fmt: skip
    iop = np.asarray(orientation, dtype=float)
    row, column = iop[:3], iop[3:]
    normal = np.cross(row, column)
    ipp = np.asarray(positions, dtype=float)
    depth = ipp @ normal
    order = np.argsort(depth, kind="stable")
    if depth[0] > depth[-1]:  # keep ITK's direction of stacking (the grid's slice axis)
        order = order[::-1]
        normal = -normal
        depth = -depth
    ipp, depth = ipp[order], depth[order]
    ordered = [files[i] for i in order]
    steps = np.diff(depth)
    if (duplicate := np.flatnonzero(steps < POSITION_TOLERANCE_MM)).size:
        stacked = []
        for keyword in ("AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers"):
            values = sorted(
                {str(ds.get(keyword)) for ds in datasets if ds.get(keyword) is not None}
            )
            if len(values) > 1:
                stacked.append(f"{keyword} {', '.join(values[:6])}")
        why = (f"; the series stacks several acquisitions or phases ({'; '.join(stacked)})"
               if stacked else "")  # fmt: skip
        pairs = [f"{Path(ordered[i]).name} and {Path(ordered[i + 1]).name}" for i in duplicate[:3]]
        raise SeriesGeometryError(
            "duplicate_slices",
            f"{where}: {duplicate.size} pair(s) of files share a slice position ("
            f"{'; '.join(pairs)}{'; ...' if duplicate.size > 3 else ''}, the first at "
            f"{depth[duplicate[0]]:.2f} mm along the slice normal){why}; export one "
            "acquisition per series, or remove copied files",
        )
    step = float(np.median(steps))
    uneven = np.flatnonzero(np.abs(steps - step) > max(POSITION_TOLERANCE_MM, 0.01 * step))
    if uneven.size:
        i = int(uneven[0])
        missing = steps[i] / step - 1
        guess = f" ({round(missing)} slice(s) missing?)" if missing > 0.5 else ""
        raise SeriesGeometryError(
            "slice_gap",
            f"{where}: slices are {step:.3g} mm apart, but {steps[i]:.3g} mm between slices "
            f"{i + 1} and {i + 2} ({Path(ordered[i]).name} and {Path(ordered[i + 1]).name}, "
            f"at {depth[i]:.2f} and {depth[i + 1]:.2f} mm along the slice normal){guess}; "
            f"{uneven.size} uneven step(s) in {len(steps)}: read as one regular grid, ROIs "
            "and features would be wrong. Re-export the complete series (a file GDCM "
            "cannot read is left out of the series and shows as a gap)",
        )
    offsets = ipp - ipp[0] - np.outer(depth - depth[0], normal)  # in-plane, mm
    shifts = np.column_stack([offsets @ row, offsets @ column])
    sheared = np.abs(shifts).max() > SHEAR_TOLERANCE_MM
    tilt = math.degrees(math.atan(np.hypot(*(shifts[-1] - shifts[0])) / (depth[-1] - depth[0])))
    return SeriesLayout(ordered, shifts if sheared else np.zeros_like(shifts), step,
                        tilt if sheared else 0.0, varying, row, column, normal, ipp[0])  # fmt: skip


def shift_slices(array: np.ndarray, pixels: list[tuple[float, float]], order: int) -> np.ndarray:
    """Shift each slice of a (slices, rows, columns) array within its plane by
    (rows, columns) pixels: linearly for an image (order 1, outside filled with its
    minimum), by nearest neighbour for a label map (order 0, outside 0)."""
    from scipy import ndimage

    fill = float(array.min()) if order else 0.0
    out = np.empty(array.shape, dtype=np.float32 if order else array.dtype)
    for k, shift in enumerate(pixels):
        out[k] = ndimage.shift(array[k].astype(np.float32) if order else array[k], shift,
                               order=order, mode="constant", cval=fill)  # fmt: skip
    return out


def tilt_shifts(image: sitk.Image) -> list[tuple[float, float]] | None:
    """The per-slice shifts :func:`regular_grid` applied to a tilted series, or None:
    a reader that places ROI frames by slice (DICOM-SEG) applies them too."""
    if not image.HasMetaDataKey(SHIFTS_KEY):
        return None
    values = [float(v) for v in image.GetMetaData(SHIFTS_KEY).split()]
    return list(zip(values[::2], values[1::2], strict=True))


def regular_grid(image: sitk.Image, layout: SeriesLayout) -> sitk.Image:
    """The series on a regular grid with its true geometry: origin at the first slice,
    axes along row, column and normal, the step along the normal as slice spacing.
    A sheared (tilted) stack has each slice translated within its plane by its shift,
    linearly interpolated, the outside filled with the image's minimum."""
    if layout.tilt_deg == 0.0:
        return image
    sx, sy = image.GetSpacing()[:2]
    pixels = [(along_column / sy, along_row / sx) for along_row, along_column in layout.shifts]
    out = shift_slices(sitk.GetArrayFromImage(image), pixels, order=1)
    regular = sitk.GetImageFromArray(out)
    regular.SetOrigin(tuple(float(v) for v in layout.origin))
    regular.SetSpacing((sx, sy, layout.step_mm))
    axes = np.column_stack([layout.row, layout.column, layout.normal])
    regular.SetDirection(tuple(float(v) for v in axes.ravel()))
    for key in image.GetMetaDataKeys():
        regular.SetMetaData(key, image.GetMetaData(key))
    regular.SetMetaData(SHIFTS_KEY, " ".join(repr(float(v)) for pair in pixels for v in pair))
    regular.SetMetaData(
        TILT_KEY,
        f"the series is sheared by a gantry tilt of {layout.tilt_deg:.1f} degrees; its "
        "slices were shifted within their planes onto a regular grid (as dcm2niix does)",
    )
    return regular
