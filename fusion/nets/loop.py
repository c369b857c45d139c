"""The one training loop of fusion's networks (the U-Nets and the image classifiers).

Epochs run until ``max_epochs`` or until ``patience`` epochs in a row bring no better
monitored value (higher is better, by more than ``min_delta``). After every epoch the
weights, the optimiser and the loop's state go to ``last.pt`` (an interrupted run
resumes there and ends with the weights an uninterrupted one would have: each trainer
seeds an epoch from the study seed and the epoch's number), and a better epoch's
weights to ``best.pt``; checkpoints are written by one background thread while the
next epoch trains. ``done.json`` marks a finished folder, which keeps ``best.pt``
and drops ``last.pt``. A trainer supplies what one
epoch does (:class:`EpochFn`): train, validate, and return the history row and the
monitored value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion import checkpoint
from fusion.atomic import write_text_atomic

DONE = "done.json"


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch's history row (epoch, losses, validation metrics) and its monitored
    value (higher is better)."""

    row: dict[str, Any]
    value: float


EpochFn = Callable[[int], Epoch]


class Writer:
    """Checkpoints written in order by one background thread, so the next epoch trains
    while the last one is saved; at most one epoch's writes are pending, and
    :meth:`wait` (called before the training returns) raises any write error."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: list[Future] = []

    def submit(self, path: Path, payload: dict[str, Any]) -> None:
        self._pending.append(self._pool.submit(checkpoint.write, path, payload))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def run_epochs(
    folder: Path,
    model: Any,
    optimiser: Any,
    meta: dict[str, Any],
    kind: str,
    epoch_fn: EpochFn,
    *,
    max_epochs: int,
    patience: int,
    min_delta: float,
    best_meta: Callable[[int, dict[str, Any]], dict[str, Any]],
    desc: str,
    postfix: Callable[[dict[str, Any]], dict[str, str]],
) -> dict[str, Any]:
    """Train in ``folder`` from ``last.pt`` if there is one; returns the loop's state
    (epoch, best value and epoch, epochs without improvement, history). ``kind``
    ('segmentation', 'classifier') names the checkpoints in errors; ``best_meta(epoch,
    row)`` is the meta saved with ``best.pt``."""
    from tqdm.auto import tqdm

    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "bad_epochs": 0,
                             "history": []}  # fmt: skip
    state = checkpoint.resume(folder / "last.pt", model, optimiser, state, kind)
    writer = Writer()
    bar = tqdm(total=max_epochs, initial=state["epoch"], desc=desc, leave=False, disable=None)
    try:
        while state["epoch"] < max_epochs and state["bad_epochs"] < patience:
            epoch = state["epoch"] + 1
            result = epoch_fn(epoch)
            state["history"].append(result.row)
            state["epoch"] = epoch
            writer.wait()  # the previous epoch's checkpoints are on disk before new ones
            if state["best"] is None or result.value > state["best"] + min_delta:
                state.update(best=result.value, best_epoch=epoch, bad_epochs=0)
                best = checkpoint.contents(model, best_meta(epoch, result.row))
                writer.submit(folder / "best.pt", best)
            else:
                state["bad_epochs"] += 1
            last = checkpoint.contents(model, meta, optimiser=optimiser.state_dict(),
                                       state=json.dumps(state))  # fmt: skip
            writer.submit(folder / "last.pt", last)
            bar.update(1)
            bar.set_postfix(postfix(result.row))
    finally:
        writer.close()
        bar.close()
    return state


def finish(folder: Path, state: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """Mark ``folder`` finished (``done.json``: best epoch and value, history, whether
    training stopped before ``max_epochs``) and return what it says. ``last.pt`` goes:
    it only exists to resume, and with the optimiser's moments it is two to three times
    the size of ``best.pt`` (280 MB for a ResNet-50), in every cached run."""
    done = {"best_epoch": state["best_epoch"], "best_value": state["best"],
            "history": state["history"], "stopped_early": state["epoch"] < max_epochs}  # fmt: skip
    write_text_atomic(json.dumps(done), folder / DONE)
    (folder / "last.pt").unlink(missing_ok=True)
    return done


def finished(folder: Path) -> dict[str, Any] | None:
    """What ``done.json`` of a finished folder says, or None."""
    path = folder / DONE
    return json.loads(path.read_text()) if path.is_file() else None
