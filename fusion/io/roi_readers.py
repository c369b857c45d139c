"""The registry of ROI readers: each format says whether it handles a file and reads it.

The label map reader (NIfTI/NRRD/MHA) is built in; :mod:`fusion.io.dicom_rois` adds the
RTSTRUCT, DICOM-SEG and Slicer readers. :func:`fusion.io.rois.read_roi` tries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from fusion.io.images import SITK_SUFFIXES, read_sitk_file


@dataclass(frozen=True, slots=True)
class RoiReader:
    """``detect(path)`` says whether this reader handles the file; ``read`` returns the
    label map (integer image) given the path, the case's reference image and the
    structure names or patterns the study asks for (None: the file's labels as they are)."""

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, sitk.Image, list[str] | None], sitk.Image]


def _is_label_map_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SITK_SUFFIXES)


def _read_label_map(path: Path, reference: sitk.Image, structures: list[str] | None) -> sitk.Image:
    return read_sitk_file(path, "ROI")


ROI_READERS: list[RoiReader] = [RoiReader("label map", _is_label_map_file, _read_label_map)]


def register_roi_reader(reader: RoiReader) -> None:
    """Add a reader; readers registered later are tried first."""
    ROI_READERS.insert(0, reader)
