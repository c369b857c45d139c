"""Outcome models: the modelling table (``cohort.csv``: who is in, who is out and why;
``model_exclusions.csv``: the models a case is left out of, and why),
every model fitted on the training set (a scikit-learn Pipeline each), scores for every
case and the models' summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.engine import stage_settings
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext

# study fields the stage depends on; the top-level fields left out (name, description,
# qc, radiomics, deep) act only through the tables it reads
MODELS_KEY_SECTIONS = {
    "seed": (), "clinical": (), "models": (), "evaluation": (), "perturbations": (),
    "harmonisation": (),
    "cohort": ("manifest",),  # a path: the manifest's content is hashed instead
}  # fmt: skip


def has_outcome_models(study: Study) -> bool:
    """A segmentation or image-classifier study may have no outcome model to fit."""
    return bool(study.models) or (study.segmentation or study.classifier) is None


@register
class ModelsStage(Defaults):
    name = "models"
    section = "models"
    writes = ("tables/cohort.csv", "tables/model_exclusions.csv", "tables/scores.csv",
              "tables/model_summary.csv", "tables/model_tuning.csv", "tables/lasso_*.csv",
              "tables/selected_features.csv", "tables/feature_robustness.csv",
              "tables/harmonisation*.csv", "tables/.models.key")  # fmt: skip
    reads = ("qc", "radiomics_features", "deep_features", "radiomics_failures", "deep_failures")
    key_sections = MODELS_KEY_SECTIONS
    keyed = True

    def applies(self, study: Study) -> bool:
        return has_outcome_models(study)

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return stage_settings(study, MODELS_KEY_SECTIONS)

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "scores.csv"]

    def run(self, ctx: RunContext) -> None:
        from fusion.learn.splits import patient_groups
        from fusion.learn.study import (
            case_inputs,
            fit_study_models,
            harmonisation_tables,
            summary_tables,
        )
        from fusion.learn.table import excluded_from_all, feature_table, radiomics_wide
        from fusion.threads import cores

        study, cases = ctx.study, ctx.checked.cases
        qc = ctx.read_table("qc", "qc").set_index("case_id")
        blocks, radiomics = {}, None
        if study.radiomics is not None:
            radiomics = ctx.read_table("radiomics_features", "radiomics")
            blocks["radiomics"] = radiomics_wide(radiomics, study.auxiliary_rois())
        if study.deep is not None:
            blocks["deep"] = ctx.read_table("deep_features", "deep").set_index("case_id")
        passed = [c for c in cases if qc.status.get(c.case_id) != "fail"]
        table, exclusions = feature_table(study, passed, blocks, _failure_reasons(ctx.tables))
        out_of_all = excluded_from_all(study, exclusions)
        table = table.drop(index=out_of_all.case_id)
        sets = ctx.set_of()
        reasons = {cid: f"QC: {qc.problems[cid]}" for cid in qc.index[qc.status == "fail"]}
        reasons |= dict(zip(out_of_all.case_id, out_of_all.reason, strict=True))
        partly = exclusions[exclusions.case_id.isin(table.index)]
        some = partly.groupby("case_id").model.agg(" ".join)
        cohort = pd.DataFrame({
            "case_id": [c.case_id for c in cases],
            "set": [sets[c.case_id] for c in cases],
            "label": [c.label for c in cases],
            "included": [c.case_id in table.index for c in cases],
            "reason": [reasons.get(c.case_id, "") for c in cases],
            "left_out_of": [some.get(c.case_id, "") for c in cases],
            "split_source": "manifest" if any(c.split for c in cases) else "random",
        })  # fmt: skip
        write_csv_atomic(cohort, ctx.tables / "cohort.csv")
        write_csv_atomic(partly, ctx.tables / "model_exclusions.csv")
        labels = pd.Series({c.case_id: c.label for c in cases})[table.index]
        inputs = case_inputs(study, passed, radiomics)
        if study.perturbations is not None:
            write_csv_atomic(_robustness(inputs, sets, table.index, study.evaluation.conf_level),
                             ctx.tables / "feature_robustness.csv")  # fmt: skip
        out = fit_study_models(study, table, labels, sets[table.index], patient_groups(cases),
                               jobs=ctx.options.jobs or cores(), exclusions=partly,
                               inputs=inputs)  # fmt: skip
        write_csv_atomic(out.scores, ctx.tables / "scores.csv")
        for name, frame in summary_tables(out).items():
            write_csv_atomic(frame, ctx.tables / f"{name}.csv")
        if study.harmonisation is not None:
            for name, frame in harmonisation_tables(out, table, inputs).items():
                write_csv_atomic(frame, ctx.tables / f"{name}.csv")


def _robustness(
    inputs: Any, sets: pd.Series, included: pd.Index, conf_level: float
) -> pd.DataFrame:
    """``feature_robustness.csv``: the ICC of every radiomics feature across the drawn
    ROI and its perturbations, on the training cases (what ``robust`` models select by)."""
    from fusion.learn.robust import robustness_table

    train = [c for c in included if sets.get(c) == "train"]
    return robustness_table(inputs.perturbed, list(inputs.rois), inputs.icc, train,
                            inputs.min_ci_low, inputs.min_icc, conf_level)  # fmt: skip


def _failure_reasons(tables: Path) -> dict[str, dict[str, str]]:
    """block -> case -> 'radiomics failed: <error>: <message>' from the failures tables."""
    reasons: dict[str, dict[str, str]] = {}
    for block in ("radiomics", "deep"):
        path = tables / f"{block}_failures.csv"
        if path.is_file() and path.stat().st_size > 1:
            frame = pd.read_csv(path, dtype={"case_id": str}).fillna("")
            reasons[block] = {r.case_id: f"{block} failed: {r.error}: {r.message}"
                              for r in frame.itertuples()}  # fmt: skip
    return reasons
