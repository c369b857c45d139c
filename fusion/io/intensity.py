"""Intensity changes applied to a case's image before its features are computed, for a
generated ROI that asks for one (a perturbation or a negative control; the ROI's label
map itself says where, the change says what):

- ``shuffle``: the voxels inside the ROI trade places at random (seeded). First-order
  statistics and shape are unchanged; texture, the spatial arrangement of intensities,
  is destroyed. A model that does as well on these features has learned the ROI's
  volume or histogram, not its texture (READII's "shuffled" negative control: Kazmierski
  et al., arXiv 2023).
- ``noise``: Gaussian noise of SD ``sd_hu`` added to the whole image (seeded), as MIRP's
  image perturbation does (Zwanenburg et al., Sci Rep 2019).

An op is a plain dict (``{"op": "shuffle", "seed": 3}``), so it travels in a label map's
metadata and enters the radiomics cache key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

OPS = ("shuffle", "noise")


def apply_op(image: sitk.Image, mask: sitk.Image, op: dict[str, Any]) -> sitk.Image:
    """The image with ``op`` applied (a new image on the same grid, float32 for noise);
    ``mask`` (non-zero: the ROI) is where ``shuffle`` acts.

    Raises:
        ValueError: an unknown op.
    """
    rng = np.random.default_rng(int(op.get("seed", 0)))
    values = sitk.GetArrayFromImage(image)
    if op["op"] == "shuffle":
        inside = sitk.GetArrayViewFromImage(mask) > 0
        values[inside] = rng.permutation(values[inside])
    elif op["op"] == "noise":
        noise = rng.normal(0.0, float(op["sd_hu"]), values.shape).astype(np.float32)
        values = values.astype(np.float32) + noise
    else:
        raise ValueError(f"unknown intensity op {op['op']!r}; known: {', '.join(OPS)}")
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out
