"""Lung involvement of the evaluated cases from the segmentation stage's predictions and
the lung ROIs (seconds: recomputed on every run)."""

from __future__ import annotations

from pathlib import Path

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class InvolvementStage(Defaults):
    name = "involvement"
    section = "segmentation.involvement"
    writes = ("tables/involvement*.csv", "tables/lung_outline.csv")
    reads = ("seg_cases",)
    # no key: recomputed every run from the segmentation stage's outputs

    def applies(self, study: Study) -> bool:
        return study.segmentation is not None and study.segmentation.involvement is not None

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "involvement.csv"]

    def run(self, ctx: RunContext) -> None:
        from fusion.seg.involvement import involvement_tables

        for name, table in involvement_tables(ctx.study, ctx.folder, ctx.checked.passed).items():
            write_csv_atomic(table, ctx.tables / f"{name}.csv")
