"""QC: every case checked (in the run context, cached per case); ``tables/qc.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.io.qc import QC_KEY_EXCLUDES, qc_settings, qc_table
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class QCStage(Defaults):
    name = "qc"
    section = "cohort"
    writes = ("tables/qc.csv",)
    key_sections = QC_KEY_EXCLUDES

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        from fusion.rois import needs_drawn_roi

        return qc_settings(study, needs_drawn_roi(study))

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "qc.csv"]

    def run(self, ctx: RunContext) -> None:
        write_csv_atomic(qc_table(ctx.checked.qc), ctx.tables / "qc.csv")
