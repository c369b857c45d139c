"""Provenance and the self-contained HTML report, from the tables the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

from fusion.atomic import write_text_atomic
from fusion.stages.base import STAGES, Defaults, register
from fusion.stages.context import RunContext


@register
class ReportStage(Defaults):
    name = "report"
    section = "report"
    writes = ("index.html", "provenance.json", "figures/*.svg", "figures/*.png")
    # no key: renders in seconds, every run

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.folder / "index.html"]

    def run(self, ctx: RunContext) -> Path:
        from fusion.provenance import provenance
        from fusion.report.html import build_report
        from fusion.stages.keys import settings_keys

        study, folder = ctx.study, ctx.folder
        weights_file = ctx.tables / "deep_weights.json"
        weights = json.loads(weights_file.read_text()) if weights_file.is_file() else None
        info = provenance(
            study, ctx.checked.digests, weights, settings_keys(ctx), folder, _torch_info(ctx)
        )
        if study.classifier is not None:
            from fusion.report.classifier import provenance_models

            info["classifier_models"] = provenance_models(ctx.tables)
        write_text_atomic(json.dumps(info, indent=2), folder / "provenance.json")
        return build_report(study, folder)


def _torch_info(ctx: RunContext) -> dict | None:
    """What can move this study's torch numbers (None: the study runs no network)."""
    study = ctx.study
    networks = any(stage.torch and stage.applies(study) for stage in STAGES.values())
    if not networks and all(roi.generator != "unet" for roi in study.rois.values()):
        return None
    from fusion.reproducible import mode_of, torch_state

    return torch_state(mode_of(study))
