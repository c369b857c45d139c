"""Classification metrics at a threshold with their CIs, and the Youden threshold."""

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


def wilson_ci(hits: int, n: int, conf_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion hits / n (statsmodels'
    ``proportion_confint(method="wilson")``); (NaN, NaN) when n is 0."""
    if n == 0:
        return float("nan"), float("nan")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(hits, n, alpha=1 - conf_level, method="wilson")
    return float(low), float(high)


def metric_cis(m: ThresholdMetrics, conf_level: float = 0.95) -> dict[str, float]:
    """Wilson intervals of the proportions among ``m``'s metrics: ``<metric>_ci_low``
    and ``<metric>_ci_high`` for sensitivity, specificity, PPV, NPV and accuracy (TRIPOD+AI
    item 23). F1 is not a proportion of cases; its interval is bootstrapped elsewhere."""
    counts = {
        "sensitivity": (m.tp, m.tp + m.fn),
        "specificity": (m.tn, m.tn + m.fp),
        "ppv": (m.tp, m.tp + m.fp),
        "npv": (m.tn, m.tn + m.fn),
        "accuracy": (m.tp + m.tn, m.tp + m.tn + m.fp + m.fn),
    }
    out: dict[str, float] = {}
    for name, (hits, n) in counts.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson_ci(hits, n, conf_level)
    return out


def youden_threshold(y: ArrayLike, score: ArrayLike) -> float:
    """The threshold maximising sensitivity + specificity - 1 on ``score >= t``, chosen on
    the training set and applied unchanged elsewhere.

    As pROC's ``coords(roc, "best", best.method = "youden")``, the threshold lies midway
    between the score at which the index peaks and the next lower distinct score, so a
    new case scoring between the two training scores is not called by which side of a
    gap the threshold happened to sit on. On ties the strictest threshold wins; when no
    threshold beats calling nobody positive, the result is +inf."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "a Youden threshold")
    fpr, tpr, thresholds = roc_points(y, s)
    best = int(np.argmax(np.round(tpr - fpr, 12)))  # equal J within rounding: the strictest
    if best == 0:
        return float("inf")
    if best + 1 == len(thresholds):  # the loosest: every case is called positive
        return float(thresholds[best])
    return float((thresholds[best] + thresholds[best + 1]) / 2)
