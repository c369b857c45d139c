"""The study's models: one scikit-learn Pipeline each, fitted on the training set only.

impute -> drop constant features -> standardise -> correlation filter -> LASSO ->
classifier (SVM or logistic regression, hyper-parameters tuned by stratified CV on the
training set). Because every learned step sits inside the Pipeline, nothing is ever
fitted on a test case; ``tests/test_learn.py`` proves it by perturbing the test set.

Scores for ROC are the SVM's decision function or the logistic probability. Training
cases are scored out of fold (``cv_folds``-fold CV of the whole pipeline), so every
training-set number is cross-validated; the in-sample ("apparent") score is kept beside
it. Calibrated probabilities (for calibration and decision curves) come from Platt
scaling fitted on the out-of-fold scores, and the Youden threshold is chosen on them and
applied unchanged to every other set. With a patient column every CV (LASSO, tuning,
out-of-fold scores) keeps a patient's cases in one fold. A model may use the score of an
earlier model (``<model>-score``): on the training set that input is the earlier model's
out-of-fold score, so the later model never learns from an in-sample score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from fusion.config import SCORE_SUFFIX, EvaluationSpec, ModelSpec
from fusion.errors import FusionError
from fusion.learn.filters import CorrelationFilter
from fusion.learn.lasso import LassoSelector
from fusion.stats import youden_threshold

C_GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
GAMMA_GRID = ["scale", 0.001, 0.01, 0.1]


@dataclass(slots=True)
class ModelFit:
    """A fitted model and everything the report says about it."""

    name: str
    spec: ModelSpec
    pipeline: Pipeline
    columns: list[str]
    threshold: float
    platt: tuple[float, float]
    oof_score: pd.Series  # out-of-fold score of each training case
    counts: dict[str, int] = field(default_factory=dict)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)
    best_params: dict[str, Any] = field(default_factory=dict)

    @property
    def lasso(self) -> LassoSelector | None:
        return self.pipeline.named_steps.get("lasso")

    def score(self, X: pd.DataFrame) -> np.ndarray:
        model = self.pipeline
        if self.spec.classifier == "svm":
            return model.decision_function(X[self.columns])
        return model.predict_proba(X[self.columns])[:, 1]

    def use_out_of_fold(self, oof: pd.Series, y: np.ndarray) -> None:
        """Adopt out-of-fold training scores: the Youden threshold and the Platt scaling
        are chosen on them, never on in-sample scores."""
        self.oof_score = oof
        self.threshold = youden_threshold(y, oof.to_numpy())
        x = _platt_scale(self.spec, oof.to_numpy()).reshape(-1, 1)
        platt = LogisticRegression(C=np.inf).fit(x, y)
        self.platt = (float(platt.intercept_[0]), float(platt.coef_[0, 0]))

    def probability(self, score: np.ndarray) -> np.ndarray:
        a, b = self.platt
        return expit(a + b * _platt_scale(self.spec, np.asarray(score)))


def _platt_scale(spec: ModelSpec, score: np.ndarray) -> np.ndarray:
    """Platt scaling works on a logit scale: the SVM's margin is one; a logistic model's
    probability is taken back to its logit."""
    if spec.classifier == "svm":
        return score
    p = np.clip(score, 1e-10, 1 - 1e-10)
    return np.log(p / (1 - p))


def block_columns(table: pd.DataFrame, features: list[str]) -> list[str]:
    """The table's columns of the blocks a model uses (``<model>-score`` columns too)."""
    columns: list[str] = []
    for block in features:  # radiomics, radiomics:<roi> (one ROI's features), m-score...
        if block.endswith(SCORE_SUFFIX):
            columns.append(f"score:{block.removesuffix(SCORE_SUFFIX)}")
        else:
            columns += [c for c in table.columns if c.startswith(f"{block}:")]
    return columns


def folds(n_splits: int, seed: int, grouped: bool) -> StratifiedKFold | StratifiedGroupKFold:
    """The CV splitter of every CV in a model: by patient when patients are known."""
    if grouped:
        return StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits, shuffle=True, random_state=seed)


def build_pipeline(
    spec: ModelSpec,
    numeric: list[str],
    categorical: dict[str, str],
    evaluation: EvaluationSpec,
    seed: int,
    grouped: bool = False,
) -> Pipeline:
    """The unfitted Pipeline of one model. ``categorical`` maps column -> reference level."""
    steps: list[tuple[str, Any]] = []
    transformers = []
    if numeric:
        transformers.append(
            ("num", Pipeline([
                ("impute", SimpleImputer(strategy="median")),
                ("constant", VarianceThreshold(0.0)),
                ("scale", StandardScaler()),
            ]), numeric)
        )  # fmt: skip
    if categorical:
        transformers.append(
            ("cat", Pipeline([
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(drop=list(categorical.values()),
                                         handle_unknown="ignore", sparse_output=False)),
            ]), list(categorical))
        )  # fmt: skip
    steps.append(("pre", ColumnTransformer(transformers, verbose_feature_names_out=False)))
    if spec.correlation_threshold is not None:
        steps.append(("correlation", CorrelationFilter(spec.correlation_threshold)))
    if spec.lasso:
        lasso = evaluation.lasso
        steps.append(
            ("lasso", LassoSelector(
                n_lambda=lasso.n_lambda, rule=lasso.rule,
                cv=folds(lasso.folds, seed, grouped),
            ))
        )  # fmt: skip
    cv = folds(evaluation.cv_folds, seed, grouped)
    if spec.classifier == "svm":
        grid = {"C": C_GRID}
        if spec.kernel == "rbf":
            grid["gamma"] = GAMMA_GRID
        classifier = GridSearchCV(SVC(kernel=spec.kernel), grid, cv=cv, scoring="roc_auc")
    else:
        classifier = GridSearchCV(
            LogisticRegression(max_iter=10000), {"C": C_GRID}, cv=cv, scoring="roc_auc"
        )
    steps.append(("model", classifier))
    return Pipeline(steps)


def _categorical(X: pd.DataFrame, references: dict[str, str]) -> dict[str, str]:
    """Text columns and their reference level (the study's, else the first sorted)."""
    out = {}
    for col in X.columns:
        if pd.api.types.is_numeric_dtype(X[col]):
            continue
        levels = sorted(X[col].dropna().astype(str).unique())
        ref = references.get(col, levels[0] if levels else None)
        if ref is not None:
            out[col] = ref
    return out


def _group_params(pipeline: Pipeline, groups: np.ndarray | None) -> dict[str, np.ndarray]:
    """Fit parameters that hand the patient groups to every CV inside the pipeline."""
    if groups is None:
        return {}
    return {f"{step}__groups": groups for step in ("lasso", "model") if step in
            pipeline.named_steps}  # fmt: skip


def check_class_counts(name: str, y: np.ndarray, spec: ModelSpec, ev: EvaluationSpec) -> None:
    """Every CV needs each class in each fold: say which setting is too large, and why."""
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    needed = [("evaluation.cv_folds", ev.cv_folds)]
    if spec.lasso:
        needed.append(("evaluation.lasso.folds", ev.lasso.folds))
    for setting, k in needed:
        if min(counts.values()) < k:
            raise FusionError(
                f"model {name!r}: {setting} = {k}, but the training set has only "
                f"{counts[1]} positive and {counts[0]} negative case(s); every fold needs "
                f"both classes. Lower {setting} to at most {min(counts.values())} or add cases."
            )


def fit_model(
    name: str,
    spec: ModelSpec,
    X: pd.DataFrame,
    y: np.ndarray,
    evaluation: EvaluationSpec,
    seed: int,
    references: dict[str, str] | None = None,
    groups: np.ndarray | None = None,
    out_of_fold: bool = True,
) -> ModelFit:
    """Fit one model on the training rows ``X``/``y`` (and nothing else); ``groups`` (the
    patient of each row) keeps a patient's cases in one fold of every CV.

    With ``out_of_fold`` (the default) the whole pipeline is also cross-validated on the
    rows: the out-of-fold scores, and the threshold and Platt scaling chosen on them, are
    set by :meth:`ModelFit.use_out_of_fold`; without it (a model fitted inside another
    model's CV fold) only the fitted pipeline is made."""
    check_class_counts(name, y, spec, evaluation)
    columns = list(X.columns)
    categorical = _categorical(X, references or {})
    numeric = [c for c in columns if c not in categorical]
    grouped = groups is not None
    pipeline = build_pipeline(spec, numeric, categorical, evaluation, seed, grouped)
    method = "decision_function" if spec.classifier == "svm" else "predict_proba"
    params = _group_params(pipeline, groups)
    cv = folds(evaluation.cv_folds, seed, grouped)
    try:
        if out_of_fold:
            oof = cross_val_predict(
                clone(pipeline), X, y, cv=cv, groups=groups, params=params, method=method
            )
        pipeline.fit(X, y, **params)
    except FusionError:
        raise
    except Exception as exc:
        raise FusionError(f"model {name!r}: fitting failed: {type(exc).__name__}: {exc}") from exc
    fit = ModelFit(name, spec, pipeline, columns, 0.0, (0.0, 1.0), pd.Series(dtype=float))
    if out_of_fold:
        fit.use_out_of_fold(pd.Series(oof[:, 1] if oof.ndim == 2 else oof, index=X.index), y)
    fit.counts, fit.selected = _selection_summary(pipeline, columns)
    fit.best_params = dict(pipeline.named_steps["model"].best_params_)
    return fit


def _selection_summary(pipeline: Pipeline, columns: list[str]) -> tuple[dict, pd.DataFrame]:
    """Features left after each step, and the LASSO-selected ones with coefficients."""
    pre = pipeline.named_steps["pre"]
    names = np.asarray(pre.get_feature_names_out())
    counts = {"input": len(columns), "after_constant_and_empty": len(names)}
    if "correlation" in pipeline.named_steps:
        names = names[pipeline.named_steps["correlation"].support_]
        counts["after_correlation"] = len(names)
    selected = pd.DataFrame({"feature": names, "coefficient": np.nan})
    if "lasso" in pipeline.named_steps:
        lasso = pipeline.named_steps["lasso"]
        selected = pd.DataFrame({"feature": names[lasso.support_],
                                 "coefficient": lasso.coef_[lasso.support_]})  # fmt: skip
        counts["after_lasso"] = int(lasso.support_.sum())
        selected = selected.reindex(
            selected.coefficient.abs().sort_values(ascending=False).index
        ).reset_index(drop=True)
    return counts, selected
