"""The U-Net and its checkpoint: weights plus everything needed to use them again.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``weights_only=True`` (no code runs on load). It carries the architecture, the classes,
the training grid, normalisation and preprocessing variant, so a prediction needs
nothing but the file; and its provenance (study, data hash, fold, epoch, validation
Dice, library versions). Loading one into a network of another architecture or number
of classes is an error that says which differs, never a silent partial load.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from fusion.config import NormaliseSpec, UNetSpec, VariantSpec
from fusion.errors import FusionError


def build_unet(spec: UNetSpec, classes: int) -> Any:
    """MONAI's UNet: one input channel, ``classes`` output channels (background first)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spec.dims,
        in_channels=1,
        out_channels=classes,
        channels=tuple(spec.channels),
        strides=tuple(spec.strides),
        num_res_units=spec.res_units,
        dropout=spec.dropout,
    )


def versions() -> dict[str, str]:
    import monai
    import torch

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
    }


def read_checkpoint(path: Path) -> dict[str, Any]:
    from fusion import checkpoint

    path = Path(path)
    if not path.is_file():
        raise FusionError(
            f"{path}: segmentation checkpoint not found (train it first: "
            "`fusion seg train <study>`)"
        )
    return checkpoint.read(path, "segmentation")


def load_model(path: Path, expect: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """The network of a checkpoint with its weights, and the checkpoint's meta. ``expect``
    (architecture and/or classes) must match the checkpoint, or the error names the
    difference."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if have != want:
            raise FusionError(
                f"{path}: the checkpoint's {key} is {have}, the study expects {want}; "
                "retrain or point to a checkpoint of this study"
            )
    arch = UNetSpec.model_validate(meta["architecture"])
    model = build_unet(arch, len(meta["classes"]) + 1)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise FusionError(
            f"{path}: the weights do not fit the architecture it declares: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return model, meta


def model_meta(
    arch: UNetSpec,
    classes: dict[int, str],
    spacing: list[float],
    patch_size: list[int],
    norm: NormaliseSpec,
    variant: VariantSpec,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """What a prediction needs besides the weights (JSON-able, checked on load)."""
    return {
        "architecture": arch.model_dump(mode="json"),
        "classes": {str(k): v for k, v in classes.items()},
        "spacing": [float(s) for s in spacing],
        "patch_size": list(patch_size),
        "normalise": norm.model_dump(mode="json"),
        "variant": variant.model_dump(mode="json"),
        "provenance": {**provenance, "versions": versions()},
    }
