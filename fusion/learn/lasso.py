"""LASSO feature selection as glmnet does it, as a scikit-learn selector.

L1-penalised logistic regression with an unpenalised intercept, on a decreasing lambda
path, with k-fold cross-validated binomial deviance (``cv.glmnet(family = "binomial",
type.measure = "deviance")``): ``lambda.min`` minimises the CV deviance, ``lambda.1se``
is the largest lambda within one standard error of that minimum. glmnet minimises
``-loglik / n + lambda * ||beta||_1`` with an unpenalised intercept. The path is solved by
glmnet's own algorithm (``fusion.learn.lasso_solver``: IRLS, coordinate descent, strong
rules, warm starts), compiled by numba. glum's general GLM path minimises the same
objective but was 15-25 times slower here; scikit-learn's ``saga`` (``C = 1 / (n *
lambda)``) took minutes on the 800 deep features of the demo; liblinear penalises the
intercept and is not an option.

Inputs are expected standardised (the pipeline's scaler runs first), as glmnet's
``standardize = TRUE`` would do internally.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import expit
from sklearn.base import _fit_context
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from fusion.learn._base import SupportSelector
from fusion.learn.lasso_solver import binomial_lasso_path

PROB_CLIP = 1e-5  # cv.glmnet clips held-out probabilities to [1e-5, 1 - 1e-5]


def lambda_grid(X: np.ndarray, y: np.ndarray, n_lambda: int, min_ratio: float | None) -> np.ndarray:
    """glmnet's default path: from the smallest lambda that selects nothing down to
    ``min_ratio`` times it (0.01 when n < p, else 1e-4), log-spaced."""
    n, p = X.shape
    lambda_max = np.max(np.abs(X.T @ (y - y.mean()))) / n
    ratio = min_ratio if min_ratio is not None else (0.01 if n < p else 1e-4)
    return np.exp(np.linspace(np.log(lambda_max), np.log(lambda_max * ratio), n_lambda))


class LassoSelector(SupportSelector):
    """Select the features with a non-zero coefficient at lambda.min or lambda.1se.

    Fitted attributes: ``lambdas_`` (the path), ``cv_mean_`` and ``cv_se_`` (CV deviance
    and its standard error per lambda), ``lambda_min_``, ``lambda_1se_``, ``lambda_``
    (the one used), ``coef_path_`` (lambdas x features), ``intercept_path_``, ``coef_``
    and ``intercept_`` at ``lambda_``, ``support_``, and ``n_iter_`` (the most solver
    coordinate-descent sweeps any lambda took; ``max_iter`` caps them per lambda;
    ``tol`` is the solver's, see ``fusion.learn.lasso_solver``). When the chosen lambda selects
    no feature, the largest lambda that selects one is used and ``fallback_`` is True.
    """

    _parameter_constraints: dict = {
        "lambdas": ["array-like", None],
        "n_lambda": [Interval(Integral, 2, None, closed="left")],
        "lambda_min_ratio": [Interval(Real, 0, 1, closed="neither"), None],
        "cv": ["cv_object"],
        "rule": [StrOptions({"lambda.min", "lambda.1se"})],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        lambdas=None,
        n_lambda: int = 100,
        lambda_min_ratio: float | None = None,
        cv=10,
        rule: str = "lambda.1se",
        random_state=None,
        tol: float = 1e-4,
        max_iter: int = 10_000,
    ) -> None:
        self.lambdas = lambdas
        self.n_lambda = n_lambda
        self.lambda_min_ratio = lambda_min_ratio
        self.cv = cv
        self.rule = rule
        self.random_state = random_state
        self.tol = tol
        self.max_iter = max_iter

    def _path(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients and intercepts along ``lambdas_``, warm-started from the top."""
        coefs, intercepts, sweeps = binomial_lasso_path(
            X, y, self.lambdas_, tol=self.tol, max_sweeps=self.max_iter
        )
        self.n_iter_ = max(self.n_iter_, int(sweeps.max()))
        return coefs, intercepts

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):  # noqa: ANN001, ANN201 - scikit-learn signature
        """``groups`` (e.g. patients) go to a group-aware ``cv`` such as
        ``StratifiedGroupKFold``, so no group is split across CV folds."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(
                f"LassoSelector needs a binary outcome; got {len(classes)} class(es): {classes}"
            )
        y = (y == classes[1]).astype(float)
        self.n_iter_ = 0
        if self.lambdas is not None:
            self.lambdas_ = np.sort(np.asarray(self.lambdas, dtype=float))[::-1]
        else:
            self.lambdas_ = lambda_grid(X, y, self.n_lambda, self.lambda_min_ratio)
        cv = self.cv
        if isinstance(cv, Integral):
            cv = StratifiedKFold(cv, shuffle=True, random_state=self.random_state)
        splits = list(check_cv(cv, y, classifier=True).split(X, y, groups))
        raw = np.zeros((len(splits), len(self.lambdas_)))
        weights = np.zeros(len(splits))
        for k, (train, test) in enumerate(splits):
            coefs, intercepts = self._path(X[train], y[train])
            prob = expit(X[test] @ coefs.T + intercepts)  # no overflow warning
            prob = np.clip(prob, PROB_CLIP, 1 - PROB_CLIP)
            yt = y[test][:, None]
            raw[k] = (-2 * (yt * np.log(prob) + (1 - yt) * np.log(1 - prob))).mean(axis=0)
            weights[k] = len(test)
        self.cv_mean_ = np.average(raw, axis=0, weights=weights)
        self.cv_se_ = np.sqrt(
            np.average((raw - self.cv_mean_) ** 2, axis=0, weights=weights) / (len(splits) - 1)
        )
        best = self.cv_mean_ <= self.cv_mean_.min()
        self.lambda_min_ = float(self.lambdas_[best].max())
        i_min = int(np.flatnonzero(self.lambdas_ == self.lambda_min_)[0])
        within = self.cv_mean_ <= self.cv_mean_[i_min] + self.cv_se_[i_min]
        self.lambda_1se_ = float(self.lambdas_[within].max())
        self.coef_path_, self.intercept_path_ = self._path(X, y)
        self.lambda_ = self.lambda_min_ if self.rule == "lambda.min" else self.lambda_1se_
        i = int(np.flatnonzero(self.lambdas_ == self.lambda_)[0])
        self.fallback_ = not self.coef_path_[i].any()
        if self.fallback_:
            nonzero = np.flatnonzero(self.coef_path_.any(axis=1))
            if nonzero.size:
                i = int(nonzero[0])
                self.lambda_ = float(self.lambdas_[i])
        self.coef_, self.intercept_ = self.coef_path_[i], float(self.intercept_path_[i])
        self.support_ = self.coef_ != 0
        return self

    def __sklearn_tags__(self):  # noqa: ANN204
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        # binary outcomes only: this tag makes scikit-learn's checks pass binary targets
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags
