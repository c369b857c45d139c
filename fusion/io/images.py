"""Read a case's image, whatever its format, as a SimpleITK image with full geometry.

Readers are registered by format in :data:`IMAGE_READERS`; :func:`detect_format` picks
one from the path. A DICOM series is a folder; when it holds several series the manifest
must name the SeriesInstanceUID to use, and the error lists the candidates. A series'
geometry is checked from its files' headers first (``fusion.io.dicom_series``: gaps,
duplicates, mixed geometry fail; a gantry tilt is resampled). Only UIDs, file counts and
positions are ever printed: DICOM patient tags never leave the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.io.dicom_series import regular_grid, series_layout

ImageReader = Callable[[Path, str | None], sitk.Image]

SITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def detect_format(path: Path) -> str:
    """'dicom' for a folder, 'sitk' for a NIfTI/NRRD/MHA file; FusionError otherwise."""
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    if name.endswith(SITK_SUFFIXES):
        return "sitk"
    raise FusionError(
        f"{path}: unsupported image format; use a DICOM series folder or one of "
        f"{', '.join(SITK_SUFFIXES)}"
    )


def check_nifti_complete(path: Path, what: str = "image") -> None:
    """Fail when a NIfTI-1 file holds fewer bytes than its header promises.

    ITK reads a truncated ``.nii.gz`` without complaint and fills the missing slices with
    zeros (seen: 92 of 107 radiomics features changed), so the decompressed size is
    checked here: the gzip stream must end properly, and vox_offset plus the voxel data
    (dims x bitpix) must fit in it. Other formats are left to ITK.
    """
    import gzip
    import struct

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
            header = f.read(348)
            total = len(header)
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError) as exc:  # gzip.BadGzipFile is an OSError
        raise FusionError(
            f"{path}: cannot read {what}: truncated or corrupt file ({exc})"
        ) from None
    if len(header) < 348:
        raise FusionError(f"{path}: cannot read {what}: truncated file: {len(header)} bytes")
    for order in "<>":
        if struct.unpack(order + "i", header[:4])[0] == 348:
            break
    else:
        return  # NIfTI-2 or not NIfTI at all: ITK says what it is
    dims = struct.unpack(order + "8h", header[40:56])
    bitpix = struct.unpack(order + "h", header[72:74])[0]
    offset = int(struct.unpack(order + "f", header[108:112])[0])
    voxels = 1
    for n in dims[1 : 1 + max(0, min(dims[0], 7))]:
        voxels *= max(n, 1)
    expected = offset + voxels * bitpix // 8
    if total < expected:
        raise FusionError(
            f"{path}: cannot read {what}: truncated file: {total} bytes of data, but its "
            f"header (dimensions "
            f"{'x'.join(str(d) for d in dims[1 : 1 + dims[0]])}, {bitpix} bits per voxel) "
            f"needs {expected}; re-export or re-copy it"
        )


def read_sitk_file(path: Path, what: str = "image") -> sitk.Image:
    """sitk.ReadImage with ITK's multi-line exception cut to the line that says why;
    a truncated NIfTI file is an error, not an image padded with zeros."""
    check_nifti_complete(path, what)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise FusionError(f"{path}: cannot read {what}: {lines[-1] if lines else exc}") from None


def _read_sitk_file(path: Path, series_uid: str | None = None) -> sitk.Image:
    return read_sitk_file(path, "image")


def dicom_series(folder: Path) -> dict[str, list[str]]:
    """SeriesInstanceUID -> sorted file names of each series in a folder (GDCM)."""
    reader = sitk.ImageSeriesReader
    return {
        uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        for uid in reader.GetGDCMSeriesIDs(str(folder))
    }


def _read_dicom_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    series = dicom_series(folder)
    if not series and series_uid is None:
        raise FusionError(f"{folder}: no DICOM series found in this folder")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(f"{uid} ({len(f)} files)" for uid, f in sorted(series.items()))
            raise FusionError(
                f"{folder}: holds {len(series)} DICOM series; name the one to use in the "
                f"manifest's series column. Series found: {listing}"
            )
        series_uid = next(iter(series))
    if series_uid not in series:  # a series split across sub-folders (a PACS export)
        found = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid, False, True)
        if not found:
            raise FusionError(
                f"{folder}: series {series_uid} not found in it or its sub-folders; series "
                f"here: {', '.join(sorted(series))}"
            )
        series[series_uid] = list(found)
    layout = series_layout(series[series_uid], f"{folder} (series {series_uid})")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(layout.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    if layout.varying_rescale:  # each file's slope applied without rounding
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = regular_grid(reader.Execute(), layout)
    except RuntimeError as exc:
        raise FusionError(f"{folder}: cannot read DICOM series {series_uid}: {exc}") from None
    # only the UIDs that tie ROI exports to this image travel with it: no patient tags
    sops = [reader.GetMetaData(i, "0008|0018").strip() for i in range(len(layout.files))]
    image.SetMetaData("fusion_sop_uids", "\\".join(sops))
    image.SetMetaData("0020|000e", series_uid)
    if reader.HasMetaDataKey(0, "0020|0052"):
        image.SetMetaData("0020|0052", reader.GetMetaData(0, "0020|0052").strip())
    return image


IMAGE_READERS: dict[str, ImageReader] = {"sitk": _read_sitk_file, "dicom": _read_dicom_series}


def read_image(path: Path, series_uid: str | None = None) -> sitk.Image:
    """Read an image file or DICOM series folder; FusionError names the file on failure."""
    path = Path(path)
    if not path.exists():
        raise FusionError(f"{path}: image file not found")
    return IMAGE_READERS[detect_format(path)](path, series_uid)
