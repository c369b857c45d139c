"""Provenance: what produced a report, precisely enough to replay it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from fusion.config import Study, study_hash

PACKAGES = ("fusion", "numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "pyradiomics",
            "SimpleITK", "torch", "torchvision", "matplotlib", "pydantic", "Jinja2")  # fmt: skip


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(
    study: Study, digests: dict[str, tuple[str, str]], weights: dict[str, Any] | None
) -> dict[str, Any]:
    """Versions, hashes of the study file, the manifest and every input file, the seed,
    the git commit and the deep-feature weights."""
    data = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()
    return {
        "study": study.name,
        "study_file": str(study.source),
        "study_file_sha256": _sha256(study.source) if study.source else None,
        "study_config_sha256": study_hash(study),
        "manifest_sha256": _sha256(study.cohort.manifest),
        "radiomics_params_sha256": _sha256(study.radiomics.params) if study.radiomics else None,
        "data_sha256": data,
        "cases_hashed": len(digests),
        "seed": study.seed,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "deep_weights": weights,
    }
