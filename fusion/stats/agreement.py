"""Agreement of a measurement with a reference: Bland-Altman limits, the intraclass
correlation, and Pearson and Spearman correlation.

The ICC is Shrout and Fleiss's ICC(2,1) (McGraw and Wong's ICC(A,1)): two-way random
effects, absolute agreement, single measurement, from the two-way ANOVA mean squares,
with its F-based confidence interval (McGraw and Wong 1996). Absolute agreement is the
one that matters for a percentage a clinician reads: a method that is always 5 points
high correlates perfectly and agrees poorly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True, slots=True)
class BlandAltman:
    """Bias (mean of measured - reference), the SD of the differences and the limits of
    agreement (bias ± z x SD), each limit with its approximate CI (Bland and Altman 1999)."""

    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    bias_ci_low: float
    bias_ci_high: float


def bland_altman(
    measured: ArrayLike, reference: ArrayLike, conf_level: float = 0.95
) -> BlandAltman:
    m, r = np.asarray(measured, float), np.asarray(reference, float)
    if m.shape != r.shape or m.ndim != 1 or len(m) < 2:
        raise ValueError("bland_altman needs two 1-D arrays of the same length >= 2")
    d = m - r
    n, bias, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    z = stats.norm.ppf(0.5 + conf_level / 2)
    t = stats.t.ppf(0.5 + conf_level / 2, n - 1)
    half = t * sd / np.sqrt(n)
    return BlandAltman(n, bias, sd, bias - z * sd, bias + z * sd, bias - half, bias + half)


@dataclass(frozen=True, slots=True)
class ICC:
    icc: float
    ci_low: float
    ci_high: float
    f: float
    p_value: float


def icc_agreement(ratings: ArrayLike, conf_level: float = 0.95) -> ICC:
    """ICC(2,1) of an (n targets x k raters) array."""
    x = np.asarray(ratings, float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError("icc_agreement needs an (n targets x k raters) array, n, k >= 2")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    icc = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    f = msr / mse if mse > 0 else np.inf
    p = float(stats.f.sf(f, n - 1, (n - 1) * (k - 1))) if np.isfinite(f) else 0.0
    # McGraw and Wong (1996), case 2A: F-based CI with Satterthwaite's degrees of freedom
    alpha = 1 - conf_level
    a = k * icc / (n * (1 - icc)) if icc < 1 else np.inf
    b = 1 + k * icc * (n - 1) / (n * (1 - icc)) if icc < 1 else np.inf
    if not np.isfinite(a) or mse == 0:
        return ICC(float(icc), float(icc), float(icc), float(f), p)
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    f_low = stats.f.ppf(1 - alpha / 2, n - 1, v)
    f_high = stats.f.ppf(1 - alpha / 2, v, n - 1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # tiny n: no CI
        low = n * (msr - f_low * mse) / (f_low * (k * msc + (k * n - k - n) * mse) + n * msr)
        high = n * (f_high * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_high * msr)
    low, high = (float(b) if np.isfinite(b) else float("nan") for b in (low, high))
    return ICC(float(icc), low, high, float(f), p)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Everything the involvement table reports for one measure."""

    n: int
    bland_altman: BlandAltman
    icc: ICC
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float


EXACT_SPEARMAN_N = 9  # up to 9! = 362,880 permutations: enumerated


def spearman(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value: exact up to n = 9 (every pairing of the
    ranks, scipy's ``permutation_test``, as R's ``cor.test(method = "spearman")`` is
    exact for small n), else scipy's t approximation. For rho = 1 with n = 5 the exact
    p is 2 / 120 = 1/60, where the t approximation says 1.4e-24."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho, p = stats.spearmanr(x, y)
    if len(x) > EXACT_SPEARMAN_N:
        return float(rho), float(p)
    rx = stats.rankdata(x) - (len(x) + 1) / 2

    def statistic(ranks: np.ndarray, axis: int) -> np.ndarray:  # Pearson r of the ranks
        centred = ranks - ranks.mean(axis=axis, keepdims=True)
        return (centred * rx).sum(axis=axis) / np.sqrt((centred**2).sum(axis=axis) * (rx**2).sum())

    exact = stats.permutation_test(
        (stats.rankdata(y),), statistic, permutation_type="pairings", n_resamples=np.inf,
        vectorized=True,
    )  # fmt: skip
    return float(rho), float(exact.pvalue)


def agreement(measured: ArrayLike, reference: ArrayLike, conf_level: float = 0.95) -> Agreement:
    m, r = np.asarray(measured, float), np.asarray(reference, float)
    ba = bland_altman(m, r, conf_level)
    icc = icc_agreement(np.column_stack([r, m]), conf_level)
    constant = np.ptp(m) == 0 or np.ptp(r) == 0
    pr = (np.nan, np.nan) if constant else stats.pearsonr(m, r)
    sr = (np.nan, np.nan) if constant else spearman(m, r)
    return Agreement(len(m), ba, icc, float(pr[0]), float(pr[1]), float(sr[0]), float(sr[1]))
