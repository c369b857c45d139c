"""Generated ROIs (the study's ``rois`` section: rings, habitats, U-Net and lung
outlines, external segmenters) for the cases that passed QC, under
``reports/<study>/rois/``; ``tables/rois.csv`` lists their labels and notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.rois.stage import ROIS_KEY_EXCLUDES, rois_settings
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class RoisStage(Defaults):
    name = "rois"
    section = "rois"
    writes = ("tables/rois.csv", "rois")
    key_sections = {**ROIS_KEY_EXCLUDES, "rois": ()}  # per case; each ROI's own key
    torch = False  # a unet ROI's device and precision enter that ROI's key

    def applies(self, study: Study) -> bool:
        return bool(study.rois)

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return {name: rois_settings(study, name, device=device if spec.generator == "unet"
                                    else None)
                for name, spec in study.rois.items()}  # fmt: skip

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "rois.csv"]

    def run(self, ctx: RunContext) -> dict:
        """case -> ROI name -> GeneratedRoi; kept in ``ctx.shared`` for the feature
        stages of the same run."""
        return generated_rois(ctx)


def generated_rois(ctx: RunContext) -> dict:
    """The study's generated ROIs, made (or read from the cache) once per run."""
    from fusion.rois.stage import run_rois

    if "generated" not in ctx.shared:
        if not ctx.study.rois:
            ctx.shared["generated"] = {}
            return {}
        cohort_mode = any(spec.mode == "cohort" for spec in ctx.study.rois.values())
        # a population clustering is fitted on the training cases only
        sets = ctx.set_of() if cohort_mode else pd.Series(dtype=str)
        generated, table = run_rois(
            ctx.study, ctx.checked.passed, sets, ctx.checked.digests, ctx.folder,
            ctx.options.cache, jobs=ctx.options.jobs, scheduler=ctx.options.scheduler,
        )  # fmt: skip
        write_csv_atomic(table, ctx.tables / "rois.csv")
        ctx.shared["generated"] = generated
    return ctx.shared["generated"]
