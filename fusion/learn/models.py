"""The study's models: one scikit-learn Pipeline each, fitted on the training set only.

impute -> drop constant features -> standardise -> correlation filter -> LASSO ->
classifier (SVM or logistic regression), the classifier tuned and Platt-scaled by
:class:`~fusion.learn.calibrated.PlattSearchCV` on out-of-fold scores of its own
hyper-parameters (that module says why). Because every learned step sits inside the
Pipeline, nothing is ever fitted on a test case; ``tests/test_learn.py`` proves it by
perturbing the test set.

A model's score is its calibrated logit (the Platt map applied to the SVM's decision
value or the logistic logit), its probability the logistic transform of that score, so
the ROC, the threshold, calibration and decision curves all read one scale. Training
cases are scored out of fold (``cv_folds``-fold CV of the whole pipeline, tuning and
Platt scaling included in every fold), so every training-set number is cross-validated,
calibration too; the in-sample ("apparent") score is kept beside it. The Youden
threshold is chosen on the out-of-fold probabilities and applied unchanged to every
other set. With a patient column every CV (LASSO, tuning, out-of-fold scores) keeps a
patient's cases in one fold. A model may use the score of an earlier model
(``<model>-score``): on the training set that input is the earlier model's out-of-fold
score, on other sets the final model's, both calibrated logits on one scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.parallel import Parallel, delayed

from fusion.config import SCORE_SUFFIX, EvaluationSpec, ModelSpec
from fusion.errors import FusionError
from fusion.learn.calibrated import PlattSearchCV
from fusion.learn.filters import CorrelationFilter
from fusion.learn.harmonise import SiteComBat
from fusion.learn.lasso import LassoSelector
from fusion.learn.robust import RobustSelector
from fusion.learn.splits import folds
from fusion.stats import youden_threshold
from fusion.threads import native_threads, threads_per_worker

C_GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
GAMMA_GRID = ["scale", 0.001, 0.01, 0.1]


@dataclass(slots=True)
class ModelFit:
    """A fitted model and everything the report says about it. ``threshold`` is a
    probability; ``oof_score`` the out-of-fold calibrated logit of each training case."""

    name: str
    spec: ModelSpec
    pipeline: Pipeline
    columns: list[str]
    threshold: float
    oof_score: pd.Series
    counts: dict[str, int] = field(default_factory=dict)
    selected: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def lasso(self) -> LassoSelector | None:
        return self.pipeline.named_steps.get("lasso")

    @property
    def tuner(self) -> PlattSearchCV:
        return self.pipeline.named_steps["model"]

    @property
    def platt(self) -> tuple[float, float]:
        """Intercept and slope of the Platt map (a fold model's raw score -> logit)."""
        return self.tuner.platt_

    @property
    def best_params(self) -> dict[str, Any]:
        return self.tuner.best_params_

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """The final model's calibrated logit of each row of ``X`` (the logit of its
        probability), shape (n,)."""
        return self.pipeline.decision_function(X[self.columns])

    def use_out_of_fold(self, oof: pd.Series, y: np.ndarray) -> None:
        """Adopt out-of-fold training scores (calibrated logits): the Youden threshold is
        chosen on their probabilities, never on in-sample scores."""
        self.oof_score = oof
        self.threshold = youden_threshold(y, expit(oof.to_numpy()))

    @staticmethod
    def probability(score: np.ndarray) -> np.ndarray:
        return expit(np.asarray(score, dtype=float))


def block_columns(
    table: pd.DataFrame, features: list[str], auxiliary: frozenset[str] = frozenset(),
    exclude: list[str] | tuple[str, ...] = (),
) -> list[str]:  # fmt: skip
    """The table's columns of the blocks a model uses (``<model>-score`` columns too),
    less those whose name contains a fragment of ``exclude``. The ``radiomics`` block
    leaves out the ``auxiliary`` ROIs' columns (perturbations and negative controls),
    which a model takes only by name (``radiomics:<roi>``)."""
    columns = _block_columns(table, features, auxiliary)
    return [c for c in columns if not any(fragment in c for fragment in exclude)]


def _block_columns(
    table: pd.DataFrame, features: list[str], auxiliary: frozenset[str]
) -> list[str]:
    columns: list[str] = []
    skip = tuple(f"radiomics:{roi}:" for roi in auxiliary)
    for block in features:  # radiomics, radiomics:<roi> (one ROI's features), m-score...
        if block.endswith(SCORE_SUFFIX):
            columns.append(f"score:{block.removesuffix(SCORE_SUFFIX)}")
        elif block == "radiomics":
            columns += [c for c in table.columns
                        if c.startswith("radiomics:") and not c.startswith(skip)]  # fmt: skip
        else:
            columns += [c for c in table.columns if c.startswith(f"{block}:")]
    return columns


@dataclass(frozen=True, slots=True)
class CaseInputs:
    """What a model's first steps look up by case id, never the outcome: for ``robust``
    (:class:`~fusion.learn.robust.RobustSelector`) the tidy radiomics table of the drawn
    ROI and its perturbations and the ICC rule; for ``harmonise``
    (:class:`~fusion.learn.harmonise.SiteComBat`) each case's site and covariates. Each
    step subsets them to the rows it is fitted on, so the test cases' entries never
    shape it."""

    perturbed: pd.DataFrame | None = None
    rois: tuple[str, ...] = ()  # the drawn ROI first, then its perturbations
    icc: str = "ICC1"
    min_ci_low: float = 0.75
    min_icc: float = 0.9
    sites: pd.Series | None = None
    covariates: pd.DataFrame | None = None
    prefixes: tuple[str, ...] = ("radiomics:", "deep:")
    unseen: str = "error"


def build_pipeline(
    spec: ModelSpec,
    numeric: list[str],
    categorical: dict[str, str],
    evaluation: EvaluationSpec,
    seed: int,
    grouped: bool = False,
    inputs: CaseInputs | None = None,
    n_rows: int = 0,
) -> Pipeline:
    """The unfitted Pipeline of one model. ``categorical`` maps column -> reference level.
    An SVM to be fitted on more than ``evaluation.svm_max_rows`` rows (``n_rows``) is
    :func:`large_svm`.
    A ``robust`` model starts with the robustness selector, a ``harmonise`` one with
    ComBat (after it, on the features it kept), both from ``inputs``."""
    steps: list[tuple[str, Any]] = []
    inputs = inputs or CaseInputs()
    if spec.robust:
        robust = RobustSelector(inputs.perturbed, inputs.rois, inputs.icc, inputs.min_ci_low,
                                inputs.min_icc)  # fmt: skip
        steps.append(("robust", robust))
    if spec.harmonise:
        steps.append(("harmonise", SiteComBat(inputs.sites, inputs.covariates, inputs.prefixes,
                                              inputs.unseen)))  # fmt: skip
    transformers = []
    if numeric:
        # after the robustness selector the numeric columns are those it kept
        chosen: Any = make_column_selector(dtype_include=np.number) if spec.robust else numeric
        transformers.append(
            ("num", Pipeline([
                ("impute", SimpleImputer(strategy="median")),
                ("constant", VarianceThreshold(0.0)),
                ("scale", StandardScaler()),
            ]), chosen)
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
    if spec.classifier == "svm" and n_rows > evaluation.svm_max_rows:
        base, grid = large_svm(spec.kernel, seed, n_rows)
    elif spec.classifier == "svm":
        grid: dict[str, list] = {"C": C_GRID}
        if spec.kernel == "rbf":
            grid["gamma"] = GAMMA_GRID
        base: Any = SVC(kernel=spec.kernel)
    else:
        grid, base = {"C": C_GRID}, LogisticRegression(max_iter=10000)
    steps.append(
        ("model", PlattSearchCV(base, grid, cv=evaluation.cv_folds,
                                scoring=evaluation.tuning_score,
                                min_spread=evaluation.min_score_sd, random_state=seed))
    )  # fmt: skip
    return Pipeline(steps)


NYSTROEM_COMPONENTS = 500
NYSTROEM_GAMMA_GRID = [0.001, 0.01, 0.1]


def large_svm(kernel: str, seed: int, n_rows: int) -> tuple[Any, dict[str, list]]:
    """An SVM for many rows, and its grid: liblinear's linear SVM (time linear in the
    rows, where libsvm's grows with their square), for ``rbf`` on a Nystroem
    approximation of the kernel with 500 components (at most half the rows, so every
    inner CV fold has more; Williams and Seeger 2001; what scikit-learn's SVC
    documentation advises for large data), its gamma tuned with C. Seeded, so the same
    rows give the same model."""
    svm = LinearSVC(dual="auto", max_iter=20000, random_state=seed)
    if kernel == "linear":
        return svm, {"C": C_GRID}
    components = min(NYSTROEM_COMPONENTS, max(n_rows // 2, 2))
    base = Pipeline([("nystroem", Nystroem(n_components=components, random_state=seed)),
                     ("svm", svm)])  # fmt: skip
    return base, {"svm__C": C_GRID, "nystroem__gamma": NYSTROEM_GAMMA_GRID}


def approximated(fit: ModelFit) -> bool:
    """Whether the model's SVM is the many-rows one (:func:`large_svm`)."""
    return isinstance(fit.tuner.estimator, Pipeline | LinearSVC)


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


def check_class_counts(
    name: str, y: np.ndarray, spec: ModelSpec, ev: EvaluationSpec, out_of_fold: bool = True
) -> None:
    """Every CV needs each class in each fold, and the classifier's tuning CV at least two
    cases of each class in every set it tunes on (the final fit's rows and, with
    ``out_of_fold``, each outer fold's training part): say which setting is too large or
    that cases are missing, and why."""
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    smaller = min(counts.values())
    have = f"the training set has only {counts[1]} positive and {counts[0]} negative case(s)"
    needed = [("evaluation.cv_folds", ev.cv_folds)] if out_of_fold else []
    if spec.lasso:
        needed.append(("evaluation.lasso.folds", ev.lasso.folds))
    for setting, k in needed:
        if smaller < k:
            raise FusionError(
                f"model {name!r}: {setting} = {k}, but {have}; every fold needs both classes. "
                f"Lower {setting} to at most {smaller} or add cases."
            )
    in_fold = smaller - math.ceil(smaller / ev.cv_folds) if out_of_fold else smaller
    if in_fold < 2:
        where = (f"with evaluation.cv_folds = {ev.cv_folds} a fold's training part holds "
                 f"{in_fold} of the smaller class, " if out_of_fold else "")  # fmt: skip
        raise FusionError(
            f"model {name!r}: {have}; {where}and tuning the classifier by cross-validation "
            "needs at least 2 cases of each class. Add cases."
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
    jobs: int = 1,
    inputs: CaseInputs | None = None,
) -> ModelFit:
    """Fit one model on the training rows ``X``/``y`` (and nothing else); ``groups`` (the
    patient of each row) keeps a patient's cases in one fold of every CV.

    With ``out_of_fold`` (the default) the whole pipeline is also cross-validated on the
    rows (each fold tunes and calibrates its own classifier): the out-of-fold calibrated
    logits, and the threshold chosen on them, are set by :meth:`ModelFit.use_out_of_fold`;
    without it (a model fitted inside another model's CV fold) only the fitted pipeline is
    made. The fold fits and the final fit are independent: ``jobs`` worker processes run
    them side by side (the same numbers as one at a time). ``inputs``: what the
    ``robust`` and ``harmonise`` steps look up by case id."""
    check_class_counts(name, y, spec, evaluation, out_of_fold)
    columns = list(X.columns)
    categorical = _categorical(X, references or {})
    numeric = [c for c in columns if c not in categorical]
    grouped = groups is not None
    pipeline = build_pipeline(spec, numeric, categorical, evaluation, seed, grouped, inputs, len(X))
    params = _group_params(pipeline, groups)
    splitter = folds(evaluation.cv_folds, seed, grouped)
    splits = list(splitter.split(X, y, groups)) if out_of_fold else []
    parts = [*splits, (np.arange(len(y)), None)]  # the last one is the final fit
    workers = max(1, min(jobs, len(parts)))
    try:
        fitted = Parallel(n_jobs=workers)(
            delayed(_fit_part)(clone(pipeline), X, y, params, train, held,
                               threads_per_worker(workers))
            for train, held in parts
        )  # fmt: skip
    except FusionError:
        raise
    except Exception as exc:
        raise FusionError(f"model {name!r}: fitting failed: {type(exc).__name__}: {exc}") from exc
    pipeline = fitted[-1][0]
    oof = np.empty(len(y))
    for (_, held), (_, scores) in zip(splits, fitted, strict=False):
        oof[held] = scores
    fit = ModelFit(name, spec, pipeline, columns, 0.5, pd.Series(dtype=float))
    if out_of_fold:
        fit.use_out_of_fold(pd.Series(oof, index=X.index), y)
    fit.counts, fit.selected = _selection_summary(pipeline, columns)
    return fit


def _fit_part(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    params: dict[str, np.ndarray],
    train: np.ndarray,
    held: np.ndarray | None,
    threads: int,
) -> tuple[Pipeline, np.ndarray | None]:
    """Fit ``pipeline`` on rows ``train`` (with their share of the group arrays in
    ``params``) inside the thread budget; return it with its calibrated logits of the
    rows ``held`` (None for the final fit)."""
    with native_threads(threads):
        pipeline.fit(X.iloc[train], y[train], **{k: v[train] for k, v in params.items()})
        scores = None if held is None else pipeline.decision_function(X.iloc[held])
    return pipeline, scores


def _selection_summary(pipeline: Pipeline, columns: list[str]) -> tuple[dict, pd.DataFrame]:
    """Features left after each step, and the LASSO-selected ones with coefficients."""
    pre = pipeline.named_steps["pre"]
    names = np.asarray(pre.get_feature_names_out())
    counts = {"input": len(columns)}
    if "robust" in pipeline.named_steps:
        counts["after_robust"] = int(pipeline.named_steps["robust"].support_.sum())
    counts["after_constant_and_empty"] = len(names)
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
