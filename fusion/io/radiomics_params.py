"""The study's PyRadiomics parameter file, and what it asks of an ROI.

Read here (not in the radiomics stage) because QC applies the same limits that
PyRadiomics' ``checkMask`` will: a case that passes QC is never rejected later.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import yaml

from fusion.config import Study
from fusion.errors import ConfigError, did_you_mean


def load_params(path: Path) -> dict[str, Any]:
    """The parameter file as a mapping; checked by PyRadiomics' schema before any case.

    pykwalify's report (``Key 'binWidht' was not defined. Path: '/setting'``) is turned
    into one line per problem naming the key, the keys allowed there and the closest one.
    """
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)  # we print its findings
    try:
        params = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        RadiomicsFeatureExtractor(params)
    except Exception as exc:  # pykwalify's SchemaError, YAML errors, bad values
        problems = _schema_problems(str(getattr(exc, "msg", exc)))
        raise ConfigError(
            f"{path}: invalid PyRadiomics parameter file:\n  - " + "\n  - ".join(problems)
        ) from None
    return params


def _schema_problems(message: str) -> list[str]:
    """pykwalify's lines, each with its key path and, for an unknown key, the keys allowed
    there (from PyRadiomics' own schema) and the closest spelling."""
    import re

    found = re.findall(r"- (.*?)\. Path: '(/[^']*)'", message)
    if not found:
        return [message.strip()]
    lines = []
    for text, where in found:
        key_path = where.strip("/").replace("/", ".")
        unknown = re.match(r"Key '(.+)' was not defined", text)
        if unknown:
            allowed = _schema_keys(where.strip("/").split("/") if where != "/" else [])
            key = unknown.group(1)
            lines.append(
                f"{key_path + '.' if key_path else ''}{key}: unknown key; allowed here: "
                f"{', '.join(allowed)}.{did_you_mean(key, allowed)}"
            )
        else:
            lines.append(f"{key_path or '<top level>'}: {text}")
    return lines


def _schema_keys(path: list[str]) -> list[str]:
    import radiomics

    schema = yaml.safe_load(
        (Path(radiomics.__file__).parent / "schemas" / "paramSchema.yaml").read_text()
    )
    for part in path:
        schema = schema.get("mapping", {}).get(part, {})
    return list(schema.get("mapping", {}))


def roi_labels(study: Study) -> tuple[int, ...]:
    """The labels to extract: the study's list, else every named structure, else the ROI
    label."""
    spec = study.radiomics
    if spec and spec.labels:
        return tuple(spec.labels)
    if study.cohort.structures:
        return tuple(range(1, len(study.cohort.structures) + 1))
    return (study.cohort.roi_label,)


def roi_limits(study: Study) -> tuple[int, int, dict]:
    """What PyRadiomics' ``checkMask`` requires of an ROI, from the study's parameter
    file: the axes it must span more than one voxel in (``minimumROIDimensions``,
    default 2), its fewest voxels (``minimumROISize``, default none: 0), and the
    settings its resampling uses (``resampledPixelSpacing`` and friends; empty when it
    does not resample). QC applies them to the ROI as PyRadiomics will see it, so no
    case passes QC and is then rejected by PyRadiomics. (1, 0, {}) without a radiomics
    stage."""
    if study.radiomics is None:
        return 1, 0, {}
    path = Path(study.radiomics.params)
    return _limits_of(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _limits_of(path: str, mtime_ns: int) -> tuple[int, int, dict]:
    """roi_limits of one parameter file version: QC asks for every case, and reading and
    schema-checking the file costs about 20 ms."""
    settings = load_params(Path(path)).get("setting") or {}
    resampling = {k: settings[k] for k in ("resampledPixelSpacing", "interpolator",
                                            "padDistance") if k in settings}  # fmt: skip
    if not resampling.get("resampledPixelSpacing"):
        resampling = {}
    return (int(settings.get("minimumROIDimensions", 2)),
            int(settings.get("minimumROISize") or 0), resampling)  # fmt: skip


def resampled_roi(image: Any, roi: Any, label: int, resampling: dict) -> Any:
    """The ROI's label map after PyRadiomics' own resampling (its ``resampleImage``,
    nearest neighbour for the mask, cropped to the ROI), or None if nothing of the label
    is left on the new grid."""
    from radiomics import imageoperations

    try:
        _, mask = imageoperations.resampleImage(image, roi, label=label, **resampling)
    except Exception:  # noqa: BLE001 - PyRadiomics finds no label object: nothing left
        return None
    return mask
