"""Calibration of predicted probabilities: the logistic recalibration line (intercept and
slope with Wald CIs), calibration-in-the-large, Brier score, Spiegelhalter's z, the
integrated calibration index and its quantiles (ICI, E50, E90, Emax), and the
Hosmer-Lemeshow test as R's ResourceSelection::hoslem.test. Intercept, slope, Brier,
Spiegelhalter's z and ICI (Eavg), E90 and Emax agree with R's ``rms::val.prob``
(``tests/reference/calibration.R``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from fusion.stats._checks import as_outcome, as_probabilities, both_classes

EPS = 1e-10  # probabilities of exactly 0 or 1 are moved this far inside for the logit


@dataclass(frozen=True, slots=True)
class Calibration:
    """Perfect calibration: intercept 0, slope 1, citl 0, Spiegelhalter z near 0, ICI 0.
    CIs are Wald intervals at the level asked for; ICI, E50, E90 and Emax are absolute
    differences between predicted and smoothed observed risk (probability units)."""

    intercept: float
    intercept_ci_low: float
    intercept_ci_high: float
    slope: float
    slope_ci_low: float
    slope_ci_high: float
    citl: float
    citl_ci_low: float
    citl_ci_high: float
    brier: float
    spiegelhalter_z: float
    spiegelhalter_p: float
    ici: float
    e50: float
    e90: float
    emax: float


@dataclass(frozen=True, slots=True)
class CalibrationErrors:
    """Distribution of |p - smoothed observed risk| over the cases (Austin & Steyerberg
    2019): its mean (ICI, rms' Eavg), median (E50), 90th percentile (E90), maximum."""

    ici: float
    e50: float
    e90: float
    emax: float


@dataclass(frozen=True, slots=True)
class CalibrationCurve:
    """Observed risk as a smooth function of predicted risk, with a pointwise CI."""

    predicted: np.ndarray
    observed: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    df: int


@dataclass(frozen=True, slots=True)
class HosmerLemeshow:
    statistic: float
    df: int
    p_value: float


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def calibration(y: ArrayLike, prob: ArrayLike, conf_level: float = 0.95) -> Calibration:
    """Logistic recalibration: y ~ a + b logit(p) gives intercept a and slope b; the
    model y ~ a + offset(logit(p)) gives calibration-in-the-large; Brier = mean (p - y)^2;
    Spiegelhalter's z tests Brier against its expectation under perfect calibration; ICI,
    E50, E90 and Emax come from :func:`calibration_errors`. Probabilities of exactly 0 or
    1 enter the logit EPS inside (rms::val.prob drops them instead)."""
    import statsmodels.api as sm

    y = as_outcome(y)
    p = as_probabilities(prob, len(y))
    both_classes(y, "calibration")
    if len(np.unique(p)) < 2:
        raise ValueError(
            f"calibration needs probabilities that vary; all {len(p)} are {p[0]:.4g} "
            "(a degenerate model: constant scores)"
        )
    lp = _logit(p)
    alpha = 1 - conf_level
    fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    citl = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit()
    line, large = fit.conf_int(alpha), citl.conf_int(alpha)
    z, z_p = spiegelhalter(y, p)
    errors = calibration_errors(y, p)
    return Calibration(
        intercept=float(fit.params[0]),
        intercept_ci_low=float(line[0, 0]),
        intercept_ci_high=float(line[0, 1]),
        slope=float(fit.params[1]),
        slope_ci_low=float(line[1, 0]),
        slope_ci_high=float(line[1, 1]),
        citl=float(citl.params[0]),
        citl_ci_low=float(large[0, 0]),
        citl_ci_high=float(large[0, 1]),
        brier=float(np.mean((p - y) ** 2)),
        spiegelhalter_z=z,
        spiegelhalter_p=z_p,
        ici=errors.ici,
        e50=errors.e50,
        e90=errors.e90,
        emax=errors.emax,
    )


def spiegelhalter(y: ArrayLike, prob: ArrayLike) -> tuple[float, float]:
    """Spiegelhalter's z statistic and its two-sided p-value (Spiegelhalter 1986), as
    rms::val.prob's S:z and S:p: z = sum((y - p)(1 - 2p)) / sqrt(sum((1 - 2p)^2 p(1 - p)))."""
    y = as_outcome(y)
    p = as_probabilities(prob, len(y))
    denominator = np.sqrt(np.sum((1 - 2 * p) ** 2 * p * (1 - p)))
    if denominator == 0:
        return float("nan"), float("nan")
    z = float(np.sum((y - p) * (1 - 2 * p)) / denominator)
    return z, float(2 * stats.norm.sf(abs(z)))


def calibration_errors(y: ArrayLike, prob: ArrayLike) -> CalibrationErrors:
    """ICI, E50, E90 and Emax (Austin & Steyerberg 2019, Stat Med 38:4051) from the
    smoothed calibration curve of rms::val.prob: R's ``lowess(p, y, iter = 0)`` (span
    2/3, delta 1% of the range of p; statsmodels' port of the same clowess), read at
    every case's own p."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    y = as_outcome(y)
    p = as_probabilities(prob, len(y))
    delta = 0.01 * float(p.max() - p.min())
    smoothed = lowess(y, p, frac=2 / 3, it=0, delta=delta, return_sorted=False)
    error = np.abs(p - smoothed)
    return CalibrationErrors(
        ici=float(error.mean()),
        e50=float(np.median(error)),
        e90=float(np.quantile(error, 0.9)),
        emax=float(error.max()),
    )


def near_constant(prob: ArrayLike, tolerance: float = 0.02) -> str | None:
    """A note when probabilities barely vary: their calibration slope and intercept then
    describe noise (a slope of thousands), not the model; None otherwise."""
    p = np.asarray(prob, dtype=float)
    if p.max() - p.min() < tolerance:
        return (
            f"probabilities are nearly constant ({p.min():.3f} to {p.max():.3f}): their "
            "calibration slope and intercept are not interpretable (the ranking, and so the "
            "AUC, may still be good: compare the performance table)"
        )
    return None


def calibration_curve(
    y: ArrayLike,
    prob: ArrayLike,
    df: int = 3,
    conf_level: float = 0.95,
    grid: int = 50,
) -> CalibrationCurve:
    """Flexible calibration curve: logistic regression of the outcome on a natural cubic
    spline of logit(p) with ``df`` degrees of freedom (patsy's ``cr``, knots at quantiles;
    the restricted cubic spline of R's rms/CalibrationCurves), evaluated on a grid over the
    observed range of p, with a Wald band on the logit scale. With ``df = 1`` it is the
    logistic recalibration line of :func:`calibration`."""
    import patsy
    import statsmodels.api as sm

    y = as_outcome(y)
    p = as_probabilities(prob, len(y))
    both_classes(y, "a calibration curve")
    if near_constant(p):
        raise ValueError(near_constant(p))
    lp = _logit(p)
    formula = "x" if df == 1 else f"cr(x, df={df}, constraints='center')"
    design = patsy.dmatrix(formula, {"x": lp}, return_type="dataframe")
    if np.linalg.matrix_rank(design.to_numpy()) < design.shape[1]:
        raise ValueError(
            f"too few distinct probabilities ({len(np.unique(p))}) for a {df}-df spline "
            "calibration curve"
        )
    fit = sm.GLM(y, design, family=sm.families.Binomial()).fit()
    at = np.linspace(p.min(), p.max(), grid)
    new = patsy.build_design_matrices([design.design_info], {"x": _logit(at)})[0]
    frame = fit.get_prediction(np.asarray(new)).summary_frame(alpha=1 - conf_level)
    return CalibrationCurve(
        at,
        frame["mean"].to_numpy(),
        frame["mean_ci_lower"].to_numpy(),
        frame["mean_ci_upper"].to_numpy(),
        df,
    )


def risk_groups(prob: ArrayLike, groups: int = 10) -> np.ndarray:
    """Group index (0 .. G-1) of each probability: G <= ``groups`` groups cut at the
    unique type-7 quantiles of ``prob``, closed on the right, the first also on the left
    (R's ``cut(p, quantile(p, 0:g/g), include.lowest = TRUE)``, as
    ResourceSelection::hoslem.test groups). The Hosmer-Lemeshow test and the report's
    grouped calibration points use these same groups."""
    p = np.asarray(prob, float)
    breaks = np.unique(np.quantile(p, np.linspace(0, 1, groups + 1)))
    return np.clip(np.searchsorted(breaks, p, side="left") - 1, 0, max(len(breaks) - 2, 0))


def hosmer_lemeshow(y: ArrayLike, prob: ArrayLike, groups: int = 10) -> HosmerLemeshow:
    """Hosmer-Lemeshow goodness of fit, grouped at the unique quantiles of prob.

    As ResourceSelection::hoslem.test (0.3-6): breaks are the unique type-7 quantiles
    at 0, 1/g, ..., 1; intervals are closed on the right, the first also on the left;
    the statistic sums (observed - expected)^2 / expected over both outcome columns;
    df = G - 2 with G the number of groups formed (fewer than g when ties merge them).
    """
    y = as_outcome(y)
    p = as_probabilities(prob, len(y))
    if groups < 3:
        raise ValueError(f"groups must be at least 3, got {groups}")
    group = risk_groups(p, groups)
    table = pd.DataFrame({"g": group, "y1": y, "y0": 1 - y, "e1": p, "e0": 1 - p})
    sums = table.groupby("g").sum()
    observed = sums[["y0", "y1"]].to_numpy(float)
    expected = sums[["e0", "e1"]].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):  # R gives Inf here too
        statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(sums) - 2
    if df < 1:
        raise ValueError(f"only {len(sums)} distinct probability groups; the test needs 3")
    return HosmerLemeshow(statistic, df, float(stats.chi2.sf(statistic, df)))
