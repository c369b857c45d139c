"""ResNet-50 and DenseNet-121 with a one-logit head, their blocks, and freezing.

Weights come from :func:`fusion.nets.weights.load_weights`, the deep stage's own rule
(ImageNet through torchvision's weights API and the torch hub cache, a local checkpoint,
or random, with the same offline error and warning). An ImageNet or torchvision state
dict fills the backbone and the new head starts from the study's seed; a fusion
classifier checkpoint fills the head too.

Transfer learning trains the head first and then the last blocks as well. Each
architecture is split into five blocks (the stem and four stages), so ``train_blocks``
means the same for both. Frozen blocks keep their batch-norm statistics (they are put
in eval mode during training).
"""

from __future__ import annotations

import re
from typing import Any

from fusion.errors import FusionError
from fusion.seeds import stream

ARCHITECTURES = ("resnet50", "densenet121")
HEADS = {"resnet50": "fc", "densenet121": "classifier"}
# the stem, then four stages; the target of Grad-CAM is the last stage's output
BLOCKS = {
    "resnet50": (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
    "densenet121": (
        ("features.conv0", "features.norm0"),
        ("features.denseblock1", "features.transition1"),
        ("features.denseblock2", "features.transition2"),
        ("features.denseblock3", "features.transition3"),
        ("features.denseblock4", "features.norm5"),
    ),
}
CAM_LAYER = {"resnet50": "layer4", "densenet121": "features.norm5"}
# DenseNet's ImageNet file uses the old key names ('norm.1'); torchvision renames them
# in its own loader, which a state dict from get_state_dict() does not pass through
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _renamed(arch: str, state: dict[str, Any]) -> dict[str, Any]:
    if arch != "densenet121":
        return state
    return {(_DENSENET_KEY.sub(r"\1\2", k)): v for k, v in state.items()}


def build_classifier(arch: str, state: dict[str, Any] | None, seed: int, source: str = "") -> Any:
    """``arch`` with a one-logit head; ``state`` (None: random) loaded into it.

    A state dict whose head has another shape (ImageNet's 1000 classes) loads into the
    backbone only; any other mismatch is an error naming ``source``."""
    import torch
    import torchvision

    if arch not in ARCHITECTURES:
        raise FusionError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    torch.manual_seed(stream(seed, "classifier/init"))  # random weights and the new head
    model = getattr(torchvision.models, arch)(weights=None, num_classes=1)
    if state is None:
        return model
    state = _renamed(arch, state)
    head = HEADS[arch]
    own = model.state_dict()
    foreign_head = any(k.startswith(f"{head}.") and k in own and v.shape != own[k].shape
                       for k, v in state.items())  # fmt: skip
    if foreign_head:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (foreign_head and k.startswith(f"{head}."))]
    if missing or result.unexpected_keys:
        raise FusionError(
            f"{source or 'weights'}: not a {arch} state dict (missing {len(missing)} keys, "
            f"e.g. {missing[:2]}; unexpected {len(result.unexpected_keys)}, e.g. "
            f"{result.unexpected_keys[:2]})"
        )
    return model


def backbone_blocks(model: Any, arch: str) -> list[list[Any]]:
    """The five blocks (stem, four stages) of ``model``, each a list of modules."""
    return [[model.get_submodule(name) for name in block] for block in BLOCKS[arch]]


def set_trainable(model: Any, arch: str, train_blocks: int) -> list[Any]:
    """Train the head and the last ``train_blocks`` blocks; freeze the rest. Returns the
    frozen modules, whose batch norms must stay in eval mode while training."""
    blocks = backbone_blocks(model, arch)
    frozen = [m for block in blocks[: len(blocks) - train_blocks] for m in block]
    for p in model.parameters():
        p.requires_grad_(True)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def features_of(model: Any, arch: str) -> Any:
    """The network up to its pooled features (the head replaced by an identity)."""
    import torch

    setattr(model, HEADS[arch], torch.nn.Identity())
    return model
