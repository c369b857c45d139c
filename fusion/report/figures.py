"""Report figures with matplotlib: saved as SVG and PNG, and returned as SVG text to
inline in the HTML. Deterministic output: no dates in the files, fixed hash salt."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fusion.atomic import atomic_path  # noqa: E402

plt.rcParams.update(
    {"svg.fonttype": "none", "svg.hashsalt": "fusion", "font.size": 9, "axes.grid": True,
     "grid.alpha": 0.3, "figure.dpi": 100}
)  # fmt: skip
COLOURS = plt.get_cmap("tab10").colors


def save(fig: plt.Figure, folder: Path, name: str) -> str:
    """Write ``name``.svg and ``name``.png under ``folder``; return the SVG text."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    with atomic_path(folder / f"{name}.svg") as tmp:
        tmp.write_text(svg, encoding="utf-8")
    with atomic_path(folder / f"{name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    # inline copy: no XML prolog, no RDF metadata block (its namespace URLs are noise)
    return re.sub(r"<metadata>.*?</metadata>", "", svg[svg.index("<svg") :], flags=re.S)


def set_title(set_name: str) -> str:
    """'test set', or 'training set (cross-validated)': say how training numbers were made."""
    return "training set (cross-validated)" if set_name == "train" else f"{set_name} set"


def roc_figure(roc: pd.DataFrame, performance: pd.DataFrame, set_name: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    part = roc[roc.set == set_name]
    perf = performance[performance.set == set_name].set_index("model")
    for i, (model, curve) in enumerate(part.groupby("model", sort=False)):
        auc = perf.loc[model]
        ci = (f" ({auc.auc_ci_low:.3f}-{auc.auc_ci_high:.3f})"
              if pd.notna(auc.get("auc_ci_low")) else "")  # fmt: skip
        label = f"{model}: AUC {auc.auc:.3f}{ci}"
        ax.step(curve.fpr, curve.tpr, where="post", color=COLOURS[i % 10], label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC, {set_title(set_name)}")  # fmt: skip
    ax.legend(loc="lower right", fontsize=7)
    return fig


def dca_figure(nb: pd.DataFrame, set_name: str) -> plt.Figure:
    """Net benefit over the study's threshold range (evaluation.dca_thresholds)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    part = nb[nb.set == set_name]
    first = part[part.model == part.model.iloc[0]]
    for i, (model, curve) in enumerate(part.groupby("model", sort=False)):
        ax.plot(curve.threshold, curve.net_benefit, color=COLOURS[i % 10], label=model)
        if "nb_ci_low" in curve.columns:  # bootstrap band
            ax.fill_between(curve.threshold, curve.nb_ci_low, curve.nb_ci_high,
                            color=COLOURS[i % 10], alpha=0.08, linewidth=0)  # fmt: skip
    ax.plot(first.threshold, first.treat_all, color="black", linestyle="--", label="treat all")
    ax.plot(first.threshold, first.treat_none, color="grey", linestyle="-", label="treat none")
    top = max(float(first.treat_all.max()), float(part.net_benefit.max()), 0.05)
    ax.set(xlabel="threshold probability", ylabel="net benefit",
           xlim=(float(part.threshold.min()), float(part.threshold.max())),
           ylim=(-0.05, top * 1.1), title=f"Decision curves, {set_title(set_name)}")  # fmt: skip
    ax.legend(fontsize=7)
    return fig


def net_benefit_difference_figure(nbd: pd.DataFrame, set_name: str) -> plt.Figure:
    """Per model pair, net benefit of model a minus model b over the threshold range,
    with its paired bootstrap band; above zero, model a does more good than model b."""
    part = nbd[nbd.set == set_name]
    pairs = list(dict.fromkeys(zip(part.model_a, part.model_b, strict=True)))
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.4 * nrows), squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    for ax, (a, b) in zip(axes.flat, pairs, strict=False):
        curve = part[(part.model_a == a) & (part.model_b == b)]
        ax.axhline(0, color="grey", linewidth=0.8)
        if curve.ci_low.notna().any():
            ax.fill_between(curve.threshold, curve.ci_low, curve.ci_high, color=COLOURS[0],
                            alpha=0.18, linewidth=0)  # fmt: skip
        ax.plot(curve.threshold, curve.difference, color=COLOURS[0])
        ax.set_title(f"{a} − {b}", fontsize=8)
    for ax in axes.flat[len(pairs) :]:
        ax.set_axis_off()
    for ax in axes.flat[: len(pairs)]:
        ax.tick_params(labelbottom=True)  # a panel above an empty slot keeps its axis
    for ax in axes.flat[max(len(pairs) - ncols, 0) : len(pairs)]:
        ax.set_xlabel("threshold probability")
    for ax in axes[:, 0]:
        ax.set_ylabel("Δ net benefit")
    fig.suptitle(f"Net benefit differences, {set_title(set_name)}", fontsize=9)
    fig.tight_layout()
    return fig


def calibration_figure(
    groups: pd.DataFrame,
    calibration: pd.DataFrame,
    curves: pd.DataFrame,
    set_name: str,
) -> plt.Figure:
    """Flexible (spline) calibration curve with its 95% band per model, and the grouped
    observed proportions (``calibration_groups.csv``: the Hosmer-Lemeshow groups of
    predicted risk) as points; every number comes from the statistics tables."""
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    part = groups[groups.set == set_name]
    cal = calibration[calibration.set == set_name].set_index("model")
    smooth = curves[curves.set == set_name] if not curves.empty else curves
    for i, (model, binned) in enumerate(part.groupby("model", sort=False)):
        colour = COLOURS[i % 10]
        c = cal.loc[model] if model in cal.index else None
        note = c.get("note") if c is not None else None
        has_note = isinstance(note, str) and note != ""  # empty notes read back as NaN
        if c is not None and pd.notna(c.get("slope")) and not has_note:
            label = (f"{model}: slope {c.slope:.2f}, intercept {c.intercept:.2f}, "
                     f"Brier {c.brier:.3f}")  # fmt: skip
        else:
            label = f"{model}: see note in the table"
        ax.plot(binned.predicted, binned.observed, linestyle="none", marker="o", markersize=3,
                color=colour,
                alpha=0.7)  # fmt: skip
        curve = smooth[smooth.model == model] if not smooth.empty else smooth
        if len(curve):
            ax.plot(curve.predicted, curve.observed, color=colour, label=label)
            ax.fill_between(curve.predicted, curve.ci_low, curve.ci_high, color=colour,
                            alpha=0.12, linewidth=0)  # fmt: skip
        else:
            ax.plot([], [], color=colour, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="predicted probability", ylabel="observed proportion", xlim=(0, 1),
           ylim=(0, 1), title=f"Calibration, {set_title(set_name)}")  # fmt: skip
    ax.legend(fontsize=6, loc="upper left")
    return fig


def lasso_cv_figure(cv: pd.DataFrame, model: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    log_lambda = np.log(cv["lambda"])
    ax.errorbar(log_lambda, cv.cv_deviance, yerr=cv.cv_se, fmt="o", markersize=3,
                color="firebrick", ecolor="grey", elinewidth=0.8, capsize=1.5)  # fmt: skip
    for flag, style, label in (("is_min", ":", "lambda.min"), ("is_1se", "--", "lambda.1se")):
        x = float(log_lambda[cv[flag]].iloc[0])
        ax.axvline(x, color="black", linestyle=style, linewidth=0.8, label=label)
    top = ax.secondary_xaxis("top")
    ticks = log_lambda.iloc[:: max(1, len(cv) // 8)]
    top.set_xticks(ticks, [str(n) for n in cv.nonzero.iloc[:: max(1, len(cv) // 8)]])
    top.set_xlabel("features selected")
    ax.set(xlabel="log(lambda)", ylabel="binomial deviance (CV)", title=f"LASSO CV, {model}")
    ax.legend(fontsize=7)
    return fig


def coefficient_figure(selected: pd.DataFrame, model: str) -> plt.Figure:
    shown = selected.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(5.4, 0.8 + 0.22 * max(len(shown), 1)))
    colours = ["firebrick" if c > 0 else "steelblue" for c in shown.coefficient]
    ax.barh(range(len(shown)), shown.coefficient, color=colours)
    ax.set_yticks(range(len(shown)), [f.split(":", 1)[-1][:48] for f in shown.feature],
                  fontsize=7)  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set(xlabel="LASSO coefficient (standardised)", title=f"Selected features, {model}")
    return fig


def scale_bar(ax: Any, spacing_mm: float, shape: tuple[int, int], mm: float = 10) -> None:
    """A white ``mm`` bar in the lower left corner of an image of pixel ``spacing_mm``."""
    length = mm / spacing_mm
    y, x = shape[0] - 4, 3
    ax.plot([x, x + length], [y, y], color="white", linewidth=2.5, solid_capstyle="butt")
    ax.text(x + length / 2, y - 2, f"{mm:g} mm", color="white", fontsize=8, ha="center",
            va="bottom")  # fmt: skip
