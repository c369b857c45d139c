"""PyRadiomics features of the cases that passed QC, from the drawn ROI and every
generated one (cached per case); the stage's four tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.features.radiomics import RADIOMICS_KEY_EXCLUDES, RadiomicsOutput, radiomics_settings
from fusion.io.radiomics_params import load_params
from fusion.stages.base import Defaults, enforce_budget, register
from fusion.stages.context import RunContext
from fusion.stages.rois import generated_rois


@register
class RadiomicsStage(Defaults):
    name = "radiomics"
    section = "radiomics"
    writes = ("tables/radiomics_*.csv",)
    key_sections = RADIOMICS_KEY_EXCLUDES  # per case

    def applies(self, study: Study) -> bool:
        return study.radiomics is not None

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return radiomics_settings(study, load_params(study.radiomics.params))

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "radiomics_features.csv"]

    def run(self, ctx: RunContext) -> RadiomicsOutput:
        output = extract(ctx)
        enforce_budget("radiomics", output.run.failures, ctx.study.radiomics.max_failures)
        return output


def extract(ctx: RunContext) -> RadiomicsOutput:
    """The features and their tables, whatever the number of failed cases."""
    from fusion.features.radiomics import run_radiomics

    output = run_radiomics(
        ctx.study, ctx.checked.passed, ctx.checked.digests, ctx.options.cache,
        jobs=ctx.options.jobs, scheduler=ctx.options.scheduler, generated=generated_rois(ctx),
    )  # fmt: skip
    write_csv_atomic(output.features, ctx.tables / "radiomics_features.csv")
    write_csv_atomic(output.diagnostics, ctx.tables / "radiomics_diagnostics.csv")
    write_csv_atomic(output.failures, ctx.tables / "radiomics_failures.csv")
    write_csv_atomic(output.nan_features, ctx.tables / "radiomics_nan_features.csv")
    return output
