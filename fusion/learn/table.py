"""The modelling table: one row per case, columns ``<block>:<feature>``, built from the
feature stages' tables and the manifest's clinical covariates."""

from __future__ import annotations

import pandas as pd

from fusion.cohort import Case
from fusion.config import SCORE_SUFFIX, Study


def radiomics_wide(features: pd.DataFrame, auxiliary: frozenset[str] = frozenset()) -> pd.DataFrame:
    """One row per case: a single ROI keeps its names; several become
    ``radiomics:<roi>:<feature>``. ``auxiliary`` ROIs (perturbations, negative controls:
    :meth:`fusion.config.Study.auxiliary_rois`) are always named by ROI and do not count
    as another ROI, so a study that adds them keeps its drawn ROI's column names."""
    if features.empty:
        return pd.DataFrame()
    extra = features.roi.isin(auxiliary)
    main, aux = features[~extra], features[extra]
    if main.roi.nunique() == 1:
        wide = main.drop(columns="roi").set_index("case_id")
    else:
        wide = _by_roi(main)
    return wide if aux.empty else wide.join(_by_roi(aux), how="outer")


def _by_roi(features: pd.DataFrame) -> pd.DataFrame:
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
    """The table of every case, NaN where a case lacks a block or a ROI's features, and
    the exclusions: one row (``case_id``, ``model``, ``reason``) for each model a case
    cannot enter because it lacks a block or ROI that model uses, or the score of a model
    it builds on. The reason is the stage's own error from ``why`` (block -> case ->
    reason) when it recorded one. A case keeps every model it has the features of: a
    habitat too small to measure leaves that habitat's model only."""
    why = why or {}
    table = pd.DataFrame(index=pd.Index([c.case_id for c in cases], name="case_id"))
    features = {f for spec in study.models.values() for f in spec.features}
    needed = {f.split(":", 1)[0] for f in features}
    absent: dict[str, dict[str, str]] = {}  # block or radiomics:<roi> -> case -> reason
    for block in ("radiomics", "deep"):
        if block not in needed:
            continue
        frame = blocks.get(block, pd.DataFrame())
        have = set(frame.index) if not frame.empty else set()
        absent[block] = {c: why.get(block, {}).get(c, f"no {block} features")
                         for c in table.index if c not in have}  # fmt: skip
        table = table.join(frame, how="left")
    for feature in sorted(f for f in features if f.startswith("radiomics:")):
        roi = feature.split(":", 1)[1]
        columns = [c for c in table.columns if c.startswith(f"{feature}:")]
        empty = table.index[table[columns].isna().all(axis=1)] if columns else table.index
        absent[feature] = {c: absent["radiomics"].get(c, f"no radiomics features for ROI "
                                                          f"{roi!r} (see rois.csv)")
                           for c in empty}  # fmt: skip
    if "clinical" in needed or study.clinical:
        table = table.join(clinical_frame(study, cases))
    rows: list[dict[str, str]] = []
    out: dict[str, dict[str, str]] = {}
    for model, spec in study.models.items():
        out[model] = {}
        for feature in spec.features:
            if feature.endswith(SCORE_SUFFIX):
                up = feature.removesuffix(SCORE_SUFFIX)
                lost = {c: f"no score from model {up!r}" for c in out.get(up, {})}
            else:
                lost = absent.get(feature, {})
            for case_id, reason in lost.items():
                out[model].setdefault(case_id, reason)
        rows += [{"case_id": c, "model": model, "reason": r} for c, r in out[model].items()]
    return table, pd.DataFrame(rows, columns=["case_id", "model", "reason"])


def excluded_from_all(study: Study, exclusions: pd.DataFrame) -> pd.DataFrame:
    """The cases no model can take (``case_id``, ``reason``: their reasons, joined)."""
    counts = exclusions.groupby("case_id", sort=False).model.nunique()
    out = exclusions[exclusions.case_id.isin(counts.index[counts == len(study.models)])]
    joined = out.groupby("case_id", sort=False).reason.agg(lambda r: "; ".join(dict.fromkeys(r)))
    return joined.reset_index()
