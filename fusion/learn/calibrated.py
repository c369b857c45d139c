"""The classifier step of every model: tuned and Platt-scaled on one set of out-of-fold
scores, and applied as the cross-validation ensemble those scores came from, so every
probability comes from a Platt map fitted on scores of the models that produce it.

Why. A probability map (Platt scaling) learned on one model's scores is only valid for
scores on the same scale. Fitting it on the pooled out-of-fold scores of separately tuned
fold models and applying it to a refitted final model (what fusion did before) mixed
scales: an SVM's decision values at C = 0.1 and at C = 10 are not comparable, and held-out
calibration slopes of 5 to 600 followed. Fixing the hyper-parameters is not enough: an
SVM refitted on all rows at the same C is less regularised than its fold models (the
hinge loss sums over more rows), so its scores spread wider. On the demo hematoma study
the refit's decision values had an SD of 0.28 against 0.22 out of fold; through a Platt
slope of 7.7 that became a held-out calibration-in-the-large of -1.0, where the
ensemble of the fold models gives -0.5. So, as scikit-learn's
``CalibratedClassifierCV(ensemble=True)``, the fold models themselves predict:

1. Every hyper-parameter candidate is cross-validated on the rows the step is fitted on
   (``cv`` stratified folds, grouped by patient when ``groups`` are given; the number of
   folds is reduced to the smaller class's count when that is smaller, so every fold's
   training part holds both classes, and ``n_splits_`` records it). Each row gets the
   candidate's out-of-fold raw score (SVM decision value, logistic logit).
2. Each candidate's out-of-fold scores are Platt-scaled (Platt 1999, with his smoothed
   targets (n+ + 1)/(n+ + 2) and 1/(n- + 2), as ``CalibratedClassifierCV(method=
   "sigmoid")``; they keep the map finite when the scores separate the classes).
   Candidates are ranked by a proper scoring rule of those calibrated probabilities (log
   loss, or the Brier score), which sees calibration and sharpness; the AUC sees only
   the ranking, and with few cases it picked SVMs whose decision values were constant to
   three decimals.
3. A candidate whose out-of-fold raw scores barely vary (SD below ``min_spread``, in
   margin or logit units) cannot be chosen: its probabilities would hinge on the last
   digits of the scores. When every candidate is such, the best of them is used and
   ``degenerate_`` is True, so the report flags the model.
4. The chosen candidate's fold models are kept (``estimators_``). A new case's
   probability is the mean over them of the Platt map applied to each one's score: one
   map, fitted on the pooled out-of-fold scores of exactly these models (scikit-learn
   fits one map per fold on a fifth of the rows; pooling gives the map all of them).
   ``decision_function`` is the logit of that probability.

The step sits last in each model's scikit-learn Pipeline, so the outer cross-validation
of the whole pipeline tunes and calibrates inside every outer fold: the training set's
out-of-fold probabilities are honest (nothing in them was fitted on their own fold).
What the step cannot see is the feature selection before it (LASSO, fitted on all the
rows it is given): its inner scores are a little optimistic, which the outer CV, which
refits the selection per fold, does show.
"""

from __future__ import annotations

from itertools import product
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fusion.learn.splits import folds


def platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's smoothed 0/1 targets: (n+ + 1)/(n+ + 2) for events, 1/(n- + 2) otherwise."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    return np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))


def platt_fit(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept a, slope b) of P(y = 1) = expit(a + b * score), by maximum likelihood on
    Platt's smoothed targets (Newton-Raphson with step halving; the log likelihood is
    concave). Scores that do not vary give b = 0 and the smoothed prevalence."""
    s = np.asarray(score, dtype=float)
    t = platt_targets(np.asarray(y))
    centre, scale = float(s.mean()), float(s.std())
    if not np.isfinite(scale) or scale < 1e-12:
        p = float(t.mean())
        return float(np.log(p / (1 - p))), 0.0
    x = np.column_stack([np.ones_like(s), (s - centre) / scale])

    def loss(beta: np.ndarray) -> float:
        z = x @ beta
        return float(np.sum(np.logaddexp(0, z) - t * z))

    beta = np.array([np.log(t.mean() / (1 - t.mean())), 0.0])
    current = loss(beta)
    for _ in range(100):
        p = expit(x @ beta)
        gradient = x.T @ (p - t)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-10:
            trial = beta - size * step
            value = loss(trial)
            if value <= current:
                break
            size /= 2
        else:
            break
        beta, improvement, current = trial, current - value, value
        if improvement < 1e-13 * max(1.0, abs(current)):
            break
    slope = beta[1] / scale
    return float(beta[0] - slope * centre), float(slope)


def _native_score(estimator: Any, X: np.ndarray) -> np.ndarray:
    """The fitted classifier's own score: an SVM's decision value, a logistic logit."""
    return np.asarray(estimator.decision_function(X), dtype=float).reshape(-1)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from fusion.stats.roc import auc_value

    return auc_value(y, s) if 0 < y.sum() < len(y) else float("nan")


class PlattSearchCV(ClassifierMixin, BaseEstimator):
    """Tune ``estimator`` over ``param_grid`` by a proper scoring rule of Platt-calibrated
    out-of-fold scores; predict with the chosen candidate's fold models and Platt map.

    Fitted attributes: ``best_params_``, ``best_index_``, ``estimators_`` (the chosen
    candidate's fold models), ``platt_`` (intercept, slope on a fold model's raw score),
    ``cv_results_`` (one list per key: ``params``,
    ``log_loss``, ``brier``, ``auc``, ``score_sd``, ``eligible``, ``error``),
    ``n_splits_`` (the folds used), ``oof_raw_`` (the chosen candidate's out-of-fold raw
    scores), ``degenerate_`` and ``classes_``.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "decision_function"])],
        "param_grid": [dict],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "scoring": [StrOptions({"log_loss", "brier"})],
        "min_spread": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator: Any = None,
        param_grid: dict | None = None,
        cv: int = 5,
        scoring: str = "log_loss",
        min_spread: float = 0.01,
        random_state: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.min_spread = min_spread
        self.random_state = random_state

    def _candidates(self) -> list[dict[str, Any]]:
        grid = self.param_grid or {}
        keys = list(grid)
        return [dict(zip(keys, values, strict=True)) for values in product(*grid.values())]

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, groups: Any = None) -> PlattSearchCV:
        """Tune and calibrate on ``X`` (rows x features) and 0/1 ``y``; ``groups``
        (one patient per row) keep a patient's rows in one fold. Raises ValueError when
        ``y`` lacks a class or a class has a single row (nothing to cross-validate)."""
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, y = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                "Only binary classification is supported: tuning needs exactly two outcome "
                f"classes; got {len(self.classes_)} class(es)"
            )
        smaller = int(min(y.sum(), len(y) - y.sum()))
        if smaller < 2:
            raise ValueError(
                f"tuning needs at least 2 cases of each class; the smaller class has {smaller}"
            )
        self.n_splits_ = min(self.cv, smaller)
        splitter = folds(self.n_splits_, self.random_state, groups is not None)
        splits = list(splitter.split(X, y, groups))
        results: dict[str, list] = {k: [] for k in ("params", "log_loss", "brier", "auc",
                                                    "score_sd", "eligible", "error")}  # fmt: skip
        oof_of: list[np.ndarray | None] = []
        models_of: list[list[Any]] = []
        maps: list[tuple[float, float]] = []
        for params in self._candidates():
            oof = np.empty(len(y))
            models, error = [], ""
            try:
                for train, held in splits:
                    model = clone(self.estimator).set_params(**params).fit(X[train], y[train])
                    oof[held] = _native_score(model, X[held])
                    models.append(model)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error or not np.isfinite(oof).all():
                error = error or "non-finite out-of-fold scores"
                results["params"].append(params)
                for key in ("log_loss", "brier", "auc", "score_sd"):
                    results[key].append(float("nan"))
                results["eligible"].append(False)
                results["error"].append(error)
                oof_of.append(None)
                models_of.append([])
                maps.append((float("nan"), float("nan")))
                continue
            a, b = platt_fit(oof, y)
            p = expit(a + b * oof)
            spread = float(oof.std())
            results["params"].append(params)
            results["log_loss"].append(_log_loss(y, p))
            results["brier"].append(float(np.mean((p - y) ** 2)))
            results["auc"].append(_auc(y, oof))
            results["score_sd"].append(spread)
            results["eligible"].append(spread >= self.min_spread)
            results["error"].append("")
            oof_of.append(oof)
            models_of.append(models)
            maps.append((a, b))
        rank = np.asarray(results[self.scoring], dtype=float)
        fitted = np.isfinite(rank)
        if not fitted.any():
            raise ValueError(
                "every hyper-parameter candidate failed in cross-validation; first error: "
                + results["error"][0]
            )
        eligible = np.asarray(results["eligible"]) & fitted
        self.degenerate_ = not eligible.any()
        pool = eligible if eligible.any() else fitted
        self.best_index_ = int(np.flatnonzero(pool)[np.argmin(rank[pool])])
        self.best_params_ = dict(results["params"][self.best_index_])
        self.platt_ = maps[self.best_index_]
        self.oof_raw_ = oof_of[self.best_index_]
        self.cv_results_ = results
        self.estimators_ = models_of[self.best_index_]
        return self

    def raw_scores(self, X: Any) -> np.ndarray:
        """Each fold model's own score (before Platt scaling), shape (n_splits_, n)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return np.stack([_native_score(model, X) for model in self.estimators_])

    def _probability(self, X: Any) -> np.ndarray:
        raw = self.raw_scores(X)  # checks that the step is fitted first
        a, b = self.platt_
        return expit(a + b * raw).mean(axis=0)

    def decision_function(self, X: Any) -> np.ndarray:
        """The logit of :meth:`predict_proba`'s positive column, shape (n,)."""
        p = np.clip(self._probability(X), 1e-15, 1 - 1e-15)
        return np.log(p / (1 - p))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2) for classes_ 0 and 1: the mean over the
        fold models of the Platt map applied to each one's score."""
        p = self._probability(X)
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """The class of each row at probability 0.5, shape (n,)."""
        check_is_fitted(self)
        return self.classes_[(self.decision_function(X) >= 0).astype(int)]

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # a binary outcome, one Platt map
        return tags
