"""Grad-CAM (Selvaraju et al. 2017) with forward and backward hooks, and the two
numbers that make a heatmap checkable against a lesion mask.

The map of the positive logit is ReLU(sum_k alpha_k A_k), with A the last block's
activations and alpha_k the spatial mean of d logit / d A_k, upsampled to the input.
Where every channel votes against the positive class the ReLU leaves nothing: an
all-zero map. That is reported as such (``zero`` is True), never drawn as a blank
overlay that looks like "the model looked nowhere".

Checkable: the share of the map's energy inside the lesion mask (chance level is the
mask's share of the image) and the pointing game (is the map's maximum inside the
lesion?).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ZERO = 1e-8  # a map whose maximum is below this (after ReLU) is all zero


@dataclass(frozen=True, slots=True)
class Cam:
    """One image's map in [0, 1] on the input grid (zeros when ``zero``)."""

    heatmap: np.ndarray
    zero: bool
    peak: tuple[int, int]  # (row, column) of the maximum; (-1, -1) when zero
    cells: tuple[int, int]  # the layer's grid: the map cannot be sharper than this


@dataclass(frozen=True, slots=True)
class Localisation:
    energy_in_mask: float  # share of the map's sum inside the mask
    chance: float  # the mask's share of the image: the energy of a flat map
    pointing_hit: bool  # the map's maximum lies inside the mask


class GradCam:
    """Hooks on ``layer`` of ``model``; call with an input batch for its maps."""

    def __init__(self, model: Any, layer: str) -> None:
        self.model = model
        self._activations: Any = None
        self._gradients: Any = None
        self._handle = model.get_submodule(layer).register_forward_hook(self._forward)

    def _forward(self, module: Any, inputs: Any, output: Any) -> Any:
        if not output.requires_grad:  # a forward pass without gradients: not a map's
            return None
        self._activations = output.detach()
        output.register_hook(self._backward)
        # a copy goes on, so that an in-place op after the layer (DenseNet's ReLU)
        # cannot change the activations kept here
        return output.clone()

    def _backward(self, grad: Any) -> None:
        self._gradients = grad.detach()

    def close(self) -> None:
        self._handle.remove()

    def __call__(self, batch: Any) -> list[Cam]:
        """Maps of the positive logit for every image of ``batch`` (n, 3, h, w)."""
        import torch
        import torch.nn.functional as F

        self.model.eval()
        batch = batch.detach().requires_grad_(True)  # gradients flow even if frozen
        with torch.enable_grad():
            logits = self.model(batch).reshape(-1)
            self.model.zero_grad(set_to_none=True)
            logits.sum().backward()  # images are independent: each gets its own gradient
        weights = self._gradients.float().mean(dim=(2, 3), keepdim=True)
        cams = F.relu((weights * self._activations.float()).sum(dim=1, keepdim=True))
        cells = (int(cams.shape[-2]), int(cams.shape[-1]))
        cams = F.interpolate(cams, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        out = []
        for cam in cams[:, 0].cpu().numpy():
            top = float(cam.max())
            if top < ZERO:
                out.append(Cam(np.zeros_like(cam), True, (-1, -1), cells))
                continue
            peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
            out.append(Cam(cam / top, False, (int(peak[0]), int(peak[1])), cells))
        return out


def localisation(cam: Cam, mask: np.ndarray) -> Localisation | None:
    """Energy in the mask and the pointing game; None for an all-zero map or an empty
    mask (nothing to measure)."""
    if cam.zero or not mask.any():
        return None
    energy = float(cam.heatmap[mask].sum() / cam.heatmap.sum())
    return Localisation(energy, float(mask.mean()), bool(mask[cam.peak]))


def overlay(image: np.ndarray, cam: Cam, mask: np.ndarray | None) -> np.ndarray:
    """An RGB picture of ``image`` with the map in 'jet' (alpha follows the map, so
    cold regions stay readable) and the lesion mask's outline in green; an all-zero map
    adds no colour."""
    from matplotlib import colormaps
    from scipy import ndimage

    grey = np.repeat(image[..., None], 3, axis=2)
    if not cam.zero:
        heat = colormaps["jet"](cam.heatmap)[..., :3]
        alpha = 0.6 * cam.heatmap[..., None]
        grey = (1 - alpha) * grey + alpha * heat
    if mask is not None and mask.any():
        edge = mask & ~ndimage.binary_erosion(mask)
        grey[edge] = (0.0, 1.0, 0.0)
    return np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)
