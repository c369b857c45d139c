"""Case-resampling bootstrap shared by the statistics: every resample as a row of case
weights (how often each case was drawn), so a statistic that is a sum over cases is one
matrix product for all resamples at once."""

from __future__ import annotations

import numpy as np


def case_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot x n) draw counts of ``n_boot`` resamples of ``n`` cases with replacement;
    row b is the b-th resample of ``numpy.random.default_rng(seed)`` drawing
    ``integers(0, n, n)`` once per resample."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    draws = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n), draws.reshape(-1)), 1.0)
    return weights


def percentile_interval(values: np.ndarray, conf_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (type-7 quantiles, R's default)."""
    alpha = (1 - conf_level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return low, high
