"""ResNet50 features of the cases that passed QC (around the drawn ROI, or the generated
ROI ``deep.roi``), cached per case; crop strips for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusion.atomic import write_csv_atomic, write_text_atomic
from fusion.config import Study
from fusion.engine import failures_frame
from fusion.features.deep import DEEP_KEY_EXCLUDES, DeepOutput, deep_settings
from fusion.stages.base import Defaults, enforce_budget, register
from fusion.stages.context import RunContext
from fusion.stages.rois import generated_rois


@register
class DeepStage(Defaults):
    name = "deep"
    section = "deep"
    writes = ("tables/deep_*.csv", "tables/deep_weights.json", "figures/crops")
    key_sections = DEEP_KEY_EXCLUDES  # per case, with the weights' digest and batch
    torch = True

    def applies(self, study: Study) -> bool:
        return study.deep is not None

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return deep_settings(study, device, "<weights digest>", study.deep.batch_size)

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "deep_features.csv"]

    def run(self, ctx: RunContext) -> DeepOutput:
        output = extract(ctx)
        enforce_budget("deep", output.failures, ctx.study.deep.max_failures)
        return output


def extract(ctx: RunContext) -> DeepOutput:
    """The features and their tables, whatever the number of failed cases."""
    from fusion.features.deep import run_deep

    study = ctx.study
    generated = generated_rois(ctx) if study.deep.roi is not None else None
    output = run_deep(
        study, ctx.checked.passed, ctx.checked.digests, ctx.options.cache,
        strips_dir=ctx.folder / "figures" / "crops", jobs=ctx.options.jobs,
        scheduler=ctx.options.scheduler, generated=generated, device=ctx.device("deep"),
        sets=ctx.set_of() if study.deep.weights == "finetune" else None,
    )  # fmt: skip
    write_csv_atomic(output.features, ctx.tables / "deep_features.csv")
    write_csv_atomic(output.geometry, ctx.tables / "deep_crop_geometry.csv")
    write_csv_atomic(failures_frame(output.failures, "deep"), ctx.tables / "deep_failures.csv")
    weights = {
        "source": output.weights.source, "sha256": output.weights.sha256,
        "pretrained": output.weights.pretrained, "warning": output.weights.warning,
        "device": output.device, "settings_key": output.settings_key,
    }  # fmt: skip
    write_text_atomic(json.dumps(weights, indent=2), ctx.tables / "deep_weights.json")
    return output
