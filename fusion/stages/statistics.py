"""Every statistic of a report, as tidy tables, from the saved scores: discrimination,
DeLong, calibration, decision curves, reclassification; for outcome models also sample
size, Table 1 and the clinical regressions, for image classifiers the calibration of
the networks' raw probabilities. One place for both study kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.engine import stage_settings
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext
from fusion.stages.models import has_outcome_models

STATISTICS_KEY_SECTIONS = {
    "seed": (), "clinical": (), "evaluation": (),  # models act through scores.csv,
    "models": (), "rois": (),  # except which model is whose negative control, and its kind
    "cohort": ("manifest",),  # a path: the manifest's content is hashed instead
}  # fmt: skip


@register
class StatisticsStage(Defaults):
    name = "statistics"
    section = "models"
    writes = ("tables/performance*.csv", "tables/delong.csv", "tables/calibration*.csv",
              "tables/net_benefit*.csv", "tables/reclassification.csv",
              "tables/sample_size.csv", "tables/roc_points.csv", "tables/table1_*.csv",
              "tables/clinical_*.csv", "tables/negative_controls.csv",
              "tables/.statistics.key")  # fmt: skip
    reads = ("scores", "model_summary", "cnn_models", "cohort", "qc")
    key_sections = STATISTICS_KEY_SECTIONS
    keyed = True

    def applies(self, study: Study) -> bool:
        return has_outcome_models(study) or study.classifier is not None

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return stage_settings(study, STATISTICS_KEY_SECTIONS)

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "performance.csv"]

    def run(self, ctx: RunContext) -> None:
        from fusion.learn.table import clinical_frame
        from fusion.stats import evaluate

        study = ctx.study
        if study.classifier is not None:
            return _classifier_statistics(ctx)
        scores = ctx.read_table("scores", "models")
        summary = ctx.read_table("model_summary", "models")
        thresholds = dict(zip(summary.model, summary.threshold, strict=True))
        ev = study.evaluation
        out = evaluate.statistics_tables(scores, thresholds, ev, study.seed,
                                         pairs=study.compared_pairs())  # fmt: skip
        out["sample_size"] = evaluate.sample_size_table(
            summary, scores, ev.sample_size.nagelkerke_r2, ev.sample_size.cox_snell_r2,
            ev.sample_size.c_statistic, ev.sample_size.shrinkage,
        )  # fmt: skip
        cohort = ctx.read_table("cohort", "models").set_index("case_id")
        included = cohort[cohort.included]
        cases = [c for c in ctx.checked.cases if c.case_id in included.index]
        frame = clinical_frame(study, cases).rename(columns=lambda c: c.removeprefix("clinical:"))
        qc = ctx.read_table("qc", "qc").set_index("case_id")
        frame["roi_volume_ml"] = qc.roi_volume_ml.reindex(frame.index)
        frame = frame.join(included[["label", "set"]])
        covariates = {c.name: c.type for c in study.clinical}
        references = {c.name: c.reference for c in study.clinical if c.reference}
        out |= evaluate.clinical_tables(
            frame, {**covariates, "roi_volume_ml": "continuous"}, covariates, references
        )
        if ev.subgroups:
            levels = {c.case_id: {"institution": c.institution, **c.clinical} for c in cases}
            groups = pd.DataFrame.from_dict(levels, orient="index")[ev.subgroups]
            out["performance_subgroups"] = evaluate.subgroup_table(
                evaluate.with_pooled_external(scores), groups, ev.conf_level
            )
        if controls := control_kinds(study):
            out["negative_controls"] = evaluate.negative_control_table(
                out["performance"], out["delong"], controls
            )
        for name, table in out.items():
            write_csv_atomic(table, ctx.tables / f"{name}.csv")


def control_kinds(study: Study) -> dict[str, tuple[str, str]]:
    """Control model -> (its real model, kind): ``permuted outcome`` for a
    ``permute_outcome`` model, ``shuffled voxels`` or ``ROI elsewhere`` for one on the
    features of a ``shuffle`` or ``elsewhere`` ROI, ``other`` otherwise."""
    kinds = {"shuffle": "shuffled voxels", "elsewhere": "ROI elsewhere"}
    out = {}
    for name, spec in study.models.items():
        if spec.control_of is None:
            continue
        kind = "permuted outcome" if spec.permute_outcome else "other"
        for feature in spec.features:
            roi = study.rois.get(feature.removeprefix("radiomics:"))
            if not spec.permute_outcome and roi is not None and roi.generator in kinds:
                kind = kinds[roi.generator]
        out[name] = (spec.control_of, kind)
    return out


def _classifier_statistics(ctx: RunContext) -> None:
    """The held-out and validation sets' statistics of the networks' recalibrated
    probabilities (the validation set's are apparent: the Platt map and the threshold
    were fitted on it), and the calibration of their raw probabilities."""
    from fusion.learn.cnn.stage import RECALIBRATED_ON
    from fusion.stats import evaluate

    ev = ctx.study.evaluation
    scores = ctx.read_table("scores", "classifier")
    models = ctx.read_table("cnn_models", "classifier")
    thresholds = dict(zip(models.model, models.threshold, strict=True))
    out = evaluate.statistics_tables(scores, thresholds, ev, ctx.study.seed,
                                     apparent=RECALIBRATED_ON)  # fmt: skip
    out["calibration_raw"] = evaluate.calibration_table(
        evaluate.with_pooled_external(scores), conf_level=ev.conf_level, column="raw_prob"
    )
    for name, table in out.items():
        write_csv_atomic(table, ctx.tables / f"{name}.csv")
