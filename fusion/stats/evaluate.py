"""Tidy evaluation tables from the saved scores: what the report shows, computed once.

Every function takes the long scores table (case_id, set, label, model, score, estimate,
prob, predicted, ...) that the models stage writes, so a statistician can recompute any
number of the report from ``tables/scores.csv`` alone. ``score`` ranks the cases (the
ROC and DeLong read it), ``prob`` is the probability that calibration, decision curves,
reclassification and every threshold metric read; thresholds are probabilities.
Training-set rows hold out-of-fold values, so every training-set number here is
cross-validated; the in-sample AUC appears only as ``auc_apparent``. With two or more
external institutions, their cases also enter every table pooled, as the set
``external (pooled)``.

Each (model, set) is computed on its own: a degenerate model (constant scores, a set
without positives) gets a ``note`` saying why a number is missing, and every other
model's results still come out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fusion.seeds import stream
from fusion.stats.bootstrap import over_resamples, percentile_interval
from fusion.stats.calibration import (
    calibration,
    calibration_curve,
    hosmer_lemeshow,
    near_constant,
)
from fusion.stats.dca import net_benefit, net_benefit_ci, net_benefit_difference
from fusion.stats.metrics import metric_cis, threshold_metrics
from fusion.stats.reclassification import categorical_nri, improve_prob
from fusion.stats.roc import auc_value, bootstrap_auc_ci, delong_test, roc_auc, roc_points

if TYPE_CHECKING:
    from fusion.config import EvaluationSpec

ESTIMATE = {
    "train": "cross-validated (training set)",
    "validation": "validation set (apparent: it chose the epoch, recalibration and threshold)",
}
POOLED_EXTERNAL = "external (pooled)"


def estimate_of(set_name: str) -> str:
    """How a set's numbers were obtained: out-of-fold on the training set, else held out."""
    return ESTIMATE.get(set_name, "held-out")


def with_pooled_external(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` plus, when it has two or more ``external:<institution>`` sets, their
    rows again under the set ``external (pooled)``: per-institution and pooled results."""
    external = scores[scores.set.astype(str).str.startswith("external:")]
    if external.set.nunique() < 2:
        return scores
    return pd.concat([scores, external.assign(set=POOLED_EXTERNAL)], ignore_index=True)


def _groups(scores: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    for (set_name, model), frame in scores.groupby(["set", "model"], sort=False):
        yield set_name, model, frame


Pairs = frozenset[tuple[str, str]] | None  # the model pairs to compare; None: every pair


def _pairs(
    scores: pd.DataFrame, pairs: Pairs = None
) -> Iterator[tuple[str, str, str, pd.DataFrame, pd.Series, str]]:
    """(set, model a, model b, both models' rows on the cases both scored, their labels,
    note) for every pair of models in ``pairs`` (None: every pair) on every set, a before
    b in the order the models were declared. Models left out of some cases (no features
    for their ROI) are compared on the cases they share, with paired tests; the note then
    says how many that is (empty when both scored the same cases)."""
    for set_name, frame in scores.groupby("set", sort=False):
        models = list(dict.fromkeys(frame.model))
        cases = {m: set(frame.case_id[frame.model == m]) for m in models}
        for a, b in combinations(models, 2):
            if pairs is not None and (a, b) not in pairs:
                continue
            common = cases[a] & cases[b]
            pair = frame[frame.model.isin((a, b)) & frame.case_id.isin(common)]
            labels = pair.drop_duplicates("case_id").set_index("case_id").label
            note = "" if cases[a] == cases[b] else (
                f"paired on the {len(common)} cases both models scored ({a}: "
                f"{len(cases[a])}, {b}: {len(cases[b])}; the others lack one model's "
                "features)")  # fmt: skip
            yield set_name, a, b, pair, labels, note


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
    ``n_boot`` > 0); sensitivity, specificity, PPV, NPV and accuracy at the model's
    probability threshold (``thresholds``, chosen on the out-of-fold training set or the
    validation set) with Wilson CIs; F1 and the Brier score with percentile bootstrap CIs
    (``n_boot`` resamples of whole cases); the spread of the probabilities (a
    near-constant model is noted); and for the training set the apparent (in-sample) AUC
    beside the cross-validated one."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, s = frame.label.to_numpy().astype(int), frame.score.to_numpy()
        p = frame.prob.to_numpy() if "prob" in frame else s
        row: dict[str, Any] = {"model": model, "set": set_name, "estimate": estimate_of(set_name),
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
        m = threshold_metrics(y, p, thresholds[model])
        row |= {
            "threshold": m.threshold, "sensitivity": m.sensitivity,
            "specificity": m.specificity, "accuracy": m.accuracy, "ppv": m.ppv,
            "npv": m.npv, "f1": m.f1, "tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn,
        }  # fmt: skip
        row |= metric_cis(m, conf_level)
        row |= _bootstrap_brier_f1(y, p, thresholds[model], n_boot, seed, conf_level)
        row |= {"prob_min": float(p.min()), "prob_max": float(p.max()),
                "prob_sd": float(p.std(ddof=1)) if len(p) > 1 else np.nan}  # fmt: skip
        if "prob" in frame and (flat := near_constant(p)) is not None:
            notes.append(flat)
        elif "prob" in frame and row.get("brier_scaled", 1.0) <= 0:
            notes.append("Brier score no better than giving every case the prevalence "
                         "(scaled Brier <= 0)")  # fmt: skip
        rows.append(row | {"note": "; ".join(notes)})
    return pd.DataFrame(rows)


def _bootstrap_brier_f1(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int, conf_level: float
) -> dict[str, float]:
    """The Brier score; the scaled Brier score, 1 - Brier / the Brier score of giving every
    case the set's prevalence (Steyerberg et al. 2010; 0 or less: no better than that);
    and percentile bootstrap CIs of the Brier score and of F1 (resamples of whole cases;
    NaN without resamples). F1 is NaN on a resample without a positive call or case."""
    brier, prevalence = float(np.mean((p - y) ** 2)), float(y.mean())
    null = prevalence * (1 - prevalence)
    out = {"brier": brier, "brier_scaled": 1 - brier / null if null > 0 else np.nan,
           "brier_ci_low": np.nan, "brier_ci_high": np.nan, "f1_ci_low": np.nan,
           "f1_ci_high": np.nan}  # fmt: skip
    if not n_boot:
        return out
    called = (p >= threshold).astype(float)
    # per resample: the Brier score and the confusion counts at the threshold
    squared = (p - y) ** 2
    counts = np.column_stack([called * y, called * (1 - y), (1 - called) * y])  # 0/1: exact
    sums = over_resamples(len(y), n_boot, seed,
                          lambda w: np.column_stack([w @ squared, w @ counts]))  # fmt: skip
    out["brier_ci_low"], out["brier_ci_high"] = percentile_interval(sums[:, 0] / len(y), conf_level)
    tp, fp, fn = sums[:, 1], sums[:, 2], sums[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
    if np.isfinite(f1).all():
        out["f1_ci_low"], out["f1_ci_high"] = percentile_interval(f1, conf_level)
    return {k: float(v) for k, v in out.items()}


def delong_table(
    scores: pd.DataFrame, conf_level: float = 0.95, pairs: Pairs = None
) -> pd.DataFrame:
    """Every pair of models (of ``pairs``) on every set: paired DeLong test of their AUCs;
    a pair that cannot be tested keeps its row with the reason in ``note``."""
    rows = []
    for set_name, a, b, frame, labels, paired in _pairs(scores, pairs):
        wide = frame.pivot(index="case_id", columns="model", values="score")
        row = {"set": set_name, "estimate": estimate_of(set_name), "model_a": a, "model_b": b,
               "cases": len(wide)}  # fmt: skip
        try:
            t = delong_test(labels.loc[wide.index], wide[a], wide[b], conf_level=conf_level)
        except ValueError as exc:  # one class, identical rankings: nothing to compare
            rows.append(row | {"note": "; ".join(filter(None, (str(exc), paired)))})
            continue
        rows.append(
            row | {"auc_a": t.auc_a, "auc_b": t.auc_b, "auc_diff": t.auc_a - t.auc_b,
                   "diff_ci_low": t.ci_low, "diff_ci_high": t.ci_high, "z": t.z,
                   "p_value": t.p_value, "note": paired}
        )  # fmt: skip
    return holm(pd.DataFrame(rows))


def holm(table: pd.DataFrame) -> pd.DataFrame:
    """``p_holm``: the p-values of each set's pairwise tests adjusted for their number by
    Holm's step-down method (statsmodels' multipletests, as R's p.adjust "holm"); it
    controls the family-wise error rate of the set's comparisons."""
    from statsmodels.stats.multitest import multipletests

    if table.empty or "p_value" not in table:
        return table
    out = table.assign(p_holm=np.nan)
    for _, part in out.groupby("set", sort=False):
        tested = part.p_value.dropna()
        if len(tested):
            out.loc[tested.index, "p_holm"] = multipletests(tested, method="holm")[1]
    columns = list(out.columns)
    columns.insert(columns.index("p_value") + 1, columns.pop(columns.index("p_holm")))
    return out[columns]


CONTROL_MEANING = {
    "shuffled voxels": "the model may be learning the ROI's volume or intensity "
    "histogram, not its texture",
    "ROI elsewhere": "the model may be learning what the whole image carries (scanner, "
    "noise, patient size) or the ROI's size, not the ROI's content",
    "permuted outcome": "the pipeline finds signal where there is none: look for "
    "leakage or overfitting",
}


def negative_control_table(
    performance: pd.DataFrame, delong: pd.DataFrame, controls: dict[str, tuple[str, str]]
) -> pd.DataFrame:
    """Each negative control (``controls``: control model -> (real model, kind)) beside
    its real model on every set both were scored on: both AUCs with their CIs, the paired
    DeLong test, and ``flag`` when the control's AUC reaches the real model's lower CI
    bound (READII's reading: then the real model may not be learning the ROI's content;
    ``warning`` says what the control's kind suggests). A control is meant to sit near
    0.5; one that does not, on a set with a real model worth the name, is reported."""
    columns = ["control", "kind", "model", "set", "estimate", "auc_control",
               "auc_control_ci_low", "auc_control_ci_high", "auc_model", "auc_model_ci_low",
               "auc_model_ci_high", "delong_p", "flag", "warning", "note"]  # fmt: skip
    rows = []
    perf = performance.set_index(["model", "set"])
    for control, (model, kind) in controls.items():
        for set_name in performance.set[performance.model == control].unique():
            if (model, set_name) not in perf.index:
                continue
            c, m = perf.loc[(control, set_name)], perf.loc[(model, set_name)]
            pair = delong[(delong.set == set_name) & (delong.model_a == model)
                          & (delong.model_b == control)]  # fmt: skip
            p_value = float(pair.p_value.iloc[0]) if len(pair) and "p_value" in pair else np.nan
            auc_c, low_m = c.get("auc", np.nan), m.get("auc_ci_low", np.nan)
            flag = bool(np.isfinite(auc_c) and np.isfinite(low_m) and auc_c >= low_m)
            warning = (f"{control} ({kind}) reaches the CI of {model} on the {set_name} set "
                       f"(AUC {auc_c:.3f} vs {m.auc:.3f}, lower bound {low_m:.3f}): "
                       f"{CONTROL_MEANING.get(kind, 'the model may not be learning the ROI')}"
                       if flag else "")  # fmt: skip
            rows.append({
                "control": control, "kind": kind, "model": model, "set": set_name,
                "estimate": c.get("estimate", ""), "auc_control": auc_c,
                "auc_control_ci_low": c.get("auc_ci_low", np.nan),
                "auc_control_ci_high": c.get("auc_ci_high", np.nan),
                "auc_model": m.get("auc", np.nan), "auc_model_ci_low": low_m,
                "auc_model_ci_high": m.get("auc_ci_high", np.nan), "delong_p": p_value,
                "flag": flag, "warning": warning, "note": _below_chance(c, kind),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _below_chance(row: pd.Series, kind: str) -> str:
    """A control whose AUC CI lies wholly below 0.5 learned the outcome's reverse: for a
    permuted outcome, its few features were picked at random and one of them predicts
    (the sign is a coin toss); the CI is that of this one fitted model, not of the spread
    over permutations, which is wider."""
    if not row.get("auc_ci_high", np.nan) < 0.5:
        return ""
    why = (
        " (the permutation picked predictive features with the wrong sign; another "
        "permutation scatters as far the other way)"
        if kind == "permuted outcome"
        else ""
    )
    return f"below chance: the AUC's CI lies under 0.5{why}"


def calibration_table(
    scores: pd.DataFrame,
    groups: int = 10,
    conf_level: float = 0.95,
    column: str = "prob",
    apparent: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Per model and set, of the probabilities in ``column``: calibration intercept and
    slope with Wald CIs, calibration-in-the-large with its CI, Brier, Spiegelhalter's z
    and p, ICI, E50, E90 and Emax, Hosmer-Lemeshow. ``note`` says why a number is missing
    or not interpretable (``apparent`` maps a set to the reason its calibration is
    apparent, e.g. the set the probabilities were recalibrated on); ``hl_note`` why
    the Hosmer-Lemeshow test could not be done."""
    rows = []
    for set_name, model, frame in _groups(scores):
        y, p = frame.label.to_numpy().astype(int), frame[column].to_numpy()
        row = {"model": model, "set": set_name, "estimate": estimate_of(set_name),
               "brier": float(np.mean((p - y) ** 2))}  # fmt: skip
        note = class_note(y) or near_constant(p) or (apparent or {}).get(set_name)
        if class_note(y) is None:
            try:
                c = calibration(y, p, conf_level)
                row |= {k: v for k, v in asdict(c).items() if k != "brier"}
            except ValueError as exc:
                note = str(exc)
            try:
                hl = hosmer_lemeshow(y, p, groups)
                row |= {"hl_statistic": hl.statistic, "hl_df": hl.df, "hl_p_value": hl.p_value,
                        "hl_note": _hl_note(y, p, hl.df + 2, hl.statistic)}  # fmt: skip
            except ValueError as exc:
                row["hl_note"] = f"Hosmer-Lemeshow not computed: {exc}"
        rows.append(row | {"note": note or ""})
    return pd.DataFrame(rows)


def _hl_note(y: np.ndarray, p: np.ndarray, formed: int, statistic: float) -> str:
    """Why a Hosmer-Lemeshow result should not be read: an undefined statistic (a group
    expects no case of a class: probabilities of exactly 0 or 1), or too few expected
    cases per group for its chi-square approximation (fewer than 5 on average)."""
    if not np.isfinite(statistic):
        return ("Hosmer-Lemeshow undefined: a group expects no case of one class "
                "(probabilities of exactly 0 or 1)")  # fmt: skip
    expected = min(float(p.sum()), float((1 - p).sum())) / formed
    if expected < 5:
        return (f"Hosmer-Lemeshow unreliable: {expected:.1f} expected cases of the rarer "
                f"class per group (fewer than 5) in {len(y)} cases")  # fmt: skip
    return ""


def reclassification_table(
    scores: pd.DataFrame, cutoffs: list[float] | None = None, pairs: Pairs = None
) -> pd.DataFrame:
    """Every pair of models (of ``pairs``) on every set: continuous NRI (events,
    non-events, total) and IDI of model a against model b (the reference), with standard
    errors, z and p, as Hmisc::improveProb(b, a, y); with ``cutoffs`` (risk category
    bounds) also the categorical NRI (``cat_*``). A pair that cannot be compared keeps a
    note."""
    rows = []
    for set_name, a, b, frame, labels, paired in _pairs(scores, pairs):
        wide = frame.pivot(index="case_id", columns="model", values="prob")
        y = labels.loc[wide.index].to_numpy().astype(int)
        row: dict[str, Any] = {"set": set_name, "estimate": estimate_of(set_name),
                               "model_a": a, "model_b": b}  # fmt: skip
        try:
            r = improve_prob(y, wide[b], wide[a])
        except ValueError as exc:
            rows.append(row | {"note": "; ".join(filter(None, (str(exc), paired)))})
            continue
        row |= {f: getattr(r, f) for f in ("n_events", "n_nonevents", "nri", "nri_se", "nri_z",
                                          "nri_p", "nri_events", "nri_events_se",
                                          "nri_nonevents", "nri_nonevents_se", "idi",
                                          "idi_se", "idi_z", "idi_p")}  # fmt: skip
        if cutoffs:
            c = categorical_nri(y, wide[b], wide[a], cutoffs)
            row |= {"cat_cutoffs": " ".join(f"{x:g}" for x in cutoffs), "cat_nri": c.nri,
                    "cat_nri_se": c.nri_se, "cat_nri_p": c.nri_p,
                    "cat_nri_events": c.nri_events, "cat_nri_nonevents": c.nri_nonevents,
                    "cat_up_events": c.up_events, "cat_down_events": c.down_events,
                    "cat_up_nonevents": c.up_nonevents,
                    "cat_down_nonevents": c.down_nonevents}  # fmt: skip
        rows.append(row | {"note": paired})
    return pd.DataFrame(rows)


def net_benefit_difference_table(
    scores: pd.DataFrame,
    thresholds: np.ndarray,
    n_boot: int = 0,
    seed: int = 0,
    conf_level: float = 0.95,
    pairs: Pairs = None,
) -> pd.DataFrame:
    """Every pair of models (of ``pairs``) on every set: net benefit of model a minus
    model b over the threshold grid, with a paired percentile bootstrap band (whole cases
    resampled, both models' risks together)."""
    frames = []
    for set_name, a, b, frame, labels, _ in _pairs(scores, pairs):
        wide = frame.pivot(index="case_id", columns="model", values="prob")
        y = labels.loc[wide.index]
        diff = net_benefit_difference(y, wide[a], wide[b], thresholds, n_boot, seed, conf_level)
        frames.append(diff.assign(set=set_name, model_a=a, model_b=b))
    columns = ["set", "model_a", "model_b", "threshold", "difference", "ci_low", "ci_high"]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


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


def calibration_groups_table(scores: pd.DataFrame, groups: int = 10) -> pd.DataFrame:
    """Per model and set: the observed proportion of events in each group of predicted
    risk (:func:`fusion.stats.calibration.risk_groups`, the Hosmer-Lemeshow groups):
    group, n, mean predicted probability, observed proportion. The report plots these
    points; it computes none of its own."""
    from fusion.stats.calibration import risk_groups

    frames = []
    for set_name, model, frame in _groups(scores):
        table = pd.DataFrame({"g": risk_groups(frame.prob, groups), "p": frame.prob.to_numpy(),
                              "y": frame.label.to_numpy()})  # fmt: skip
        agg = table.groupby("g").agg(n=("y", "size"), predicted=("p", "mean"),
                                     observed=("y", "mean")).reset_index()  # fmt: skip
        frames.append(agg.rename(columns={"g": "group"}).assign(set=set_name, model=model))
    columns = ["set", "model", "group", "n", "predicted", "observed"]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


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


def sample_size_table(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    nagelkerke_r2: float | None = None,
    cox_snell_r2: float | None = None,
    c_statistic: float | None = None,
    shrinkage: float = 0.9,
) -> pd.DataFrame:
    """Per model: Riley et al.'s minimum training-set size (fusion.stats.sample_size)
    for the candidate parameters the model saw (``n_after_constant_and_empty`` of
    ``summary``: every column after one-hot coding that the supervised steps considered)
    and the training set's prevalence, beside the training set it had; ``adequate`` is
    False when the training set is smaller. A model without a computable size keeps a
    note."""
    from fusion.stats.sample_size import riley_binary

    rows = []
    for record in summary.to_dict("records"):
        model = record["model"]
        train = scores[(scores.model == model) & (scores.set == "train")]
        n, events = len(train), int(train.label.sum())
        parameters = int(record.get("n_after_constant_and_empty", record.get("n_input", 0)))
        epp = events / parameters if parameters else np.nan
        row: dict[str, Any] = {"model": model, "parameters": parameters, "n_train": n,
                               "events_train": events, "epp_train": epp}  # fmt: skip
        try:
            size = riley_binary(parameters, events / n if n else float("nan"), cox_snell_r2,
                                c_statistic, nagelkerke_r2, shrinkage)  # fmt: skip
        except ValueError as exc:
            rows.append(row | {"note": str(exc)})
            continue
        stacked = "-score" in str(record.get("features", ""))
        rows.append(row | {
            "prevalence": size.prevalence, "r2_cs": size.r2_cs, "max_r2_cs": size.max_r2_cs,
            "r2_source": size.r2_source, "n_shrinkage": size.n_shrinkage,
            "n_optimism": size.n_optimism, "n_intercept": size.n_intercept,
            "n_required": size.n_required, "events_required": size.events_required,
            "epp_required": size.epp_required, "adequate": n >= size.n_required,
            "note": "an upstream model's score counts as one parameter here; the features "
                    "behind it count in that model's own row" if stacked else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def subgroup_table(
    scores: pd.DataFrame, groups: pd.DataFrame, conf_level: float = 0.95
) -> pd.DataFrame:
    """Performance within subgroups (TRIPOD+AI items 14 and 23b: fairness, heterogeneity).

    ``groups`` is indexed by case_id with one column per subgroup variable (sex,
    institution...). Per set, model, variable and level: cases, events, observed event
    rate, mean predicted risk, their ratio O/E (calibration-in-the-large; 1 is perfect)
    and the AUC with its DeLong CI (pROC's ci.auc). A level with fewer than two cases of
    a class has no CI, and ``note`` says why; numbers within small subgroups are
    imprecise, so the CIs matter more than the point estimates."""
    rows = []
    frame = scores.join(groups, on="case_id")
    for variable in groups.columns:
        for (set_name, model, level), part in frame.groupby(
            ["set", "model", variable], sort=False, dropna=False
        ):
            y, p = part.label.to_numpy().astype(int), part.prob.to_numpy()
            row: dict[str, Any] = {
                "set": set_name, "estimate": estimate_of(set_name), "model": model,
                "subgroup": variable, "level": "missing" if pd.isna(level) else str(level),
                "cases": len(y), "events": int(y.sum()), "observed_rate": float(y.mean()),
                "mean_risk": float(p.mean()),
                "o_e_ratio": float(y.mean() / p.mean()) if p.mean() > 0 else np.nan,
            }  # fmt: skip
            note = class_note(y)
            if note is None:
                try:
                    a = roc_auc(y, part.score.to_numpy(), conf_level)
                    row |= {"auc": a.auc, "auc_ci_low": a.ci_low, "auc_ci_high": a.ci_high}
                except ValueError as exc:
                    note = str(exc)
            rows.append(row | {"note": note or ""})
    return pd.DataFrame(rows)


def statistics_tables(
    scores: pd.DataFrame,
    thresholds: dict[str, float],
    evaluation: EvaluationSpec,
    seed: int,
    apparent: dict[str, str] | None = None,
    pairs: Pairs = None,
) -> dict[str, pd.DataFrame]:
    """Every statistics table of the scores, by name: performance, DeLong, calibration
    and its curves, decision curves and their pairwise differences, reclassification,
    ROC points; external institutions pooled besides one by one. ``apparent``: sets whose
    calibration is apparent (fitted on them), with the reason (see :func:`calibration_table`).
    ``seed``: the study's; the bootstraps draw from its ``bootstrap`` stream. ``pairs``:
    the model pairs the comparison tables hold (None: every pair)."""
    ev = evaluation
    seed = stream(seed, "bootstrap")
    scores = with_pooled_external(scores)
    lo, hi, step = ev.dca_thresholds
    grid = np.round(np.arange(lo, hi + 1e-9, step), 6)
    return {
        "performance": performance_table(scores, thresholds, ev.conf_level, ev.bootstrap, seed),
        "delong": delong_table(scores, ev.conf_level, pairs),
        "calibration": calibration_table(scores, conf_level=ev.conf_level, apparent=apparent),
        "calibration_curve": calibration_curve_table(scores, ev.conf_level),
        "calibration_groups": calibration_groups_table(scores),
        "net_benefit": net_benefit_table(scores, grid, ev.bootstrap, seed, ev.conf_level),
        "net_benefit_difference": net_benefit_difference_table(
            scores, grid, ev.bootstrap, seed, ev.conf_level, pairs
        ),
        "reclassification": reclassification_table(scores, ev.risk_thresholds, pairs),
        "roc_points": roc_table(scores),
    }


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
