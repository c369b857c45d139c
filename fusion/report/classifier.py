"""The report of an image-classifier study: methods, cohort, training, performance with
DeLong comparisons, ROC / calibration / decision curves, and Grad-CAM galleries with
the localisation figures (energy in the lesion mask against chance, pointing game)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fusion.config import Study
from fusion.report import evaluation as ev_report
from fusion.report import figures as figs

OUTCOMES = {"TP": "true positives", "FP": "false positives", "FN": "false negatives"}


def methods_text(study: Study, cohort: pd.DataFrame, models: pd.DataFrame) -> list[str]:
    """The methods paragraphs, from the settings actually used."""
    spec = study.classifier
    weights = "; ".join(f"{r.model}: {r.weights}" for r in models.itertuples()
                        if isinstance(r.weights, str))  # fmt: skip
    has_patient = cohort.patient.fillna("").astype(str).str.len().gt(0).any()
    grouped = "grouped by patient" if has_patient else "case by case"
    aug = spec.augment
    parts = (f"rotation up to {aug.rotate_deg:g} degrees" if aug.rotate_deg else "",
             "horizontal flips" if aug.flip else "",
             f"zoom up to {aug.scale:.0%}" if aug.scale else "",
             f"contrast up to {aug.contrast:.0%}" if aug.contrast else "")  # fmt: skip
    augmentation = ", ".join(p for p in parts if p) or "none"
    train_share = 1 - spec.validation_size - spec.test_size
    weighting = (" with the positive class weighted by negatives/positives"
                 if spec.class_weights == "balanced" else "")  # fmt: skip
    return [
        f"Images were padded to a square and resized to {spec.image_size} x "
        f"{spec.image_size} pixels (DICOM after its modality and VOI LUT, MONOCHROME1 "
        "inverted), replicated to three channels and normalised with the ImageNet mean "
        "and standard deviation.",
        f"Cases were split into training, validation and test sets ({train_share:.0%}/"
        f"{spec.validation_size:.0%}/{spec.test_size:.0%} unless the manifest gave the split), "
        f"stratified by label and {grouped}; external institutions were held out entirely.",
        f"Architectures: {', '.join(spec.architectures)}, each with its classifier replaced "
        f"by one logit; initial weights {weights}. The head was trained alone for "
        f"{spec.freeze.head_epochs} epoch(s), then with the last {spec.freeze.train_blocks} "
        f"of 5 backbone blocks. Loss: binary cross-entropy"
        f"{weighting}"
        f"; Adam (learning rate {spec.learning_rate:g}), batch {spec.batch_size}, up to "
        f"{spec.max_epochs} epochs with early stopping on the validation "
        f"{spec.monitor.upper() if spec.monitor == 'auc' else 'loss'} (patience "
        f"{spec.patience}); the best epoch's weights were kept. Training augmentation: "
        f"{augmentation}; none at evaluation.",
        "Each model's probabilities were recalibrated on the validation set (Platt scaling "
        "of the network's logit, with Platt's smoothed targets): the recalibrated "
        "probabilities feed the calibration table, the decision curves and the threshold; "
        "the calibration of the raw sigmoid outputs is reported beside them. Each model's "
        "threshold was chosen on the validation set (Youden index on the recalibrated "
        "probabilities) and applied unchanged to the test set. AUCs have DeLong confidence "
        "intervals and the threshold metrics Wilson intervals; architectures and their "
        "ensemble (the mean of their recalibrated probabilities, recalibrated in turn) were "
        "compared on the same "
        "test cases with paired DeLong tests, NRI and IDI, and differences in net benefit.",
        "Grad-CAM maps of the positive logit were computed at the last convolutional block "
        "for every test case. Where a lesion mask exists, the share of the map's energy "
        "inside the mask (chance level: the mask's share of the image) and the pointing "
        "game (is the map's maximum inside the lesion?) measure whether the models look at "
        "the lesion.",
    ]


def training_figure(history: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for i, (model, part) in enumerate(history.groupby("model", sort=False)):
        colour = figs.COLOURS[i % 10]
        axes[0].plot(part.epoch, part.loss, color=colour, label=f"{model} training")
        axes[0].plot(part.epoch, part.val_loss, color=colour, linestyle="--",
                     label=f"{model} validation")  # fmt: skip
        axes[1].plot(part.epoch, part.val_auc, color=colour, marker="o", markersize=3,
                     label=model)  # fmt: skip
    axes[0].set(xlabel="epoch", ylabel="BCE loss", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="AUC", title="Validation AUC", ylim=(0.4, 1.01))
    for ax in axes:
        ax.legend(fontsize=7)
    return fig


def colour_bar_figure() -> plt.Figure:
    """The Grad-CAM overlays' colour scale ('jet', opacity following the map)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(4.2, 0.55))
    fig.colorbar(plt.cm.ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=ax,
                 orientation="horizontal")  # fmt: skip
    ax.set_xlabel("Grad-CAM, scaled to its maximum (0: no evidence, 1: strongest)", fontsize=8)
    ax.tick_params(labelsize=7)
    return fig


def localisation_figure(gradcam: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """Energy in the mask per positive test case against its chance level, and the
    pointing-game hit rate with its CI, per model."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    part = gradcam[gradcam.has_mask & (gradcam.label == 1) & ~gradcam.zero_map]
    models = list(dict.fromkeys(gradcam.model))
    for i, model in enumerate(models):
        rows = part[part.model == model]
        x = np.full(len(rows), i) + np.linspace(-0.15, 0.15, max(len(rows), 1))[: len(rows)]
        axes[0].scatter(x, rows.energy_in_mask, s=9, color=figs.COLOURS[i % 10], alpha=0.7)
        axes[0].scatter(x, rows.chance_energy, s=6, color="grey", marker="_")
    axes[0].set_xticks(range(len(models)), models)
    axes[0].set(ylabel="Grad-CAM energy in the lesion", ylim=(0, 1),
                title="Energy in mask (grey: chance)")  # fmt: skip
    rows = summary[summary.cases == "positives with a mask"].set_index("model").reindex(models)
    rate = rows.pointing_hit_rate.to_numpy(float)
    err = np.vstack([rate - rows.pointing_ci_low.to_numpy(float),
                     rows.pointing_ci_high.to_numpy(float) - rate]).clip(0)  # fmt: skip
    axes[1].bar(range(len(models)), rate, yerr=np.nan_to_num(err), capsize=4,
                color=[figs.COLOURS[i % 10] for i in range(len(models))])  # fmt: skip
    axes[1].set_xticks(range(len(models)), models)
    axes[1].set(ylabel="share of positives", ylim=(0, 1), title="Pointing game hit rate")
    return fig


def galleries(gradcam: pd.DataFrame, folder: Path, models: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model and outcome (TP, FP, FN): the overlays the stage drew, each with its
    probability and the model's threshold (the call is p against it)."""
    thresholds = dict(zip(models.model, models.threshold, strict=True)) \
        if "threshold" in models else {}  # fmt: skip
    out = []
    shown = gradcam[gradcam.gallery]
    for model, part in shown.groupby("model", sort=False):
        groups = []
        for outcome, title in OUTCOMES.items():
            items = []
            rows = part[part.outcome == outcome].sort_values(
                "prob", ascending=outcome == "FN"
            )  # the most confident mistakes first
            for row in rows.itertuples():
                png = folder / "figures" / "gradcam" / model / f"{row.case_id}.png"
                if not png.is_file():
                    continue
                if row.zero_map:
                    caption = "all-zero map: every channel argues against the positive class"
                elif pd.notna(row.energy_in_mask):
                    caption = (f"energy in lesion {row.energy_in_mask:.0%} (chance "
                               f"{row.chance_energy:.0%}), peak "
                               f"{'inside' if row.pointing_hit else 'outside'}")  # fmt: skip
                else:
                    caption = "no lesion mask"
                items.append({"case": row.case_id, "prob": row.prob, "caption": caption,
                              "zero": bool(row.zero_map),
                              "png": base64.b64encode(png.read_bytes()).decode()})  # fmt: skip
            groups.append({"title": title, "items": items})
        out.append({"model": model, "groups": groups, "threshold": thresholds.get(model)})
    return out


def warnings(models: pd.DataFrame, performance: pd.DataFrame, gradcam: pd.DataFrame,
             summary: pd.DataFrame) -> list[str]:  # fmt: skip
    out = []
    for row in models.itertuples():
        if row.model != "ensemble" and row.pretrained is False:
            out.append(f"{row.model} started from RANDOM weights, not pretrained "
                       f"({row.weights_warning or row.weights}).")  # fmt: skip
        if row.model != "ensemble" and row.stopped_early is False:
            out.append(f"{row.model} reached the epoch limit without early stopping: it may "
                       "be under-trained.")  # fmt: skip
    test = performance[performance.set == "test"]
    for row in test.itertuples():
        if pd.notna(getattr(row, "auc_ci_low", np.nan)) and row.auc_ci_low <= 0.5:
            out.append(f"{row.model}: the test AUC's CI includes 0.5.")
    if not gradcam.empty:
        for model, part in gradcam.groupby("model", sort=False):
            zero = int(part.zero_map.sum())
            if zero:
                out.append(f"{model}: {zero} of {len(part)} test Grad-CAM maps are all zero "
                           "(negative evidence clipped by the ReLU); they are labelled, not "
                           "drawn blank, and left out of the localisation numbers.")  # fmt: skip
    for row in summary[summary.cases == "positives with a mask"].itertuples():
        rows, cols = (int(v) for v in str(row.map_cells).split("x"))
        if min(rows, cols) < 7:
            out.append(f"{row.model}: its Grad-CAM maps have {row.map_cells} cells at this "
                       "image size (ImageNet-sized inputs give 7x7); they can point to a "
                       "region of the image, not to a lesion smaller than a cell, so the "
                       "localisation numbers are coarse.")  # fmt: skip
        out += _energy_warning(row)
    return out


def _energy_warning(row: Any) -> list[str]:
    """What the Grad-CAM energy in the lesion says against chance (the mask's share of
    the image), judged by its CI: below chance, indistinguishable from it, or above."""
    if pd.isna(row.energy_ci_high) or pd.isna(row.chance_energy):
        return []
    energy = (f"{row.energy_in_mask:.3f} (CI {row.energy_ci_low:.3f}-{row.energy_ci_high:.3f}, "
              f"{row.n_measured} maps)")  # fmt: skip
    if row.energy_ci_high < row.chance_energy:
        return [f"{row.model}: Grad-CAM energy in the lesion, {energy}, is BELOW chance "
                f"({row.chance_energy:.3f}): the maps avoid the lesion; the model relies on "
                "something else in the image."]  # fmt: skip
    if row.energy_ci_low <= row.chance_energy:
        return [f"{row.model}: Grad-CAM energy in the lesion, {energy}, is not distinguishable "
                f"from chance ({row.chance_energy:.3f}): the maps do not show that the model "
                "looks at the lesion."]  # fmt: skip
    return []


def classifier_context(study: Study, folder: Path, read: Any, html_table: Any) -> dict[str, Any]:
    """Everything the template shows; ``read`` and ``html_table`` are html.py's."""
    tables, figures = folder / "tables", folder / "figures"
    t = {name: read(tables, name) for name in (
        "cohort", "qc", "scores", "performance", "delong", "calibration", "calibration_curve",
        "calibration_groups", "calibration_raw", "net_benefit", "net_benefit_difference",
        "reclassification",
        "roc_points", "cnn_models", "cnn_training", "gradcam",
        "gradcam_localisation")}  # fmt: skip
    perf, cohort = t["performance"], t["cohort"]
    qc = t["qc"]
    failed = qc[qc.status == "fail"] if not qc.empty else qc
    flow = [("listed in the manifest", len(qc), ""), ("excluded by QC", len(failed), "")]
    for set_name, part in cohort[cohort.included].groupby("set", sort=False):
        flow.append((f"{set_name} set", len(part),
                     f"{int(part.label.sum())} positive ({part.label.mean():.1%})"))  # fmt: skip
    sets = list(dict.fromkeys(perf.set))
    shown = ev_report.performance_shown(perf).drop(columns=["estimate", "apparent AUC"])
    localisation = t["gradcam_localisation"]
    return {
        "methods": methods_text(study, cohort, t["cnn_models"]),
        "warnings": warnings(t["cnn_models"], perf, t["gradcam"], localisation),
        "flow": html_table(pd.DataFrame(flow, columns=["step", "cases", "outcome"])),
        "qc_problems": html_table(qc[qc.status != "ok"][["case_id", "status", "problems"]])
        if not qc.empty and (qc.status != "ok").any() else "",
        "models": html_table(t["cnn_models"].drop(columns=["weights_sha256", "weights_warning"],
                                                  errors="ignore")),
        "training_svg": figs.save(training_figure(t["cnn_training"]), figures, "cnn_training"),
        "performance": html_table(shown),
        "delong": html_table(t["delong"].drop(columns=["estimate"], errors="ignore")),
        "calibration": html_table(ev_report.calibration_shown(t["calibration"])),
        "calibration_raw": html_table(ev_report.calibration_shown(t["calibration_raw"])),
        "reclassification": html_table(ev_report.reclassification_shown(t["reclassification"])),
        "dca_difference": ev_report.comparison_figures(t["net_benefit_difference"], sets, figures),
        "roc": [figs.save(figs.roc_figure(t["roc_points"], perf, s), figures, f"roc_{s}")
                for s in sets if s in set(t["roc_points"].set)],
        "calibration_svgs": [figs.save(figs.calibration_figure(
            t["calibration_groups"], t["calibration"], t["calibration_curve"], s), figures,
            f"calibration_{s}") for s in sets],
        "dca": [figs.save(figs.dca_figure(t["net_benefit"], s), figures, f"dca_{s}")
                for s in sets],
        "localisation": html_table(localisation) if not localisation.empty else "",
        "localisation_svg": figs.save(localisation_figure(t["gradcam"], localisation), figures,
                                      "gradcam_localisation")
        if not localisation.empty else "",
        "galleries": galleries(t["gradcam"], folder, t["cnn_models"])
        if not t["gradcam"].empty else [],
        "colour_bar_svg": figs.save(colour_bar_figure(), figures, "gradcam_colour_bar")
        if not t["gradcam"].empty else "",
    }  # fmt: skip


def provenance_models(tables: Path) -> list[dict[str, Any]] | None:
    """The networks' weights and checkpoints, for provenance.json."""
    path = tables / "cnn_models.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    frame = frame[frame.weights.notna()]  # the ensemble has no weights of its own
    keep = [c for c in ("model", "weights", "pretrained", "best_epoch", "weights_sha256")
            if c in frame.columns]  # fmt: skip
    return json.loads(frame[keep].to_json(orient="records"))
