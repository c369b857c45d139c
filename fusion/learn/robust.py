"""Features robust to the contour: their ICC across perturbed ROIs, and a selector that
keeps the robust ones, computing the ICC on the training cases only.

The perturbed ROIs (:mod:`fusion.rois.perturb`) are measured like any generated ROI, so
``radiomics_features.csv`` holds one row per case and ROI. For a feature, the drawn ROI
(``whole``) and its perturbations are k measurements of each case, and
:func:`fusion.stats.icc.icc` says how much of the feature's spread across cases they
agree on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from fusion.learn._base import SupportSelector
from fusion.stats.icc import Kind, icc


def perturbed_array(
    features: pd.DataFrame, rois: list[str], cases: list[str] | None = None
) -> tuple[np.ndarray, list[str], list[str]]:
    """From the tidy radiomics table (``case_id``, ``roi``, ``radiomics:<feature>``...):
    values (n cases, k ROIs, p features) of the cases measured in every ROI of
    ``rois`` (and in ``cases``, when given), their case ids and the feature names."""
    part = features[features.roi.isin(rois)]
    if cases is not None:
        part = part[part.case_id.astype(str).isin(set(map(str, cases)))]
    names = [c for c in part.columns if c.startswith("radiomics:")]
    wide = part.set_index([part.case_id.astype(str), "roi"])[names]
    complete = wide.dropna().groupby(level=0).size()
    keep = complete.index[complete == len(rois)].tolist()
    if not keep:
        return np.empty((0, len(rois), len(names))), [], names
    values = np.stack([wide.loc[c].loc[rois].to_numpy(float) for c in keep])
    return values, keep, names


def feature_robustness(
    features: pd.DataFrame, rois: list[str], kind: Kind = "ICC1", conf_level: float = 0.95,
    cases: list[str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per feature: the ICC of its values in ``rois`` (the drawn ROI first, then its
    perturbations) with its CI, F and p, over the cases measured in all of them (only
    ``cases``, e.g. the training ones, when given); ``cases`` column: how many. A
    feature constant over those cases has no ICC (NaN)."""
    values, keep, names = perturbed_array(features, rois, cases)
    if len(keep) < 2:
        raise ValueError(f"feature robustness needs 2 or more cases measured in every ROI of "
                         f"{', '.join(rois)}; {len(keep)} are (rois.csv says why a case "
                         "lacks one)")  # fmt: skip
    result = icc(values, kind, conf_level)
    return pd.DataFrame({
        "feature": [n.removeprefix("radiomics:") for n in names], "kind": kind,
        "icc": result.icc, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "f": result.f, "p_value": result.p_value, "cases": len(keep),
    })  # fmt: skip


def is_robust(table: pd.DataFrame, min_ci_low: float, min_icc: float) -> pd.Series:
    """Per row of a :func:`feature_robustness` table: whether the lower CI bound or the
    ICC clears its threshold (a feature with no ICC does not)."""
    return (table.ci_low >= min_ci_low) | (table.icc >= min_icc)


class RobustSelector(SupportSelector):
    """Keep the radiomics features whose ICC across the perturbed ROIs, computed on the
    training cases only, has a lower CI bound of at least ``min_ci_low`` or a point
    estimate of at least ``min_icc`` (defaults 0.75 and 0.9: Koo and Li's "good" and
    "excellent" reliability); other columns (deep, clinical) pass.

    It must see the case ids: put it first in the Pipeline, on a DataFrame indexed by
    case_id, whose radiomics columns are ``radiomics:<feature>`` or
    ``radiomics:<roi>:<feature>``: a feature is judged by its ICC on the drawn ROI
    whatever ROI the column measures, so a negative control's features (the shuffled
    ROI's) go through the same selection as the real model's. ``perturbed`` is the tidy
    radiomics table holding the drawn ROI and the perturbed ones (``rois``, drawn ROI
    first). Only the training rows' cases enter the ICC, so a test case's perturbations
    never choose a feature. Fitted: ``robustness_`` (the training ICC table),
    ``support_``.
    """

    def __init__(self, perturbed: pd.DataFrame | None = None, rois: tuple[str, ...] = (),
                 kind: Kind = "ICC1", min_ci_low: float = 0.75,
                 min_icc: float = 0.9) -> None:  # fmt: skip
        self.perturbed = perturbed
        self.rois = rois
        self.kind = kind
        self.min_ci_low = min_ci_low
        self.min_icc = min_icc

    def fit(self, X: pd.DataFrame, y: object = None) -> RobustSelector:
        if not isinstance(X, pd.DataFrame):
            raise ValueError("RobustSelector needs a DataFrame indexed by case_id (first step)")
        table = feature_robustness(self.perturbed, list(self.rois), self.kind,
                                   cases=list(X.index.astype(str)))  # fmt: skip
        robust = set(table.feature[is_robust(table, self.min_ci_low, self.min_icc)])
        self.robustness_ = table
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.support_ = np.array([self._keep(c, robust) for c in X.columns])
        return self

    @staticmethod
    def _keep(column: str, robust: set[str]) -> bool:
        # PyRadiomics' feature names have no colon: the last part is the feature
        return not column.startswith("radiomics:") or column.rsplit(":", 1)[-1] in robust

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "support_")
        return X.loc[:, self.support_]


def robustness_table(
    features: pd.DataFrame, rois: list[str], kind: Kind, cases: list[str],
    min_ci_low: float, min_icc: float, conf_level: float = 0.95,
) -> pd.DataFrame:  # fmt: skip
    """``feature_robustness.csv``: :func:`feature_robustness` over ``cases`` (the training
    cases: what a ``robust`` model's final fit sees), whether each feature is kept
    (``robust``), and the ICC of the drawn ROI against each perturbation alone
    (``icc_<roi>``), which says which perturbation a feature is fragile to."""
    table = feature_robustness(features, rois, kind, conf_level, cases)
    table.insert(6, "robust", is_robust(table, min_ci_low, min_icc))
    for roi in rois[1:]:
        try:
            pair = feature_robustness(features, [rois[0], roi], kind, conf_level, cases)
            table[f"icc_{roi}"] = pair.icc.to_numpy()
        except ValueError:  # a perturbation that left fewer than two cases
            table[f"icc_{roi}"] = np.nan
    return table.sort_values("ci_low", ascending=False, kind="stable").reset_index(drop=True)
