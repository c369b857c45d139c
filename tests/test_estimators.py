"""Our custom scikit-learn steps (the selectors, and the tuned and Platt-scaled
classifier) pass scikit-learn's own estimator checks.

``check_array_api_input`` is left out: it needs SCIPY_ARRAY_API set before SciPy is
imported and an array-API library, and fusion's selectors take NumPy input only.
"""

from __future__ import annotations

import pytest
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import estimator_checks_generator

from fusion.learn.calibrated import PlattSearchCV
from fusion.learn.filters import CorrelationFilter
from fusion.learn.lasso import LassoSelector

ESTIMATORS = [
    CorrelationFilter(threshold=0.8),
    LassoSelector(n_lambda=5, cv=3, random_state=0),
    PlattSearchCV(SVC(kernel="linear"), {"C": [0.1, 1.0]}, cv=3, random_state=0),
]
NOT_APPLICABLE = {"check_array_api_input"}


def _name(check) -> str:  # noqa: ANN001 - a check, possibly a functools.partial
    return getattr(check, "func", check).__name__


CHECKS = [
    pytest.param(estimator, check, id=f"{type(estimator).__name__}-{_name(check)}")
    for base in ESTIMATORS
    for estimator, check in estimator_checks_generator(base)
    if _name(check) not in NOT_APPLICABLE
]


@pytest.mark.parametrize(("estimator", "check"), CHECKS)
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)
