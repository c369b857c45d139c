"""ROC AUC with DeLong's variance, paired and unpaired DeLong tests, bootstrap CI.

Conventions follow R's pROC with ``direction = "<"``: a higher score means more likely
positive, and ties between a positive and a negative count one half. The AUC is never
flipped: a score that ranks the wrong way gets an AUC below 0.5.

DeLong's structural components are Sun & Xu's midrank placements (2014, "Fast
implementation of DeLong's algorithm", IEEE Signal Processing Letters 21:1389), computed
from one sort per score instead of their three, so every function here is O(n log n):
a paired test on 10^6 cases takes 0.21-0.30 s here against pROC 1.18's 2.0-3.2 s
(``benchmarks/bench_stats.py``, side by side, 2 cores). The stratified bootstrap of the AUC
ranks the scores once and counts each resample: 2,000 resamples of 10^5 cases in
1.2-1.9 s (29 s when every resample was sorted; pROC's ci.auc 46 s), the same numbers
for the same seed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from fusion.stats._checks import as_outcome, as_scores, both_classes
from fusion.threads import cores


@dataclass(frozen=True, slots=True)
class AUC:
    auc: float
    se: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class DeLongTest:
    auc_a: float
    auc_b: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class DeLongUnpaired:
    auc_a: float
    auc_b: float
    statistic: float
    df: float
    p_value: float


@dataclass(frozen=True, slots=True)
class BootstrapAUC:
    auc: float
    ci_low: float
    ci_high: float


def midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # first index of each run of equal values, and the run lengths
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    lengths = np.diff(np.r_[starts, len(x)])
    mid = starts + (lengths + 1) / 2.0  # mean of ranks start+1 .. start+length
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.repeat(mid, lengths)
    return ranks


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong placement values for k score rows: (auc[k], v10[k, m], v01[k, n]).

    One sort per score row (Sun & Xu's three midrank passes, folded into one), the rows
    sorted side by side in threads (NumPy releases the GIL; at most one per core): a
    paired test's two sorts take the time of one. Positives keep their order in ``y``,
    as do negatives, so row r of v10 and row s pair case by case (DeLong's covariance)."""
    is_pos = y == 1
    m = int(is_pos.sum())
    aucs, v10, v01 = (
        np.empty(len(scores)),
        np.empty((len(scores), m)),
        np.empty((len(scores), len(y) - m)),
    )

    def row(r: int) -> None:
        placement = _placement(is_pos, m, scores[r])
        v10[r], v01[r] = placement[is_pos], placement[~is_pos]
        aucs[r] = v10[r].mean()

    threads = min(len(scores), cores()) if len(y) >= 50_000 else 1  # threads cost ~0.1 ms
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(row, range(len(scores))))
    else:
        for r in range(len(scores)):
            row(r)
    return aucs, v10, v01


def _placement(is_pos: np.ndarray, m: int, score: np.ndarray) -> np.ndarray:
    """Each case's placement value, in case order: a positive's is the share of negatives
    below it plus half of those tied with it, a negative's one minus the share of
    positives below it and half of those tied. With running counts ``c`` of negatives
    (and ``k - c`` of positives) before sorted position k, that is (c before the case's
    tie group + c after it) / 2. Every pass but the sort, one gather and one scatter is
    sequential."""
    total, n = len(score), len(score) - m
    order = np.argsort(score)  # ties are grouped: their order within a group is free
    ordered = score[order]
    pos_sorted = is_pos[order]
    neg_upto = np.zeros(total + 1)  # negatives among the first k sorted positions
    np.cumsum(~pos_sorted, out=neg_upto[1:])
    tied = ordered[1:] == ordered[:-1]
    if tied.any():  # the counts before each position's tie group and after its end
        index = np.arange(total + 1)
        first = np.maximum.accumulate(np.where(np.r_[False, tied], 0, index[:-1]))
        end = np.minimum.accumulate(np.where(np.r_[tied, False], total, index[1:])[::-1])[::-1]
        neg = neg_upto[first] + neg_upto[end]
        pos = (first + end) - neg
    else:  # each position is its own group
        neg = neg_upto[:-1] + neg_upto[1:]
        pos = np.arange(1, 2 * total, 2, dtype=float) - neg
    # placement = neg / 2n for a positive, 1 - pos / 2m for a negative
    np.multiply(neg, 1 / (2 * n), out=neg)
    np.multiply(pos, -1 / (2 * m), out=pos)
    pos += 1.0
    placement = np.empty(total)
    placement[order] = np.where(pos_sorted, neg, pos)
    return placement


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return s10 / v10.shape[1] + s01 / v01.shape[1]


def _z(conf_level: float) -> float:
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must be between 0 and 1, got {conf_level}")
    return float(stats.norm.ppf(1 - (1 - conf_level) / 2))


def auc_value(y: ArrayLike, score: ArrayLike) -> float:
    """The AUC alone (Mann-Whitney, ties one half): defined with one case per class."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "an AUC")
    return _auc(s[y == 1], s[y == 0])


def _two_per_class(y: np.ndarray, what: str) -> None:
    """DeLong's variance uses the spread of placement values within each class."""
    m, n = int(y.sum()), int(len(y) - y.sum())
    if min(m, n) < 2:
        raise ValueError(
            f"{what} needs at least two positive and two negative cases (DeLong's variance "
            f"is the spread of each class's placement values); got {m} positive and "
            f"{n} negative"
        )


def roc_auc(y: ArrayLike, score: ArrayLike, conf_level: float = 0.95) -> AUC:
    """AUC with its DeLong standard error and CI (clipped to [0, 1]), as pROC's ci.auc.

    With a single positive or negative case the standard error is undefined: a
    ValueError says so (use :func:`auc_value` for the AUC alone)."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "an AUC")
    _two_per_class(y, "a DeLong CI of the AUC")
    aucs, v10, v01 = _placements(y, s[None, :])
    se = float(np.sqrt(_delong_cov(v10, v01)[0, 0]))
    z = _z(conf_level)
    auc = float(aucs[0])
    return AUC(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


def delong_test(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
    conf_level: float = 0.95,
) -> DeLongTest:
    """Paired DeLong test of two scores on the same cases (pROC's roc.test, paired).

    ``greater`` tests AUC(a) > AUC(b). The CI is the two-sided interval of AUC(a) - AUC(b).
    """
    y = as_outcome(y)
    a, b = as_scores(score_a, len(y), "score_a"), as_scores(score_b, len(y), "score_b")
    both_classes(y, "a DeLong test")
    _two_per_class(y, "a DeLong test")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    aucs, v10, v01 = _placements(y, np.vstack([a, b]))
    cov = _delong_cov(v10, v01)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        raise ValueError(
            "the two scores rank the cases identically (zero variance of the AUC difference); "
            "there is nothing to test"
        )
    sd = float(np.sqrt(var))
    z = diff / sd
    if alternative == "two-sided":
        p = 2 * stats.norm.sf(abs(z))
    elif alternative == "greater":
        p = stats.norm.sf(z)
    else:
        p = stats.norm.cdf(z)
    q = _z(conf_level)
    return DeLongTest(float(aucs[0]), float(aucs[1]), z, float(p), diff - q * sd, diff + q * sd)


def delong_test_unpaired(
    y_a: ArrayLike, score_a: ArrayLike, y_b: ArrayLike, score_b: ArrayLike
) -> DeLongUnpaired:
    """Unpaired DeLong test (two independent samples): Welch-type t with
    Satterthwaite degrees of freedom, as pROC's roc.test(paired = FALSE)."""
    ya, yb = as_outcome(y_a, "y_a"), as_outcome(y_b, "y_b")
    sa, sb = as_scores(score_a, len(ya), "score_a"), as_scores(score_b, len(yb), "score_b")
    both_classes(ya, "a DeLong test (sample a)")
    both_classes(yb, "a DeLong test (sample b)")
    _two_per_class(ya, "a DeLong test (sample a)")
    _two_per_class(yb, "a DeLong test (sample b)")
    auc_a, v10a, v01a = _placements(ya, sa[None, :])
    auc_b, v10b, v01b = _placements(yb, sb[None, :])
    var_a = float(_delong_cov(v10a, v01a)[0, 0])
    var_b = float(_delong_cov(v10b, v01b)[0, 0])
    if var_a + var_b <= 0:
        raise ValueError(
            "both AUCs have zero DeLong variance (each sample's scores separate its classes "
            "perfectly, or are constant); there is nothing to test"
        )
    t = float((auc_a[0] - auc_b[0]) / np.sqrt(var_a + var_b))
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(ya) - 1) + var_b**2 / (len(yb) - 1))
    p = float(2 * stats.t.sf(abs(t), df))
    return DeLongUnpaired(float(auc_a[0]), float(auc_b[0]), t, float(df), p)


def bootstrap_auc_ci(
    y: ArrayLike,
    score: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    conf_level: float = 0.95,
) -> BootstrapAUC:
    """Stratified percentile bootstrap: positives and negatives resampled separately,
    as pROC's ci.auc(method = "bootstrap", boot.stratified = TRUE)."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "an AUC")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    _z(conf_level)
    rng = np.random.default_rng(seed)
    # each score's rank among the distinct scores, found once: a resample's AUC is then
    # counting, no sort (integer arithmetic, exact): 2,000 resamples of 10^5 cases take
    # seconds, where sorting every resample took half a minute
    distinct, rank = np.unique(s, return_inverse=True)
    pos, neg = rank[y == 1], rank[y == 0]
    m, n, levels = len(pos), len(neg), len(distinct)
    aucs = np.empty(n_boot)
    for i in range(n_boot):
        pos_count = np.bincount(pos[rng.integers(0, m, m)], minlength=levels)
        neg_count = np.bincount(neg[rng.integers(0, n, n)], minlength=levels)
        twice_below = 2 * (np.cumsum(neg_count) - neg_count) + neg_count  # ties: one half
        aucs[i] = int(pos_count @ twice_below) / (2 * m * n)
    alpha = (1 - conf_level) / 2
    low, high = np.quantile(aucs, [alpha, 1 - alpha])  # type 7, R's default
    return BootstrapAUC(_auc(s[y == 1], s[y == 0]), float(low), float(high))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC from one midrank pass."""
    m, n = len(pos), len(neg)
    tz = midrank(np.concatenate([pos, neg]))
    return float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))


def roc_points(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) at every distinct score,
    from the strictest threshold to the loosest; a case is positive when score >= t."""
    y = as_outcome(y)
    s = as_scores(score, len(y))
    both_classes(y, "a ROC curve")
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s) - 1]
    tpr = np.r_[0.0, tp[last] / y.sum()]
    fpr = np.r_[0.0, fp[last] / (len(y) - y.sum())]
    return fpr, tpr, thresholds
