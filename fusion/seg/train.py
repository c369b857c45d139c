"""Training one U-Net: patches with augmentation, Dice + cross-entropy, Adam, early
stopping on validation Dice, and a checkpoint after every epoch so an interrupted run
resumes where it stopped.

Reproducible and resumable by construction: every epoch reseeds torch, NumPy and the
augmentation from the study seed's ``segmentation/batches`` stream of the epoch
(:mod:`fusion.seeds`), so an epoch's batches depend on nothing but the seed, the epoch
and the weights it starts from; a resumed run therefore continues exactly as an
uninterrupted one would. Validation runs the same sliding-window prediction as
inference, on whole volumes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.config import AugmentSpec, SegmentationSpec
from fusion.device import autocast, grad_scaler
from fusion.nets import loop
from fusion.seeds import stream
from fusion.seg.data import Prepared
from fusion.seg.infer import to_labels, window_inference
from fusion.seg.network import build_unet


@dataclass(frozen=True, slots=True)
class Trained:
    """A finished training: the best checkpoint, its epoch and validation Dice, and the
    per-epoch history (epoch, loss, val_dice)."""

    checkpoint: Path
    best_epoch: int
    val_dice: float
    history: list[dict[str, float]]
    stopped_early: bool


def _transforms(spec: SegmentationSpec) -> Any:
    """MONAI dictionary transforms: pad to the patch, crop patches centred half on the
    foreground, then flips, small rotations and scaling, intensity jitter."""
    from monai import transforms as t

    dims = spec.network.dims
    roi = tuple(reversed(spec.patch_size))
    aug: AugmentSpec = spec.augment
    keys = ("image", "label")
    steps = [  # the first two are deterministic: computed once per case and cached
        t.SpatialPadd(keys, spatial_size=roi),
        t.FgBgToIndicesd("label"),
        t.RandCropByPosNegLabeld(
            keys,
            "label",
            roi,
            pos=1,
            neg=1,
            num_samples=spec.patches_per_case,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        ),
    ]
    if aug.flip:  # in-plane flips only: the head-feet axis has a meaning
        steps += [t.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(dims - 2, dims)]
    if aug.rotate_deg or aug.scale:
        angle = math.radians(aug.rotate_deg)
        steps.append(
            t.RandAffined(
                keys,
                prob=0.5,
                rotate_range=(angle,) if dims == 2 else (angle, 0, 0),
                scale_range=(aug.scale,) * dims,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    if aug.intensity:
        steps += [
            t.RandScaleIntensityd("image", factors=aug.intensity, prob=0.5),
            t.RandShiftIntensityd("image", offsets=aug.intensity, prob=0.5),
        ]
    return t.Compose(steps)


def _items(cases: list[Prepared], dims: int, skip_empty: bool) -> list[dict[str, np.ndarray]]:
    """Training items: whole volumes (3D) or axial slices (2D), channel first."""
    if dims == 3:
        return [{"image": c.image[None], "label": c.label[None]} for c in cases]
    return [
        {"image": c.image[z][None], "label": c.label[z][None]}
        for c in cases
        for z in range(c.image.shape[0])
        if not skip_empty or c.label[z].any()
    ]


def dice_per_class(labels: np.ndarray, reference: np.ndarray, classes: int) -> list[float]:
    """Dice of each foreground class (both empty: 1, as in fusion.stats.segmentation)."""
    out = []
    for k in range(1, classes + 1):
        p, r = labels == k, reference == k
        total = p.sum() + r.sum()
        out.append(1.0 if total == 0 else 2.0 * (p & r).sum() / total)
    return out


def validate(model: Any, cases: list[Prepared], spec: SegmentationSpec, device: str) -> float:
    """Mean Dice over validation cases and foreground classes, on the training grid."""
    scores = []
    for case in cases:
        probs = window_inference(model, case.image, spec.network.dims, spec.patch_size, device)
        scores += dice_per_class(to_labels(probs, spec.threshold), case.label, len(spec.labels))
    return float(np.mean(scores))


def train_unet(
    train: list[Prepared],
    val: list[Prepared],
    spec: SegmentationSpec,
    meta: dict[str, Any],
    folder: Path,
    seed: int,
    device: str,
    desc: str = "U-Net",
) -> Trained:
    """Train in ``folder`` with the one training loop (:mod:`fusion.nets.loop`:
    ``last.pt`` every epoch, ``best.pt`` at each better validation Dice, ``done.json``
    at the end); a finished folder is returned as it is, an unfinished one resumes from
    ``last.pt``."""
    import torch
    from monai.utils import set_determinism

    folder.mkdir(parents=True, exist_ok=True)
    if loop.finished(folder) is None:
        set_determinism(seed)
        model = build_unet(spec.network, len(spec.labels) + 1).to(device)
        optimiser = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        transforms = _transforms(spec)

        def best_meta(epoch: int, row: dict[str, Any]) -> dict[str, Any]:
            return {**meta, "provenance": {**meta["provenance"], "epoch": epoch,
                                           "val_dice": row["val_dice"]}}  # fmt: skip

        with _plain_tensors():
            epoch_fn = _epoch_fn(model, optimiser, transforms, train, val, spec, seed, device)
            state = loop.run_epochs(
                folder, model, optimiser, meta, "segmentation", epoch_fn,
                max_epochs=spec.max_epochs, patience=spec.patience, min_delta=1e-4,
                best_meta=best_meta, desc=desc,
                postfix=lambda r: {"loss": f"{r['loss']:.3f}", "val_dice": f"{r['val_dice']:.3f}"},
            )  # fmt: skip
        loop.finish(folder, state, spec.max_epochs)
    done = loop.finished(folder)
    return Trained(folder / "best.pt", done["best_epoch"], done["best_value"], done["history"],
                   done["stopped_early"])  # fmt: skip


@contextmanager
def _plain_tensors() -> Iterator[None]:
    """MONAI's metadata tracking off (it doubles the cost of the transforms here) and its
    warning about a case without a lesion silenced (it then takes a background patch,
    which is what training on such a case should do); both restored afterwards."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    set_track_meta(False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Num foregrounds 0", UserWarning)
            yield
    finally:
        set_track_meta(before)


def _epoch_fn(model, optimiser, transforms, train, val, spec, seed, device) -> loop.EpochFn:  # noqa: ANN001 - train_unet's own objects
    """One U-Net epoch: patches of the training cases in batches (Dice + cross-entropy),
    then the validation Dice of whole volumes; seeded from the epoch's stream."""
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    data = CacheDataset(
        _items(train, spec.network.dims, spec.skip_empty_slices),
        transforms,
        num_workers=0,
        progress=False,
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = grad_scaler(device)

    def epoch_fn(epoch: int) -> loop.Epoch:
        epoch_seed = stream(seed, "segmentation/batches", epoch)
        set_determinism(epoch_seed)
        transforms.set_random_state(epoch_seed)
        loader = DataLoader(
            data,
            batch_size=spec.batch_size,
            shuffle=True,
            num_workers=0,
            generator=torch.Generator().manual_seed(epoch_seed),
        )
        model.train()
        losses = []
        for batch in loader:
            optimiser.zero_grad(set_to_none=True)
            with autocast(device):
                loss = loss_fn(model(batch["image"].to(device)), batch["label"].to(device))
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(float(loss.detach()))
        val_dice = validate(model, val, spec, device)
        return loop.Epoch({"epoch": epoch, "loss": float(np.mean(losses)),
                           "val_dice": val_dice}, val_dice)  # fmt: skip

    return epoch_fn
