"""Our custom scikit-learn steps pass scikit-learn's own estimator checks."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from fusion.learn.filters import CorrelationFilter
from fusion.learn.lasso import LassoSelector


@parametrize_with_checks(
    [CorrelationFilter(threshold=0.8), LassoSelector(n_lambda=5, cv=3, random_state=0)],
)
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)
