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
