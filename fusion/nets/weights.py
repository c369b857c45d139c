"""Network weights: where they come from, and one digest of what they are.

``imagenet`` resolves through torchvision's weights API (the torch hub cache; nothing is
downloaded when the machine is offline: the study either allows random weights, loudly,
or stops with instructions), a path loads a local checkpoint (``weights_only=True``),
``random`` is asked for explicitly. Shared by the deep-feature stage, its fine-tuning
and the image classifiers.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.errors import ConfigError, FusionError
from fusion.hashing import file_digest

log = logging.getLogger(__name__)

IMAGENET_HELP = (
    "ImageNet weights for {arch} could not be loaded ({reason}). Either put the file "
    "{filename} (from {url}) into {folder}, or set {section}.weights in the study to the "
    "path of a local checkpoint (a {arch} state dict), or set "
    "{section}.allow_random_weights: true to go on with random weights (the report will "
    "say the network is not pretrained)."
)


@dataclass(frozen=True, slots=True)
class Weights:
    """A loaded state dict (None: random init) and how to cite it in the provenance."""

    state_dict: dict[str, Any] | None
    source: str
    sha256: str | None
    pretrained: bool
    warning: str | None = None


def load_weights(
    spec: Any, base: Path | None = None, arch: str = "resnet50", section: str = "deep"
) -> Weights:
    """Resolve ``<section>.weights`` (``imagenet``, ``random`` or a checkpoint path) to a
    state dict of ``arch``; FusionError explains what to do. ``spec`` has ``weights``
    and ``allow_random_weights`` (the deep and classifier sections both do)."""
    import torch

    if spec.weights == "random":
        return Weights(None, "random", None, pretrained=False, warning="random weights (asked for)")
    if spec.weights == "imagenet":
        from torchvision.models import get_model_weights

        meta = get_model_weights(arch).DEFAULT  # ResNet50: IMAGENET1K_V2
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        filename = meta.url.rsplit("/", 1)[-1]
        try:
            state = meta.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # URLError, OSError, hash mismatch: all mean "not available"
            reason = f"{type(exc).__name__}: {exc}"
            if not spec.allow_random_weights:
                raise FusionError(
                    IMAGENET_HELP.format(reason=reason, filename=filename, url=meta.url,
                                         folder=folder, arch=arch, section=section)
                ) from None  # fmt: skip
            message = (
                f"ImageNet weights unavailable ({reason}); {arch} uses RANDOM weights "
                f"({section}.allow_random_weights: true) and is NOT pretrained"
            )
            log.warning(message)
            return Weights(None, "random (imagenet unavailable)", None, False, message)
        return Weights(state, f"imagenet ({meta.url})", file_digest(folder / filename), True)
    path = Path(spec.weights)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigError(
            f"{section}.weights: {spec.weights!r} is not 'imagenet', 'random'"
            f"{', finetune' if section == 'deep' else ''} or an existing checkpoint file "
            f"(looked for {path})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FusionError(f"{path}: cannot load checkpoint: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return Weights(state, f"checkpoint {path}", file_digest(path), True)


def weights_digest(state_dict: dict[str, Any]) -> str:
    """SHA-256 of the weights themselves (names, shapes, bytes): the same weights give
    the same digest whatever file they were saved in (a checkpoint file's own bytes
    depend on its name, which torch writes into the archive)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()
