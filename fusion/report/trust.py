"""The report's "Robustness, harmonisation and negative controls" part: the ICC of the
radiomics features across the ROI perturbations, where ComBat was fitted and what it
moved, and the negative controls beside their real models (from the tables the models
and statistics stages wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fusion.config import Study
from fusion.report import figures as figs
from fusion.report.format import html_table

MAX_FEATURES_DRAWN = 40


def robustness_figure(table: pd.DataFrame, kind: str, min_ci_low: float,
                      min_icc: float) -> plt.Figure:  # fmt: skip
    """Each feature's ICC with its CI (the ``MAX_FEATURES_DRAWN`` least robust and most
    robust when there are more), kept ones in blue, with the study's two thresholds."""
    shown = table.dropna(subset=["icc"]).sort_values("ci_low", kind="stable")
    if len(shown) > MAX_FEATURES_DRAWN:
        half = MAX_FEATURES_DRAWN // 2
        shown = pd.concat([shown.head(half), shown.tail(half)])
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.17 * len(shown)))
    y = np.arange(len(shown))
    colour = [figs.COLOURS[0] if kept else figs.COLOURS[3] for kept in shown.robust.astype(bool)]
    ax.errorbar(shown.icc, y, xerr=[shown.icc - shown.ci_low, shown.ci_high - shown.icc],
                fmt="none", ecolor=colour, elinewidth=1)  # fmt: skip
    ax.scatter(shown.icc, y, c=colour, s=12, zorder=3)
    ax.axvline(min_ci_low, ls=":", c="grey", lw=1)
    ax.axvline(min_icc, ls="--", c="grey", lw=1)
    ax.set_yticks(y, shown.feature.str.removeprefix("original_"), fontsize=6)
    ax.set_xlabel(f"{kind} across the drawn ROI and its perturbations (95% CI)")
    ax.set_xlim(min(-0.05, float(shown.ci_low.min()) - 0.05), 1.02)
    ax.set_title(f"kept (blue): lower CI bound ≥ {min_ci_low:g} (dotted) or ICC ≥ {min_icc:g} "
                 "(dashed)", fontsize=8)  # fmt: skip
    return fig


def harmonisation_figure(examples: pd.DataFrame) -> plt.Figure:
    """Per feature, its values by site before and after ComBat (training cases filled,
    other sets open): boxes of the training cases, every case as a dot."""
    features = list(dict.fromkeys(examples.feature))
    sites = sorted(examples.site.astype(str).unique())
    fig, axes = plt.subplots(len(features), 2, figsize=(7, 1.9 * len(features)), squeeze=False)
    for row, feature in enumerate(features):
        part = examples[examples.feature == feature]
        for col, when in enumerate(("before", "after")):
            ax = axes[row, col]
            train = part[part.set == "train"]
            ax.boxplot([train[when][train.site.astype(str) == s] for s in sites],
                       positions=range(len(sites)), widths=0.5, showfliers=False)  # fmt: skip
            for i, site in enumerate(sites):
                mine = part[part.site.astype(str) == site]
                held = mine.set != "train"
                jitter = np.linspace(-0.15, 0.15, len(mine)) if len(mine) > 1 else [0.0]
                ax.scatter(i + np.asarray(jitter)[~held.to_numpy()], mine[when][~held], s=6,
                           c=[figs.COLOURS[i % 10]])  # fmt: skip
                ax.scatter(i + np.asarray(jitter)[held.to_numpy()], mine[when][held], s=8,
                           facecolors="none", edgecolors=[figs.COLOURS[i % 10]])  # fmt: skip
            ax.set_xticks(range(len(sites)), sites)
            name = feature.split(":")[-1].removeprefix("original_")
            ax.set_title(f"{name}: {when} ComBat", fontsize=7)
    fig.tight_layout()
    return fig


def trust_context(study: Study, folder: Path, tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The template's ``trust`` dict (empty when the study has none of the three): HTML
    tables, inline figures and the sentences that say where each thing was fitted."""
    out: dict[str, Any] = {}
    figures = folder / "figures"
    robustness = tables.get("feature_robustness", pd.DataFrame())
    spec = study.perturbations
    if spec is not None and not robustness.empty:
        kept = int(robustness.robust.sum())
        robust_models = [m for m, s in study.models.items() if s.robust]
        out["robustness"] = {
            "text": f"{len(spec.variants)} perturbations of the drawn ROI "
            f"({', '.join(spec.roi_names())}); {spec.icc} on the {int(robustness.cases.max())} "
            f"training cases: {kept} of {len(robustness)} radiomics features are robust "
            f"(lower 95% CI bound ≥ {spec.min_ci_low:g} or ICC ≥ {spec.min_icc:g}). Models "
            f"that keep only those: {', '.join(robust_models) or 'none'}; each CV fold "
            "recomputes the ICC on its own training part.",
            "svg": figs.save(robustness_figure(robustness, spec.icc, spec.min_ci_low,
                                               spec.min_icc), figures, "feature_robustness"),
            "table": html_table(pd.concat([robustness.head(10), robustness.tail(10)])
                                .drop_duplicates("feature"), 3),
        }  # fmt: skip
    harmonisation = tables.get("harmonisation", pd.DataFrame())
    if study.harmonisation is not None and not harmonisation.empty:
        by = "cohort.columns.site" if study.cohort.columns.site else "the institution"
        models = list(dict.fromkeys(harmonisation.model))
        examples = tables.get("harmonisation_examples", pd.DataFrame())
        out["harmonisation"] = {
            "text": f"ComBat (empirical Bayes location and scale, Johnson et al. 2007; "
            f"Fortin et al. 2018) on the {', '.join(study.harmonisation.blocks)} features of "
            f"{', '.join(models)}, with the site from {by}"
            + (f", preserving {', '.join(study.harmonisation.covariates)}"
               if study.harmonisation.covariates else "")
            + ". It was fitted inside each model's Pipeline on the training cases only "
            "(the final fit on all of them, each CV fold on its own training part); test "
            "and external cases are harmonised with those parameters and never shape them. "
            + ("A site with no training case is an error."
               if study.harmonisation.unseen == "error" else "A site with no training case "
               "has its location and scale estimated from its own cases' features (never "
               "their outcomes)."),
            "table": html_table(harmonisation.drop(columns=["fitted_on"]), 3),
            "svg": figs.save(harmonisation_figure(examples), figures, "harmonisation")
            if not examples.empty else "",
        }  # fmt: skip
    controls = tables.get("negative_controls", pd.DataFrame())
    if not controls.empty:
        out["controls"] = {
            "table": html_table(controls.drop(columns=["warning"]), 3),
            "warnings": [w for w in controls.warning.fillna("") if w],
        }
    return out
