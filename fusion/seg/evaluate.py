"""The segmentation stage's tables, from predictions and references on each case's grid.

Every metric comes from :mod:`fusion.stats` (segmentation overlap, FROC, AUC with
DeLong CI, threshold metrics); this module only decides which cases go into which
table. A case without a reference is predicted but not evaluated, and listed in
``seg_skipped`` with the reason, as is a case whose prediction failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from fusion.config import Study
from fusion.errors import FusionError
from fusion.seeds import stream
from fusion.stats.froc import froc_tables
from fusion.stats.segmentation import case_metrics, summarise, surface_means


def _subgroups(study: Study) -> dict[str, str]:
    """case -> its value in the manifest column ``segmentation.subgroup`` (blank: "")."""
    from fusion.cohort import read_manifest

    column = study.segmentation.subgroup
    if column is None:
        return {}
    manifest = read_manifest(study.cohort)
    if column not in manifest.columns:
        raise FusionError(
            f"segmentation.subgroup: the manifest {study.cohort.manifest} has no column "
            f"{column!r}; it has {', '.join(manifest.columns)}"
        )
    values = manifest[column].fillna("").astype(str)
    return dict(zip(manifest[study.cohort.columns.case_id].astype(str), values, strict=True))


def _case_rows(study, sets, cases, images, predictions):  # noqa: ANN001, ANN202
    """Per case, variant, model and class: the overlap metrics; and the skipped cases."""
    spec = study.segmentation
    subgroups = _subgroups(study)
    rows, skipped, lesions = [], [], {}
    for (variant, model), preds in predictions.items():
        for case_id, pred in preds.items():
            case = cases[case_id]
            image, reference = images[case_id]
            where = sets.evaluated.get(case_id, "train")
            if isinstance(pred, Exception):
                skipped.append(
                    {"case_id": case_id, "variant": variant, "model": model, "reason": str(pred)}
                )
                continue
            if reference is None:
                skipped.append(
                    {
                        "case_id": case_id,
                        "variant": variant,
                        "model": model,
                        "reason": "no reference in the manifest: predicted, not evaluated",
                    }
                )
                continue
            ref = sitk.GetArrayFromImage(reference)
            labels = sitk.GetArrayFromImage(pred.labels)
            spacing = image.GetSpacing()[::-1]
            base = {
                "case_id": case_id,
                "set": where,
                "variant": variant,
                "model": model,
                "institution": case.institution or "",
                "subgroup": subgroups.get(case_id, ""),
                "note": "; ".join(pred.notes),
            }
            rows += [{**base, **m} for m in case_metrics(labels, ref, spacing, spec.labels)]
            if len(spec.labels) > 1:  # every foreground class together (seed 003's "GGO +
                # reticulation"): labels mapped to 1 before the same metrics
                rows += [
                    {**base, **m, "class": "all classes"}
                    for m in case_metrics(labels > 0, ref > 0, spacing, {1: "all"})
                ]
            if model == "final":
                lesions[(variant, case_id)] = (
                    pred.lesions,
                    pred.max_probability,
                    float((labels > 0).sum() * np.prod(image.GetSpacing()) / 1000.0),
                )
    return (
        pd.DataFrame(rows),
        pd.DataFrame(skipped, columns=["case_id", "variant", "model", "reason"]),
        lesions,
    )


def _summaries(frame: pd.DataFrame, study: Study) -> dict[str, pd.DataFrame]:
    n_boot, seed = study.evaluation.bootstrap, stream(study.seed, "bootstrap")
    level = study.evaluation.conf_level
    final = frame[frame.model == "final"]
    held = final[final.set != "tuning"]
    # pooled rows only where they pool something: one held-out set is its own row
    pooled_held = held.assign(set="all evaluated (test + external)") \
        if held.set.nunique() > 1 else None  # fmt: skip
    external = final[final.set.str.startswith("external")]
    pooled_external = external.assign(set="all external") \
        if 1 < external.set.nunique() < held.set.nunique() else None  # fmt: skip
    pooled = pd.concat([final, pooled_held, pooled_external])
    # the seeds' per-image Dice is over scans with a lesion; scans without one (Dice 1 when
    # nothing is predicted) are shown apart, and together with them
    scans = pd.concat(
        [
            pooled[pooled.reference_voxels > 0].assign(scans="with a lesion"),
            pooled.assign(scans="all"),
        ]
    )
    out = {
        "seg_summary": summarise(scans, ["variant", "set", "class", "scans"], n_boot, seed, level)
    }
    groups = [g for g in ("institution", "subgroup") if (final[g] != "").any()]
    out["seg_subgroups"] = (
        pd.concat(
            [
                summarise(
                    final[(final.set != "tuning") & (final.reference_voxels > 0)].assign(
                        by=g, group=final[g]
                    ),
                    ["variant", "by", "group", "class"],
                    n_boot,
                    seed,
                    level,
                )
                for g in groups
            ]
        )
        if groups
        else pd.DataFrame()
    )
    cv = frame[frame.model != "final"]
    if len(cv):
        summary = surface_means(cv, ["variant", "model", "class"])
        table = summary.reset_index()
        table["cases"] = cv.groupby(["variant", "model", "class"]).size().to_numpy()
        across = summary.groupby(["variant", "class"]).agg(["mean", "std"])
        across.columns = [f"{m}_{s}" for m, s in across.columns]
        out["seg_cv"] = table
        out["seg_cv_summary"] = across.reset_index()
    return out


DEGENERATE_CI = (
    "the scores separate the classes completely, so DeLong's variance is 0 and the CI has "
    "no width: it reflects these few cases, not certainty (a larger sample would widen it)"
)


def _detection(study, lesions, sets, cases) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    """FROC on the held-out cases, and the case-level classification from the case score
    with its threshold chosen on the tuning set."""
    from fusion.stats import roc_auc, threshold_metrics, youden_threshold

    spec = study.segmentation
    points, summaries, scores, classified = [], [], [], []
    for variant in spec.variants:
        held = [
            c for c in sets.evaluated if sets.evaluated[c] != "tuning" and (variant, c) in lesions
        ]
        if held and spec.froc:
            p, s = froc_tables(
                [lesions[(variant, c)][0] for c in held],
                spec.iou_thresholds,
                study.evaluation.bootstrap,
                stream(study.seed, "bootstrap"),
                study.evaluation.conf_level,
            )
            points.append(p.assign(variant=variant))
            summaries.append(s.assign(variant=variant))
        for c in sets.evaluated:
            if (variant, c) in lesions:
                _, max_prob, volume = lesions[(variant, c)]
                score = volume if spec.case_score == "volume" else max_prob
                scores.append(
                    {
                        "variant": variant,
                        "case_id": c,
                        "set": sets.evaluated[c],
                        "label": cases[c].label,
                        "score": score,
                        "predicted_volume_ml": volume,
                        "max_probability": max_prob,
                    }
                )
    scores = pd.DataFrame(scores)
    for variant, frame in scores.groupby("variant") if len(scores) else ():
        tuning = frame[frame.set == "tuning"]
        # any predicted lesion: volume > 0, or a voxel at or above the segmentation threshold
        any_lesion = float(np.nextafter(0, 1)) if spec.case_score == "volume" else spec.threshold
        threshold, note = any_lesion, "positive when a lesion is predicted"
        if spec.case_threshold == "youden_tuning":
            try:
                threshold = youden_threshold(tuning.label, tuning.score)
                note = "Youden threshold on the tuning set"
            except ValueError:  # the tuning set lacks a class
                note = "tuning set lacks a class: positive when a lesion is predicted"
        held = frame[frame.set != "tuning"]
        pooled = [("all evaluated (test + external)", held)] if held.set.nunique() > 1 else []
        for where, part in [*pooled, *held.groupby("set")]:
            row: dict[str, Any] = {
                "variant": variant,
                "set": where,
                "n": len(part),
                "positives": int(part.label.sum()),
                "threshold": threshold,
                "note": note,
            }
            try:
                auc = roc_auc(part.label, part.score, study.evaluation.conf_level)
                row |= {"auc": auc.auc, "auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high}
                if auc.se == 0:
                    row["note"] = (note + "; " if note else "") + DEGENERATE_CI
            except ValueError as exc:
                row |= {
                    "auc": np.nan,
                    "auc_ci_low": np.nan,
                    "auc_ci_high": np.nan,
                    "note": (note + "; " if note else "") + str(exc),
                }
            m = threshold_metrics(part.label, part.score, threshold)
            row |= {
                "sensitivity": m.sensitivity,
                "specificity": m.specificity,
                "accuracy": m.accuracy,
                "f1": m.f1,
            }
            classified.append(row)
    return {
        "seg_froc_points": pd.concat(points) if points else pd.DataFrame(),
        "seg_froc": pd.concat(summaries) if summaries else pd.DataFrame(),
        "seg_case_scores": scores,
        "seg_detection": pd.DataFrame(classified),
    }


def _variants(frame: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank test of per-case Dice, each variant against the first,
    on the held-out cases both evaluated."""
    from scipy.stats import wilcoxon

    final = frame[(frame.model == "final") & (frame.set != "tuning")]
    wide = final.pivot_table(index=["case_id", "class"], columns="variant", values="dice")
    rows = []
    for other in variants[1:]:
        pair = wide[[variants[0], other]].dropna()
        diff = pair[other] - pair[variants[0]]
        p = wilcoxon(pair[variants[0]], pair[other]).pvalue if (diff != 0).any() else 1.0
        rows.append(
            {
                "reference": variants[0],
                "variant": other,
                "cases": len(pair),
                "dice_reference": pair[variants[0]].mean(),
                "dice_variant": pair[other].mean(),
                "median_difference": diff.median(),
                "wilcoxon_p": p,
            }
        )
    return pd.DataFrame(rows)


def evaluation_tables(study, sets, cases, images, predictions, spacing) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    """Every table of the segmentation section of the report."""
    frame, skipped, lesions = _case_rows(study, sets, cases, images, predictions)
    out = {"seg_cases": frame, "seg_skipped": skipped}
    if len(frame):
        out |= _summaries(frame, study)
        out |= _detection(study, lesions, sets, cases)
        if len(study.segmentation.variants) > 1:
            out["seg_variants"] = _variants(frame, list(study.segmentation.variants))
    sizes = {"train": len(sets.train), **pd.Series(sets.evaluated).value_counts().to_dict()}
    out["seg_sets"] = pd.DataFrame(
        [{"set": k, "cases": v} for k, v in sizes.items()]
        + [
            {"set": "tuning source", "cases": sets.tuning_source},
            {"set": "training grid (mm)", "cases": " x ".join(f"{s:g}" for s in spacing)},
        ]
    )
    return out
