"""Replay a finished run from its ``provenance.json``: same settings, same data, same tables.

The provenance holds the full validated study and the PyRadiomics parameters, so a
replay does not need the study file or parameter file as they are today. It refuses to
run when the manifest or any image or ROI changed since the recorded run (the tables
could not be the same), and says so when the code differs from the recorded commit or
source hash (the tables may then differ, and the difference is the code's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fusion.config import Study, load_study
from fusion.errors import FusionError
from fusion.hashing import file_digest
from fusion.provenance import data_hash, fusion_git_state, source_hash


def replay_study(
    provenance_file: Path, out: Path, cache: Path | None = None
) -> tuple[Study, list[str]]:
    """Write the recorded study (and parameter file) under ``out`` and load it; check
    that the manifest and the data are the recorded ones. Returns the study and notes
    on what differs from the recorded run (code version)."""
    from fusion.cohort import load_cohort
    from fusion.hashing import case_digests

    info: dict[str, Any] = json.loads(Path(provenance_file).read_text(encoding="utf-8"))
    if "settings" not in info:
        raise FusionError(
            f"{provenance_file}: no recorded settings (written by an older fusion); it "
            "cannot be replayed"
        )
    from fusion.provenance import absolute_paths

    recorded_study = Path(provenance_file).parent / (info.get("study_file") or ".")
    settings = absolute_paths(info["settings"], recorded_study.parent)
    manifest = Path(settings["cohort"]["manifest"])
    if not manifest.is_file():
        raise FusionError(f"{manifest}: the manifest of the recorded run no longer exists")
    if (now := file_digest(manifest)) != info["manifest_sha256"]:
        raise FusionError(
            f"{manifest}: the manifest changed since the recorded run (sha256 "
            f"{info['manifest_sha256'][:12]}... then, {now[:12]}... now); a replay could not "
            "reproduce its tables"
        )
    out.mkdir(parents=True, exist_ok=True)
    if settings.get("radiomics"):
        params = out / "radiomics_params.yaml"
        params.write_text(yaml.safe_dump(info["radiomics_params"], sort_keys=False))
        settings["radiomics"]["params"] = str(params)
    study_file = out / f"{settings['name']}.replay.yaml"
    study_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    study = load_study(study_file)
    digests = case_digests(load_cohort(study), cache=cache)
    if data_hash(digests) != info["data_sha256"]:
        raise FusionError(
            "the images or ROIs changed since the recorded run (data hash "
            f"{info['data_sha256'][:12]}... then, {data_hash(digests)[:12]}... now); a replay "
            "could not reproduce its tables"
        )
    notes = []
    recorded, current = info.get("git", {}), fusion_git_state()
    if info.get("fusion_source_sha256") != source_hash():
        notes.append(
            f"fusion's code differs from the recorded run (commit {recorded.get('commit')}"
            f"{', with local changes' if recorded.get('dirty') else ''}; now "
            f"{current.get('commit')}): differences in the tables are the code's"
        )
    return study, notes
