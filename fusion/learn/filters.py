"""Correlation filter: of two features correlated beyond a threshold, keep the one more
associated with the outcome. A scikit-learn selector, fitted on the training set only."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

from fusion.learn._base import SupportSelector


def _abs_corr_with(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|Pearson r| of each column of X with v; 0 for a constant column."""
    Xc = X - X.mean(axis=0)
    vc = v - v.mean()
    denom = np.sqrt((Xc**2).sum(axis=0) * (vc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (Xc.T @ vc) / denom, 0.0)
    return np.abs(r)


class CorrelationFilter(SupportSelector):
    """Greedy redundancy filter.

    Features are visited from the most to the least associated with the outcome
    (|point-biserial r|); a feature is kept unless its |Pearson r| with a feature
    already kept exceeds ``threshold``. Ties in association keep the earlier column.
    Fitted attributes: ``outcome_corr_`` and ``support_``.
    """

    _parameter_constraints: dict = {"threshold": [Interval(Real, 0, 1, closed="right")]}

    def __init__(self, threshold: float = 0.9) -> None:
        self.threshold = threshold

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):  # noqa: ANN001, ANN201 - scikit-learn signature
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.outcome_corr_ = _abs_corr_with(X, np.asarray(y, dtype=float))
        order = np.argsort(-self.outcome_corr_, kind="stable")
        kept: list[int] = []
        for j in order:
            if not kept or _abs_corr_with(X[:, kept], X[:, j]).max() <= self.threshold:
                kept.append(int(j))
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[kept] = True
        return self
