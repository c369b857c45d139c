"""The order of a study's stages, and where each writes its tables.

This is the only module that knows the order: QC -> radiomics -> (deep features ->
models -> statistics -> report as they land). Each stage function reads what the
previous one produced and writes its own tidy tables under ``reports/<study>/tables``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fusion.atomic import write_csv_atomic
from fusion.cohort import Case, load_cohort
from fusion.config import Study
from fusion.features.deep import DeepOutput, run_deep
from fusion.features.radiomics import RadiomicsOutput, run_radiomics
from fusion.hashing import case_digests
from fusion.io.qc import QCResult, qc_table, run_qc


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


def tables_dir(study: Study, options: RunOptions) -> Path:
    return options.reports / study.name / "tables"


def qc_stage(study: Study, options: RunOptions, out: Path | None = None) -> Checked:
    """Load the manifest, check every case, write ``qc.csv``."""
    cases = load_cohort(study)
    digests = case_digests(cases)
    results = run_qc(
        study, cases, digests, options.cache, jobs=options.jobs, scheduler=options.scheduler
    )
    write_csv_atomic(qc_table(results), out or tables_dir(study, options) / "qc.csv")
    return Checked(cases, results, digests)


def radiomics_stage(study: Study, options: RunOptions, checked: Checked) -> RadiomicsOutput:
    """Extract radiomics for the cases that passed QC; write the stage's four tables."""
    output = run_radiomics(
        study,
        checked.passed,
        checked.digests,
        options.cache,
        jobs=options.jobs,
        scheduler=options.scheduler,
    )
    tables = tables_dir(study, options)
    write_csv_atomic(output.features, tables / "radiomics_features.csv")
    write_csv_atomic(output.diagnostics, tables / "radiomics_diagnostics.csv")
    write_csv_atomic(output.failures, tables / "radiomics_failures.csv")
    write_csv_atomic(output.nan_features, tables / "radiomics_nan_features.csv")
    return output


def deep_stage(study: Study, options: RunOptions, checked: Checked) -> DeepOutput:
    """ResNet50 features for the cases that passed QC; crop strips for the report."""
    folder = options.reports / study.name
    output = run_deep(
        study,
        checked.passed,
        checked.digests,
        options.cache,
        strips_dir=folder / "figures" / "crops",
    )
    tables = tables_dir(study, options)
    write_csv_atomic(output.features, tables / "deep_features.csv")
    write_csv_atomic(output.geometry, tables / "deep_crop_geometry.csv")
    write_csv_atomic(
        pd.DataFrame(
            [[f.case_id, "deep", f.error, f.message, f.traceback] for f in output.failures],
            columns=["case_id", "stage", "error", "message", "traceback"],
        ),
        tables / "deep_failures.csv",
    )
    return output
