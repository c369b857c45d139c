"""The one key builder of a whole stage, and the settings keys the provenance records.

A stage's key is the hash of what its output depends on: its settings (the validated
study fields of ``stage.key_sections``, walked by :func:`fusion.engine.stage_settings`,
with the resolved device and precision of a torch stage), the content of the tables it
reads and of its other inputs (``stage.inputs``), the split (``sets.csv``), every checked
case's content hashes, the manifest (labels and clinical values) and fusion's own source
(a code change re-runs a stage once). Per-case stages build their per-case keys from the
same settings with :func:`fusion.engine.cache_key`.
"""

from __future__ import annotations

from fusion.engine import cache_key
from fusion.hashing import file_digest
from fusion.stages.base import Stage
from fusion.stages.context import RunContext


def stage_device(stage: Stage, ctx: RunContext) -> str:
    """The resolved device a stage runs on (its own section's), for its key."""
    return ctx.device(stage.section.split(".")[0]) if stage.torch else "cpu"


def stage_key(stage: Stage, ctx: RunContext) -> str:
    from fusion.provenance import source_hash

    settings = stage.settings(ctx.study, stage_device(stage, ctx))
    tables = [file_digest(ctx.tables / f"{name}.csv") for name in stage.reads]
    cases = sorted((c.case_id, ctx.checked.digests[c.case_id]) for c in ctx.checked.passed)
    sets = ctx.sets.to_dict("records")
    return cache_key(stage.name, settings, tables, stage.inputs(ctx), sets, cases,
                     file_digest(ctx.study.cohort.manifest), source_hash())  # fmt: skip


def settings_keys(ctx: RunContext) -> dict[str, str]:
    """stage -> hash of its settings (a per-case key adds the case's content hashes), for
    every stage of the study that has settings; what the provenance records."""
    from fusion.stages.base import STAGES

    return {name: cache_key(stage.settings(ctx.study, stage_device(stage, ctx)))
            for name, stage in STAGES.items()
            if stage.applies(ctx.study) and stage.key_sections is not None}  # fmt: skip
