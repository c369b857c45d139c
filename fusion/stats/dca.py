"""Decision-curve analysis: net benefit of a risk model against treat-all and treat-none."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from fusion.stats._checks import as_outcome, as_probabilities


def net_benefit(y: ArrayLike, risk: ArrayLike, thresholds: ArrayLike) -> pd.DataFrame:
    """Net benefit at each threshold probability pt (Vickers & Elkin, 2006).

    A case is called positive when risk >= pt (as dcurves does);
    NB = TP/n - FP/n * pt / (1 - pt). Treat-all calls every case positive; treat-none
    has NB 0. Columns: threshold, model, treat_all, treat_none.
    """
    y = as_outcome(y)
    r = as_probabilities(risk, len(y), "risk")
    pt = np.asarray(thresholds, dtype=float).reshape(-1)
    if ((pt <= 0) | (pt >= 1)).any():
        raise ValueError("thresholds must lie strictly between 0 and 1")
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
    pt = np.asarray(thresholds, dtype=float).reshape(-1)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    n = len(y)
    odds = pt / (1 - pt)
    rng = np.random.default_rng(seed)
    called = r[None, :] >= pt[:, None]  # thresholds x cases
    values = np.empty((n_boot, len(pt)))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)  # times each case drawn
        tp = called @ (counts * y)
        fp = called @ (counts * (1 - y))
        values[b] = tp / n - fp / n * odds
    alpha = (1 - conf_level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return pd.DataFrame({"threshold": pt, "ci_low": low, "ci_high": high})
