"""Segmentation metrics and lesion-wise FROC against values worked out by hand or by an
independent brute-force computation."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from fusion.stats.froc import case_lesions, froc, froc_tables
from fusion.stats.segmentation import overlap, summarise, worst_distance


def _cube(shape, lo, hi):
    a = np.zeros(shape, bool)
    a[tuple(slice(a_, b_) for a_, b_ in zip(lo, hi, strict=True))] = True
    return a


def test_shifted_cube_along_the_thick_axis():
    ref = _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))
    pred = np.roll(ref, 1, axis=0)  # one voxel along the 2 mm axis
    m = overlap(pred, ref, spacing=(2.0, 1.0, 1.0))
    assert m.hd95 == pytest.approx(2.0)
    assert m.dice == pytest.approx(2 * 48 / 128)  # 3 x 4 x 4 of 4 x 4 x 4 overlap
    assert m.iou == pytest.approx(48 / 80)
    assert m.precision == pytest.approx(0.75) and m.recall == pytest.approx(0.75)


def _brute_surface(pred, ref, spacing):
    """HD95 (max of the two directed 95th percentiles) and symmetric ASD by brute force."""

    def edge(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing)

    a, b = edge(pred), edge(ref)
    d = cdist(a, b)
    ab, ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


def test_overlap_of_nested_spheres_matches_independent_values():
    z, y, x = np.mgrid[:20, :24, :24]
    ref = (z - 10) ** 2 * 4 + (y - 12) ** 2 + (x - 12) ** 2 <= 64  # an ellipsoid on a 2 mm grid
    pred = (z - 10) ** 2 * 4 + (y - 13) ** 2 + (x - 11) ** 2 <= 36
    spacing = (2.0, 0.8, 0.8)
    m = overlap(pred, ref, spacing)
    inter = (pred & ref).sum()
    assert m.dice == pytest.approx(2 * inter / (pred.sum() + ref.sum()))
    assert m.iou == pytest.approx(inter / (pred | ref).sum())
    assert m.precision == pytest.approx(inter / pred.sum())
    assert m.recall == pytest.approx(inter / ref.sum())
    hd95, asd = _brute_surface(pred, ref, spacing)
    assert m.hd95 == pytest.approx(hd95, rel=1e-5)
    assert m.asd == pytest.approx(asd, rel=1e-5)


def test_empty_mask_conventions():
    shape, spacing = (4, 5, 6), (2.0, 1.0, 1.0)
    empty, blob = np.zeros(shape, bool), _cube(shape, (1, 1, 1), (3, 3, 3))
    worst = worst_distance(shape, spacing)
    assert worst == pytest.approx(np.sqrt(6**2 + 4**2 + 5**2))
    both = overlap(empty, empty, spacing)
    assert (both.dice, both.iou, both.precision, both.recall, both.hd95) == (1, 1, 1, 1, 0)
    missed = overlap(empty, blob, spacing)
    assert (missed.dice, missed.recall, missed.hd95, missed.empty) == (0, 0, worst, "prediction")
    spurious = overlap(blob, empty, spacing)
    assert (spurious.dice, spurious.precision, spurious.hd95) == (0, 0, worst)
    assert spurious.empty == "reference"
    values = [both, missed, spurious]
    assert not any(np.isnan(getattr(v, f)) for v in values for f in ("dice", "hd95", "asd"))


def test_summary_has_mean_sd_median_iqr_and_ci_per_group():
    rows = pd.DataFrame({
        "group": ["a"] * 4 + ["b"] * 2,
        "dice": [0.1, 0.2, 0.3, 0.4, 0.9, 0.7], "iou": 0.5, "precision": 0.5,
        "recall": 0.5, "hd95": 1.0, "asd": 1.0,
    })  # fmt: skip
    out = summarise(rows, ["group"], n_boot=500, seed=1).set_index(["group", "metric"])
    a = out.loc[("a", "dice")]
    assert a.n == 4 and a["mean"] == pytest.approx(0.25)
    assert a.sd == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1))
    assert a["median"] == pytest.approx(0.25)
    assert (a.q1, a.q3) == pytest.approx((0.175, 0.325))
    assert 0.1 <= a.ci_low < 0.25 < a.ci_high <= 0.4
    assert out.loc[("b", "dice")]["mean"] == pytest.approx(0.8)


def _scan(ref_boxes, pred_boxes):
    """A (1, 3, 60) scan; boxes are (x0, x1, rows) ranges; pred boxes carry a confidence."""
    ref = np.zeros((1, 3, 60), bool)
    pred = np.zeros((1, 3, 60), bool)
    prob = np.zeros((1, 3, 60))
    for x0, x1, rows in ref_boxes:
        ref[0, rows, x0:x1] = True
    for x0, x1, rows, conf in pred_boxes:
        pred[0, rows, x0:x1] = True
        prob[0, rows, x0:x1] = conf
    return pred, prob, ref


ALL = slice(0, 3)
# A: R1 hit twice at IoU 1/3 (0.9 and 0.6: a double detection), a false positive at 0.7,
#    R2 missed. B: no lesion, a false positive at 0.8. C: R3 hit at IoU 0.8 with 0.5.
SCANS = {
    "A": _scan([(0, 10, ALL), (40, 50, ALL)],
               [(0, 10, slice(0, 1), 0.9), (0, 10, slice(2, 3), 0.6), (20, 30, ALL, 0.7)]),
    "B": _scan([], [(30, 36, ALL, 0.8)]),
    "C": _scan([(0, 10, ALL)], [(0, 8, ALL, 0.5)]),
}  # fmt: skip


def _lesions():
    return [case_lesions(k, pred, prob, ref) for k, (pred, prob, ref) in SCANS.items()]


def test_lesion_matching_by_iou():
    a = _lesions()[0]  # components in raster order: row 0 (R1 hit, the FP), then row 2
    assert a.confidence == pytest.approx([0.9, 0.7, 0.6])
    assert a.iou == pytest.approx(np.array([[1 / 3, 0], [0, 0], [1 / 3, 0]]))


def test_froc_curve_written_out_by_hand():
    lenient = froc(_lesions(), 0.3)
    # cut-off: 0.9 -> R1 found; 0.8 and 0.7 add the two false positives; 0.5 finds R3.
    # The second hit on R1 (0.6) is a double detection, not a false positive.
    assert lenient.cutoffs == pytest.approx([0.9, 0.8, 0.7, 0.5])
    assert lenient.sensitivity == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert lenient.fp_per_scan == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3])
    assert (lenient.n_lesions, lenient.n_scans) == (3, 3)
    # interpolated: 1/3 up to 1/3 FP, halfway to 2/3 at 0.5 FP, 2/3 from 2/3 FP on
    assert lenient.sensitivity_at(0.125) == pytest.approx(1 / 3)
    assert lenient.sensitivity_at(0.5) == pytest.approx(0.5)
    assert lenient.sensitivity_at(8) == pytest.approx(2 / 3)
    assert lenient.luna_score() == pytest.approx((1 / 3 + 1 / 3 + 0.5 + 4 * 2 / 3) / 7)

    strict = froc(_lesions(), 0.5)  # IoU 1/3 no longer hits: both R1 predictions are FPs
    assert strict.cutoffs == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert strict.sensitivity == pytest.approx([0, 0, 0, 0, 1 / 3])
    assert strict.fp_per_scan == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 4 / 3])


def test_froc_tables_give_the_operating_point_and_a_bootstrap_ci():
    points, summary = froc_tables(_lesions(), (0.3, 0.5), n_boot=200, seed=0)
    s = summary.set_index("iou_threshold")
    assert s.loc[0.5, "operating_sensitivity"] == pytest.approx(1 / 3)
    assert s.loc[0.5, "operating_fp_per_scan"] == pytest.approx(4 / 3)
    assert s.loc[0.3, "ci_low"] <= s.loc[0.3, "luna_score"] <= s.loc[0.3, "ci_high"]
    assert len(points[points.iou_threshold == 0.5]) == 5
