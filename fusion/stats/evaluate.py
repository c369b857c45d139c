"""Tidy evaluation tables from the saved scores: what the report shows, computed once.

Every function takes the long scores table (case_id, set, label, model, score, prob,
predicted) that the models stage writes, so a statistician can recompute any number of
the report from ``tables/scores.csv`` alone.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from fusion.stats.calibration import calibration, hosmer_lemeshow
from fusion.stats.dca import net_benefit
from fusion.stats.metrics import threshold_metrics
from fusion.stats.roc import bootstrap_auc_ci, delong_test, roc_auc, roc_points


def _groups(scores: pd.DataFrame):  # noqa: ANN202 - yields (set, model, frame)
    for (set_name, model), frame in scores.groupby(["set", "model"], sort=False):
        yield set_name, model, frame


def performance_table(
    scores: pd.DataFrame,
    thresholds: dict[str, float],
    conf_level: float = 0.95,
    n_boot: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Per model and set: AUC with DeLong CI (and a stratified bootstrap CI when
    ``n_boot`` > 0), and metrics at the training threshold."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, s = frame.label.to_numpy(), frame.score.to_numpy()
        row = {"model": model, "set": set_name, "n": len(y), "positives": int(y.sum())}
        if 0 < y.sum() < len(y):
            auc = roc_auc(y, s, conf_level)
            row |= {"auc": auc.auc, "auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high,
                    "auc_se": auc.se}  # fmt: skip
            if n_boot:
                boot = bootstrap_auc_ci(y, s, n_boot=n_boot, seed=seed, conf_level=conf_level)
                row |= {"auc_boot_ci_low": boot.ci_low, "auc_boot_ci_high": boot.ci_high}
        m = threshold_metrics(y, s, thresholds[model])
        row |= {
            "threshold": m.threshold, "sensitivity": m.sensitivity,
            "specificity": m.specificity, "accuracy": m.accuracy, "ppv": m.ppv,
            "npv": m.npv, "f1": m.f1, "tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn,
        }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def delong_table(scores: pd.DataFrame, conf_level: float = 0.95) -> pd.DataFrame:
    """Every pair of models on every set: paired DeLong test of their AUCs."""
    rows = []
    for set_name, frame in scores.groupby("set", sort=False):
        wide = frame.pivot(index="case_id", columns="model", values="score")
        labels = frame.drop_duplicates("case_id").set_index("case_id").label.loc[wide.index]
        if not 0 < labels.sum() < len(labels):
            continue
        models = list(dict.fromkeys(frame.model))
        for a, b in combinations(models, 2):
            row = {"set": set_name, "model_a": a, "model_b": b}
            try:
                t = delong_test(labels, wide[a], wide[b], conf_level=conf_level)
            except ValueError as exc:  # identical rankings: nothing to compare
                rows.append(row | {"note": str(exc)})
                continue
            rows.append(
                row | {"auc_a": t.auc_a, "auc_b": t.auc_b, "auc_diff": t.auc_a - t.auc_b,
                       "diff_ci_low": t.ci_low, "diff_ci_high": t.ci_high, "z": t.z,
                       "p_value": t.p_value, "note": ""}
            )  # fmt: skip
    return pd.DataFrame(rows)


def calibration_table(scores: pd.DataFrame, groups: int = 10) -> pd.DataFrame:
    """Per model and set: calibration intercept, slope, CITL, Brier, Hosmer-Lemeshow."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, p = frame.label.to_numpy(), frame.prob.to_numpy()
        if not 0 < y.sum() < len(y):
            continue
        c = calibration(y, p)
        row = {"model": model, "set": set_name, "intercept": c.intercept, "slope": c.slope,
               "citl": c.citl, "brier": c.brier}  # fmt: skip
        try:
            hl = hosmer_lemeshow(y, p, groups)
            row |= {"hl_statistic": hl.statistic, "hl_df": hl.df, "hl_p_value": hl.p_value}
        except ValueError:
            row |= {"hl_statistic": np.nan, "hl_df": np.nan, "hl_p_value": np.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def net_benefit_table(scores: pd.DataFrame, thresholds: np.ndarray) -> pd.DataFrame:
    """Per model and set: net benefit over the threshold grid (long format)."""
    frames = []
    for set_name, model, frame in _groups(scores):
        nb = net_benefit(frame.label, frame.prob, thresholds)
        frames.append(nb.assign(model_name=model, set=set_name))
    out = pd.concat(frames, ignore_index=True)
    return out.rename(columns={"model": "net_benefit", "model_name": "model"})[
        ["set", "model", "threshold", "net_benefit", "treat_all", "treat_none"]
    ]


def roc_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model and set: the ROC curve's points (fpr, tpr, threshold)."""
    frames = []
    for set_name, model, frame in _groups(scores):
        if not 0 < frame.label.sum() < len(frame):
            continue
        fpr, tpr, thr = roc_points(frame.label, frame.score)
        frames.append(pd.DataFrame({"set": set_name, "model": model, "fpr": fpr, "tpr": tpr,
                                    "threshold": thr}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def clinical_tables(
    frame: pd.DataFrame,
    table1_types: dict[str, str],
    covariates: dict[str, str],
    references: dict[str, str],
) -> dict[str, pd.DataFrame]:
    """Table 1 by outcome for each internal set (``table1_types`` variables), and
    univariable and multivariable logistic regressions (odds ratios) of the outcome on
    ``covariates``, fitted on the training set. ``frame`` has ``label`` and ``set``."""
    from fusion.stats.tables import baseline_table, logistic_or_table

    tables: dict[str, pd.DataFrame] = {}
    for set_name in ("train", "test"):
        part = frame[frame.set == set_name]
        if part.label.nunique() == 2:
            tables[f"table1_{set_name}"] = baseline_table(part, "label", table1_types)
    train = frame[frame.set == "train"]
    if covariates and train.label.nunique() == 2:
        tables["clinical_univariable"] = pd.concat(
            [
                logistic_or_table(train, "label", {name: kind}, references).query(
                    "term != '(Intercept)'"
                )
                for name, kind in covariates.items()
            ],
            ignore_index=True,
        )
        tables["clinical_multivariable"] = logistic_or_table(train, "label", covariates, references)
    return tables
