"""Classification metrics at a threshold, and the Youden threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fusion.stats._checks import as_outcome, as_scores, both_classes
from fusion.stats.roc import roc_points


@dataclass(frozen=True, slots=True)
class ThresholdMetrics:
    """At ``score >= threshold``; a ratio with a zero denominator is NaN (undefined)."""

    threshold: float
    sensitivity: float
    specificity: float
    accuracy: float
    ppv: float
    npv: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def threshold_metrics(y: ArrayLike, score: ArrayLike, threshold: float) -> ThresholdMetrics:
    y = as_outcome(y)
    s = as_scores(score, len(y))
    called = s >= threshold
    tp = int((called & (y == 1)).sum())
    fp = int((called & (y == 0)).sum())
    tn = int((~called & (y == 0)).sum())
    fn = int((~called & (y == 1)).sum())
    return ThresholdMetrics(
        threshold=float(threshold),
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, len(y)),
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        tp=tp, fp=fp, tn=tn, fn=fn,
    )  # fmt: skip


def youden_threshold(y: ArrayLike, score: ArrayLike) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (first on ties,
    i.e. the strictest); chosen on the training set, applied unchanged elsewhere."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "a Youden threshold")
    fpr, tpr, thresholds = roc_points(y, s)
    best = int(np.argmax(np.round(tpr - fpr, 12)))  # equal J within rounding: the strictest
    return float(thresholds[best]) if np.isfinite(thresholds[best]) else float(s.max())
