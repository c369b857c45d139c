"""The ``command`` generator: an external segmenter (nnU-Net, TotalSegmentator...) run
once per case in its own environment, never imported.

``command`` is a template with ``{image}`` and ``{out}``: fusion writes the case's image
(canonically oriented, as every stage sees it) to ``{image}`` as NIfTI, runs the command
without a shell (arguments split like a POSIX shell would; no injection through file
names), and reads the label map the command wrote to ``{out}``. A non-zero exit, a
timeout, no output, or an output on another grid than the image is an error of that
case that names the command and shows the end of its stderr; the other cases go on.
Put the segmenter's version in ``version`` so that a new release invalidates the cache.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.rois.base import LabelMap, register

GRID_TOLERANCE_MM = 1e-3


@register("command")
@dataclass(frozen=True, slots=True)
class Command:
    command: str
    labels: dict[int, str] = field(default_factory=dict)
    timeout_s: float = 3600.0
    version: str = ""  # part of the cache key only

    needs_roi = False

    def __post_init__(self) -> None:
        missing = [p for p in ("{image}", "{out}") if p not in self.command]
        if missing:
            raise ValueError(
                f"command needs the placeholders {' and '.join(missing)}: {self.command!r}"
            )

    def __call__(self, image: sitk.Image, roi: sitk.Image | None) -> LabelMap:
        with tempfile.TemporaryDirectory(prefix="fusion-command-") as tmp:
            source, out = Path(tmp) / "image.nii.gz", Path(tmp) / "out.nii.gz"
            sitk.WriteImage(image, str(source))
            args = [
                a.replace("{image}", str(source)).replace("{out}", str(out))
                for a in shlex.split(self.command)
            ]
            try:
                run = subprocess.run(
                    args, capture_output=True, text=True, timeout=self.timeout_s, check=False
                )
            except FileNotFoundError:
                raise FusionError(
                    f"command {args[0]!r} not found (command: {self.command!r})"
                ) from None
            except subprocess.TimeoutExpired:
                raise FusionError(
                    f"command {self.command!r} ran longer than {self.timeout_s:g} s"
                ) from None
            if run.returncode != 0:
                tail = run.stderr.strip()[-500:] or "(no stderr)"
                raise FusionError(f"command {self.command!r} exited with {run.returncode}: {tail}")
            if not out.is_file():
                raise FusionError(f"command {self.command!r} exited 0 but wrote no mask to {{out}}")
            mask = sitk.ReadImage(str(out))
        _check_grid(mask, image, self.command)
        values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(mask)) if v != 0]
        names = {v: self.labels.get(v, f"label{v}") for v in sorted({*values, *self.labels})}
        labels = sitk.Cast(mask, sitk.sitkUInt8)
        labels.CopyInformation(image)
        return LabelMap(labels, names)


def _check_grid(mask: sitk.Image, image: sitk.Image, command: str) -> None:
    for what, a, b in (
        ("size", mask.GetSize(), image.GetSize()),
        ("spacing", mask.GetSpacing(), image.GetSpacing()),
        ("origin", mask.GetOrigin(), image.GetOrigin()),
        ("direction", mask.GetDirection(), image.GetDirection()),
    ):
        if len(a) != len(b) or np.max(np.abs(np.subtract(a, b))) > GRID_TOLERANCE_MM:
            raise FusionError(
                f"command {command!r} wrote a mask on another grid than the "
                f"image: {what} {tuple(a)} vs image {tuple(b)}"
            )
