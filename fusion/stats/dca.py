"""Decision-curve analysis: net benefit of a risk model against treat-all and treat-none."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from fusion.stats._checks import as_outcome, as_probabilities
from fusion.stats.bootstrap import over_resamples, percentile_interval


def threshold_grid(thresholds: ArrayLike) -> np.ndarray:
    """Threshold probabilities as a 1-D array; ValueError unless each lies in (0, 1)."""
    pt = np.asarray(thresholds, dtype=float).reshape(-1)
    if ((pt <= 0) | (pt >= 1)).any():
        raise ValueError("thresholds must lie strictly between 0 and 1")
    return pt


def net_benefit(y: ArrayLike, risk: ArrayLike, thresholds: ArrayLike) -> pd.DataFrame:
    """Net benefit at each threshold probability pt (Vickers & Elkin, 2006).

    A case is called positive when risk >= pt (as dcurves does);
    NB = TP/n - FP/n * pt / (1 - pt). Treat-all calls every case positive; treat-none
    has NB 0. Columns: threshold, model, treat_all, treat_none.
    """
    y = as_outcome(y)
    r = as_probabilities(risk, len(y), "risk")
    pt = threshold_grid(thresholds)
    n = len(y)
    odds = pt / (1 - pt)
    positive = r[None, :] >= pt[:, None]
    tp = (positive & (y[None, :] == 1)).sum(axis=1)
    fp = (positive & (y[None, :] == 0)).sum(axis=1)
    prevalence = y.mean()
    return pd.DataFrame(
        {
            "threshold": pt,
            "model": tp / n - fp / n * odds,
            "treat_all": prevalence - (1 - prevalence) * odds,
            "treat_none": np.zeros_like(pt),
        }
    )


def net_benefit_ci(
    y: ArrayLike,
    risk: ArrayLike,
    thresholds: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Percentile bootstrap band of a model's net benefit at each threshold.

    Cases are resampled with replacement (the whole case: outcome and risk together) and
    the net benefit recomputed on each resample, as for a bootstrap CI of any statistic
    of the sample. Columns: threshold, ci_low, ci_high.
    """
    y = as_outcome(y)
    r = as_probabilities(risk, len(y), "risk")
    pt = threshold_grid(thresholds)
    values = over_resamples(len(y), n_boot, seed, lambda w: _weighted_net_benefit(w, y, r, pt))
    low, high = percentile_interval(values, conf_level)
    return pd.DataFrame({"threshold": pt, "ci_low": low, "ci_high": high})


def _weighted_net_benefit(
    weights: np.ndarray, y: np.ndarray, risk: np.ndarray, pt: np.ndarray
) -> np.ndarray:
    """Net benefit under case weights (resamples x cases) -> (resamples x thresholds);
    n stays the number of cases, as each resample has that many."""
    n = len(y)
    called = (risk[None, :] >= pt[:, None]).astype(float)  # thresholds x cases
    tp = weights @ (called * y).T
    fp = weights @ (called * (1 - y)).T
    return tp / n - fp / n * (pt / (1 - pt))


def net_benefit_difference(
    y: ArrayLike,
    risk_a: ArrayLike,
    risk_b: ArrayLike,
    thresholds: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Net benefit of model a minus that of model b at each threshold, with a paired
    percentile bootstrap band: each resample draws whole cases (outcome and both risks
    together), so the band reflects the models' correlation on the same cases (as
    dcurves' and Vickers' paired comparisons). Columns: threshold, difference, ci_low,
    ci_high, rounded to 12 decimals (two equal net benefits differ by 1e-17 in floating
    point, which would read as a band above zero); ``n_boot = 0`` leaves the band NaN."""
    y = as_outcome(y)
    a = as_probabilities(risk_a, len(y), "risk_a")
    b = as_probabilities(risk_b, len(y), "risk_b")
    pt = threshold_grid(thresholds)

    def difference(weights: np.ndarray) -> np.ndarray:
        return _weighted_net_benefit(weights, y, a, pt) - _weighted_net_benefit(weights, y, b, pt)

    point = difference(np.ones((1, len(y))))[0]
    low = high = np.full(len(pt), np.nan)
    if n_boot:
        low, high = percentile_interval(over_resamples(len(y), n_boot, seed, difference),
                                        conf_level)  # fmt: skip
    return pd.DataFrame({"threshold": pt, "difference": np.round(point, 12),
                         "ci_low": np.round(low, 12), "ci_high": np.round(high, 12)})  # fmt: skip
