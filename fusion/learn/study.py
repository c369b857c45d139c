"""Fit every model a study declares, in order, and score every case with each."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fusion.cohort import Case
from fusion.config import SCORE_SUFFIX, Study
from fusion.errors import FusionError
from fusion.learn.models import CaseInputs, ModelFit, approximated, block_columns, fit_model
from fusion.learn.splits import folds
from fusion.learn.table import clinical_frame
from fusion.seeds import stream

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelsOutput:
    fits: dict[str, ModelFit]
    # case_id, set, label, model, score, estimate, prob, predicted, apparent_score
    scores: pd.DataFrame


def case_inputs(study: Study, cases: list[Case], radiomics: pd.DataFrame | None) -> CaseInputs:
    """What ``robust`` and ``harmonise`` models look up by case id: the tidy radiomics
    table of the drawn ROI and its perturbations (``radiomics``: the stage's table), each
    case's site (``cohort.columns.site``, else its institution) and the harmonisation
    covariates (continuous as they are, categorical as 0/1 columns of the levels other
    than the reference)."""
    inputs: dict = {}
    spec = study.perturbations
    if spec is not None:
        rois = (spec.of, *spec.roi_names())
        measured = set(radiomics.roi) if radiomics is not None else set()
        if spec.of not in measured:
            raise FusionError(f"perturbations: no radiomics features of {spec.of!r} to compare "
                              f"its variants with; the radiomics table's ROIs are "
                              f"{', '.join(sorted(measured)) or 'none'}")  # fmt: skip
        inputs |= {
            "perturbed": radiomics[radiomics.roi.isin(rois)],
            "rois": rois,
            "icc": spec.icc,
            "min_ci_low": spec.min_ci_low,
            "min_icc": spec.min_icc,
        }
    harmonise = study.harmonisation
    if harmonise is not None:
        ids = pd.Index([c.case_id for c in cases], name="case_id")
        sites = pd.Series([c.site if study.cohort.columns.site else c.institution
                           for c in cases], index=ids, dtype=object)  # fmt: skip
        clinical = clinical_frame(study, cases)
        covariates = pd.DataFrame(index=ids)
        for cov in study.clinical:
            if cov.name not in harmonise.covariates:
                continue
            column = clinical[f"clinical:{cov.name}"]
            if cov.type == "continuous":
                covariates[cov.name] = column.astype(float)
                continue
            levels = sorted(column.dropna().astype(str).unique())
            reference = cov.reference or (levels[0] if levels else None)
            for level in levels:
                if level != reference:
                    covariates[f"{cov.name}={level}"] = (column.astype(str) == level).where(
                        column.notna()).astype(float)  # fmt: skip
        inputs |= {"sites": sites, "covariates": covariates,
                   "prefixes": tuple(f"{b}:" for b in harmonise.blocks),
                   "unseen": harmonise.unseen}  # fmt: skip
    return CaseInputs(**inputs)


def balanced_permutation(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the 0/1 outcome ``y`` that is as uncorrelated with ``y`` as the
    counts allow: of the n1 cases labelled positive, round(n1^2 / n) are true positives,
    what independence expects (a balanced permutation: Southworth, Kim and Owen, Ann
    Appl Stat 2009), the rest drawn at random (seeded). A plain permutation's labels
    correlate with the truth by chance (SD about 1/sqrt(n)); a model fitted on them then
    finds the real signal with that sign, and the control's AUC lands far from 0.5, in
    either direction, for a reason that is not the model's."""
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    both = min(round(len(pos) ** 2 / len(y)), len(pos)) if len(y) else 0
    chosen = np.concatenate([rng.choice(pos, both, replace=False),
                             rng.choice(neg, len(pos) - both, replace=False)])  # fmt: skip
    out = np.zeros_like(y)
    out[chosen] = 1
    return out


def upstream(study: Study, name: str) -> list[str]:
    """The earlier models whose scores model ``name`` uses (``<model>-score`` inputs)."""
    features = study.models[name].features
    return [f.removesuffix(SCORE_SUFFIX) for f in features if f.endswith(SCORE_SUFFIX)]


@dataclass(slots=True)
class Stacking:
    """Cross-validation of a model built on other models' scores, nested so that no
    fold's labels reach its own predictions.

    The stacked model's training input is the upstream model's out-of-fold score; but
    each of those scores came from an upstream fit that saw the other folds' labels, so a
    plain CV of the stacked model would let its validation fold's labels in through its
    training rows. Here every outer fold refits the upstream models on the outer training
    rows alone (with their own out-of-fold scores inside them) before the stacked model,
    then scores the outer validation rows through that chain.
    """

    study: Study
    table: pd.DataFrame  # the feature blocks, without score columns
    y: np.ndarray
    groups: np.ndarray | None
    references: dict[str, str]
    jobs: int = 1  # worker processes for each model's fold and final fits
    inputs: CaseInputs | None = None

    def chain(self, name: str, rows: np.ndarray, out_of_fold: bool):  # noqa: ANN201
        """Fit ``name`` and the models it builds on, on ``rows`` only. Returns its
        out-of-fold scores on ``rows`` (or None) and a function scoring other rows."""
        spec, ev = self.study.models[name], self.study.evaluation
        scorers = {}
        X = self.table.iloc[rows].copy()
        for up in upstream(self.study, name):
            X[f"score:{up}"], scorers[up] = self.chain(up, rows, out_of_fold=True)
        columns = block_columns(X, spec.features, self.study.auxiliary_rois(), spec.exclude)
        groups = None if self.groups is None else self.groups[rows]
        own_oof = out_of_fold and not scorers  # a stacked model's comes from nested_oof
        fit = fit_model(name, spec, X[columns], self.y[rows], ev, self.study.seed,
                        self.references, groups, out_of_fold=own_oof,
                        jobs=self.jobs, inputs=self.inputs)  # fmt: skip

        def score(other: np.ndarray) -> np.ndarray:
            Xo = self.table.iloc[other].copy()
            for up, scorer in scorers.items():
                Xo[f"score:{up}"] = scorer(other)
            return fit.score(Xo)

        if not out_of_fold:
            return None, score
        oof = self.nested_oof(name, rows) if scorers else fit.oof_score.to_numpy()
        return oof, score

    def nested_oof(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Out-of-fold scores of a stacked model, each fold scored by a chain fitted
        without it."""
        ev = self.study.evaluation
        splitter = folds(ev.cv_folds, self.study.seed, self.groups is not None)
        groups = None if self.groups is None else self.groups[rows]
        out = np.empty(len(rows))
        for k, (tr, va) in enumerate(splitter.split(rows, self.y[rows], groups), start=1):
            log.info("models: %r nested CV, outer fold %d/%d", name, k, ev.cv_folds)
            _, score = self.chain(name, rows[tr], out_of_fold=False)
            out[va] = score(rows[va])
        return out


def fit_study_models(
    study: Study,
    table: pd.DataFrame,
    labels: pd.Series,
    sets: pd.Series,
    groups: pd.Series | None = None,
    jobs: int = 1,
    exclusions: pd.DataFrame | None = None,
    inputs: CaseInputs | None = None,
) -> ModelsOutput:
    """``table`` is indexed by case_id with ``<block>:<feature>`` columns; ``labels``,
    ``sets`` and ``groups`` (the patient of each case, or None) are indexed the same way.
    Only rows in the 'train' set are ever fitted on. ``jobs`` worker processes fit each
    model's CV folds and final fit side by side; the results do not depend on it.

    ``score`` is the calibrated logit and ``prob`` its probability; a training case's are
    out of fold (``estimate`` says "cross-validated"), its in-sample score is kept as
    ``apparent_score``. ``exclusions`` (``case_id``, ``model``) leaves a case out of one
    model only (it lacks that model's features): the model is fitted and scored on the
    other cases, and ``scores`` has no row for the pair. ``inputs``: what ``robust``
    and ``harmonise`` models look up by case id.

    A ``permute_outcome`` model (a negative control) is fitted, tuned, thresholded and
    cross-validated on the training outcome permuted (:func:`balanced_permutation`, the
    study seed's ``permute/<model>`` stream), and scored against the true outcome
    everywhere."""
    table = table.copy()
    train = (sets == "train").to_numpy()
    y = labels.to_numpy().astype(int)
    g_all = None if groups is None else groups.loc[table.index].to_numpy()
    references = {f"clinical:{c.name}": c.reference for c in study.clinical if c.reference}
    fits: dict[str, ModelFit] = {}
    frames = []
    stacking = Stacking(study, table.copy(), y, g_all, references, jobs, inputs)
    left_out = exclusions if exclusions is not None else pd.DataFrame(columns=["case_id", "model"])
    for i, (name, spec) in enumerate(study.models.items(), start=1):
        columns = block_columns(table, spec.features, study.auxiliary_rois(), spec.exclude)
        if not columns:
            raise FusionError(
                f"model {name!r}: no feature columns for {', '.join(spec.features)}; "
                "did the feature stage run?"
            )
        rows = ~table.index.isin(left_out.case_id[left_out.model == name])
        X, tr, yr = table.loc[rows, columns], train[rows], y[rows]
        gr = None if g_all is None else g_all[rows][tr]
        started = time.monotonic()
        log.info("models: fitting %r (%d/%d) on %d training cases, %d features, %d-fold CV",
                 name, i, len(study.models), int(tr.sum()), len(columns),
                 study.evaluation.cv_folds)  # fmt: skip
        nested = study.evaluation.nested_cv and bool(upstream(study, name))
        y_fit = yr[tr]
        if spec.permute_outcome:
            y_fit = balanced_permutation(y_fit, stream(study.seed, f"permute/{name}"))
        fit = fit_model(name, spec, X[tr], y_fit, study.evaluation, study.seed,
                        references, gr, out_of_fold=not nested, jobs=jobs,
                        inputs=inputs)  # fmt: skip
        if nested:
            oof = stacking.nested_oof(name, np.flatnonzero(train & rows))
            fit.use_out_of_fold(pd.Series(oof, index=X.index[tr]), yr[tr])
        log.info("models: %r done in %.1f s", name, time.monotonic() - started)
        apparent = fit.score(X)
        score = apparent.copy()
        score[tr] = fit.oof_score.to_numpy()  # training numbers are cross-validated
        table[f"score:{name}"] = pd.Series(score, index=X.index)  # later models see OOF scores
        fits[name] = fit
        prob = fit.probability(score)
        frames.append(
            pd.DataFrame(
                {
                    "case_id": X.index,
                    "set": sets.to_numpy()[rows],
                    "label": yr,
                    "model": name,
                    "score": score,
                    "estimate": np.where(tr, "cross-validated", "held-out"),
                    "prob": prob,
                    "predicted": (prob >= fit.threshold).astype(int),
                    "apparent_score": np.where(tr, apparent, np.nan),
                }
            )
        )
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ModelsOutput(fits, scores)


def _at_grid_edge(tuner) -> bool:  # noqa: ANN001 - a fitted PlattSearchCV
    """Whether a numeric hyper-parameter was chosen at the smallest or largest value of
    its grid (the optimum may lie beyond it)."""
    for key, value in tuner.best_params_.items():
        numeric = [v for v in tuner.param_grid[key] if not isinstance(v, str)]
        if (
            not isinstance(value, str)
            and len(numeric) > 1
            and value in (min(numeric), max(numeric))
        ):
            return True
    return False


def _classifier_text(fit: ModelFit) -> str:
    """``svm (rbf)``, ``logistic``; an SVM fitted on many rows says how (large_svm)."""
    if fit.spec.classifier != "svm":
        return fit.spec.classifier
    if not approximated(fit):
        return f"svm ({fit.spec.kernel})"
    how = ("Nystroem approximation of the RBF kernel, 500 components, + linear SVM"
           if fit.spec.kernel == "rbf" else "linear SVM, liblinear")  # fmt: skip
    return f"svm ({fit.spec.kernel}; {how}: more than evaluation.svm_max_rows rows)"


def summary_tables(out: ModelsOutput) -> dict[str, pd.DataFrame]:
    """The models stage's tables besides the scores: per model its settings, threshold,
    Platt map, tuning and feature counts; every tuning candidate's out-of-fold scores;
    the selected features; LASSO's CV curve and non-zero path."""
    summary, tuning, selected, cv, path = [], [], [], [], []
    for name, fit in out.fits.items():
        tuner = fit.tuner
        results = pd.DataFrame(tuner.cv_results_)
        tuning.append(
            results.assign(
                model=name,
                params=[", ".join(f"{k}={v}" for k, v in sorted(p.items()))
                        for p in results.params],
                chosen=results.index == tuner.best_index_,
            )[["model", "params", "log_loss", "brier", "auc", "score_sd", "eligible", "chosen",
               "error"]]
        )  # fmt: skip
        summary.append(
            {"model": name, "features": " + ".join(fit.spec.features),
             "classifier": _classifier_text(fit),
             "threshold": fit.threshold, "platt_intercept": fit.platt[0],
             "platt_slope": fit.platt[1],
             "tuned": ", ".join(f"{k}={v}" for k, v in sorted(fit.best_params.items())),
             "tuned_at_grid_edge": _at_grid_edge(tuner),
             "tuning_folds": tuner.n_splits_, "tuning_folds_requested": tuner.cv,
             "tuned_by": tuner.scoring,
             "oof_raw_sd": float(results.score_sd[tuner.best_index_]),
             "degenerate": bool(tuner.degenerate_),
             "lasso_fallback": bool(fit.lasso.fallback_) if fit.lasso is not None else False,
             "lasso_n_iter": fit.lasso.n_iter_ if fit.lasso is not None else 0,
             "lasso_converged": fit.lasso.n_iter_ < fit.lasso.max_iter
             if fit.lasso is not None else True,
             **{f"n_{k}": v for k, v in fit.counts.items()}}
        )  # fmt: skip
        selected.append(fit.selected.assign(model=name))
        lasso = fit.lasso
        if lasso is None:
            continue
        cv.append(
            pd.DataFrame(
                {"model": name, "lambda": lasso.lambdas_, "cv_deviance": lasso.cv_mean_,
                 "cv_se": lasso.cv_se_, "nonzero": (lasso.coef_path_ != 0).sum(axis=1),
                 "is_min": lasso.lambdas_ == lasso.lambda_min_,
                 "is_1se": lasso.lambdas_ == lasso.lambda_1se_,
                 "chosen": lasso.lambdas_ == lasso.lambda_}
            )
        )  # fmt: skip
        names = fit.pipeline[:-2].get_feature_names_out()
        rows, cols = (lasso.coef_path_ != 0).nonzero()
        path.append(
            pd.DataFrame({"model": name, "lambda": lasso.lambdas_[rows], "feature": names[cols],
                          "coefficient": lasso.coef_path_[rows, cols]})
        )  # fmt: skip

    def cat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    return {
        "model_summary": pd.DataFrame(summary),
        "model_tuning": cat(
            tuning,
            [
                "model",
                "params",
                "log_loss",
                "brier",
                "auc",
                "score_sd",
                "eligible",
                "chosen",
                "error",
            ],
        ),
        "selected_features": cat(selected, ["feature", "coefficient", "model"])[
            ["model", "feature", "coefficient"]
        ],
        "lasso_cv": cat(cv, ["model", "lambda", "cv_deviance", "cv_se", "nonzero"]),
        "lasso_path": cat(path, ["model", "lambda", "feature", "coefficient"]),
    }


def harmonisation_tables(
    out: ModelsOutput, table: pd.DataFrame, inputs: CaseInputs, n_examples: int = 4
) -> dict[str, pd.DataFrame]:
    """For each ``harmonise`` model's final fit: per training site its cases and how far
    ComBat moves it (mean |location| and mean scale over the features, on the
    standardised scale: 0 and 1 mean no site effect) (``harmonisation.csv``); and for the
    first such model, the ``n_examples`` features with the largest between-site F on the
    training cases, every case's value before and after (``harmonisation_examples.csv``:
    what the before/after figure draws; other sets are harmonised with the training
    parameters, as the model sees them)."""
    from scipy.stats import f_oneway

    rows, examples = [], []
    sets = out.scores.drop_duplicates("case_id").set_index("case_id")["set"]
    for name, fit in out.fits.items():
        if "harmonise" not in fit.pipeline.named_steps:
            continue
        step = fit.pipeline.named_steps["harmonise"]
        combat = step.combat_
        train = fit.oof_score.index
        site_of = inputs.sites.reindex(train.astype(str))
        for i, site in enumerate(combat.sites_):
            n_site = int((site_of == site).sum())
            rows.append({"model": name, "site": site, "training_cases": n_site,
                         "features": len(step.columns_), "mean_abs_location":
                         float(np.abs(combat.gamma_star_[i]).mean()),
                         "mean_scale": float(combat.delta_star_[i].mean()),
                         "fitted_on": f"the {len(train)} training cases of the final fit; each "
                         "CV fold refits it on its own training part",
                         "unseen_sites": combat.unseen})  # fmt: skip
        if examples:
            continue
        X = table.loc[sets.index[sets.index.isin(table.index)], fit.columns]
        before = X[step.columns_].fillna(step.medians_)
        after = pd.DataFrame(step.transform(X)[step.columns_], index=X.index)
        train_rows = before.loc[train]
        groups = [train_rows[site_of.to_numpy() == s] for s in combat.sites_]
        f = {c: f_oneway(*[g[c] for g in groups]).statistic for c in step.columns_
             if train_rows[c].std() > 0}  # fmt: skip
        top = sorted(f, key=lambda c: (-np.nan_to_num(f[c], nan=-np.inf), c))[:n_examples]
        case_sites = inputs.sites.reindex(X.index.astype(str)).to_numpy()
        for column in top:
            examples.append(pd.DataFrame({
                "model": name, "feature": column, "case_id": X.index, "set": sets[X.index],
                "site": case_sites, "before": before[column].to_numpy(),
                "after": after[column].to_numpy(), "f_before": f[column],
            }))  # fmt: skip
    return {
        "harmonisation": pd.DataFrame(rows),
        "harmonisation_examples": pd.concat(examples, ignore_index=True) if examples
        else pd.DataFrame(),
    }  # fmt: skip
