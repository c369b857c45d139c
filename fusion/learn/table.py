"""The modelling table: one row per case, columns ``<block>:<feature>``, built from the
feature stages' tables and the manifest's clinical covariates."""

from __future__ import annotations

import pandas as pd

from fusion.cohort import Case
from fusion.config import Study


def radiomics_wide(features: pd.DataFrame) -> pd.DataFrame:
    """One row per case: a single ROI keeps its names; several become
    ``radiomics:<roi>:<feature>``."""
    if features.empty:
        return pd.DataFrame()
    rois = features.roi.unique()
    if len(rois) == 1:
        return features.drop(columns="roi").set_index("case_id")
    wide = features.set_index(["case_id", "roi"]).unstack("roi")
    wide.columns = [
        f"radiomics:{roi}:{name.removeprefix('radiomics:')}" for name, roi in wide.columns
    ]
    return wide


def clinical_frame(study: Study, cases: list[Case]) -> pd.DataFrame:
    """``clinical:<name>`` columns; continuous as floats, others as text."""
    frame = pd.DataFrame(
        {
            f"clinical:{c.name}": [case.clinical.get(c.name) for case in cases]
            for c in study.clinical
        },
        index=pd.Index([case.case_id for case in cases], name="case_id"),
    )
    for cov in study.clinical:
        col = f"clinical:{cov.name}"
        if cov.type == "continuous":
            frame[col] = pd.to_numeric(frame[col])
        else:
            frame[col] = frame[col].astype("object")
    return frame


def feature_table(
    study: Study,
    cases: list[Case],
    blocks: dict[str, pd.DataFrame],
    why: dict[str, dict[str, str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table of the cases that have every block the models need, and the others
    with the reason (``case_id``, ``reason``): the stage's own error from ``why``
    (block -> case -> reason) when it recorded one."""
    why = why or {}
    features = [b for spec in study.models.values() for b in spec.features]
    needed = {b.split(":", 1)[0] for b in features}
    rois = sorted({b.split(":", 1)[1] for b in features if b.startswith("radiomics:")})
    table = pd.DataFrame(index=pd.Index([c.case_id for c in cases], name="case_id"))
    missing: dict[str, list[str]] = {}
    for block in ("radiomics", "deep"):
        if block not in needed:
            continue
        frame = blocks.get(block, pd.DataFrame())
        have = set(frame.index) if not frame.empty else set()
        for case_id in table.index:
            if case_id not in have:
                reason = why.get(block, {}).get(case_id, f"no {block} features")
                missing.setdefault(case_id, []).append(reason)
        table = table.join(frame, how="left")
    for roi in rois:  # a model on one ROI: a case without that ROI's features is out
        columns = [c for c in table.columns if c.startswith(f"radiomics:{roi}:")]
        for case_id in table.index[table[columns].isna().all(axis=1)] if columns else []:
            if case_id not in missing:
                missing.setdefault(case_id, []).append(
                    f"no radiomics features for ROI {roi!r} (see rois.csv)"
                )
    if "clinical" in needed or study.clinical:
        table = table.join(clinical_frame(study, cases))
    excluded = pd.DataFrame(
        [{"case_id": k, "reason": "; ".join(v)} for k, v in missing.items()],
        columns=["case_id", "reason"],
    )
    return table.drop(index=list(missing)), excluded
