"""Lesion-wise detection: connected components matched by IoU, the FROC curve, and the
LUNA16 summary.

Matching rule (written out in the report):

- Lesions are the connected components (26-connectivity in 3D, 8 in 2D) of the
  reference and of the binarised prediction. A predicted lesion's confidence is the
  highest probability inside it.
- At an IoU threshold t, a predicted lesion *hits* a reference lesion when their
  voxel IoU is >= t. A reference lesion counts once: it is detected at a confidence
  cut-off c when at least one hit with confidence >= c exists (the best counts).
- A predicted lesion that hits some reference lesion is never a false positive, even
  when another prediction already detected that lesion (a double detection). Every
  other predicted lesion is a false positive.
- The FROC curve gives, for every confidence cut-off, the share of reference lesions
  detected (sensitivity) against the false positives per scan (all scans, with or
  without lesions, in the denominator).

Pure functions: arrays in, frozen dataclasses or DataFrames out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
LUNA_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D): labels and their count."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


@dataclass(frozen=True, slots=True)
class CaseLesions:
    """One scan: for each predicted lesion its confidence and its IoU with each reference
    lesion (``iou[i, j]``: prediction i, reference j)."""

    case_id: str
    confidence: np.ndarray
    iou: np.ndarray

    @property
    def n_reference(self) -> int:
        return self.iou.shape[1]


def case_lesions(
    case_id: str, prediction: np.ndarray, probability: np.ndarray, reference: np.ndarray
) -> CaseLesions:
    """The lesions of one scan from the binary prediction, its probability map and the
    binary reference."""
    pred, n_p = components(prediction)
    ref, n_r = components(reference)
    confidence = (
        np.asarray(ndimage.maximum(probability, pred, index=np.arange(1, n_p + 1)), dtype=float)
        if n_p
        else np.zeros(0)
    )
    iou = np.zeros((n_p, n_r))
    if n_p and n_r:
        # joint histogram of (prediction label, reference label) gives every intersection
        joint = np.bincount(
            pred.ravel() * (n_r + 1) + ref.ravel(), minlength=(n_p + 1) * (n_r + 1)
        ).reshape(n_p + 1, n_r + 1)
        size_p = joint.sum(axis=1)[1:, None]
        size_r = joint.sum(axis=0)[None, 1:]
        inter = joint[1:, 1:]
        iou = inter / (size_p + size_r - inter)
    return CaseLesions(case_id, confidence, iou)


@dataclass(frozen=True, slots=True)
class Froc:
    """The FROC curve at one IoU threshold: per confidence cut-off (descending), the
    sensitivity and false positives per scan; and the LUNA16 summary."""

    iou_threshold: float
    cutoffs: np.ndarray
    sensitivity: np.ndarray
    fp_per_scan: np.ndarray
    n_lesions: int
    n_scans: int

    def sensitivity_at(self, rate: float | Sequence[float]) -> float | np.ndarray:
        """Sensitivity at ``rate`` false positives per scan, linearly interpolated
        between the curve's points (as LUNA16's evaluation does); from (0, 0) at the
        strictest cut-off, and held at the last point beyond the curve's end."""
        x = np.concatenate([[0.0], self.fp_per_scan])
        y = np.concatenate([[0.0], self.sensitivity])
        # several cut-offs with the same FP rate: the curve reaches the highest one
        # (sensitivity never falls as the cut-off loosens, so that is the last of them)
        unique, last = np.unique(x[::-1], return_index=True)
        best = y[::-1][last]
        out = np.interp(rate, unique, best)
        return float(out) if np.ndim(out) == 0 else out

    def luna_score(self, rates: Sequence[float] = LUNA_FP_RATES) -> float:
        """Mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan."""
        return float(np.mean(self.sensitivity_at(list(rates))))


def _hits(case: CaseLesions, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per reference lesion the confidence it is found at (-inf: never), and the
    confidences of the false positives."""
    hits = case.iou >= iou_threshold
    found = np.where(hits, case.confidence[:, None], -np.inf).max(axis=0, initial=-np.inf)
    return found, case.confidence[~hits.any(axis=1)]


def _curve(parts: Sequence[tuple[np.ndarray, np.ndarray]], iou_threshold: float) -> Froc:
    found = np.concatenate([f for f, _ in parts]) if parts else np.zeros(0)
    fps = np.concatenate([p for _, p in parts]) if parts else np.zeros(0)
    cutoffs = np.unique(np.concatenate([found[np.isfinite(found)], fps]))[::-1]
    n_lesions, n_scans = len(found), len(parts)
    # counts of values >= each cut-off, by binary search on the sorted values
    found_sorted, fps_sorted = np.sort(found), np.sort(fps)
    detected = len(found) - np.searchsorted(found_sorted, cutoffs, side="left")
    false = len(fps) - np.searchsorted(fps_sorted, cutoffs, side="left")
    return Froc(iou_threshold, cutoffs, detected / max(n_lesions, 1), false / max(n_scans, 1),
                n_lesions, n_scans)  # fmt: skip


def froc(lesions: Sequence[CaseLesions], iou_threshold: float) -> Froc:
    """The FROC curve of a set of scans at one IoU threshold (see the module's rule)."""
    return _curve([_hits(c, iou_threshold) for c in lesions], iou_threshold)


def froc_tables(
    lesions: Sequence[CaseLesions],
    thresholds: Sequence[float] = IOU_THRESHOLDS,
    n_boot: int = 2000,
    seed: int = 0,
    conf_level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The FROC points per IoU threshold, and per threshold the LUNA16 score with a
    case-level percentile bootstrap CI and the operating point (every predicted lesion
    kept: the sensitivity and FP per scan of the binarised prediction)."""
    points, summary = [], []
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(lesions), len(lesions)) for _ in range(n_boot)]
    alpha = (1 - conf_level) / 2
    for t in thresholds:
        parts = [_hits(c, t) for c in lesions]
        curve = _curve(parts, t)
        points += [{"iou_threshold": t, "cutoff": c, "sensitivity": s, "fp_per_scan": f}
                   for c, s, f in zip(curve.cutoffs, curve.sensitivity, curve.fp_per_scan,
                                      strict=True)]  # fmt: skip
        boot = [_curve([parts[i] for i in d], t) for d in draws]
        scores = [b.luna_score() for b in boot if b.n_lesions]
        low, high = np.quantile(scores, [alpha, 1 - alpha]) if scores else (np.nan, np.nan)
        summary.append({
            "iou_threshold": t, "lesions": curve.n_lesions, "scans": curve.n_scans,
            **{f"sens_at_{r:g}_fp": curve.sensitivity_at(r) for r in LUNA_FP_RATES},
            "luna_score": curve.luna_score(), "ci_low": low, "ci_high": high,
            "operating_sensitivity": curve.sensitivity[-1] if len(curve.cutoffs) else 0.0,
            "operating_fp_per_scan": curve.fp_per_scan[-1] if len(curve.cutoffs) else 0.0,
        })  # fmt: skip
    return pd.DataFrame(points), pd.DataFrame(summary)
