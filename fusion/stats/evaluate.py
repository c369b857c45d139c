"""Tidy evaluation tables from the saved scores: what the report shows, computed once.

Every function takes the long scores table (case_id, set, label, model, score, estimate,
prob, predicted, apparent_score) that the models stage writes, so a statistician can
recompute any number of the report from ``tables/scores.csv`` alone. Training-set rows
hold out-of-fold scores, so every training-set number here is cross-validated; the
in-sample AUC appears only as ``auc_apparent``.

Each (model, set) is computed on its own: a degenerate model (constant scores, a set
without positives) gets a ``note`` saying why a number is missing, and every other
model's results still come out.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from fusion.stats.calibration import (
    calibration,
    calibration_curve,
    hosmer_lemeshow,
    near_constant,
)
from fusion.stats.dca import net_benefit, net_benefit_ci
from fusion.stats.metrics import threshold_metrics
from fusion.stats.roc import auc_value, bootstrap_auc_ci, delong_test, roc_auc, roc_points

ESTIMATE = {"train": "cross-validated (training set)"}
# the probabilities are Platt-scaled on the out-of-fold training scores themselves
TRAINING_CALIBRATION = {
    "train": "Platt scaling was fitted on these out-of-fold scores, so slope 1 and "
    "intercept 0 hold by construction; judge calibration on the held-out sets"
}


def estimate_of(set_name: str) -> str:
    """How a set's numbers were obtained: out-of-fold on the training set, else held out."""
    return ESTIMATE.get(set_name, "held-out")


def _groups(scores: pd.DataFrame):  # noqa: ANN202 - yields (set, model, frame)
    for (set_name, model), frame in scores.groupby(["set", "model"], sort=False):
        yield set_name, model, frame


def class_note(y: np.ndarray) -> str | None:
    """Why no AUC exists for this set, or None when both classes are present."""
    if y.sum() == 0:
        return f"AUC undefined: no positive case among {len(y)}"
    if y.sum() == len(y):
        return f"AUC undefined: no negative case among {len(y)}"
    return None


def performance_table(
    scores: pd.DataFrame,
    thresholds: dict[str, float],
    conf_level: float = 0.95,
    n_boot: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Per model and set: AUC with DeLong CI (and a stratified bootstrap CI when
    ``n_boot`` > 0), metrics at the threshold chosen on the out-of-fold training scores,
    and for the training set the apparent (in-sample) AUC beside the cross-validated one."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, s = frame.label.to_numpy(), frame.score.to_numpy()
        row = {"model": model, "set": set_name, "estimate": estimate_of(set_name),
               "n": len(y), "positives": int(y.sum())}  # fmt: skip
        notes = []
        if (note := class_note(y)) is not None:
            notes.append(note)
        else:
            row["auc"] = auc_value(y, s)
            try:
                auc = roc_auc(y, s, conf_level)
                row |= {"auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high, "auc_se": auc.se}
            except ValueError as exc:
                notes.append(str(exc))
            if n_boot:
                boot = bootstrap_auc_ci(y, s, n_boot=n_boot, seed=seed, conf_level=conf_level)
                row |= {"auc_boot_ci_low": boot.ci_low, "auc_boot_ci_high": boot.ci_high}
            apparent = frame.get("apparent_score")
            if apparent is not None and apparent.notna().all():
                row["auc_apparent"] = auc_value(y, apparent.to_numpy())
        m = threshold_metrics(y, s, thresholds[model])
        row |= {
            "threshold": m.threshold, "sensitivity": m.sensitivity,
            "specificity": m.specificity, "accuracy": m.accuracy, "ppv": m.ppv,
            "npv": m.npv, "f1": m.f1, "tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn,
            "note": "; ".join(notes),
        }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def delong_table(scores: pd.DataFrame, conf_level: float = 0.95) -> pd.DataFrame:
    """Every pair of models on every set: paired DeLong test of their AUCs; a pair that
    cannot be tested keeps its row with the reason in ``note``."""
    rows = []
    for set_name, frame in scores.groupby("set", sort=False):
        wide = frame.pivot(index="case_id", columns="model", values="score")
        labels = frame.drop_duplicates("case_id").set_index("case_id").label.loc[wide.index]
        models = list(dict.fromkeys(frame.model))
        for a, b in combinations(models, 2):
            row = {"set": set_name, "estimate": estimate_of(set_name), "model_a": a,
                   "model_b": b}  # fmt: skip
            try:
                t = delong_test(labels, wide[a], wide[b], conf_level=conf_level)
            except ValueError as exc:  # one class, identical rankings: nothing to compare
                rows.append(row | {"note": str(exc)})
                continue
            rows.append(
                row | {"auc_a": t.auc_a, "auc_b": t.auc_b, "auc_diff": t.auc_a - t.auc_b,
                       "diff_ci_low": t.ci_low, "diff_ci_high": t.ci_high, "z": t.z,
                       "p_value": t.p_value, "note": ""}
            )  # fmt: skip
    return pd.DataFrame(rows)


def calibration_table(scores: pd.DataFrame, groups: int = 10) -> pd.DataFrame:
    """Per model and set: calibration intercept, slope, CITL, Brier, Hosmer-Lemeshow;
    ``note`` says why a number is missing or not interpretable, ``hl_note`` why the
    Hosmer-Lemeshow test could not be done."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, p = frame.label.to_numpy(), frame.prob.to_numpy()
        row = {"model": model, "set": set_name, "estimate": estimate_of(set_name),
               "brier": float(np.mean((p - y) ** 2))}  # fmt: skip
        note = class_note(y) or near_constant(p) or TRAINING_CALIBRATION.get(set_name)
        if class_note(y) is None:
            try:
                c = calibration(y, p)
                row |= {"intercept": c.intercept, "slope": c.slope, "citl": c.citl}
            except ValueError as exc:
                note = str(exc)
            try:
                hl = hosmer_lemeshow(y, p, groups)
                row |= {"hl_statistic": hl.statistic, "hl_df": hl.df, "hl_p_value": hl.p_value,
                        "hl_note": ""}  # fmt: skip
            except ValueError as exc:
                row["hl_note"] = f"Hosmer-Lemeshow not computed: {exc}"
        rows.append(row | {"note": note or ""})
    return pd.DataFrame(rows)


def calibration_curve_table(scores: pd.DataFrame, conf_level: float = 0.95) -> pd.DataFrame:
    """Per model and set: the flexible calibration curve and its band (models whose
    probabilities cannot carry a curve are left out; the calibration table says why)."""
    frames = []
    for set_name, model, frame in _groups(scores):
        try:
            c = calibration_curve(frame.label, frame.prob, conf_level=conf_level)
        except (ValueError, np.linalg.LinAlgError):
            continue
        frames.append(pd.DataFrame({"set": set_name, "model": model, "predicted": c.predicted,
                                    "observed": c.observed, "ci_low": c.ci_low,
                                    "ci_high": c.ci_high}))  # fmt: skip
    columns = ["set", "model", "predicted", "observed", "ci_low", "ci_high"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def net_benefit_table(
    scores: pd.DataFrame,
    thresholds: np.ndarray,
    n_boot: int = 0,
    seed: int = 0,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Per model and set: net benefit over the threshold grid (long format), with a
    percentile bootstrap band (``nb_ci_low``, ``nb_ci_high``) when ``n_boot`` > 0."""
    frames = []
    for set_name, model, frame in _groups(scores):
        nb = net_benefit(frame.label, frame.prob, thresholds)
        if n_boot:
            band = net_benefit_ci(frame.label, frame.prob, thresholds, n_boot, seed, conf_level)
            nb = nb.assign(nb_ci_low=band.ci_low.to_numpy(), nb_ci_high=band.ci_high.to_numpy())
        frames.append(nb.assign(model_name=model, set=set_name))
    out = pd.concat(frames, ignore_index=True)
    columns = ["set", "model", "threshold", "net_benefit", "treat_all", "treat_none"]
    columns += ["nb_ci_low", "nb_ci_high"] if n_boot else []
    return out.rename(columns={"model": "net_benefit", "model_name": "model"})[columns]


def roc_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model and set: the ROC curve's points (fpr, tpr, threshold)."""
    frames = []
    for set_name, model, frame in _groups(scores):
        if class_note(frame.label.to_numpy()) is not None:
            continue
        fpr, tpr, thr = roc_points(frame.label, frame.score)
        frames.append(pd.DataFrame({"set": set_name, "model": model, "fpr": fpr, "tpr": tpr,
                                    "threshold": thr}))  # fmt: skip
    columns = ["set", "model", "fpr", "tpr", "threshold"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


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
