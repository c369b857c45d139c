"""The ``unet`` generator: a U-Net trained by fusion (``fusion seg train``) segments the
case's image; the drawn ROI is not used.

``model: <variant>`` names this study's own trained model (the segmentation stage
publishes it under ``reports/<study>/segmentation/models/``); ``checkpoint: <path>``
names any fusion checkpoint. The checkpoint carries its architecture, classes, training
grid and normalisation, so nothing else is needed; an image on another grid than
training is resampled for the network and back, and the label map's notes say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from fusion.rois.base import LabelMap, register


@register("unet")
@dataclass(frozen=True, slots=True)
class Unet:
    checkpoint: str | None = None
    model: str | None = None
    device: str = "auto"
    threshold: float = 0.5
    reproducible: dict | None = None  # the study's reproducible mode, set by the rois stage

    needs_roi = False  # segments the image itself

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError(
                "unet needs either checkpoint: <file> or model: <variant of "
                "this study's segmentation section>"
            )

    def __call__(self, image: sitk.Image, roi: sitk.Image | None) -> LabelMap:
        from fusion.device import pick_device
        from fusion.reproducible import torch_mode
        from fusion.seg.infer import model_from, predict_image

        if self.checkpoint is None:
            raise ValueError(f"unet: model {self.model!r} was not resolved to a checkpoint")
        model, meta = model_from(Path(self.checkpoint))
        with torch_mode(self.reproducible):
            pred = predict_image(model, meta, image, pick_device(self.device), self.threshold)
        return LabelMap(pred.labels, pred.names, pred.notes)
