"""Input checks shared by the statistics: bad input is a ValueError that says what is wrong."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_outcome(y: ArrayLike, name: str = "y") -> np.ndarray:
    """A 1-D 0/1 integer array; NaN or other values are errors."""
    arr = np.asarray(y, dtype=float).reshape(-1)
    if np.isnan(arr).any():
        raise ValueError(f"{name} has {int(np.isnan(arr).sum())} missing (NaN) value(s)")
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = sorted(set(arr[~np.isin(arr, (0.0, 1.0))].tolist()))[:5]
        raise ValueError(f"{name} must be 0/1; found {bad}")
    return arr.astype(int)


def as_scores(values: ArrayLike, n: int, name: str = "score") -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but the outcome has {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)")
    return arr


def as_probabilities(values: ArrayLike, n: int, name: str = "prob") -> np.ndarray:
    arr = as_scores(values, n, name)
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; found values from {arr.min():g} "
            f"to {arr.max():g}"
        )
    return arr


def both_classes(y: np.ndarray, what: str) -> None:
    if y.min() == y.max():
        raise ValueError(f"{what} needs both outcome classes; all {len(y)} cases are {y[0]}")
