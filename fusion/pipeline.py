"""The loop over a study's registered stages (:mod:`fusion.stages`).

It knows the order (the registry's), which stages a run selects (all, ``--only`` one,
``--from`` one onwards, of those that apply to the study), when a stage is up to date
(its key unchanged, its products there, caching on) and what to do when one fails:
stop with a :class:`StageError` naming it, and move what it and later stages wrote in
an earlier run to ``stale/`` (a report next to new tables would contradict them). It
names no stage's tables or settings; each stage reads what earlier ones wrote under
``reports/<study>/tables`` from the frozen run context.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from fusion.atomic import write_text_atomic
from fusion.config import Study
from fusion.errors import FusionError, did_you_mean
from fusion.reproducible import mode_of, torch_mode
from fusion.stages import STAGES, Stage
from fusion.stages.context import RunContext, RunOptions, StageError, build_context
from fusion.stages.keys import stage_key

log = logging.getLogger(__name__)

__all__ = ["RunOptions", "RunResult", "StageError", "applicable_stages", "run_study"]
FAILED_NOTE = "FAILED.txt"


@dataclass(slots=True)
class RunResult:
    """The report's path, the stages of the run in order (``stages``; those of them
    skipped as up to date in ``up_to_date``) and the run context."""

    report: Path | None = None
    stages: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    context: RunContext | None = None


def applicable_stages(study: Study) -> list[str]:
    """The stages a study has, in run order: a stage without its section is skipped."""
    return [name for name, stage in STAGES.items() if stage.applies(study)]


def _selected(study: Study, only: str | None, start: str | None) -> list[str]:
    names = list(STAGES)
    for name in (only, start):
        if name is not None and name not in STAGES:
            raise FusionError(f"unknown stage {name!r}; stages: {', '.join(names)}."
                              f"{did_you_mean(name, names)}")  # fmt: skip
    chosen = [only] if only else names[names.index(start) :] if start else names
    applicable = applicable_stages(study)
    selected = [s for s in chosen if s in applicable]
    if only and not selected:
        raise FusionError(f"stage {only!r} does not apply to this study (it has no "
                          f"{STAGES[only].section} section)")  # fmt: skip
    return selected


def _marker(stage: Stage, ctx: RunContext) -> Path:
    return ctx.tables / f".{stage.name}.key"


def _up_to_date(stage: Stage, ctx: RunContext, key: str) -> bool:
    """The stage's last run had this key and its products are there."""
    marker = _marker(stage, ctx)
    return (
        marker.is_file()
        and marker.read_text() == key
        and all(p.exists() for p in stage.products(ctx))
    )


def run_study(
    study: Study,
    options: RunOptions,
    only: str | None = None,
    start: str | None = None,
    rerun: bool = False,
) -> RunResult:
    """Run the selected stages in order on one run context; returns what ran. ``rerun``
    runs them even when up to date (``fusion report`` draws the report again)."""
    selected = _selected(study, only, start)
    folder = options.reports / study.name
    started = time.monotonic()
    try:
        ctx = build_context(study, options)
    except Exception as exc:  # noqa: BLE001 - the cohort, its QC: the qc stage's failure
        error = StageError("qc", exc)
        _mark_stale(folder, "qc", error)
        raise error from exc
    log.info("%s: cohort and QC took %.1f s", study.name, time.monotonic() - started)
    result = RunResult(context=ctx)
    mode = mode_of(study)
    for name in selected:
        stage = STAGES[name]
        try:
            keyed = stage.keyed and options.cache is not None  # --no-cache: runs it
            key = stage_key(stage, ctx) if keyed else None
            if key is None or rerun or not _up_to_date(stage, ctx, key):
                # no marker while it runs: one interrupted half-way is never up to date
                _marker(stage, ctx).unlink(missing_ok=True)
                started = time.monotonic()
                with torch_mode(mode if stage.torch else None):
                    value = stage.run(ctx)
                log.info("%s: stage %s took %.1f s", study.name, name,
                         time.monotonic() - started)  # fmt: skip
                if key is not None:
                    write_text_atomic(key, _marker(stage, ctx))
            else:  # its first product is what it returns (the report's path)
                value = stage.products(ctx)[0]
                result.up_to_date.append(name)
            if name == "report":
                result.report = value
        except Exception as exc:  # noqa: BLE001 - every failure names its stage
            error = StageError(name, exc)
            _mark_stale(folder, name, error)
            raise error from exc
        result.stages.append(name)
    if result.report is not None:
        (folder / FAILED_NOTE).unlink(missing_ok=True)
        shutil.rmtree(folder / "stale", ignore_errors=True)
    return result


def _mark_stale(folder: Path, failed: str, error: StageError) -> None:
    """After a failed stage, move what it and later stages wrote in an earlier run into
    ``stale/`` and say so in ``FAILED.txt``; the failures tables stay, since they show
    what went wrong now."""
    names = list(STAGES)
    moved = []
    for name in names[names.index(failed) :]:
        for pattern in STAGES[name].writes:
            for path in sorted(folder.glob(pattern)):
                if path.name.endswith("_failures.csv"):
                    continue
                target = folder / "stale" / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                shutil.move(path, target)
                moved.append(str(path.relative_to(folder)))
    if not folder.is_dir():
        return
    text = (
        f"This study's last run failed at stage {failed!r}:\n{error}\n\n"
        + (f"Outputs of this and later stages were moved to stale/: "
           f"{', '.join(moved)}\n" if moved else "")
        + "They will be written again by the next successful run.\n"
    )  # fmt: skip
    write_text_atomic(text, folder / FAILED_NOTE)
