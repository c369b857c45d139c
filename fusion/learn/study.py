"""Fit every model a study declares, in order, and score every case with each."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fusion.config import Study
from fusion.errors import FusionError
from fusion.learn.models import ModelFit, block_columns, fit_model


@dataclass(slots=True)
class ModelsOutput:
    fits: dict[str, ModelFit]
    scores: pd.DataFrame  # case_id, set, label, model, score, prob, predicted


def fit_study_models(
    study: Study, table: pd.DataFrame, labels: pd.Series, sets: pd.Series
) -> ModelsOutput:
    """``table`` is indexed by case_id with ``<block>:<feature>`` columns; ``labels`` and
    ``sets`` are indexed the same way. Only rows in the 'train' set are ever fitted on."""
    table = table.copy()
    train = (sets == "train").to_numpy()
    y = labels.to_numpy().astype(int)
    references = {f"clinical:{c.name}": c.reference for c in study.clinical if c.reference}
    fits: dict[str, ModelFit] = {}
    frames = []
    for name, spec in study.models.items():
        columns = block_columns(table, spec.features)
        if not columns:
            raise FusionError(
                f"model {name!r}: no feature columns for {', '.join(spec.features)}; "
                "did the feature stage run?"
            )
        X = table[columns]
        fit = fit_model(name, spec, X[train], y[train], study.evaluation, study.seed, references)
        score = fit.score(X)
        as_input = pd.Series(score, index=table.index)
        as_input[train] = fit.oof_score.to_numpy()  # later models see out-of-fold scores
        table[f"score:{name}"] = as_input
        fits[name] = fit
        frames.append(
            pd.DataFrame(
                {
                    "case_id": table.index,
                    "set": sets.to_numpy(),
                    "label": y,
                    "model": name,
                    "score": score,
                    "prob": fit.probability(score),
                    "predicted": (score >= fit.threshold).astype(int),
                }
            )
        )
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ModelsOutput(fits, scores)


def summary_tables(out: ModelsOutput) -> dict[str, pd.DataFrame]:
    """The models stage's tables besides the scores: per model its settings, threshold,
    feature counts; the selected features; LASSO's CV curve and non-zero path."""
    summary, selected, cv, path = [], [], [], []
    for name, fit in out.fits.items():
        summary.append(
            {"model": name, "features": " + ".join(fit.spec.features),
             "classifier": fit.spec.classifier + (f" ({fit.spec.kernel})"
                                                  if fit.spec.classifier == "svm" else ""),
             "threshold": fit.threshold, "platt_intercept": fit.platt[0],
             "platt_slope": fit.platt[1],
             "tuned": ", ".join(f"{k}={v}" for k, v in sorted(fit.best_params.items())),
             "lasso_fallback": bool(fit.lasso.fallback_) if fit.lasso is not None else False,
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
        "selected_features": cat(selected, ["feature", "coefficient", "model"])[
            ["model", "feature", "coefficient"]
        ],
        "lasso_cv": cat(cv, ["model", "lambda", "cv_deviance", "cv_se", "nonzero"]),
        "lasso_path": cat(path, ["model", "lambda", "feature", "coefficient"]),
    }
