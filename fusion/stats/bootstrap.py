"""Case-resampling bootstrap shared by the statistics: every resample as a row of case
weights (how often each case was drawn), so a statistic that is a sum over cases is one
matrix product for a block of resamples; blocks keep the memory bounded (2,000
resamples of 10^5 cases: the net-benefit band in 7 s and 0.45 GB) and change no
number."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def case_weight_blocks(n: int, n_boot: int, seed: int, cells: int = 2**22) -> Iterator[np.ndarray]:
    """The draw counts of ``n_boot`` resamples of ``n`` cases with replacement, in blocks
    of rows (k x n) of at most about ``cells`` cells, so memory stays bounded (2,000
    resamples of 10^5 cases were 3.2 GB as one matrix). Row b overall is the b-th
    resample of ``numpy.random.default_rng(seed)`` drawing ``integers(0, n, n)`` once per
    resample, whatever the block size (the generator's stream does not depend on it)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows = max(1, cells // max(n, 1))
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        draws = rng.integers(0, n, (k, n)) + (np.arange(k) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).astype(float)


def over_resamples(
    n: int, n_boot: int, seed: int, statistic: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``statistic`` (case weights (k x n) -> (k, ...)) on every resample, stacked
    (n_boot, ...), computed block by block (:func:`case_weight_blocks`)."""
    return np.concatenate([statistic(w) for w in case_weight_blocks(n, n_boot, seed)])


def percentile_interval(values: np.ndarray, conf_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (type-7 quantiles, R's default)."""
    alpha = (1 - conf_level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return low, high
