"""One canonical orientation for every image and ROI that is cut into planes.

The deep-feature crops take array axis 0 as the axial (slice) axis. The same patient
stored RAS (NIfTI from many converters) or LPS (DICOM) gives mirrored arrays, and an
image stored with its axes permuted gives another plane altogether, so crops and their
features would differ. :func:`canonical` reorients with SimpleITK's ``DICOMOrient`` to
LPS (axis 0 from feet to head, axis 1 from anterior to posterior, axis 2 from the
patient's right to left); :func:`obliquity_deg` says how far the slice axis still is
from the head-feet axis after that (a gantry tilt, an oblique acquisition), which QC
checks against ``qc.max_obliquity_deg``.
"""

from __future__ import annotations

import math

import SimpleITK as sitk

CANONICAL = "LPS"


def canonical(image: sitk.Image) -> sitk.Image:
    """The image with its axes permuted and flipped to LPS; voxels are not resampled.

    An image already closest to LPS (DICOM's own order) is returned as it is, not
    copied: DICOMOrient would only copy it (2 ms for a 192 x 192 x 24 CT)."""
    if image.GetDimension() != 3:
        return image
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines
    if orientation(image.GetDirection()) == CANONICAL:
        return image
    return sitk.DICOMOrient(image, CANONICAL)


def obliquity_deg(image: sitk.Image) -> float:
    """Angle in degrees between the canonical slice axis and the head-feet axis."""
    if image.GetDimension() != 3:
        return 0.0
    # DICOMOrient makes the axis closest to head-feet the slice axis: the direction
    # column with the largest z component (row 2 of the row-major matrix)
    z = max(abs(v) for v in image.GetDirection()[6:9])
    return math.degrees(math.acos(min(1.0, z)))
