"""Read a case's ROI as a label map on some grid, through readers registered by format.

A label map file (NIfTI/NRRD/MHA) is read as it is; the study's label value picks the
ROI. The RTSTRUCT and DICOM-SEG readers (:mod:`fusion.io.dicom_rois`, imported here so
they are registered) join :data:`fusion.io.roi_readers.ROI_READERS` with a detector, and
receive the case's image so they can rasterise onto its grid.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.io import dicom_rois
from fusion.io.images import read_sitk_file
from fusion.io.roi_readers import ROI_READERS


def read_roi(path: Path, reference: sitk.Image, structures: list[str] | None = None) -> sitk.Image:
    """Read the ROI file of a case with the first reader that accepts it."""
    path = Path(path)
    if not path.exists():
        raise FusionError(f"{path}: ROI file not found")
    for reader in ROI_READERS:
        if reader.detect(path):
            return _onto_reference_grid(reader.read(path, reference, structures), reference)
    raise FusionError(
        f"{path}: unsupported ROI format; readers: {', '.join(r.name for r in ROI_READERS)}"
    )


GEOMETRY = {
    "origin": sitk.Image.GetOrigin,
    "spacing": sitk.Image.GetSpacing,
    "direction": sitk.Image.GetDirection,
}


def _onto_reference_grid(roi: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A label map with the image's size is given the image's exact geometry.

    Exports round origins and spacings differently (NIfTI keeps float32, some tools
    write 3 decimals), and PyRadiomics and SimpleITK reject masks off the image's grid
    by more than 1e-6 relative, far below any difference that moves a voxel. The
    geometry the file had is kept in metadata (:func:`file_geometry`), so QC judges
    the difference against ``qc.*_tolerance`` and fails the case beyond it; within it,
    every stage sees the ROI on the image's grid, and none rejects it later.
    """
    if roi.GetDimension() != reference.GetDimension() or roi.GetSize() != reference.GetSize():
        return roi
    if all(get(roi) == get(reference) for get in GEOMETRY.values()):
        return roi
    for key, get in GEOMETRY.items():
        roi.SetMetaData(f"fusion_file_{key}", " ".join(repr(float(v)) for v in get(roi)))
    roi.CopyInformation(reference)
    return roi


def file_geometry(roi: sitk.Image) -> dict[str, tuple[float, ...]]:
    """Origin, spacing and direction as the ROI file had them, before
    :func:`read_roi` put the ROI on the image's grid."""
    return {
        key: tuple(float(v) for v in roi.GetMetaData(f"fusion_file_{key}").split())
        if roi.HasMetaDataKey(f"fusion_file_{key}") else tuple(get(roi))
        for key, get in GEOMETRY.items()
    }  # fmt: skip


def roi_names(roi: sitk.Image) -> dict[int, str]:
    """Label value -> structure name, as the DICOM and Slicer readers record them."""
    names = {}
    for key in roi.GetMetaDataKeys():
        if key.startswith("fusion_label_"):
            names[int(key.removeprefix("fusion_label_"))] = roi.GetMetaData(key)
    return names


def list_structures(path: Path, reference: sitk.Image | None = None) -> list[dict]:
    """What an ROI file holds: name, number and (given the image) voxel count of each
    structure, segment or label, so a clinician can write cohort.structures."""
    import numpy as np

    d = dicom_rois
    path = Path(path)
    sop = d._sop_class(path)
    if sop == d.RTSTRUCT_UID:
        names = d.rtstruct_names(path)
    elif sop == d.SEG_UID:
        names = d.seg_names(path)
    elif d._is_slicer_seg(path):
        names = [s[0] for s in d.slicer_segments(read_sitk_file(path, "ROI"))]
    else:
        array = sitk.GetArrayFromImage(read_sitk_file(path, "ROI"))
        values, counts = np.unique(array[array != 0], return_counts=True)
        return [{"name": f"label{v}", "number": int(v), "voxels": int(c)}
                for v, c in zip(values, counts, strict=True)]  # fmt: skip
    rows = []
    for number, name in enumerate(names, start=1):
        row: dict = {"name": name, "number": number, "voxels": None}
        if reference is not None:
            roi = read_roi(path, reference, [name])
            row["voxels"] = int((sitk.GetArrayFromImage(roi) > 0).sum())
        rows.append(row)
    return rows
