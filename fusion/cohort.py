"""The cohort manifest: one CSV row per case, turned into picklable :class:`Case` records.

Structural problems of the manifest (missing columns, duplicate case IDs, a label that
is not binary, a case or patient in two splits) are collected and raised together as one
:class:`ManifestError`, so a clinician fixes the spreadsheet in one pass. A missing image
or ROI file is not a manifest error: it belongs to one case, so QC reports that case as
failed and the rest of the cohort goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fusion.config import CohortSpec, Study
from fusion.errors import ManifestError, did_you_mean
from fusion.io.spreadsheet import read_table

SPLITS = ("train", "test")
# splits only some studies have: the set that tunes a segmentation model's operating
# point, the set that stops and thresholds an image classifier
EXTRA_SPLITS = {"tuning": "segmentation", "validation": "image classifier"}


@dataclass(frozen=True, slots=True)
class Case:
    """One case: lazy file references plus what the manifest says about it.

    Holds paths, never arrays, so it is cheap to pickle to a worker process or a Dask
    worker, which then reads its own case from disk.
    """

    case_id: str
    image: Path
    roi: Path | None
    label: int
    split: str | None = None
    institution: str | None = None
    site: str | None = None  # scanner or site, for harmonisation
    patient: str | None = None
    series_uid: str | None = None
    clinical: dict[str, Any] = field(default_factory=dict)
    reference: Path | None = None  # segmentation studies: the reference label map
    row: int = 0

    @property
    def is_external(self) -> bool:
        return self.split == "external"


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == ""


def _resolve(folder: Path, value: Any) -> Path | None:
    """A manifest path, relative to the manifest's folder unless absolute. Backslashes
    (a manifest written on Windows, ``img\\c0.nii.gz``) separate folders too."""
    if _is_blank(value):
        return None
    path = Path(str(value).strip().replace("\\", "/"))
    return path if path.is_absolute() else (folder / path)


def _parse_label(value: Any, label_map: dict[str, int] | None) -> int | None:
    """0/1 (also 0.0/1.0, '0'/'1', True/False) or a value the study maps to 0/1."""
    if _is_blank(value):
        return None
    text = str(value).strip()
    if label_map is not None:
        return label_map.get(text)
    if text in {"0", "0.0", "False", "false"}:
        return 0
    if text in {"1", "1.0", "True", "true"}:
        return 1
    return None


def _split_of(raw: Any, institution: str | None, spec: CohortSpec) -> str | None:
    if institution is not None and institution in spec.external_institutions:
        return "external"
    if _is_blank(raw):
        return None
    return str(raw).strip().lower()


def _text(value: Any) -> str | None:
    return None if _is_blank(value) else str(value).strip()


def _clinical_values(row: pd.Series, study: Study) -> tuple[dict[str, Any], list[str]]:
    """Continuous covariates become floats; blanks become None (missing, imputed later)."""
    values: dict[str, Any] = {}
    bad: list[str] = []
    for cov in study.clinical:
        text = _text(row[cov.source_column])
        if text is not None and cov.type == "continuous":
            try:
                values[cov.name] = float(text)
            except ValueError:
                bad.append(f"covariate {cov.name!r} = {text!r} is not a number (leave the "
                           "cell blank for a missing value)")  # fmt: skip
            continue
        values[cov.name] = text
    return values, bad


def _allowed_splits(study: Study) -> tuple[str, ...]:
    extra = ("tuning",) if study.segmentation else ("validation",) if study.classifier else ()
    return (*SPLITS, *extra)


def read_manifest(spec: CohortSpec) -> pd.DataFrame:
    """Read the manifest (CSV in any common encoding and separator, or a workbook) with
    every column as text, so IDs like '007' keep their zeros. ``attrs["where"]`` names
    the file (and sheet), ``attrs["detected"]`` what was detected (fusion.io.spreadsheet)."""
    table = read_table(spec.manifest)
    table.frame.attrs.update(where=table.where, detected=table.detected)
    return table.frame


def load_cohort(study: Study) -> list[Case]:
    """Validate the manifest of a study and return its cases in manifest order."""
    spec = study.cohort
    cols = spec.columns
    df = read_manifest(spec)
    where = df.attrs["where"]
    needed = {"case_id": cols.case_id, "image": cols.image, "label": cols.label}
    for optional in ("roi", "split", "institution", "site", "patient", "series", "reference"):
        name = getattr(cols, optional)
        # a column left at its default is optional; one the study names must exist
        if name is not None and (optional in cols.model_fields_set or name in df.columns):
            needed[optional] = name
    needed |= {f"clinical {c.name}": c.source_column for c in study.clinical}
    missing = [f"{k} column {v!r}" for k, v in needed.items() if v not in df.columns]
    if missing:
        hints = "".join(did_you_mean(m.split("'")[1], df.columns) for m in missing)
        raise ManifestError(
            f"{where}: missing {', '.join(missing)}; the manifest has columns "
            f"{', '.join(map(repr, df.columns))} (read as {'; '.join(df.attrs['detected'])})."
            f"{hints} Fix the column names or the study's cohort.columns mapping."
        )

    problems: list[str] = []
    folder = spec.manifest.parent
    cases: list[Case] = []
    seen: dict[str, tuple[int, str | None]] = {}
    patient_splits: dict[str, dict[str, str]] = {}
    for i, row in df.iterrows():
        line = int(i) + 2  # header is line 1
        case_id = _text(row[cols.case_id])
        if case_id is None:
            problems.append(f"line {line}: empty case id")
            continue
        institution = _text(row[cols.institution]) if cols.institution else None
        split = _split_of(row[cols.split] if "split" in needed else None, institution, spec)
        allowed = _allowed_splits(study)
        if split is not None and split not in (*allowed, "external"):
            problems.append(
                f"line {line}, case {case_id!r}: split {split!r} is not one of "
                f"{', '.join(allowed)}.{did_you_mean(split, allowed)}"
                + (f" ({split!r} is for {EXTRA_SPLITS[split]} studies)"
                   if split in EXTRA_SPLITS else "")
            )  # fmt: skip
        if case_id in seen:
            first_line, first_split = seen[case_id]
            if first_split != split:
                problems.append(
                    f"line {line}: case {case_id!r} is in two splits "
                    f"({first_split} on line {first_line}, {split} here)"
                )
            else:
                problems.append(
                    f"line {line}: duplicate case id {case_id!r} (first on line {first_line})"
                )
            continue
        seen[case_id] = (line, split)
        raw_label = row[cols.label]
        label = _parse_label(raw_label, spec.label_map)
        if label is None:
            allowed = sorted(spec.label_map) if spec.label_map else ["0", "1"]
            what = (f"label in column {cols.label!r} is blank" if _is_blank(raw_label)
                    else f"label {raw_label!r} in column {cols.label!r} is not binary")  # fmt: skip
            problems.append(
                f"line {line}, case {case_id!r}: {what}; allowed: {', '.join(allowed)} "
                "(or give cohort.label_map in the study)"
            )
            continue
        clinical, bad = _clinical_values(row, study)
        problems.extend(f"line {line}, case {case_id!r}: {b}" for b in bad)
        patient = _text(row[cols.patient]) if cols.patient else None
        if patient is not None and split is not None:
            patient_splits.setdefault(patient, {})[split] = case_id
        cases.append(
            Case(
                case_id=case_id,
                image=_resolve(folder, row[cols.image]) or folder / "<empty>",
                roi=_resolve(folder, row[cols.roi]) if "roi" in needed else None,
                label=label,
                split=split,
                institution=institution,
                site=_text(row[cols.site]) if cols.site else None,
                patient=patient,
                series_uid=_text(row[cols.series]) if cols.series else None,
                clinical=clinical,
                row=line,
                reference=_resolve(folder, row[cols.reference]) if "reference" in needed else None,
            )
        )
    for patient, splits in patient_splits.items():
        if len(splits) > 1:
            detail = ", ".join(f"{s}: {c}" for s, c in sorted(splits.items()))
            problems.append(f"patient {patient!r} has cases in several splits ({detail})")
    if problems:
        raise ManifestError(f"{where}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems))
    if not cases:
        raise ManifestError(f"{where}: the manifest holds no cases")
    return cases
