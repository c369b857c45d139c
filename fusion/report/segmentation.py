"""The report of a segmentation study: methods, per-set and per-institution metrics, CV,
preprocessing variants, lesion-wise FROC, case-level detection, training curves and a
gallery of the best, median and worst held-out cases. Every number comes from the
``tables/seg_*.csv`` the segmentation stage wrote."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.config import Study
from fusion.report import figures as figs

MATCHING_RULE = (
    "Lesions are the connected components (26-connectivity) of the reference and of the "
    "predicted mask; a predicted lesion's confidence is its highest voxel probability. At an "
    "IoU threshold t a prediction hits a reference lesion when their voxel IoU is at least t. "
    "Each reference lesion counts once, found at the confidence of its best hit; further hits "
    "on the same lesion are double detections, not false positives; every prediction that "
    "hits no lesion is a false positive. Sensitivity is over all reference lesions, false "
    "positives are per scan over all scans (with or without a lesion). The LUNA16 score is "
    "the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan, "
    "linearly interpolated on the curve (held at its last point beyond its end), with a "
    "percentile bootstrap CI over scans. The operating point keeps every predicted lesion "
    "of the binarised prediction (probability >= the segmentation threshold)."
)
EMPTY_RULE = (
    "Empty masks: both empty gives Dice, IoU, precision and recall 1 and distances 0; a "
    "missed lesion (empty prediction) gives Dice, IoU, precision and recall 0 and the "
    "worst distance (the image diagonal in mm) for HD95 and ASD; a prediction where the "
    "reference is empty gives Dice, IoU and precision 0, recall 1 and the worst distance. "
    "No case is dropped from the means of Dice, IoU, precision and recall; HD95 and ASD are "
    "averaged over the scans where both masks are non-empty, and the scans with one empty "
    "mask are counted apart, so one small false positive cannot add the image diagonal to "
    "a mean."
)


def _cell(row: pd.Series) -> str:
    if not row["n"]:
        return "–"
    return (
        f"{row['mean']:.3f} ± {row.sd:.3f}; {row['median']:.3f} [{row.q1:.3f}–{row.q3:.3f}]; "
        f"CI {row.ci_low:.3f}–{row.ci_high:.3f}"
    )


def metric_table(summary: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group, one column per metric: mean ± SD; median [IQR]; 95% CI."""
    if summary.empty:
        return summary
    wide = summary.assign(value=summary.apply(_cell, axis=1)).pivot_table(
        index=by, columns="metric", values="value", aggfunc="first", sort=False
    )
    order = [m for m in ("dice", "iou", "precision", "recall", "hd95", "asd") if m in wide]
    wide = wide[order].rename(columns={"hd95": "HD95 (mm)", "asd": "ASD (mm)"})
    dice = summary[summary.metric == "dice"].set_index(by)
    wide.insert(0, "n", dice.n.reindex(wide.index))
    if "one_mask_empty" in summary:
        surface = summary[summary.metric == "hd95"].set_index(by).n.reindex(wide.index)
        wide.insert(1, "n_hd95_asd", surface)
        wide.insert(2, "one_mask_empty", dice.one_mask_empty.reindex(wide.index))
    wide = wide.reset_index()
    wide.columns.name = None  # else the pivot's "metric" shows as an empty column
    return wide


def methods_text(study: Study, tables: dict[str, pd.DataFrame]) -> list[str]:
    spec = study.segmentation
    net = spec.network
    sets = dict(zip(tables["seg_sets"].set, tables["seg_sets"].cases, strict=True))
    variants = ", ".join(
        f"{k} ({v.filter}{'' if v.filter == 'none' else f', strength {v.strength:g}'})"
        for k, v in spec.variants.items()
    )
    norm = (
        f"clipped to the CT window {spec.normalise.window[0]:g} to "
        f"{spec.normalise.window[1]:g} HU and scaled to 0–1"
        if spec.normalise.mode == "window"
        else "z-scored per image"
    )
    aug = spec.augment
    return [
        f"A {net.dims}D U-Net (MONAI; channels {net.channels}, strides {net.strides}, "
        f"{net.res_units} residual unit(s) per level) was trained with Dice + cross-entropy "
        f"loss and Adam (learning rate {spec.learning_rate:g}) on patches of "
        f"{' x '.join(map(str, spec.patch_size))} voxels ({spec.patches_per_case} per case and "
        f"epoch, half centred on the lesion, batch {spec.batch_size}), for at most "
        f"{spec.max_epochs} epochs with early stopping when the validation Dice had not "
        f"improved for {spec.patience} epochs; the best epoch was kept. Images were resampled "
        f"to a {sets.get('training grid (mm)', '')} mm grid and {norm}. Augmentation: "
        f"{'in-plane flips, ' if aug.flip else ''}rotation up to {aug.rotate_deg:g}°, scaling "
        f"up to {aug.scale:.0%}, intensity scale and shift up to {aug.intensity:.0%}.",
        f"Sets: {sets.get('train')} training cases, {sets.get('tuning')} tuning cases "
        f"({sets.get('tuning source')}), and the held-out sets "
        + ", ".join(f"{k} ({v})" for k, v in sets.items() if k.startswith(("test", "external")))
        + ". "
        + (
            f"The training cases were also split into {spec.cv_folds} folds by patient; each "
            "fold's model was trained on the others and early-stopped on its own fold "
            "(cross-validation table). "
            if spec.cv_folds >= 2
            else ""
        )
        + "The final model was trained on all training cases and selected on the tuning set; "
        "it alone predicted the tuning and held-out cases. Prediction: sliding windows with "
        f"25% overlap and Gaussian blending; a voxel is {_lesion(spec)} when its probability "
        f"is at least {spec.threshold:g}. Predictions are resampled back to each scan's own grid, "
        "where the metrics are computed in mm.",
        f"Preprocessing variants, trained and evaluated on the same sets: {variants}; per-case "
        "Dice compared with the paired Wilcoxon signed-rank test.",
        f"Case-level detection: the case score is the {spec.case_score.replace('_', ' ')} of "
        "the prediction; a case is called positive "
        + (
            "when the segmentation predicts any lesion"
            if spec.case_threshold == "any_lesion"
            else "at the score's Youden threshold on the tuning set"
        )
        + "; AUC with DeLong CI. Aggregates: mean ± SD, median [IQR] and a percentile "
        f"bootstrap 95% CI of the mean over cases ({study.evaluation.bootstrap} resamples).",
        EMPTY_RULE,
    ]


def _lesion(spec: Any) -> str:
    """What the network segments, in the study's own words (its label names)."""
    return " or ".join(spec.labels.values())


def froc_figure(points: pd.DataFrame, variant: str) -> Any:
    """Sensitivity against false positives per scan, one step curve per IoU threshold.
    Curves that reach sensitivity 1 at 0 false positives would lie on the frame: the
    axes leave room above 1 and left of 0, every operating point is marked, and
    coinciding curves are drawn thinner on top of thicker ones, so each stays visible."""
    fig, ax = figs.plt.subplots(figsize=(4.6, 3.6))
    part = points[points.variant == variant]
    groups = list(part.groupby("iou_threshold"))
    for i, (t, curve) in enumerate(groups):
        # from the origin to the last operating point, then level to the axis' end
        x = np.concatenate([[0], curve.fp_per_scan, [8]])
        y = np.concatenate([[0], curve.sensitivity, curve.sensitivity.iloc[-1:]])
        width = 1.2 + 1.4 * (len(groups) - 1 - i)  # the first drawn is the widest
        ax.step(x, y, where="post", color=figs.COLOURS[i], linewidth=width, alpha=0.85,
                label=f"IoU ≥ {t:g}")  # fmt: skip
        ax.plot(curve.fp_per_scan, curve.sensitivity, "o", color=figs.COLOURS[i], ms=3)
    ax.set_xscale("symlog", linthresh=0.125)
    ax.set_xlim(-0.03, 8)
    ax.set_ylim(-0.02, 1.08)
    ax.axhline(1, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"FROC, held-out scans ({variant})")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def training_figure(curves: pd.DataFrame) -> Any:
    fig, (a, b) = figs.plt.subplots(1, 2, figsize=(8.4, 3.2))
    for i, ((variant, model), c) in enumerate(curves.groupby(["variant", "model"], sort=False)):
        style = "-" if model == "final" else ":"
        a.plot(c.epoch, c.loss, style, color=figs.COLOURS[i % 10], label=f"{variant} {model}")
        b.plot(c.epoch, c.val_dice, style, color=figs.COLOURS[i % 10])
        best = c[c.best.astype(bool)]
        b.plot(best.epoch, best.val_dice, "o", color=figs.COLOURS[i % 10], ms=4)
    a.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Loss")
    b.set(
        xlabel="epoch",
        ylabel="validation Dice",
        title="Validation Dice (dot: kept epoch)",
        ylim=(0, 1),
    )
    a.legend(fontsize=6)
    return fig


def gallery(study: Study, folder: Path, cases: pd.DataFrame) -> list[dict]:
    """Best, median and worst Dice of the held-out cases (final model, first variant): the
    slice with most reference (else predicted) voxels, reference green, prediction red."""
    import base64

    import SimpleITK as sitk

    from fusion.cohort import load_cohort
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi

    variant = next(iter(study.segmentation.variants))
    held = cases[(cases.model == "final") & (cases.variant == variant) & (cases.set != "tuning")]
    held = (
        held[held["empty"].astype("string").fillna("") != "both"]
        .sort_values("dice")
        .reset_index(drop=True)
    )
    if held.empty:
        return []
    picks = {"worst": 0, "median": len(held) // 2, "best": len(held) - 1}
    by_id = {c.case_id: c for c in load_cohort(study)}
    items = []
    for title, i in picks.items():
        row = held.iloc[i]
        case = by_id[str(row.case_id)]
        image = read_image(case.image, case.series_uid)
        ref = sitk.GetArrayFromImage(read_roi(case.reference, image))
        path = folder / "segmentation" / "predictions" / variant / f"{row.case_id}.nii.gz"
        if not path.is_file():
            continue
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        z = int(np.argmax(ref.sum(axis=(1, 2)) if ref.any() else pred.sum(axis=(1, 2))))
        fig, ax = figs.plt.subplots(figsize=(3.2, 3.2))
        ax.imshow(np.clip(sitk.GetArrayViewFromImage(image)[z], -200, 300), cmap="gray")
        for mask, colour in ((ref, "#2ca02c"), (pred, "#d62728")):
            if mask[z].any():
                ax.contour(mask[z] > 0, levels=[0.5], colors=colour, linewidths=1.2)
        figs.scale_bar(ax, image.GetSpacing()[0], ref[z].shape, mm=50)
        ax.set_axis_off()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        figs.plt.close(fig)
        items.append(
            {
                "case_id": row.case_id,
                "png": base64.b64encode(buffer.getvalue()).decode(),
                "caption": f"{title} Dice {row.dice:.3f}, {row.set}; "
                "green: reference, red: predicted",
            }
        )
    return items


def warnings(tables: dict[str, pd.DataFrame], spec: Any) -> list[str]:
    """Say it loudly when a model learned nothing, stopped at its epoch limit (it may be
    under-trained), or a case could not be evaluated."""
    out = []
    summary = tables["seg_summary"]
    held = summary[(summary.set != "tuning") & (summary.metric == "dice")
                   & (summary.scans == "with a lesion")]  # fmt: skip
    pooled = held[held.set == "all evaluated (test + external)"]
    for row in (pooled if len(pooled) else held).itertuples():
        if row.mean < 0.2:
            out.append(
                f"The {row.variant} model reaches a mean Dice of only {row.mean:.3f} on "
                f"the held-out cases ({row.set}, {row._3}): it has not learned to segment."
            )
    curves = tables["seg_training"]
    if not curves.empty:
        for (variant, model), c in curves.groupby(["variant", "model"], sort=False):
            if model == "final" and int(c.epoch.max()) >= spec.max_epochs:
                best = int(c[c.best.astype(bool)].epoch.max()) if c.best.astype(bool).any() \
                    else int(c.epoch.max())  # fmt: skip
                out.append(
                    f"The {variant} model reached its epoch limit ({spec.max_epochs} of "
                    f"{spec.max_epochs}; kept epoch {best}) without early stopping: it may "
                    "be under-trained (raise max_epochs)."
                )
    if len(tables["seg_skipped"]):
        out.append(
            f"{len(tables['seg_skipped'])} prediction(s) were not evaluated; see "
            "'Cases not evaluated'."
        )
    return out


def segmentation_context(study: Study, folder: Path) -> dict[str, Any]:
    """Everything the segmentation section of the template shows."""
    from fusion.report.format import html_table

    tables_dir, figures = folder / "tables", folder / "figures"
    names = (
        "seg_summary",
        "seg_subgroups",
        "seg_cv",
        "seg_cv_summary",
        "seg_variants",
        "seg_froc",
        "seg_froc_points",
        "seg_detection",
        "seg_training",
        "seg_sets",
        "seg_skipped",
        "seg_models",
        "seg_cases",
    )
    t = {}
    for name in names:
        path = tables_dir / f"{name}.csv"
        t[name] = (
            pd.read_csv(path, dtype={"case_id": str})
            if path.is_file() and path.stat().st_size > 1
            else pd.DataFrame()
        )
    froc_svgs = [
        figs.save(froc_figure(t["seg_froc_points"], v), figures, f"seg_froc_{v}")
        for v in study.segmentation.variants
        if not t["seg_froc_points"].empty and (t["seg_froc_points"].variant == v).any()
    ]
    froc = t["seg_froc"]
    if not froc.empty:
        froc = froc[
            [
                "variant",
                "iou_threshold",
                "lesions",
                "scans",
                "luna_score",
                "ci_low",
                "ci_high",
                "operating_sensitivity",
                "operating_fp_per_scan",
                *[c for c in froc.columns if c.startswith("sens_at_")],
            ]
        ]
    detection = t["seg_detection"]
    if not detection.empty:
        detection = detection.assign(threshold=detection.threshold.map(
            lambda v: "> 0" if 0 < v < 1e-300 else f"{v:.3g}"))  # fmt: skip
    return {
        "seg_methods": methods_text(study, t),
        "seg_warnings": warnings(t, study.segmentation),
        "seg_lesion": _lesion(study.segmentation),
        "seg_has_cv": not t["seg_cv"].empty,
        "matching_rule": MATCHING_RULE,
        "seg": {
            "summary": html_table(
                metric_table(t["seg_summary"], ["variant", "set", "class", "scans"])
            ),
            "subgroups": html_table(
                metric_table(t["seg_subgroups"], ["variant", "by", "group", "class"])
            )
            if not t["seg_subgroups"].empty
            else "",
            "cv": html_table(t["seg_cv"]) if not t["seg_cv"].empty else "",
            "cv_summary": html_table(t["seg_cv_summary"]) if not t["seg_cv_summary"].empty else "",
            "variants": html_table(t["seg_variants"]) if not t["seg_variants"].empty else "",
            "froc": html_table(froc) if not froc.empty else "",
            "detection": html_table(detection) if not detection.empty else "",
            "skipped": html_table(t["seg_skipped"]) if not t["seg_skipped"].empty else "",
            "models": html_table(t["seg_models"].drop(columns="checkpoint")),
        },
        "seg_figures": {
            "froc": froc_svgs,
            "training": figs.save(training_figure(t["seg_training"]), figures, "seg_training")
            if not t["seg_training"].empty
            else "",
        },
        "seg_gallery": gallery(study, folder, t["seg_cases"]) if not t["seg_cases"].empty else [],
    }


PATTERN_COLOURS = ("#ff7f0e", "#d62728", "#9467bd", "#8c564b")


def bland_altman_figure(wide: pd.DataFrame, agreement_rows: pd.DataFrame) -> Any:
    """Difference against mean of predicted and reference involvement, per pattern."""
    part = wide[(wide.region == "both lungs") & (wide.set != "tuning")]
    patterns = list(dict.fromkeys(part.pattern))
    fig, axes = figs.plt.subplots(1, len(patterns), figsize=(3.4 * len(patterns), 3.2),
                                  squeeze=False)  # fmt: skip
    for ax, pattern in zip(axes[0], patterns, strict=True):
        p = part[part.pattern == pattern]
        mean = (p.predicted + p.reference) / 2
        ax.scatter(mean, p.difference, s=14, color=figs.COLOURS[0])
        row = (agreement_rows[(agreement_rows.region == "both lungs")
                              & (agreement_rows.pattern == pattern)]
               if len(agreement_rows) else agreement_rows)  # fmt: skip
        if len(row):
            r = row.iloc[0]
            ax.axhline(r.bias, color="k", lw=1)
            for v in (r.loa_low, r.loa_high):
                ax.axhline(v, color="k", lw=0.8, ls="--")
        ax.set(title=pattern, xlabel="mean of predicted and reference (%)",
               ylabel="predicted − reference (percentage points)")  # fmt: skip
    fig.tight_layout()
    return fig


def involvement_gallery(study: Study, folder: Path, wide: pd.DataFrame, n: int = 3) -> list[dict]:
    """The held-out patients with the most involvement: the slice with most pattern, lung
    outline (green) and each pattern filled in its own colour, reference beside
    prediction, with a legend."""
    import base64

    import SimpleITK as sitk
    from matplotlib.patches import Patch

    from fusion.cohort import load_cohort
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi

    spec = study.segmentation
    variant = next(iter(spec.variants))
    both = wide[(wide.region == "both lungs") & (wide.pattern == "combined")]
    by_id = {c.case_id: c for c in load_cohort(study)}
    items = []
    for case_id in both.sort_values("reference", ascending=False).case_id.head(n):
        case = by_id[str(case_id)]
        image = read_image(case.image, case.series_uid)
        ref = sitk.GetArrayFromImage(read_roi(case.reference, image))
        predicted = folder / "segmentation" / "predictions" / variant / f"{case_id}.nii.gz"
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted)))
        outline = folder / "rois" / spec.involvement.lung_roi / f"{case_id}.nii.gz"
        lung = sitk.GetArrayFromImage(sitk.ReadImage(str(outline)))
        z = int(np.argmax((ref > 0).sum(axis=(1, 2))))
        fig, axes = figs.plt.subplots(1, 2, figsize=(6.4, 3.3))
        for ax, labels, title in ((axes[0], ref, "reference"), (axes[1], pred, "predicted")):
            ax.imshow(np.clip(sitk.GetArrayViewFromImage(image)[z], -1000, 200), cmap="gray")
            for k, colour in zip(spec.labels, PATTERN_COLOURS, strict=False):
                overlay = np.ma.masked_where(labels[z] != k, labels[z])
                ax.imshow(overlay, cmap=figs.matplotlib.colors.ListedColormap([colour]),
                          alpha=0.55, interpolation="nearest")  # fmt: skip
            ax.contour(lung[z] > 0, levels=[0.5], colors="#2ca02c", linewidths=1.0)
            ax.set_title(title)
            ax.set_axis_off()
        handles = [Patch(color="#2ca02c", label="lung outline")] + [
            Patch(color=c, alpha=0.55, label=name)
            for name, c in zip(spec.labels.values(), PATTERN_COLOURS, strict=False)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        figs.plt.close(fig)
        row = both[both.case_id == case_id].iloc[0]
        items.append({
            "case_id": case_id, "png": base64.b64encode(buffer.getvalue()).decode(),
            "caption": f"involvement {row.reference:.1f}% (reference) vs {row.predicted:.1f}% "
                       "(predicted), all patterns",
        })  # fmt: skip
    return items


def involvement_context(study: Study, folder: Path) -> dict[str, Any]:
    """The involvement section: per-patient table, agreement, outline Dice, figures."""
    from fusion.report.format import html_table

    tables, figures = folder / "tables", folder / "figures"

    def read(name: str) -> pd.DataFrame:
        path = tables / f"{name}.csv"
        return (pd.read_csv(path, dtype={"case_id": str})
                if path.is_file() and path.stat().st_size > 1 else pd.DataFrame())  # fmt: skip

    wide, rows, outline = read("involvement"), read("involvement_agreement"), read("lung_outline")
    if wide.empty:
        return {}
    per_patient = wide[wide.region == "both lungs"].pivot_table(
        index=["case_id", "set", "lung_ml"], columns="pattern", values=["reference", "predicted"]
    )
    per_patient.columns = [f"{p} {s} (%)" for s, p in per_patient.columns]
    per_patient = per_patient[sorted(per_patient.columns)].reset_index()
    outline_summary = (
        outline.groupby("lung").dice.agg(["count", "mean", "min"]).reset_index()
        if not outline.empty else pd.DataFrame()
    )  # fmt: skip
    return {
        "involvement": {
            "patients": html_table(per_patient, 2),
            "agreement": html_table(rows[rows.region == "both lungs"]) if len(rows) else
            "<p>Fewer than two held-out patients: no agreement statistics.</p>",
            "by_region": html_table(rows[rows.region != "both lungs"]) if len(rows) else "",
            "outline": html_table(outline_summary, 4) if len(outline_summary) else "",
            "bland_altman": figs.save(bland_altman_figure(wide, rows), figures,
                                      "involvement_bland_altman"),
            "gallery": involvement_gallery(study, folder, wide),
        }
    }  # fmt: skip
