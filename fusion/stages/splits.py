"""The study's one split (:func:`fusion.learn.splits.study_sets`): ``tables/sets.csv``,
which every later stage reads from the run context."""

from __future__ import annotations

from pathlib import Path

from fusion.atomic import write_csv_atomic
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class SplitsStage(Defaults):
    name = "splits"
    section = "cohort"
    writes = ("tables/sets.csv",)
    # no key: drawn in the run context in milliseconds, every run

    def products(self, ctx: RunContext) -> list[Path]:
        return [ctx.tables / "sets.csv"]

    def run(self, ctx: RunContext) -> None:
        write_csv_atomic(ctx.sets, ctx.tables / "sets.csv")
