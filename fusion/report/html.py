"""Render ``reports/<study>/index.html`` from the stage tables: one self-contained file.

The report never recomputes a statistic: it formats the CSV tables the statistics stage
wrote and draws the figures from them. Figures are inlined as SVG, crop images as PNG
data URIs; the CSS is inline and nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from fusion.atomic import write_text_atomic
from fusion.config import Study
from fusion.errors import FusionError
from fusion.report import evaluation as ev_report
from fusion.report import figures as figs
from fusion.report.format import _read, html_table
from fusion.report.tripod import Present, tripod_rows
from fusion.report.trust import trust_context

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _window_text(window: str | list[str]) -> str:
    return window if isinstance(window, str) else ", ".join(window)


def _models_text(summary: pd.DataFrame) -> str:
    return "; ".join(f"{r.model} = {r.classifier} on {r.features}" for r in summary.itertuples())


def _weights_text(requested: str, weights: dict | None) -> str:
    """The weights the deep stage really used (its deep_weights.json), not only those
    the study asked for: offline, ``imagenet`` falls back to random weights when
    ``deep.allow_random_weights`` is set, and the methods must say so."""
    if not weights:
        return f"{requested} weights"
    if weights.get("pretrained") is False:
        if requested == "random":
            return "RANDOM weights, not pretrained"
        return f"RANDOM weights, not pretrained; the study asked for {requested}, unavailable here"
    return f"{weights.get('source', requested)} weights"


def methods_text(
    study: Study,
    cohort: pd.DataFrame,
    model_summary: pd.DataFrame,
    weights: dict | None = None,
    sample_size: pd.DataFrame | None = None,
) -> list[str]:
    """The methods paragraphs, generated from the study file and the cohort table."""
    included = cohort[cohort.included]
    n_sets = included.set.value_counts()
    split = (
        "as given in the manifest"
        if cohort.get("split_source", pd.Series(["manifest"])).iloc[0] == "manifest"
        else f"by stratified random sampling ({1 - study.evaluation.test_size:.0%} / "
        f"{study.evaluation.test_size:.0%}, seed {study.seed})"
    )
    text = [
        f"Data. {len(cohort)} cases ({study.cohort.modality}) were listed in the manifest; "
        f"{len(included)} passed quality control and feature extraction "
        f"({', '.join(f'{k}: {v}' for k, v in n_sets.items())}). Cases were assigned to "
        f"sets {split}. The outcome is binary; prevalence per set is given in the flow table.",
    ]
    if study.radiomics is not None:
        import yaml

        params = yaml.safe_load(study.radiomics.params.read_text()) or {}
        settings = params.get("setting", {})
        text.append(
            "Radiomics. Features were extracted from the ROI (label "
            f"{study.cohort.roi_label}) with PyRadiomics 3.0.1, image types "
            f"{', '.join(params.get('imageType', {'Original': {}}))}, feature classes "
            f"{', '.join(params.get('featureClass', {}) or ['all'])}; bin width "
            f"{settings.get('binWidth', 25)}, resampling "
            f"{settings.get('resampledPixelSpacing') or 'none'}, "
            f"{'2D (per slice)' if settings.get('force2D') else '3D'} texture "
            f"(parameter file {study.radiomics.params.name})."
        )
    auxiliary = study.auxiliary_rois()
    if set(study.rois) - auxiliary:
        parts = []
        for name, spec in study.rois.items():
            if name in auxiliary:
                continue  # perturbations and controls: their own paragraph
            if spec.generator == "habitat":
                k = spec.settings.get("k", 3)
                how = ("per case (k-means within each ROI)" if spec.mode == "per_case" else
                       f"in two steps ({spec.supervoxels} supervoxels per case, then one "
                       "population k-means fitted on the training cases only and applied "
                       "unchanged to every case)")  # fmt: skip
                parts.append(
                    f"{name}: {k} habitats clustered on voxel intensity and local mean and "
                    f"SD ({spec.settings.get('neighbourhood_mm', 3.0):g} mm neighbourhood) "
                    f"{how}, "
                    + (
                        f"named by position: the habitat of least mean depth from the ROI's "
                        f"edge is {name}_boundary, the deepest {name}_core, in each case"
                        if spec.settings.get("order") == "position"
                        else f"numbered by ascending mean intensity ({name}1 darkest)"
                    )
                )
            elif spec.generator == "ring":
                st = spec.settings
                rng = st.get("hu_range")
                parts.append(
                    f"{name}: the shell {st.get('inner_mm', 0):g}-{st.get('outer_mm', 3):g} mm "
                    "outside the ROI (Euclidean distance in mm)"
                    + (f", voxels of {rng[0]:g} to {rng[1]:g} HU only" if rng else "")
                )
            else:
                parts.append(f"{name}: generator {spec.generator} ({spec.settings})")
        text.append(
            "Sub-regions. Besides the whole ROI, features were extracted from ROIs generated "
            "from it: " + "; ".join(parts) + ". A sub-region with fewer voxels than "
            f"{study.qc.min_roi_voxels} was left out for that case (see the notes table)."
        )
    if study.deep is not None:
        d = study.deep
        text.append(
            f"Deep features. On the axial plane of largest ROI area and at offsets "
            f"{', '.join(f'{o:g}' for o in d.offsets_mm)} mm (interpolated along z), a square "
            f"crop around the ROI's bounding box plus {d.margin_mm:g} mm was resampled to "
            f"{d.size} × {d.size} pixels, windowed ({_window_text(d.window)}), "
            f"normalised with ImageNet statistics and passed through ResNet50 "
            f"({_weights_text(d.weights, weights)}); the {d.layer} output was averaged over "
            f"planes ({d.aggregate})."
        )
        if d.weights == "finetune":
            f = d.finetune
            text.append(
                f"Fine-tuning. Before extraction, ResNet50 (from {f.start} weights) was "
                "trained to predict the outcome from the training set's crops only (each "
                "plane one image with its case's label; test and external cases never "
                f"used), with binary cross-entropy and Adam (learning rate "
                f"{f.learning_rate:g}), up to {f.max_epochs} epochs, early stopping on the "
                f"AUC of {f.validation_size:.0%} of the training cases held back"
                + (f": {weights['source']}." if weights else ".")
            )
    ev = study.evaluation
    text.append(
        "Selection and models. All preprocessing and selection steps were fitted on the "
        "training set only, inside one scikit-learn pipeline per model: median imputation "
        "(most frequent level for categorical covariates), removal of constant features, "
        "standardisation, a correlation filter (of two features with |r| above the "
        "threshold, the one more associated with the outcome was kept), and LASSO "
        f"(L1-penalised logistic regression, {ev.lasso.folds}-fold CV deviance over "
        f"{ev.lasso.n_lambda} lambdas, {ev.lasso.rule}). Each classifier (SVM or logistic "
        f"regression) was tuned by {ev.cv_folds}-fold stratified CV within the rows it was "
        f"fitted on: every hyper-parameter candidate's out-of-fold scores were Platt-scaled "
        f"and the candidate with the lowest {ev.tuning_score.replace('_', ' ')} of those "
        "calibrated probabilities was chosen (a candidate whose out-of-fold scores had an SD "
        f"below {ev.min_score_sd:g} could not be chosen). The chosen candidate's fold models "
        "make the predictions: a case's probability is the mean over them of the Platt map "
        "fitted on their pooled out-of-fold scores, applied to each one's score, so the map "
        "is only ever applied to scores on the scale it was learned on (as scikit-learn's "
        "CalibratedClassifierCV with ensemble=True, with one pooled map). A model built on "
        "another's score reads, for a training case, that model's out-of-fold score and, "
        "elsewhere, its final score, both calibrated logits on one scale. "
        f"Models: {_models_text(model_summary)}." + _reduced_tuning_text(model_summary)
    )
    if trust := _trust_methods(study):
        text.append(trust)
    text.append(
        "Statistics. Training-set performance is cross-validated: every training case was "
        f"scored by the pipeline fitted without its fold ({ev.cv_folds}-fold CV of the whole "
        "pipeline, tuning and Platt scaling included"
        + (", folds grouped by patient" if study.cohort.columns.patient else "")
        + "), so training-set calibration is honest too; in-sample numbers are labelled "
        "apparent. Discrimination: AUC with DeLong 95% CI; models were compared with the "
        "paired DeLong test, the continuous net reclassification improvement (events, "
        "non-events, total) and the integrated discrimination improvement (standard errors "
        "as Hmisc::improveProb"
        + (
            f"; categorical NRI at risks {', '.join(f'{r:g}' for r in ev.risk_thresholds)}"
            if ev.risk_thresholds
            else ""
        )
        + "), and the difference in net benefit with a paired bootstrap band. Sensitivity, "
        "specificity, PPV, NPV and accuracy (Wilson 95% CIs) are given at the Youden "
        "threshold of the out-of-fold training probabilities (midway between adjacent "
        "probabilities, as pROC), applied unchanged to every other set; F1 and the Brier "
        "score have percentile bootstrap CIs. Calibration is shown as a flexible curve "
        "(logistic regression on a natural cubic spline of logit(p), 3 df, with a 95% band) "
        "and reported as intercept and slope of the logistic recalibration line (Wald CIs), "
        "calibration-in-the-large, Brier score, Spiegelhalter's z, the integrated "
        "calibration index with E50, E90 and Emax (lowess as rms::val.prob) and the "
        "Hosmer-Lemeshow test; clinical utility by decision-curve analysis (net benefit of "
        "the calibrated probabilities). "
        + (
            "External institutions are reported one by one and pooled. "
            if len(study.cohort.external_institutions) > 1
            else ""
        )
        + "Clinical covariates were analysed by univariable and multivariable logistic "
        "regression (odds ratios, Wald CIs)."
    )
    if sample_size is not None and (sentence := ev_report.sample_size_text(sample_size)):
        text.append(sentence)
    return text


def _trust_methods(study: Study) -> str:
    """The methods sentences on robustness, harmonisation and negative controls."""
    out = []
    if (spec := study.perturbations) is not None:
        robust = [m for m, s in study.models.items() if s.robust]
        out.append(
            f"Robustness. The features of {spec.of} were measured again on "
            f"{len(spec.variants)} variants of it ({', '.join(spec.roi_names())}); each "
            f"feature's {spec.icc} (psych::ICC) across them on the training cases decided "
            f"whether it is robust (lower 95% CI bound >= {spec.min_ci_low:g} or ICC >= "
            f"{spec.min_icc:g})"
            + (f"; {', '.join(robust)} kept only robust features, the ICC recomputed inside "
               "every CV fold on its training part" if robust else "") + "."
        )  # fmt: skip
    if (harm := study.harmonisation) is not None:
        by = "scanner/site column" if study.cohort.columns.site else "institution"
        models = [m for m, s in study.models.items() if s.harmonise]
        out.append(
            f"Harmonisation. The {' and '.join(harm.blocks)} features of {', '.join(models)} "
            f"were harmonised across the manifest's {by} by ComBat (parametric empirical "
            "Bayes, as neuroCombat"
            + (f", preserving {', '.join(harm.covariates)}" if harm.covariates else "")
            + "), fitted inside each pipeline on the rows it was fitted on (training cases "
            "only) and applied unchanged to every other case."
        )  # fmt: skip
    controls = {m: s for m, s in study.models.items() if s.control_of}
    if controls:
        out.append(
            "Negative controls (READII). "
            + "; ".join(f"{m}: the pipeline of {s.control_of} on "
                        + ("the training outcome permuted" if s.permute_outcome else
                           f"{', '.join(s.features)}") for m, s in controls.items())
            + ". A control is flagged when its AUC reaches its model's lower 95% CI bound."
        )  # fmt: skip
    return " ".join(out)


def _reduced_tuning_text(summary: pd.DataFrame) -> str:
    """A sentence for the models whose tuning CV had fewer folds than asked."""
    if "tuning_folds_requested" not in summary.columns:
        return ""
    reduced = summary[summary.tuning_folds < summary.tuning_folds_requested]
    if reduced.empty:
        return ""
    return (" The tuning CV of " + ", ".join(f"{r.model} used {int(r.tuning_folds)} folds"
                                            for r in reduced.itertuples())
            + ", as many as the smaller outcome class of the training set allowed.")  # fmt: skip


def report_warnings(
    cohort: pd.DataFrame,
    weights: dict[str, Any] | None,
    summary: pd.DataFrame,
    calibration: pd.DataFrame | None = None,
) -> list[str]:
    warnings = []
    if "lasso_converged" in summary.columns:
        for row in summary[~summary.lasso_converged.astype(bool)].itertuples():
            warnings.append(
                f"LASSO did not converge for model {row.model!r} (the solver stopped at its "
                "iteration limit); its selected features may not be the optimum."
            )
    if calibration is not None and "note" in calibration.columns:
        noted = calibration[(ev_report.notes(calibration) != "") & (calibration.set != "train")]
        for row in noted.itertuples():  # training-set notes are in the table, not alarms
            warnings.append(f"Model {row.model!r}, {row.set} set: {row.note}.")
    if "lasso_fallback" in summary.columns:
        for model in summary.model[summary.lasso_fallback.astype(bool)]:
            warnings.append(
                f"LASSO selected no feature at the chosen lambda for model {model!r}; the "
                "largest lambda that selects one was used instead (see lasso_cv.csv)."
            )
    finetuned = bool(weights) and str(weights.get("source", "")).startswith("fine-tuned")
    if finetuned:
        warnings.append(
            "Deep features come from a ResNet50 fine-tuned on the training cases' labels, so "
            "the cross-validated training-set numbers of every model that uses them are "
            "optimistic (the backbone saw the label of every training case, in every CV "
            "fold). Judge those models on the test and external sets only."
        )
    if weights and not weights.get("pretrained", True):
        warnings.append(
            "Deep features come from a ResNet50 fine-tuned on this study's training crops "
            "from RANDOM weights (no ImageNet pretraining). They are learned from this "
            "training set alone; do not report them as ImageNet features."
            if finetuned else
            f"Deep features were computed with RANDOM, not pretrained, ResNet50 weights "
            f"({weights.get('source')}). They are not ImageNet features; do not report them "
            "as such."
        )  # fmt: skip
    excluded = cohort[~cohort.included]
    if len(excluded):
        warnings.append(
            f"{len(excluded)} case(s) were excluded (QC or feature extraction failed): "
            f"{', '.join(excluded.case_id.astype(str)[:12])}"
            + (" ..." if len(excluded) > 12 else "")
            + ". See section 2."
        )
    for set_name, part in cohort[cohort.included].groupby("set"):
        if set_name != "train" and len(part) < 50:
            warnings.append(
                f"The {set_name} set is small ({len(part)} cases): confidence intervals are wide."
            )
        counts = part.label.value_counts()
        for label in (0, 1):
            if counts.get(label, 0) == 0:
                kind = "positive" if label else "negative"
                warnings.append(f"The {set_name} set has no {kind} case: AUC undefined.")
            elif counts.get(label, 0) < 10:
                warnings.append(
                    f"The {set_name} set has {counts.get(label, 0)} case(s) with outcome "
                    f"{label} (fewer than 10): its AUC and calibration are unstable."
                )
    return warnings


def build_report(study: Study, folder: Path) -> Path:
    """Write figures, ``tables/README.md`` and ``index.html`` under ``folder``."""
    if study.classifier is not None:
        return _classifier_report(study, folder)
    if not study.models:
        return _segmentation_report(study, folder)
    tables, figures = folder / "tables", folder / "figures"
    t = {name: _read(tables, name) for name in (
        "cohort", "model_exclusions", "qc", "scores", "performance", "delong", "calibration",
        "net_benefit", "roc_points", "model_summary", "selected_features", "lasso_cv",
        "table1_train",
        "table1_test", "clinical_univariable", "clinical_multivariable", "calibration_curve",
        "calibration_groups", "radiomics_nan_features", "rois", "reclassification",
        "net_benefit_difference", "performance_subgroups", "deep_crop_geometry",
        "sample_size", "feature_robustness", "harmonisation", "harmonisation_examples",
        "negative_controls",
    )}  # fmt: skip
    provenance = json.loads((folder / "provenance.json").read_text())
    weights = provenance.get("deep_weights")
    write_text_atomic((TEMPLATES / "tables_README.md").read_text(), tables / "README.md")
    cohort = t["cohort"]
    sets = list(dict.fromkeys(t["performance"].set)) if not t["performance"].empty else []

    flow_rows = [("listed in the manifest", len(cohort), "")]
    qc_failed = t["qc"][t["qc"].status == "fail"] if not t["qc"].empty else pd.DataFrame()
    flow_rows.append(("excluded by QC", len(qc_failed), ""))
    flow_rows.append(("excluded: no features for any model",
                      int((~cohort.included).sum()) - len(qc_failed), ""))  # fmt: skip
    partly = t["model_exclusions"]
    if not partly.empty:
        flow_rows.append(("kept, but left out of the models whose features they lack",
                          partly.case_id.nunique(), "see below"))  # fmt: skip
    for set_name, part in cohort[cohort.included].groupby("set", sort=False):
        positives = f"{int(part.label.sum())} positive ({part.label.mean():.1%})"
        flow_rows.append((f"{set_name} set", len(part), positives))
    flow = pd.DataFrame(flow_rows, columns=["step", "cases", "outcome"])

    lasso_models = []
    for name in t["lasso_cv"].model.unique() if not t["lasso_cv"].empty else []:
        cv = t["lasso_cv"][t["lasso_cv"].model == name].reset_index(drop=True)
        sel = t["selected_features"][t["selected_features"].model == name]
        lasso_models.append({
            "name": name,
            "cv_svg": figs.save(figs.lasso_cv_figure(cv, name), figures, f"lasso_cv_{name}"),
            "coef_svg": figs.save(figs.coefficient_figure(sel, name), figures,
                                  f"lasso_coefficients_{name}"),
            "table": html_table(sel[["feature", "coefficient"]], 4),
        })  # fmt: skip

    perf = t["performance"]
    roc_sets = [s for s in sets if s in set(t["roc_points"].set)]
    fig_svgs = {
        "roc": [figs.save(figs.roc_figure(t["roc_points"], perf, s), figures, f"roc_{s}")
                for s in roc_sets],
        "dca": [figs.save(figs.dca_figure(t["net_benefit"], s), figures, f"dca_{s}")
                for s in sets],
        "calibration": [figs.save(figs.calibration_figure(
            t["calibration_groups"], t["calibration"], t["calibration_curve"], s), figures,
            f"calibration_{s}") for s in sets],
    }  # fmt: skip

    fig_svgs["dca_difference"] = ev_report.comparison_figures(
        t["net_benefit_difference"], sets, figures
    )
    counts = t["model_summary"][
        ["model", "features", "classifier", "tuned"]
        + [c for c in t["model_summary"].columns if c.startswith("n_")]
    ]
    excluded_rows = cohort[~cohort.included][["case_id", "set", "label", "reason"]]
    qc = t["qc"]
    qc_warned = qc[qc.status == "warn"][["case_id", "problems"]] if not qc.empty else qc
    missing = _missing_features(t["radiomics_nan_features"], cohort)
    roi_notes, boundary = _roi_notes(t["rois"])
    trust = trust_context(study, folder, t)
    context = {
        "study": study,
        "warnings": report_warnings(cohort, weights, t["model_summary"], t["calibration"])
        + ev_report.evaluation_warnings(t["model_summary"], t["sample_size"])
        + [f"Negative control: {w}." for w in trust.get("controls", {}).get("warnings", [])],
        "trust": trust,
        "methods": methods_text(study, cohort, t["model_summary"], weights, t["sample_size"]),
        "tripod": tripod_rows(
            study,
            Present(
                sample_size=not t["sample_size"].empty,
                table1=any(not t[f"table1_{s}"].empty for s in ("train", "test")),
                subgroups=not t["performance_subgroups"].empty,
                institutions=study.cohort.columns.institution is not None,
                missing_features=len(missing) > 0,
            ),
        ),
        "tables": {
            "flow": html_table(flow),
            "excluded": html_table(excluded_rows) if len(excluded_rows) else "",
            "left_out": html_table(_left_out(partly)) if not partly.empty else "",
            "table1": [
                (s, html_table(t[f"table1_{s}"]))
                for s in ("train", "test")
                if not t[f"table1_{s}"].empty
            ],
            "counts": html_table(counts),
            "performance": html_table(ev_report.performance_shown(perf)),
            "delong": html_table(t["delong"].assign(note=ev_report.notes(t["delong"]))),
            "calibration": html_table(ev_report.calibration_shown(t["calibration"]), 3),
            "reclassification": html_table(ev_report.reclassification_shown(t["reclassification"])),
            "sample_size": html_table(ev_report.sample_size_shown(t["sample_size"]), 2),
            "subgroups": html_table(t["performance_subgroups"])
            if not t["performance_subgroups"].empty
            else "",
            "qc_warnings": html_table(qc_warned) if len(qc_warned) else "",
            "missing_features": html_table(missing) if len(missing) else "",
            "roi_notes": html_table(roi_notes) if len(roi_notes) else "",
            "boundary": boundary,
            "univariable": html_table(t["clinical_univariable"])
            if not t["clinical_univariable"].empty
            else "",
            "multivariable": html_table(t["clinical_multivariable"])
            if not t["clinical_multivariable"].empty
            else "",
        },  # fmt: skip
        "figures": fig_svgs,
        "lasso_models": lasso_models,
        "offsets": ", ".join(f"{o:g}" for o in study.deep.offsets_mm) if study.deep else "",
        "crops": _crop_gallery(
            cohort, figures / "crops", t["scores"], t["model_summary"], t["deep_crop_geometry"]
        ),
        "misclassified": html_table(_misclassified(t["scores"], t["model_summary"])),
        "excluded": _excluded_gallery(study, cohort),
        "excluded_total": int((~cohort.included).sum()),
        "subregions": _subregion_gallery(study, cohort, folder, t["rois"]),
        "provenance": _provenance_rows(provenance),
    }
    if study.segmentation is not None:  # a study that segments and also models outcomes
        from fusion.report.segmentation import involvement_context, segmentation_context

        context |= segmentation_context(study, folder) | involvement_context(study, folder)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2"]))
    html = env.get_template("report.html.j2").render(**context)
    write_text_atomic(html, folder / "index.html")
    return folder / "index.html"


def _segmentation_report(study: Study, folder: Path) -> Path:
    """The report of a study without an outcome model: QC, segmentation, generated ROIs."""
    from fusion.report.segmentation import involvement_context, segmentation_context

    if study.segmentation is None:
        raise FusionError(f"{study.source}: the study has neither models nor segmentation")
    tables = folder / "tables"
    provenance = json.loads((folder / "provenance.json").read_text())
    write_text_atomic((TEMPLATES / "tables_README.md").read_text(), tables / "README.md")
    qc, rois = _read(tables, "qc"), _read(tables, "rois")
    counts = qc.status.value_counts().reindex(["ok", "warn", "fail"], fill_value=0)
    features = _read(tables, "radiomics_features")
    roi_summary = pd.DataFrame()
    if not rois.empty:
        kept = rois.kept.fillna("").astype(str) != ""
        roi_summary = pd.DataFrame([{
            "ROI": name, "cases": len(part), "with voxels": int(kept[part.index].sum()),
            "radiomics rows": int((features.roi == name).sum()) if not features.empty else 0,
            "errors": int(part.error.notna().sum()),
        } for name, part in rois.groupby("roi")])  # fmt: skip
        if study.radiomics is None:  # a study that only generates ROIs measures none
            roi_summary = roi_summary.drop(columns="radiomics rows")
    problems = qc[qc.status != "ok"][["case_id", "status", "problems"]] if not qc.empty else qc
    context = {
        "study": study,
        "qc_summary": html_table(pd.DataFrame([counts.to_dict()])),
        "qc_problems": html_table(problems) if len(problems) else "",
        "rois": html_table(roi_summary) if len(roi_summary) else "",
        "roi_tables": [
            f"tables/{name}.csv"
            for name in ("rois", "radiomics_features")
            if (tables / f"{name}.csv").is_file()
        ],
        "provenance": _provenance_rows(provenance),
        **segmentation_context(study, folder),
        **involvement_context(study, folder),
    }
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2"]))
    html = env.get_template("segmentation.html.j2").render(**context)
    write_text_atomic(html, folder / "index.html")
    return folder / "index.html"


def _classifier_report(study: Study, folder: Path) -> Path:
    """The report of an image-classifier study (fusion.report.classifier)."""
    from fusion.report.classifier import classifier_context

    provenance = json.loads((folder / "provenance.json").read_text())
    write_text_atomic((TEMPLATES / "tables_README.md").read_text(), folder / "tables" / "README.md")
    context = {"study": study, "provenance": _provenance_rows(provenance),
               **classifier_context(study, folder, _read, html_table)}  # fmt: skip
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2"]))
    html = env.get_template("classifier.html.j2").render(**context)
    write_text_atomic(html, folder / "index.html")
    return folder / "index.html"


def _missing_features(nan_features: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """Radiomics features PyRadiomics returned as NaN for included cases: each is imputed
    with the training-set median inside the model pipeline."""
    if nan_features.empty:
        return nan_features
    included = set(cohort.case_id[cohort.included].astype(str))
    part = nan_features[nan_features.case_id.astype(str).isin(included)]
    return (
        part.groupby("feature")
        .case_id.agg(cases="count", case_ids=lambda c: ", ".join(map(str, list(c)[:8])))
        .reset_index()
        .assign(handling="imputed (training-set median)")
    )


def _crop_gallery(cohort: pd.DataFrame, folder: Path, scores: pd.DataFrame,
                  summary: pd.DataFrame, geometry: pd.DataFrame,
                  per_class: int = 3) -> list[dict]:  # fmt: skip
    """A few cases of each outcome from the test set (else any set), in manifest order,
    each with the ROI outlined, the source-slice positions of its planes and the
    predicted probability of the study's first model on deep features against its
    threshold."""
    if not folder.is_dir():
        return []
    pool = cohort[cohort.included]
    pool = pool[pool.set == "test"] if (pool.set == "test").any() else pool
    deep_models = [m for m, f in zip(summary.model, summary.features, strict=True)
                   if "deep" in str(f).split()] if not summary.empty else []  # fmt: skip
    model = deep_models[0] if deep_models else None
    threshold = (dict(zip(summary.model, summary.threshold, strict=True)).get(model)
                 if model else None)  # fmt: skip
    probs = (scores[scores.model == model].set_index("case_id").prob if model
             else pd.Series(dtype=float))  # fmt: skip
    positions = (geometry.set_index(geometry.case_id.astype(str)).plane_positions
                 if not geometry.empty else pd.Series(dtype=str))  # fmt: skip
    items = []
    for label in (1, 0):
        for case_id in pool[pool.label == label].case_id.astype(str)[:per_class]:
            png = folder / f"{case_id}.png"
            if not png.is_file():
                continue
            caption = f"outcome {label}, {pool.set.iloc[0]} set"
            if case_id in probs.index and threshold is not None:
                p = float(probs[case_id])
                call = ("true positive" if label else "false positive") if p >= threshold \
                    else ("false negative" if label else "true negative")  # fmt: skip
                caption += f"; {model} p = {p:.2f} (threshold {threshold:.2f}): {call}"
            if case_id in positions.index:
                caption += "; slice positions " + ", ".join(
                    f"{float(v):.1f}" for v in str(positions[case_id]).split()
                )
            items.append({"case_id": case_id, "png": _b64(png), "caption": caption})
    return items


def _misclassified(scores: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every held-out case some model calls wrongly at its threshold: one row per case,
    each model's probability, marked FP or FN where it errs."""
    if scores.empty or summary.empty:
        return pd.DataFrame()
    thresholds = dict(zip(summary.model, summary.threshold, strict=True))
    held = scores[scores.estimate == "held-out"].copy()
    held["wrong"] = (held.prob >= held.model.map(thresholds)).astype(int) != held.label
    cases = held.case_id[held.wrong].unique()
    if not len(cases):
        return pd.DataFrame()
    held = held[held.case_id.isin(cases)]
    marks = [(" FP" if y == 0 else " FN") if w else ""
             for y, w in zip(held.label, held.wrong, strict=True)]  # fmt: skip
    held["shown"] = [f"{p:.2f}{m}" for p, m in zip(held.prob, marks, strict=True)]
    wide = held.pivot_table(index=["case_id", "set", "label"], columns="model",
                            values="shown", aggfunc="first", sort=False)  # fmt: skip
    wide = wide[[m for m in summary.model if m in wide.columns]].fillna("–")
    wide.columns.name = None
    return wide.reset_index().rename(columns={"label": "outcome"})


ROUTINE_NOTE = (r"mean depth from the ROI boundary: [^|]*\(\S+ outermost\)"
                r"|k = \d+ chosen by silhouette[^|]*")  # fmt: skip


def _left_out(exclusions: pd.DataFrame) -> pd.DataFrame:
    """Per model: the cases it could not score (they lack its features) and why."""
    rows = []
    for model, part in exclusions.groupby("model", sort=False):
        ids = part.case_id.astype(str).tolist()
        rows.append({"model": model, "cases left out": len(ids),
                     "which": ", ".join(ids[:12]) + (" ..." if len(ids) > 12 else ""),
                     "why": "; ".join(dict.fromkeys(part.reason))})  # fmt: skip
    return pd.DataFrame(rows)


def _roi_notes(rois: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The generated-ROI notes that need a reader's attention (left-out sub-regions,
    clipped rings, errors), and one line counting which habitat is the outermost (none
    when habitats are named by position, where it is always ``boundary``)."""
    if rois.empty:
        return rois, ""
    rois = rois.astype(object).where(rois.notna(), "")  # empty cells read back as NaN
    routine = rois.notes.astype(str).str.extract(r"\((\S+) outermost\)")[0]
    counts = routine.dropna().value_counts()
    boundary = ", ".join(f"{name} in {n} cases" for name, n in counts.items())
    if set(counts.index) <= {"boundary"}:
        boundary = ""
    rest = rois.notes.astype(str).str.replace(ROUTINE_NOTE, "", regex=True)
    rest = rest.str.strip(" |").str.replace(r"\s*\|\s*\|\s*", " | ", regex=True)
    shown = rois.assign(notes=rest)
    return shown[(shown.notes != "") | (shown.error.astype(str) != "")], boundary


def _subregion_gallery(
    study: Study, cohort: pd.DataFrame, folder: Path, rois: pd.DataFrame, n: int = 4
) -> list:
    """A few test cases (else any) on their largest ROI slice, each generated label in
    its own colour, named as in the feature tables (``habitat_boundary``, ``ring``), with
    the legend beside the image and a 10 mm scale bar, so a reader sees what every
    sub-region is and how large it is."""
    if not study.rois:
        return []
    import io

    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.patches import Patch

    from fusion.cohort import load_cohort
    from fusion.features.radiomics import row_name
    from fusion.io.images import read_image

    cases = {c.case_id: c for c in load_cohort(study)}
    pool = cohort[cohort.included]
    pool = pool[pool.set == "test"] if (pool.set == "test").any() else pool
    names = _label_names(rois)
    items = []
    for case_id in pool.case_id.astype(str)[:n]:
        maps = {name: folder / "rois" / name / f"{case_id}.nii.gz" for name in study.rois}
        if not all(p.is_file() for p in maps.values()):
            continue
        ct = read_image(cases[case_id].image, cases[case_id].series_uid)
        image = sitk.GetArrayFromImage(ct)
        arrays = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for name, p in maps.items()}
        k = int(np.argmax(sum((a > 0).sum(axis=(1, 2)) for a in arrays.values())))
        ys, xs = np.nonzero(sum(a[k] > 0 for a in arrays.values()))
        if not len(ys):
            continue
        pad = 12  # zoom on the ROIs, with some surrounding tissue
        window = (slice(max(ys.min() - pad, 0), ys.max() + pad + 1),
                  slice(max(xs.min() - pad, 0), xs.max() + pad + 1))  # fmt: skip
        arrays = {name: a[:, window[0], window[1]] for name, a in arrays.items()}
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        ax.imshow(np.clip((image[k][window] - 0) / 80, 0, 1), cmap="gray")
        handles, colour = [], 0
        for name, array in arrays.items():
            labels = {int(v): names.get((case_id, name), {}).get(int(v), f"{name}{int(v)}")
                      for v in np.unique(array) if v}  # fmt: skip
            for label in labels:  # named as the rows of the feature tables
                rgba = np.zeros((*array[k].shape, 4))
                rgba[array[k] == label] = (*figs.COLOURS[colour % 10], 0.55)
                ax.imshow(rgba)
                shown = row_name(name, labels, label) if len(labels) > 1 else name
                handles.append(Patch(color=figs.COLOURS[colour % 10], label=shown))
                colour += 1
        figs.scale_bar(ax, ct.GetSpacing()[0], image[k][window].shape)
        ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1),
                  frameon=False)  # fmt: skip
        ax.set_axis_off()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        label = int(pool.set_index(pool.case_id.astype(str)).label[case_id])
        items.append({"case_id": case_id, "png": base64.b64encode(buffer.getvalue()).decode(),
                      "caption": f"outcome {label}, slice {k}"})  # fmt: skip
    return items


def _label_names(rois: pd.DataFrame) -> dict[tuple[str, str], dict[int, str]]:
    """(case, ROI) -> label -> the generator's name of that label, from rois.csv."""
    if rois.empty:
        return {}
    frame = rois.astype(str).where(rois.notna(), "")
    return {(r.case_id, r.roi): {int(k): v for k, v in (item.split("=", 1)
                                                      for item in r.labels.split())}
            for r in frame.itertuples()}  # fmt: skip


EXCLUDED_SHOWN = 12  # slices drawn in the report; every excluded case is in the table


def _excluded_gallery(study: Study, cohort: pd.DataFrame) -> list[dict]:
    """Excluded cases with their reason and, when readable, their central ROI slice: at
    most :data:`EXCLUDED_SHOWN`, chosen one of each kind of reason first (the reason
    without its paths and numbers), then in manifest order, and shown in manifest order.
    A cohort of thousands with hundreds excluded still renders in seconds (each slice is
    an image read and a figure), and up to 12 kinds of problem are each seen once."""
    from fusion.cohort import load_cohort

    excluded = cohort[~cohort.included]
    if excluded.empty:
        return []
    kinds = excluded.reason.astype(str).str.replace(r"\S*/\S*|\d+(\.\d+)?", "", regex=True)
    firsts = ~kinds.duplicated()
    shown = pd.concat([excluded[firsts], excluded[~firsts]]).head(EXCLUDED_SHOWN)
    shown = excluded.loc[excluded.index.isin(shown.index)]  # back in manifest order
    cases = {c.case_id: c for c in load_cohort(study)}
    return [
        {"case_id": row.case_id, "reason": row.reason,
         "png": _slice_png(cases.get(str(row.case_id)), study)}
        for row in shown.itertuples()
    ]  # fmt: skip


def _slice_png(case, study: Study) -> str | None:  # noqa: ANN001 - a Case or None
    """The slice with the most ROI (else the middle one), brain window, ROI outlined."""
    if case is None:
        return None
    try:
        import io

        import matplotlib.pyplot as plt
        import SimpleITK as sitk

        from fusion.io.images import read_image
        from fusion.io.rois import read_roi

        image = read_image(case.image, case.series_uid)
        array = sitk.GetArrayViewFromImage(image)
        roi = None
        if case.roi is not None:
            try:
                roi_image = read_roi(case.roi, image, study.cohort.structures)
                r = sitk.GetArrayViewFromImage(roi_image) == study.cohort.roi_label
                roi = r if r.shape == array.shape else None
            except Exception:  # noqa: BLE001 - the ROI may be what is broken
                roi = None
        k = (
            int(np.argmax(roi.sum(axis=(1, 2))))
            if roi is not None and roi.any()
            else len(array) // 2
        )
        fig, ax = plt.subplots(figsize=(2.6, 2.6))
        ax.imshow(np.clip((array[k] - 0) / 80, 0, 1), cmap="gray")
        if roi is not None and roi[k].any():
            ax.contour(roi[k], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_axis_off()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return base64.b64encode(buffer.getvalue()).decode()
    except Exception:  # noqa: BLE001 - an unreadable case gets its reason only
        return None


def _provenance_rows(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    """The provenance as a reader scans it: one line per fact, nested records flattened
    (``stage_keys``, ``torch``...), absent values left out; the full study settings and
    PyRadiomics parameters, which only a replay needs, are in provenance.json."""
    rows = []
    for key, value in provenance.items():
        if value is None or key in ("settings", "radiomics_params"):
            continue
        if key == "packages":
            rows.append(("packages", ", ".join(f"{k} {v}" for k, v in value.items())))
        elif key == "deep_weights":
            rows.append(("deep weights", f"{value.get('source')} (sha256 {value.get('sha256')}, "
                                         f"pretrained: {value.get('pretrained')})"))  # fmt: skip
        elif key == "torch":
            pins = ", ".join(f"{k}={v}" for k, v in value.get("pins", {}).items() if v)
            rows.append(("torch", f"{value['torch']} (CUDA {value['cuda'] or 'none'}) on "
                         f"{value['cpu']}, ISA {value['cpu_capability']}, {value['threads']} "
                         f"threads; reproducible mode "
                         f"{'on' if value['reproducible_mode'] else 'off'}"
                         + (f" ({pins})" if pins else "")))  # fmt: skip
        elif isinstance(value, dict):
            rows.append((key, "; ".join(f"{k}: {v}" for k, v in value.items()) or "–"))
        else:
            rows.append((key, str(value)))
    rows.append(("settings", "the full validated study and PyRadiomics parameters: "
                             "provenance.json"))  # fmt: skip
    return rows
