"""Training checkpoints, shared by every trainer (U-Nets, image classifiers).

A checkpoint is a plain dict: ``format``, the ``state_dict``, a JSON-able ``meta``
(architecture, classes, provenance) and any training state (optimiser, epoch record).
It is written atomically and read with ``weights_only=True``, so loading one runs no
code. Its content is copied to the CPU first, so it can be written while training goes
on changing the live tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusion.atomic import atomic_path
from fusion.errors import FusionError

FORMAT = 1


def contents(model: Any, meta: dict[str, Any], **state: Any) -> dict[str, Any]:
    """What a checkpoint holds, cloned to the CPU."""
    import torch

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    return {"format": FORMAT, "state_dict": copy(model.state_dict()), "meta": meta,
            **copy(state)}  # fmt: skip


def write(path: Path, payload: dict[str, Any]) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save(path: Path, model: Any, meta: dict[str, Any], **state: Any) -> None:
    """Write a checkpoint of ``model`` now."""
    write(path, contents(model, meta, **state))


def read(path: Path, kind: str) -> dict[str, Any]:
    """A fusion checkpoint; ``kind`` ('segmentation', 'classifier') names it in errors."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise FusionError(f"{path}: not a readable checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FusionError(f"{path}: not a fusion {kind} checkpoint")
    return payload


def resume(path: Path, model: Any, optimiser: Any, state: dict[str, Any], kind: str) -> dict:
    """After an interruption: the weights and optimiser of ``path`` loaded into ``model``
    and ``optimiser``, and its training state returned; ``state`` when there is none."""
    if not Path(path).is_file():
        return state
    saved = read(path, kind)
    model.load_state_dict(saved["state_dict"])
    optimiser.load_state_dict(saved["optimiser"])
    return json.loads(saved["state"])
