"""Provenance: what produced a report, precisely enough to replay it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from fusion.config import Study, study_hash
from fusion.hashing import file_digest

# every runtime dependency whose version can change a table, a figure or the report
PACKAGES = ("fusion", "numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "glum",
            "pyradiomics", "SimpleITK", "pydicom", "highdicom", "pillow", "torch",
            "torchvision", "monai", "dask", "distributed", "threadpoolctl", "matplotlib",
            "openpyxl", "pydantic", "Jinja2", "PyYAML")  # fmt: skip


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@cache
def source_hash() -> str:
    """SHA-256 of fusion's own source files (names and bytes), read once per process."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".j2", ".md"):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def fusion_git_state() -> dict[str, Any]:
    """:func:`git_state` of fusion's own checkout (what the provenance records)."""
    return git_state(Path(__file__).resolve().parent)


def git_state(folder: Path) -> dict[str, Any]:
    """The commit of fusion's checkout and whether its tracked files had local changes
    (then only ``fusion_source_sha256`` identifies the code that ran)."""
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit or None, "dirty": None if status is None else bool(status)}


def _path_fields(settings: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(container, key) of every file path a study's settings hold: the manifest, the
    PyRadiomics parameter file, checkpoint weights and a segmenter's checkpoint."""
    for section, key in (("cohort", "manifest"), ("radiomics", "params"), ("deep", "weights"),
                         ("classifier", "weights")):  # fmt: skip
        if isinstance(settings.get(section), dict) and key in settings[section]:
            yield settings[section], key
    for roi in (settings.get("rois") or {}).values():
        if "checkpoint" in (roi.get("settings") or {}):
            yield roi["settings"], "checkpoint"


def _map_paths(settings: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    out = json.loads(json.dumps(settings))
    for container, key in _path_fields(out):
        value = container[key]
        if isinstance(value, str) and value not in ("imagenet", "random", "finetune"):
            container[key] = change(value)
    return out


def relative_paths(settings: dict[str, Any], base: Path) -> dict[str, Any]:
    """The settings with their file paths relative to ``base`` (the study file's folder),
    so a provenance names no user's home folder and survives moving the project."""
    return _map_paths(settings, lambda p: os.path.relpath(p, base) if Path(p).is_absolute() else p)


def absolute_paths(settings: dict[str, Any], base: Path) -> dict[str, Any]:
    """The inverse of :func:`relative_paths` (for a replay)."""
    return _map_paths(settings, lambda p: str((base / p).resolve()))


def data_hash(digests: dict[str, tuple[str, str]]) -> str:
    """One hash of every case's image and ROI content hashes."""
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()


def provenance(
    study: Study,
    digests: dict[str, tuple[str, str]],
    weights: dict[str, Any] | None,
    stage_keys: dict[str, str] | None = None,
    folder: Path | None = None,
    torch_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to replay the run (``fusion replay``): the full validated study,
    the PyRadiomics parameters, hashes of the study file, manifest and every input file,
    the seed, the git commit with a dirty flag, fusion's source hash, the stage cache keys,
    versions, what can move torch's numbers (``torch_info``:
    :func:`fusion.reproducible.torch_state`) and the deep-feature weights. ``folder`` is
    where the provenance is written: the study file's path is recorded relative to it."""
    import yaml

    params = (
        yaml.safe_load(study.radiomics.params.read_text(encoding="utf-8")) or {}
        if study.radiomics
        else None
    )
    folder = (folder or Path.cwd()).resolve()
    base = study.source.parent if study.source else Path.cwd()
    return {
        "study": study.name,
        "paths": "study_file is relative to this file's folder; the paths in settings "
        "are relative to the study file's folder",
        "study_file": os.path.relpath(study.source, folder) if study.source else None,
        "study_file_sha256": file_digest(study.source) if study.source else None,
        "study_config_sha256": study_hash(study),
        "manifest_sha256": file_digest(study.cohort.manifest),
        "radiomics_params_sha256": file_digest(study.radiomics.params) if study.radiomics else None,
        "data_sha256": data_hash(digests),
        "cases_hashed": len(digests),
        "seed": study.seed,
        "git": fusion_git_state(),
        "fusion_source_sha256": source_hash(),
        "stage_keys": stage_keys or {},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "torch": torch_info,
        "deep_weights": weights,
        "settings": relative_paths(study.model_dump(mode="json"), base),
        "radiomics_params": params,
    }
