"""Read a case's ROI as a label map on some grid, through readers registered by format.

A label map file (NIfTI/NRRD/MHA) is read as it is; the study's label value picks the
ROI. RTSTRUCT and DICOM-SEG readers register themselves in :data:`ROI_READERS` with a
detector, and receive the case's image so they can rasterise onto its grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.io.images import SITK_SUFFIXES, read_sitk_file


@dataclass(frozen=True, slots=True)
class RoiReader:
    """``detect(path)`` says whether this reader handles the file; ``read`` returns the
    label map (integer image) given the path and the case's reference image."""

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, sitk.Image], sitk.Image]


def _is_label_map_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SITK_SUFFIXES)


def _read_label_map(path: Path, reference: sitk.Image) -> sitk.Image:
    return read_sitk_file(path, "ROI")


ROI_READERS: list[RoiReader] = [RoiReader("label map", _is_label_map_file, _read_label_map)]


def register_roi_reader(reader: RoiReader) -> None:
    """Add a reader; readers registered later are tried first."""
    ROI_READERS.insert(0, reader)


def read_roi(path: Path, reference: sitk.Image) -> sitk.Image:
    """Read the ROI file of a case with the first reader that accepts it."""
    path = Path(path)
    if not path.exists():
        raise FusionError(f"{path}: ROI file not found")
    for reader in ROI_READERS:
        if reader.detect(path):
            return reader.read(path, reference)
    raise FusionError(
        f"{path}: unsupported ROI format; readers: {', '.join(r.name for r in ROI_READERS)}"
    )
