"""Training one image classifier: BCE (optionally class-weighted), Adam, the head first
and then the last blocks, early stopping on the validation AUC or loss, a checkpoint
after every epoch so an interrupted run resumes where it stopped.

Reproducible and resumable by construction: every epoch draws its order and its
augmentations from the study seed's ``classifier/batches`` stream of the epoch
(:mod:`fusion.seeds`), so an epoch depends on nothing but the seed, the epoch and the
weights and optimiser state it starts from, all of which ``last.pt`` holds (the loop
itself is :mod:`fusion.nets.loop`, shared with the U-Nets). A resumed run therefore
ends with the same weights as an uninterrupted one (on the same device). The validation
set is only ever predicted, never augmented or trained on; the test set never reaches
this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.config import ClassifierSpec
from fusion.device import autocast, grad_scaler, precision
from fusion.errors import FusionError
from fusion.learn.cnn.data import Images, as_input
from fusion.learn.cnn.network import build_classifier, set_trainable
from fusion.nets import loop
from fusion.seeds import stream


@dataclass(frozen=True, slots=True)
class Trained:
    """A finished training: the best epoch's checkpoint and the per-epoch history
    (epoch, phase, loss, val_loss, val_auc)."""

    checkpoint: Path
    best_epoch: int
    best_value: float
    history: list[dict[str, Any]]
    stopped_early: bool


def check_sets(train: Images, val: Images, what: str) -> None:
    """Refuse sets that cannot train or stop a classifier, naming the set."""
    for name, data in (("training", train), ("validation", val)):
        positives = int(data.labels.sum())
        if positives in (0, len(data.labels)):
            kind = "no positive" if positives == 0 else "no negative"
            need = ("a classifier cannot learn from one class" if name == "training" else
                    "early stopping and the threshold need both classes")  # fmt: skip
            raise FusionError(
                f"{what}: the {name} set ({len(data.labels)} cases) has {kind} case: {need} "
                "(give more cases of both classes, or set the split in the manifest)"
            )


def logits(model: Any, pixels: np.ndarray, device: str, batch: int) -> np.ndarray:
    """The positive class's logit of each image, shape (n,), float32 as the network gives
    it, without augmentation, in eval mode. A sigmoid in float32 rounds logits above
    about 17 to a probability of exactly 1; the logits keep those cases ranked."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(pixels), batch):
            out.append(model(as_input(pixels[start : start + batch], device)).float())
    return torch.cat(out).squeeze(1).cpu().numpy() if out else np.zeros(0, dtype=np.float32)


def predict(model: Any, pixels: np.ndarray, device: str, batch: int) -> np.ndarray:
    """Probabilities of the positive class (float32 sigmoid of :func:`logits`)."""
    import torch

    return torch.sigmoid(torch.from_numpy(logits(model, pixels, device, batch))).numpy()


def _batches(n: int, size: int, generator: Any) -> list[Any]:
    """A shuffled epoch in batches; a last batch of one joins the one before (batch
    norm cannot train on a single image)."""
    import torch

    order = torch.randperm(n, generator=generator)
    parts = list(order.split(size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2] = torch.cat(parts[-2:])
        parts.pop()
    return parts


def train_classifier(
    arch: str,
    train: Images,
    val: Images,
    spec: ClassifierSpec,
    weights: Any,
    meta: dict[str, Any],
    folder: Path,
    seed: int,
    device: str,
    desc: str = "",
) -> Trained:
    """Train in ``folder`` with the one training loop (:mod:`fusion.nets.loop`:
    ``last.pt`` every epoch, ``best.pt`` at each better validation value, ``done.json``
    at the end); a finished folder is returned as it is, an unfinished one resumes from
    ``last.pt``. ``weights`` is a :class:`fusion.nets.weights.Weights` (None: random)."""
    import torch

    check_sets(train, val, desc or arch)
    folder.mkdir(parents=True, exist_ok=True)
    if loop.finished(folder) is None:
        state_dict = weights.state_dict if weights is not None else None
        source = weights.source if weights is not None else "random"
        model = build_classifier(arch, state_dict, seed, source).to(device)
        optimiser = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        state = loop.run_epochs(
            folder, model, optimiser, meta, "classifier",
            _epoch_fn(arch, model, optimiser, train, val, spec, seed, device),
            max_epochs=spec.max_epochs, patience=spec.patience, min_delta=1e-6,
            best_meta=lambda epoch, row: {**meta, **row},
            desc=desc or arch,
            postfix=lambda r: {"loss": f"{r['loss']:.3f}", "val_auc": f"{r['val_auc']:.3f}"},
        )  # fmt: skip
        loop.finish(folder, state, spec.max_epochs)
    return finished(folder)


def _loss_fn(train: Images, spec: ClassifierSpec, device: str) -> Any:
    import torch

    pos_weight = None
    if spec.class_weights == "balanced":
        positives = float(train.labels.sum())
        pos_weight = torch.tensor([(len(train.labels) - positives) / positives], device=device)
    return torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def _epoch_fn(arch, model, optimiser, train, val, spec, seed, device) -> loop.EpochFn:  # noqa: ANN001 - train_classifier's own objects
    """One epoch: the head alone for ``freeze.head_epochs`` epochs, then the last
    ``freeze.train_blocks`` blocks too; shuffled, augmented batches from the epoch's
    stream; then the validation loss and AUC (``monitor`` picks the value kept)."""
    import torch

    from fusion.stats.roc import auc_value

    loss_fn = _loss_fn(train, spec, device)
    scaler = grad_scaler(device)
    # the training images live where the network runs (in its autocast precision on a
    # GPU, fusion.device.precision), so a batch is an index into them, not a host copy
    pixels = torch.from_numpy(train.pixels)
    if device.startswith("cuda"):
        pixels = pixels.to(device, dtype=getattr(torch, precision(device)))
    labels = torch.from_numpy(train.labels).to(device)

    def epoch_fn(epoch: int) -> loop.Epoch:
        head_only = epoch <= spec.freeze.head_epochs
        frozen = set_trainable(model, arch, 0 if head_only else spec.freeze.train_blocks)
        generator = torch.Generator().manual_seed(stream(seed, "classifier/batches", epoch))
        model.train()
        for module in frozen:
            module.eval()  # frozen blocks keep their batch-norm statistics
        losses = []
        for rows in _batches(len(train.labels), spec.batch_size, generator):
            x = as_input(pixels[rows.to(pixels.device)], device, spec.augment, generator)
            optimiser.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(x).squeeze(1).float()
            loss = loss_fn(logits, labels[rows.to(device)])
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(loss.detach())  # no sync with the GPU per step
        prob = predict(model, val.pixels, device, spec.batch_size)
        val_loss = float(torch.nn.functional.binary_cross_entropy(
            torch.from_numpy(prob).double().clamp(1e-7, 1 - 1e-7),
            torch.from_numpy(val.labels).double()))  # fmt: skip
        val_auc = auc_value(val.labels, prob)
        row = {"epoch": epoch, "phase": "head" if head_only else "blocks",
               "loss": float(torch.stack(losses).mean()), "val_loss": val_loss,
               "val_auc": val_auc}  # fmt: skip
        return loop.Epoch(row, val_auc if spec.monitor == "auc" else -val_loss)

    return epoch_fn


def finished(folder: Path) -> Trained | None:
    """The training finished in ``folder``, or None."""
    done = loop.finished(folder)
    if done is None:
        return None
    return Trained(folder / "best.pt", done["best_epoch"], done["best_value"], done["history"],
                   done["stopped_early"])  # fmt: skip
