"""Provenance and the self-contained HTML report, from the tables the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusion.atomic import write_text_atomic
from fusion.config import Study
from fusion.engine import Store, stage_settings
from fusion.hashing import file_digest
from fusion.provenance import data_hash, fusion_git_state
from fusion.stages.base import STAGES, Defaults, register
from fusion.stages.context import RunContext

# The report shows every section of the study, so every field enters its key.
REPORT_KEY_SECTIONS: dict[str, tuple[str, ...]] = {name: () for name in Study.model_fields}
# In the study folder but not the report's input: a failed run's leftovers and what
# `make report-check` adds.
NOT_INPUTS = ("stale/**/*", "FAILED.txt", "screenshot.png")


@register
class ReportStage(Defaults):
    name = "report"
    section = "report"
    writes = ("index.html", "provenance.json", "figures/*.svg", "figures/*.png",
              "tables/README.md", "tables/.report.key")  # fmt: skip
    key_sections = REPORT_KEY_SECTIONS
    # skipped when nothing it shows has changed: re-drawing the figures of an unchanged
    # study was most of a warm `make all` (hematoma: 19 of 21 s)
    keyed = True

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return stage_settings(study, REPORT_KEY_SECTIONS)

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.folder / "index.html", ctx.folder / "provenance.json"]

    def inputs(self, ctx: RunContext) -> list[str]:
        """Every file the earlier stages left in the study folder (tables, ROIs, crops,
        Grad-CAM maps, the networks' outputs; by name and content), every case's image
        and ROI (the excluded cases' too: the report draws them), the reference masks it
        draws, the study file and the radiomics parameter file, and the torch state and
        git commit the provenance records (a new commit draws it again, so that it names
        the code at hand). Package versions are left out: a report is not redrawn for an
        upgrade that changed none of its numbers, and its provenance keeps the versions
        that drew it."""
        folder, study = ctx.folder, ctx.study
        # its own files, found as the run's stale-moving finds them (Path.glob)
        own = {path for pattern in (*self.writes, *NOT_INPUTS) for path in folder.glob(pattern)}
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p not in own)
        store = Store(ctx.options.cache, "digests") if ctx.options.cache is not None else None
        digests = [f"{p.relative_to(folder).as_posix()} {file_digest(p, store)}" for p in files]
        references = [file_digest(c.reference, store) for c in ctx.checked.cases if c.reference]
        params = file_digest(study.radiomics.params) if study.radiomics is not None else "none"
        study_file = file_digest(study.source) if study.source is not None else "none"
        state = {"torch": _torch_info(ctx), "git": fusion_git_state()}
        return [*digests, data_hash(ctx.checked.digests), *references, params, study_file,
                json.dumps(state, sort_keys=True, default=str)]  # fmt: skip

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
