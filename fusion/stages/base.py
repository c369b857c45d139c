"""The :class:`Stage` Protocol and the registry every stage module adds itself to."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fusion.errors import FusionError

if TYPE_CHECKING:
    from fusion.config import Study
    from fusion.stages.context import RunContext


class Stage(Protocol):
    """One step of a study.

    - ``name``: what ``--only`` / ``--from`` and the messages call it.
    - ``section``: the study section it needs (for "does not apply" messages).
    - ``writes``: glob patterns under ``reports/<study>/`` of everything it writes, so a
      failed run can move a stale earlier output out of the way.
    - ``reads``: the tables (``tables/<name>.csv``) its output depends on; they enter
      its key.
    - ``key_sections``: study field -> sub-fields left *out* of its key; None for a
      stage that caches per case (its per-case keys are built where the work is) or
      that is cheap enough to run every time.
    - ``torch``: whether it runs a network, so device and precision enter its key.
    - ``keyed``: whether the run skips it when its stage key
      (:func:`fusion.stages.keys.stage_key`) is unchanged and its products exist; a
      stage that caches per case, or runs in seconds, runs every time.
    - ``products(ctx)``: the files that must exist for the stage to count as done; the
      first is what a skipped stage returns in place of ``run``'s value.
    - ``inputs(ctx)``: what else a keyed stage's output depends on, as strings for its
      key (digests of files that are not ``reads`` tables, state it records); empty for
      most.
    """

    name: str
    section: str
    writes: tuple[str, ...]
    reads: tuple[str, ...]
    key_sections: Mapping[str, Collection[str]] | None
    torch: bool
    keyed: bool

    def applies(self, study: Study) -> bool: ...

    def settings(self, study: Study, device: str) -> dict[str, Any]: ...

    def products(self, ctx: RunContext) -> list[Path]: ...

    def inputs(self, ctx: RunContext) -> list[str]: ...

    def run(self, ctx: RunContext) -> Any: ...


class Defaults:
    """What most stages share, so a stage module states only what differs: reads no
    table, no key (runs every time), no network, applies to every study, no settings,
    no other inputs."""

    reads: tuple[str, ...] = ()
    key_sections: Mapping[str, Collection[str]] | None = None
    torch = False
    keyed = False

    def applies(self, study: Study) -> bool:
        return True

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return {}

    def inputs(self, ctx: RunContext) -> list[str]:
        return []


STAGES: dict[str, Stage] = {}


def register(cls: Callable[[], Stage]) -> Callable[[], Stage]:
    """Class decorator: add a stage to the run, after the ones registered before it."""
    stage = cls()
    if stage.name in STAGES:
        raise FusionError(f"stage {stage.name!r} registered twice")
    STAGES[stage.name] = stage
    return cls


def enforce_budget(stage: str, failures: list, allowed: int) -> None:
    """Stop the run when more cases failed than ``<stage>.max_failures`` allows."""
    if len(failures) > allowed:
        detail = "; ".join(f"{f.case_id}: {f.error}: {f.message}" for f in failures[:10])
        raise FusionError(
            f"{len(failures)} case(s) failed (allowed: {allowed}; set {stage}.max_failures "
            f"to go on without them; every failure is in tables/{stage}_failures.csv): "
            f"{detail}{' ...' if len(failures) > 10 else ''}"
        )
