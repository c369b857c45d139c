"""Segmentation U-Nets: train, predict and evaluate (``tables/seg_*.csv``); the final
models are published for the ``unet`` ROI generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.seg.stage import SEG_KEY_EXCLUDES, model_path, seg_settings
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class SegmentationStage(Defaults):
    name = "segmentation"
    section = "segmentation"
    writes = ("tables/seg_*.csv", "tables/.segmentation.key", "segmentation")
    # the evaluation settings and the manifest (subgroups, labels) act on its tables
    key_sections = {**SEG_KEY_EXCLUDES, "segmentation": (), "evaluation": ()}
    torch = True
    keyed = True

    def applies(self, study: Study) -> bool:
        return study.segmentation is not None

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return seg_settings(study, device) | {
            "tables": study.segmentation.model_dump(mode="json"),
            "evaluation": study.evaluation.model_dump(mode="json"),
        }

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "seg_cases.csv",
                *(model_path(ctx.folder, v) for v in ctx.study.segmentation.variants)]  # fmt: skip

    def run(self, ctx: RunContext) -> None:
        from fusion.seg.stage import run_segmentation

        tables = run_segmentation(ctx.study, ctx.checked.passed, ctx.checked.digests,
                                  ctx.folder, ctx.options.cache, ctx.sets,
                                  ctx.device("segmentation"))  # fmt: skip
        for name, frame in tables.items():
            write_csv_atomic(frame, ctx.tables / f"{name}.csv")
