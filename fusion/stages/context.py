"""The frozen context of one run: what every stage reads, built once.

:func:`build_context` loads the manifest, hashes every case's files and checks every
case (QC, cached per case); the context assigns every case to its set with the study's
one split policy (:func:`fusion.learn.splits.study_sets`) once; it resolves
``device: auto`` of each torch section once, so a stage, its cache key and its
provenance all name the same device and precision. Stages then write their tables
from it; none recomputes the cohort, the QC or the split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fusion.cohort import Case
from fusion.config import Study
from fusion.errors import FusionError
from fusion.io.qc import QCResult

TORCH_SECTIONS = ("classifier", "segmentation", "deep")


class StageError(FusionError):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {cause}")
        self.stage = stage


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run, not what: the results never depend on these."""

    reports: Path = Path("reports")
    cache: Path | None = Path(".cache/fusion")
    jobs: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True, slots=True)
class Checked:
    """The cohort after QC: every case, its QC result, and the content hashes."""

    cases: list[Case]
    qc: list[QCResult]
    digests: dict[str, tuple[str, str]]

    @property
    def passed(self) -> list[Case]:
        ok = {r.case_id for r in self.qc if r.passed}
        return [c for c in self.cases if c.case_id in ok]

    @property
    def excluded(self) -> dict[str, str]:
        """case_id -> 'QC: <problems>' of every case that failed QC."""
        return {r.case_id: "QC: " + "; ".join(str(p) for p in r.problems)
                for r in self.qc if not r.passed}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunContext:
    """Everything a stage reads: the study, how to run, the resolved devices, the
    checked cohort and the sets (``tables/sets.csv``: case_id -> set, patient, source).

    ``shared`` holds what is derived once per run and read by several stages (the sets,
    the generated ROIs), so nothing is recomputed; it is the only mutable part."""

    study: Study
    options: RunOptions
    devices: Mapping[str, str]
    checked: Checked
    shared: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def sets(self) -> pd.DataFrame:
        """The study's one split of every manifest case, indexed by case_id; drawn on
        first use (the splits stage comes right after QC), so a run of the feature
        stages alone works on a cohort too small to split."""
        from fusion.learn.splits import study_sets

        if "sets" not in self.shared:
            sets = study_sets(self.study, self.checked.cases)
            self.shared["sets"] = sets.set_index("case_id", drop=False)
        return self.shared["sets"]

    @property
    def folder(self) -> Path:
        """reports/<study>: everything the run writes."""
        return self.options.reports / self.study.name

    @property
    def tables(self) -> Path:
        return self.folder / "tables"

    def device(self, section: str) -> str:
        """The resolved device of a torch section (``auto`` already decided)."""
        return self.devices.get(section, "cpu")

    def set_of(self) -> pd.Series:
        """case_id -> set name, every case of the manifest."""
        return self.sets["set"]

    def read_table(self, name: str, stage: str) -> pd.DataFrame:
        path = self.tables / f"{name}.csv"
        if not path.is_file():
            raise FusionError(f"{path} not found: run the {stage} stage first")
        return pd.read_csv(path, dtype={"case_id": str})


def resolve_devices(study: Study) -> dict[str, str]:
    """Section -> device for every torch section the study has (``auto`` decided once)."""
    from fusion.device import pick_device

    out = {}
    for section in TORCH_SECTIONS:
        spec = getattr(study, section, None)
        if spec is not None:
            out[section] = pick_device(spec.device)
    return out


def check_study(study: Study, options: RunOptions) -> Checked:
    """Load the manifest and check every case (QC results cached per case)."""
    from fusion.cohort import load_cohort
    from fusion.hashing import case_digests
    from fusion.io.qc import run_qc
    from fusion.rois import needs_drawn_roi

    cases = load_cohort(study)
    digests = case_digests(cases, cache=options.cache)
    results = run_qc(study, cases, digests, options.cache, jobs=options.jobs,
                     scheduler=options.scheduler, needs_roi=needs_drawn_roi(study))  # fmt: skip
    return Checked(cases, results, digests)


def build_context(study: Study, options: RunOptions) -> RunContext:
    """The checked cohort and the devices of a run (a failure here is the qc stage's).
    The reproducible mode's environment is pinned first, before anything loads torch."""
    if study.reproducible is not None:
        from fusion.reproducible import pin_environment

        pin_environment()
    return RunContext(study, options, resolve_devices(study), check_study(study, options))
