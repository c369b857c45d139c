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
