"""Intraclass correlation of many features at once: how much of a feature's variance
across cases survives a perturbation of its measurement (a slightly different contour,
another scanner).

Shrout and Fleiss (1979), as R's ``psych::ICC`` computes them, for n cases (targets)
measured k times (raters: the original ROI and its perturbations):

- ``ICC1`` (ICC(1,1)): one-way random effects, absolute agreement. Each case's k
  measurements are exchangeable draws (random perturbations of its ROI): the right
  model when the perturbations are random and not the same "raters" across cases.
- ``ICC3`` (ICC(3,1)): two-way mixed effects, consistency. The k measurements are fixed
  conditions applied to every case (erosion by 1 mm, dilation by 1 mm...); a condition's
  systematic shift does not lower it.

CIs are psych's F-based intervals. Everything is vectorised over features: ``values``
has shape (n cases, k measurements, p features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

Kind = Literal["ICC1", "ICC3"]


@dataclass(frozen=True, slots=True)
class ICCs:
    """Per feature (arrays of shape (p,)): the ICC, its CI, the F statistic and p."""

    icc: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    f: np.ndarray
    p_value: np.ndarray


def icc(values: ArrayLike, kind: Kind = "ICC1", conf_level: float = 0.95) -> ICCs:
    """ICC(1,1) or ICC(3,1) of each feature of ``values`` (n cases, k measurements, p
    features), with psych::ICC's CI at ``conf_level``. A feature constant within every
    case (no within-case variance) has ICC 1; one constant overall has NaN.

    Raises:
        ValueError: fewer than 2 cases or measurements, a missing value, or ``kind``
            unknown.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError("icc needs values of shape (n cases, k measurements, p features), "
                         "n, k >= 2")  # fmt: skip
    if np.isnan(x).any():
        raise ValueError("icc: missing values (a perturbed ROI without a feature value)")
    if kind not in ("ICC1", "ICC3"):
        raise ValueError(f"icc: kind must be ICC1 or ICC3, not {kind!r}")
    n, k, _ = x.shape
    grand = x.mean(axis=(0, 1))
    case_means, rater_means = x.mean(axis=1), x.mean(axis=0)
    ss_cases = k * ((case_means - grand) ** 2).sum(axis=0)
    ss_raters = n * ((rater_means - grand) ** 2).sum(axis=0)
    ss_total = ((x - grand) ** 2).sum(axis=(0, 1))
    ms_cases = ss_cases / (n - 1)
    alpha = 1 - conf_level
    if kind == "ICC1":
        ms_error, df_error = (ss_total - ss_cases) / (n * (k - 1)), n * (k - 1)
    else:
        ms_error = (ss_total - ss_cases - ss_raters) / ((n - 1) * (k - 1))
        df_error = (n - 1) * (k - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (ms_cases - ms_error) / (ms_cases + (k - 1) * ms_error)
        f = ms_cases / ms_error
        f_low = f / stats.f.ppf(1 - alpha / 2, n - 1, df_error)
        f_high = f * stats.f.ppf(1 - alpha / 2, df_error, n - 1)
        low = (f_low - 1) / (f_low + k - 1)
        high = (f_high - 1) / (f_high + k - 1)
    p = stats.f.sf(f, n - 1, df_error)
    exact = (ms_error == 0) & (ms_cases > 0)  # no within-case variance at all
    value, low, high = (np.where(exact, 1.0, a) for a in (value, low, high))
    return ICCs(value, low, high, f, np.where(exact, 0.0, p))
