"""One seed policy: every random stream of a study is derived from ``study.seed`` by name.

A stream's seed is NumPy's ``SeedSequence(study.seed, spawn_key=<the name's bytes>)``,
so streams are independent of each other (the test split, the CV folds, the bootstrap
and the training batches no longer draw the same numbers from one seed) and a stream
added later changes none of the others. Every stream fusion draws is named in
:data:`STREAMS`; the numbers of a run depend on ``study.seed`` alone.

Source: NumPy's parallel random-number guidance (``numpy.random.SeedSequence`` and its
``spawn_key``), the same construction ``SeedSequence.spawn`` uses.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "split/test": "the test set drawn from the internal cases",
    "split/validation": "an image classifier's validation set, from the training cases",
    "split/tuning": "a segmentation study's tuning set, from the training patients",
    "split/finetune": "the held-back training cases that stop deep-feature fine-tuning",
    "cv/folds": "the cross-validation folds of every model (LASSO, tuning, out-of-fold)",
    "segmentation/cv": "the order of the training cases before the segmentation CV folds",
    "bootstrap": "every bootstrap confidence interval and band of the statistics",
    "habitat/<roi>": "a habitat generator's clustering (k-means, silhouette), per ROI name",
    "rois/<roi>": "a perturbation's or negative-control ROI's draws (direction, supervoxels, "
    "noise, shuffle, place) unless the study gives the generator a seed, per ROI name",
    "permute/<model>": "the balanced permutation of a permuted-outcome control, per model",
    "deep/weights": "the deep-feature network's random initial weights",
    "classifier/init": "an image classifier's random weights and new head",
    "classifier/batches/<epoch>": "the order and augmentation of an epoch's batches",
    "segmentation/batches/<epoch>": "a U-Net epoch's patches, batches and augmentation",
}


def stream(seed: int, name: str, *index: int) -> int:
    """The 32-bit seed of random stream ``name`` (with optional integer ``index``, an
    epoch say) of a study whose seed is ``seed``; equal inputs give equal seeds."""
    key = (len(name), *name.encode(), *index)  # the length keeps "a"+(98,) from "ab"
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])
