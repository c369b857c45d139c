"""What the outcome-model and image-classifier reports say about model evaluation, in
one place: performance and calibration with their CIs, reclassification, net-benefit
differences, the sample-size check, and the warnings they raise. Formats the statistics
tables; computes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.report import figures as figs
from fusion.report.format import p_text


def ci_text(value: Any, low: Any = None, high: Any = None, digits: int = 3) -> str:
    """'0.824 (0.590–0.938)', or '-0.44 (-0.65 to -0.23)' when a bound is negative (a dash
    beside a minus sign misreads); the value alone when its CI is undefined; '–' for none."""
    if value is None or pd.isna(value):
        return "–"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    joint = "\u00a0to\u00a0" if min(low, high) < 0 else "–"  # no-break spaces: one line
    return f"{value:.{digits}f}\u00a0({low:.{digits}f}{joint}{high:.{digits}f})"


def _with_ci(frame: pd.DataFrame, column: str, digits: int = 3) -> list[str]:
    low, high = f"{column}_ci_low", f"{column}_ci_high"
    return [ci_text(r.get(column), r.get(low), r.get(high), digits)
            for r in frame.to_dict("records")]  # fmt: skip


def notes(frame: pd.DataFrame, column: str = "note") -> pd.Series:
    """A notes column as text: read back from CSV, an all-empty one is float NaN."""
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].astype(object).where(frame[column].notna(), "")


def performance_shown(perf: pd.DataFrame) -> pd.DataFrame:
    """The performance table as the report shows it: every estimate with its 95% CI."""
    if perf.empty:
        return perf
    shown = pd.DataFrame({
        "model": perf.model, "set": perf.set, "estimate": perf.estimate, "n": perf.n,
        "positives": perf.positives, "AUC (95% CI)": _with_ci(perf, "auc"),
        "apparent AUC": perf.get("auc_apparent", pd.Series(np.nan, index=perf.index)),
        "threshold (p)": perf.threshold,
        "sensitivity": _with_ci(perf, "sensitivity"), "specificity": _with_ci(perf, "specificity"),
        "PPV": _with_ci(perf, "ppv"), "NPV": _with_ci(perf, "npv"),
        "accuracy": _with_ci(perf, "accuracy"), "Brier": _with_ci(perf, "brier"),
        "scaled Brier": perf.get("brier_scaled", pd.Series(np.nan, index=perf.index)),
        "probabilities": [f"{r['prob_min']:.3f}–{r['prob_max']:.3f} (SD {r['prob_sd']:.3f})"
                          if pd.notna(r.get("prob_sd")) else "–"
                          for r in perf.to_dict("records")],
        "note": notes(perf),
    })  # fmt: skip
    return shown


def calibration_shown(cal: pd.DataFrame) -> pd.DataFrame:
    """The calibration table as the report shows it."""
    if cal.empty:
        return cal
    rows = cal.to_dict("records")
    return pd.DataFrame({
        "model": cal.model, "set": cal.set,
        "intercept (95% CI)": _with_ci(cal, "intercept", 2),
        "slope (95% CI)": _with_ci(cal, "slope", 2),
        "calibration-in-the-large": _with_ci(cal, "citl", 2),
        "Brier": cal.brier,
        "Spiegelhalter z (p)": [
            f"{r['spiegelhalter_z']:.2f} ({p_text(r['spiegelhalter_p'])})"
            if pd.notna(r.get("spiegelhalter_z")) else "–" for r in rows],
        "ICI": cal.get("ici"), "E50": cal.get("e50"), "E90": cal.get("e90"),
        "Emax": cal.get("emax"),
        "Hosmer-Lemeshow p": [p_text(r.get("hl_p_value")) for r in rows],
        "note": [" ".join(t for t in (a, b) if t)
                 for a, b in zip(notes(cal), notes(cal, "hl_note"), strict=True)],
    })  # fmt: skip


def reclassification_shown(reclass: pd.DataFrame) -> pd.DataFrame:
    """NRI and IDI per pair with their 95% Wald CIs (estimate ± 1.96 SE) and p."""
    if reclass.empty or "nri" not in reclass.columns:
        return reclass
    z = 1.959963984540054

    def wald(column: str) -> list[str]:
        return [ci_text(r.get(column), r.get(column) - z * r.get(f"{column}_se"),
                        r.get(column) + z * r.get(f"{column}_se"))
                if pd.notna(r.get(f"{column}_se")) else ci_text(r.get(column))
                for r in reclass.to_dict("records")]  # fmt: skip

    shown = pd.DataFrame({
        "set": reclass.set, "model a": reclass.model_a, "against model b": reclass.model_b,
        "NRI events": wald("nri_events"), "NRI non-events": wald("nri_nonevents"),
        "NRI (95% CI)": wald("nri"), "NRI p": [p_text(v) for v in reclass.nri_p],
        "IDI (95% CI)": wald("idi"), "IDI p": [p_text(v) for v in reclass.idi_p],
    })  # fmt: skip
    if "cat_nri" in reclass.columns:
        shown["categorical NRI (95% CI)"] = wald("cat_nri")
    shown["note"] = notes(reclass)
    return shown


def sample_size_shown(size: pd.DataFrame) -> pd.DataFrame:
    if size.empty:
        return size
    columns = {
        "model": "model",
        "parameters": "candidate parameters",
        "n_train": "training n",
        "events_train": "training events",
        "epp_train": "events per parameter",
        "n_required": "minimum n (Riley)",
        "events_required": "minimum events",
        "n_shrinkage": "n: shrinkage 0.9",
        "n_optimism": "n: optimism 0.05",
        "n_intercept": "n: intercept ±0.05",
        "adequate": "adequate",
        "note": "note",
    }
    shown = size.reindex(columns=list(columns)).rename(columns=columns)
    shown["note"] = notes(size)
    return shown


def comparison_figures(nbd: pd.DataFrame, sets: list[str], folder: Path) -> list[str]:
    """One figure per held-out set: each model pair's net-benefit difference with its
    band. The training and validation sets' differences stay in the table: the decision
    rests on held-out cases, and each figure costs a second of every report."""
    if nbd.empty:
        return []
    held_out = [s for s in sets if s not in ("train", "validation") and (nbd.set == s).any()]
    return [figs.save(figs.net_benefit_difference_figure(nbd, s), folder, f"dca_difference_{s}")
            for s in held_out]  # fmt: skip


def evaluation_warnings(summary: pd.DataFrame, size: pd.DataFrame | None = None) -> list[str]:
    """Degenerate models and training sets below Riley et al.'s minimum (near-constant
    probabilities on a set are warned of from the calibration notes)."""
    out = []
    if "degenerate" in summary.columns:
        for row in summary[summary.degenerate.fillna(False).astype(bool)].itertuples():
            out.append(
                f"Model {row.model!r} is degenerate: every hyper-parameter candidate gave "
                "out-of-fold scores that barely vary (SD below evaluation.min_score_sd), so "
                "its probabilities hinge on the last digits of its scores. Do not report it "
                "as a model (model_tuning.csv lists the candidates)."
            )
    if size is not None and not size.empty and "adequate" in size.columns:
        small = size[size.adequate.astype(str).str.lower() == "false"]
        if len(small):
            first = small.iloc[0]
            needs = "; ".join(f"{r.model} {int(r.n_required)} ({r.parameters} candidate "
                              f"parameters, {r.epp_train:.2f} events per parameter)"
                              for r in small.itertuples())  # fmt: skip
            out.append(
                f"The training set ({first.n_train} cases, {first.events_train} events) is "
                f"smaller than Riley et al.'s minimum sample size for {len(small)} of "
                f"{len(size)} model(s): {needs}. Expect overfitting; penalisation (LASSO, "
                "the SVM's C) does not remove the need (see the sample-size table)."
            )
    return out


def sample_size_text(size: pd.DataFrame) -> str:
    """The methods sentence on sample size and events per candidate parameter."""
    if size.empty or "n_required" not in size.columns:
        return ""
    usable = size[size.n_required.notna()]
    if usable.empty:
        return ""
    epp = "; ".join(f"{r.model} {r.events_train}/{r.parameters} = {r.epp_train:.2f}"
                    for r in usable.itertuples())  # fmt: skip
    source = usable.r2_source.iloc[0]
    return (
        "Sample size. The minimum training-set size of each model was computed with the "
        "three criteria of Riley et al. (BMJ 2020; expected shrinkage 0.9, optimism in "
        "Nagelkerke's R2 at most 0.05, overall risk within ±0.05; as R's pmsampsize), from "
        "the candidate parameters each model's supervised steps saw and the training "
        f"prevalence, with the anticipated Cox-Snell R2 taken from {source}. Events per "
        f"candidate parameter in the training set: {epp}."
    )
