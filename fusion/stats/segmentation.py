"""Overlap and surface metrics of a predicted mask against a reference, and their summaries.

Pure functions on boolean arrays with the voxel spacing in array-axis order (z, y, x
for an array from SimpleITK: ``image.GetSpacing()[::-1]``), so distances are in mm on
anisotropic grids. Surface distances come from MONAI's metric functions.

Empty masks have defined values, never a NaN that a mean would silently drop:

=====================  ====  ====  =========  ======  =========
reference / prediction  Dice  IoU   precision  recall  HD95, ASD
=====================  ====  ====  =========  ======  =========
both empty              1     1     1          1       0
reference empty only    0     0     0          1       worst
prediction empty only   0     0     0          0       worst
=====================  ====  ====  =========  ======  =========

"worst" is the diagonal of the image in mm, the largest distance two voxels of the
image can have: a miss is penalised as the worst possible boundary error. That
convention keeps a per-case table complete, but one 10-voxel false positive would add
the diagonal to a mean, so :func:`summarise` averages HD95 and ASD over the scans where
both masks are non-empty only and counts the others apart (``one_mask_empty``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

METRICS = ("dice", "iou", "precision", "recall", "hd95", "asd")
SURFACE_METRICS = ("hd95", "asd")  # undefined when a mask is empty


@dataclass(frozen=True, slots=True)
class Overlap:
    """One case, one class. Distances in mm; ``empty`` says which mask was empty, if any
    ('both', 'reference', 'prediction' or '')."""

    dice: float
    iou: float
    precision: float
    recall: float
    hd95: float
    asd: float
    reference_voxels: int
    predicted_voxels: int
    empty: str


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The image diagonal in mm: the value of HD95 and ASD when one mask is empty."""
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _surface(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]):  # noqa: ANN202
    """(HD95, symmetric average surface distance) in mm of two non-empty masks."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p = torch.as_tensor(prediction[None, None])
    r = torch.as_tensor(reference[None, None])
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI passes an argument it deprecated itself
        warnings.filterwarnings("ignore", ".*always_return_as_numpy.*", FutureWarning)
        hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                          spacing=spacing)  # fmt: skip
        asd = compute_average_surface_distance(
            p, r, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd95.item()), float(asd.item())


def overlap(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> Overlap:
    """Dice, IoU, precision, recall, HD95 and ASD of two boolean masks of one shape."""
    p = np.asarray(prediction, dtype=bool)
    r = np.asarray(reference, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for {p.ndim} axes")
    tp = int((p & r).sum())
    n_p, n_r = int(p.sum()), int(r.sum())
    worst = worst_distance(p.shape, spacing)
    if n_p == 0 and n_r == 0:
        return Overlap(1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0, 0, "both")
    if n_r == 0:
        return Overlap(0.0, 0.0, 0.0, 1.0, worst, worst, 0, n_p, "reference")
    if n_p == 0:
        return Overlap(0.0, 0.0, 0.0, 0.0, worst, worst, n_r, 0, "prediction")
    hd95, asd = _surface(p, r, spacing)
    return Overlap(
        dice=2 * tp / (n_p + n_r),
        iou=tp / (n_p + n_r - tp),
        precision=tp / n_p,
        recall=tp / n_r,
        hd95=hd95,
        asd=asd,
        reference_voxels=n_r,
        predicted_voxels=n_p,
        empty="",
    )


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    classes: dict[int, str],
) -> list[dict]:
    """One row per class of two label arrays: the class's :class:`Overlap` fields."""
    return [
        {"class": name, **asdict(overlap(prediction == label, reference == label, spacing))}
        for label, name in classes.items()
    ]


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int, seed: int, conf_level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over cases (cases resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or n_boot == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    alpha = (1 - conf_level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarise(
    rows: pd.DataFrame,
    by: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by`` and metric: n, mean, SD, median, IQR and the bootstrap CI of
    the mean. ``rows`` holds one row per case (and class) with the :data:`METRICS` and
    ``empty`` (:class:`Overlap`'s). HD95 and ASD are summarised over the scans where both
    masks are non-empty (their n says how many); ``one_mask_empty`` counts the scans
    with a missed or spurious lesion, where they take the worst-distance convention."""
    out = []
    for keys, group in rows.groupby(list(by), sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        empty = group["empty"].fillna("") if "empty" in group else pd.Series("", group.index)
        one_empty = int(empty.isin(["reference", "prediction"]).sum())
        for metric in METRICS:
            measured = group[empty == ""] if metric in SURFACE_METRICS else group
            v = measured[metric].to_numpy(dtype=float)
            if not len(v):
                out.append({**dict(zip(by, keys, strict=True)), "metric": metric, "n": 0,
                            "one_mask_empty": one_empty})  # fmt: skip
                continue
            low, high = bootstrap_mean_ci(v, n_boot, seed, conf_level)
            q1, median, q3 = np.quantile(v, [0.25, 0.5, 0.75])
            out.append({
                **dict(zip(by, keys, strict=True)), "metric": metric, "n": len(v),
                "mean": v.mean(), "sd": v.std(ddof=1) if len(v) > 1 else float("nan"),
                "median": median, "q1": q1, "q3": q3, "ci_low": low, "ci_high": high,
                "one_mask_empty": one_empty,
            })  # fmt: skip
    return pd.DataFrame(out)


def surface_means(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of every metric per group, HD95 and ASD over the scans where both masks are
    non-empty (as :func:`summarise`)."""
    means = frame.groupby(by)[list(METRICS)].mean()
    both = frame[frame["empty"].fillna("") == ""] if "empty" in frame else frame
    surface = both.groupby(by)[list(SURFACE_METRICS)].mean()
    means[list(SURFACE_METRICS)] = surface.reindex(means.index)
    return means
