"""What QC says of a case: its problems, each with a code, a severity and a message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["warn", "fail"]


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class QCResult:
    case_id: str
    problems: tuple[Problem, ...]
    roi_voxels: int | None = None
    roi_volume_ml: float | None = None
    content: str | None = None  # 2D images: hash of the decoded pixels (duplicates)

    @property
    def status(self) -> Literal["ok", "warn", "fail"]:
        severities = {p.severity for p in self.problems}
        return "fail" if "fail" in severities else ("warn" if severities else "ok")

    @property
    def passed(self) -> bool:
        return self.status != "fail"
