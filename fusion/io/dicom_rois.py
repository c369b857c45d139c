"""Clinical ROI exports: DICOM RTSTRUCT, DICOM-SEG and 3D Slicer ``.seg.nrrd``.

Each reader turns the structures a study names (exact names or patterns such as
``GTV*``, case-insensitive) into one label map on the case's image grid: the i-th named
structure gets label i. Structure names go into the label map's metadata
(``fusion_label_<i>``) so the feature tables can name the ROIs; a problem worth a
warning (contours clipped at the image border) goes into ``fusion_warning``.

RTSTRUCT contours are rasterised here, with pydicom for reading and matplotlib's
``Path.contains_points`` for the polygon test: a voxel is inside when its centre lies
inside the polygon; several contours on a slice combine by parity (even-odd), so inner
contours cut holes; every point is placed by the image's geometry
(``TransformPhysicalPointToContinuousIndex``), never by slice order. The masks are
checked against an independent rasteriser (MIRP) in the tests. DICOM-SEG is read with
highdicom, frames placed by the source image instances they reference.

Only UIDs, structure names and counts ever appear in messages: no patient tags.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.io.dicom_series import shift_slices, tilt_shifts
from fusion.io.roi_readers import RoiReader, register_roi_reader

RTSTRUCT_UID = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_UID = "1.2.840.10008.5.1.4.1.1.66.4"


PLANE_TOLERANCE = 0.25  # slices: how far a contour plane may lie from the slice it is on


def _has_dicom_preamble(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(132)[128:132] == b"DICM"


def dcmread(path: Path, **kwargs):  # noqa: ANN003, ANN201 - pydicom's Dataset
    """pydicom.dcmread, fully parsed; a truncated or corrupt file is a FusionError that
    names the file and gives pydicom's reason."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, **kwargs)
        for _ in ds.iterall():  # sequences are parsed lazily: parse them now
            pass
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad files
        raise FusionError(
            f"{path}: broken DICOM file (truncated or corrupt): {type(exc).__name__}: {exc}"
        ) from None
    return ds


def _sop_class(path: Path) -> str | None:
    import pydicom

    if not path.is_file() or path.name.lower().endswith((".nrrd", ".nii", ".nii.gz", ".mha")):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception as exc:  # noqa: BLE001 - not DICOM: another reader's file
        if _has_dicom_preamble(path):
            raise FusionError(
                f"{path}: broken DICOM file (truncated or corrupt): {type(exc).__name__}: {exc}"
            ) from None
        return None
    return str(ds.get("SOPClassUID", "")) or None


def match_structures(available: list[str], wanted: list[str], path: Path) -> list[str]:
    """The available name matching each wanted name or pattern (case-insensitive)."""
    chosen = []
    for pattern in wanted:
        hits = [n for n in available if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        if not hits:
            raise FusionError(
                f"{path}: no structure matches {pattern!r}; structures in the file: "
                f"{', '.join(available) or '(none)'}"
            )
        if len(hits) > 1:
            raise FusionError(
                f"{path}: {pattern!r} matches several structures ({', '.join(hits)}); "
                "name one exactly"
            )
        chosen.append(hits[0])
    return chosen


def _label_image(array: np.ndarray, reference: sitk.Image, names: list[str]) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    for i, name in enumerate(names, start=1):
        image.SetMetaData(f"fusion_label_{i}", name)
    return image


def _reference_uids(reference: sitk.Image) -> dict[str, str]:
    """The Frame of Reference and Series Instance UIDs the DICOM reader recorded."""
    keys = {"for": "0020|0052", "series": "0020|000e"}
    return {k: reference.GetMetaData(v).strip() for k, v in keys.items()
            if reference.HasMetaDataKey(v)}  # fmt: skip


# ---------------------------------------------------------------- RTSTRUCT


def rtstruct_names(path: Path) -> list[str]:
    ds = dcmread(path, stop_before_pixels=True)
    return [str(r.ROIName) for r in ds.StructureSetROISequence]


def _rtstruct_references(ds) -> tuple[set[str], set[str]]:  # noqa: ANN001 - a pydicom Dataset
    frames, series = set(), set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(ref.FrameOfReferenceUID))
        for study in ref.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                series.add(str(s.SeriesInstanceUID))
    return frames, series


def read_rtstruct(path: Path, reference: sitk.Image, structures: list[str] | None) -> sitk.Image:
    from matplotlib.path import Path as Polygon

    ds = dcmread(path)
    available = [str(r.ROIName) for r in ds.StructureSetROISequence]
    if not structures:
        raise FusionError(
            f"{path}: an RTSTRUCT needs cohort.structures in the study; structures in the "
            f"file: {', '.join(available)}"
        )
    names = match_structures(available, structures, path)
    ids = {str(r.ROIName): int(r.ROINumber) for r in ds.StructureSetROISequence}
    uids = _reference_uids(reference)
    frames, series = _rtstruct_references(ds)
    if "for" in uids and frames and uids["for"] not in frames:
        raise FusionError(
            f"{path}: the RTSTRUCT belongs to another image: its Frame of Reference UID is "
            f"{', '.join(sorted(frames))}, the image's is {uids['for']}"
        )
    if "series" in uids and series and uids["series"] not in series:
        raise FusionError(
            f"{path}: the RTSTRUCT references series {', '.join(sorted(series))}, "
            f"but the image is series {uids['series']}"
        )
    nx, ny, nz = reference.GetSize()
    cols, rows = np.meshgrid(np.arange(nx), np.arange(ny))
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    clipped_points = total_points = 0
    contours = {int(c.ReferencedROINumber): c for c in ds.ROIContourSequence}
    for label, name in enumerate(names, start=1):
        roi = contours.get(ids[name])
        mask = np.zeros((nz, ny, nx), dtype=bool)
        planes: dict[int, float] = {}  # slice -> the continuous index of its contour plane
        for contour in roi.get("ContourSequence", []) if roi is not None else []:
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            index = np.array(
                [reference.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points]
            )
            total_points += len(index)
            plane = float(np.median(index[:, 2]))
            k = int(round(plane))
            if 0 <= k < nz:
                _check_plane(path, name, plane, k, planes, points, reference)
            outside = (index[:, 0] < -0.5) | (index[:, 0] > nx - 0.5) | (index[:, 1] < -0.5)
            outside |= index[:, 1] > ny - 0.5
            if not 0 <= k < nz:
                clipped_points += len(index)
                continue
            clipped_points += int(outside.sum())
            if contour.ContourGeometricType == "POINT" or len(index) < 3:
                continue
            inside = Polygon(index[:, :2]).contains_points(centres).reshape(ny, nx)
            mask[k] ^= inside  # even-odd: an inner contour cuts a hole
        out[mask] = label
    image = _label_image(out, reference, names)
    if clipped_points:
        image.SetMetaData(
            "fusion_warning",
            f"{clipped_points} of {total_points} contour points lie outside the image and "
            "were clipped",
        )
    return image


def _check_plane(path: Path, name: str, plane: float, k: int, planes: dict[int, float],
                 points: np.ndarray, reference: sitk.Image) -> None:  # fmt: skip
    """A contour plane must lie on a slice, and one slice holds one plane: a plane
    between slices (the slice it was drawn on is missing, or the image is another
    series) would otherwise be rounded onto a neighbour, where two planes cancel by
    the even-odd rule."""
    spacing = reference.GetSpacing()[2]
    where = f"{path}: structure {name!r}: the contour plane at {points[:, 2].mean():.2f} mm"
    if abs(plane - k) > PLANE_TOLERANCE:
        raise FusionError(
            f"{where} lies {abs(plane - k) * spacing:.2f} mm from the nearest slice (slice "
            f"{k}, {spacing:g} mm apart): it matches no slice of the image (a slice "
            "missing from the series, or contours drawn on another series)"
        )
    first = planes.setdefault(k, plane)
    if abs(plane - first) > PLANE_TOLERANCE:
        raise FusionError(
            f"{where} and another {abs(plane - first) * spacing:.2f} mm from it both fall "
            f"on slice {k}: the image's slices are further apart than the contours'"
        )


# ---------------------------------------------------------------- DICOM-SEG


def seg_names(path: Path) -> list[str]:
    import highdicom as hd

    seg = hd.seg.segread(path)
    return [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]


def read_dicom_seg(path: Path, reference: sitk.Image, structures: list[str] | None) -> sitk.Image:
    import highdicom as hd

    seg = hd.seg.segread(path)
    numbers = list(seg.segment_numbers)
    labels = [seg.get_segment_description(n).segment_label for n in numbers]
    if not structures and len(labels) > 1:
        raise FusionError(
            f"{path}: the SEG holds {len(labels)} segments; choose with cohort.structures: "
            f"{', '.join(labels)}"
        )
    names = match_structures(labels, structures or labels, path)
    uids = _reference_uids(reference)
    seg_for = str(seg.FrameOfReferenceUID)
    if "for" in uids and uids["for"] != seg_for:
        raise FusionError(
            f"{path}: the SEG belongs to another image: its Frame of Reference UID is "
            f"{seg_for}, the image's is {uids['for']}"
        )
    sops = _slice_sop_uids(reference)
    if sops is None:
        raise FusionError(f"{path}: a DICOM-SEG needs its source DICOM series as the image")
    referenced = {str(r.ReferencedSOPInstanceUID) for r in _seg_sources(seg)}
    if referenced and not referenced & set(sops):
        raise FusionError(
            f"{path}: the SEG references none of the image's {len(sops)} instances "
            f"(series {uids.get('series', '?')})"
        )
    present = [uid for uid in sops if uid in referenced] or sops
    chosen = [numbers[labels.index(n)] for n in names]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=present, segment_numbers=chosen, ignore_spatial_locations=True
    )  # (instances, rows, columns, segments)
    nx, ny, nz = reference.GetSize()
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    position = {uid: i for i, uid in enumerate(sops)}
    for j, uid in enumerate(present):
        for s in range(len(chosen)):
            out[position[uid]][pixels[j, :, :, s] > 0] = s + 1
    if (shifts := tilt_shifts(reference)) is not None:  # frames follow the tilt correction
        out = shift_slices(out, shifts, order=0)
    return _label_image(out, reference, names)


def _seg_sources(seg):  # noqa: ANN001, ANN202 - highdicom Segmentation -> referenced instances
    sources = []
    for series in seg.get("ReferencedSeriesSequence", []):
        sources += list(series.get("ReferencedInstanceSequence", []))
    return sources


def _slice_sop_uids(reference: sitk.Image) -> list[str] | None:
    uids = reference.GetMetaData("fusion_sop_uids") if reference.HasMetaDataKey(
        "fusion_sop_uids") else None  # fmt: skip
    return uids.split("\\") if uids else None


# ---------------------------------------------------------------- 3D Slicer .seg.nrrd


def slicer_segments(image: sitk.Image) -> list[tuple[str, int, int]]:
    """(name, label value, layer) of each segment in a Slicer segmentation's header."""
    segments = []
    i = 0
    while image.HasMetaDataKey(f"Segment{i}_Name"):
        value = int(image.GetMetaData(f"Segment{i}_LabelValue")) if image.HasMetaDataKey(
            f"Segment{i}_LabelValue") else i + 1  # fmt: skip
        layer = int(image.GetMetaData(f"Segment{i}_Layer")) if image.HasMetaDataKey(
            f"Segment{i}_Layer") else 0  # fmt: skip
        segments.append((image.GetMetaData(f"Segment{i}_Name"), value, layer))
        i += 1
    return segments


def read_slicer_seg(path: Path, reference: sitk.Image, structures: list[str] | None) -> sitk.Image:
    from fusion.io.images import read_sitk_file

    image = read_sitk_file(path, "ROI")
    segments = slicer_segments(image)
    names = match_structures([s[0] for s in segments], structures or [segments[0][0]], path)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise FusionError(
            f"{path}: segments overlap (several layers); export one layer per file from Slicer"
        )
    array = sitk.GetArrayViewFromImage(image)
    out = np.zeros(array.shape, dtype=np.uint8)
    for label, name in enumerate(names, start=1):
        value = next(v for n, v, _ in segments if n == name)
        out[array == value] = label
    return _label_image(out, image, names)


def _is_slicer_seg(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(".seg.nrrd")


register_roi_reader(RoiReader("3D Slicer .seg.nrrd", _is_slicer_seg, read_slicer_seg))
register_roi_reader(RoiReader("DICOM-SEG", lambda p: _sop_class(p) == SEG_UID, read_dicom_seg))
register_roi_reader(
    RoiReader("DICOM RTSTRUCT", lambda p: _sop_class(p) == RTSTRUCT_UID, read_rtstruct)
)
