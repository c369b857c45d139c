"""fusion.stats behaviour: hand-checked values, ties, errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.stats import (
    baseline_table,
    bootstrap_auc_ci,
    calibration,
    delong_test,
    hosmer_lemeshow,
    net_benefit,
    roc_auc,
    roc_points,
    threshold_metrics,
    youden_threshold,
)
from fusion.stats.roc import midrank

Y = [0, 0, 1, 1, 0, 1]
S = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4]


def test_midrank_gives_ties_the_mean_rank() -> None:
    assert midrank(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_auc_counts_ties_one_half_and_never_flips() -> None:
    # pairs (pos, neg): 0.35 beats 0.1 only; 0.8 beats all; 0.4 beats 0.1, ties 0.4 twice
    assert roc_auc(Y, S).auc == pytest.approx((1 + 3 + 2) / 9)
    assert roc_auc(Y, [-s for s in S]).auc == pytest.approx(1 - 6 / 9)  # below 0.5, as is
    perfect = roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (perfect.auc, perfect.ci_high) == (1.0, 1.0)  # CI clipped to [0, 1]


@pytest.mark.parametrize(
    ("y", "score", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "needs both outcome classes"),
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "missing"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "must be 0/1; found \\[2.0\\]"),
        ([0, 1], [0.1, 0.2, 0.3], "score has 3 values but the outcome has 2"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN or infinite"),
    ],
)
def test_bad_input_is_a_clear_value_error(y, score, message) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(y, score)


def test_probabilities_outside_0_1_are_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"probabilities in \[0, 1\]; found values from 0.1 to 1.3"
    ):
        calibration([0, 1, 1], [0.1, 0.5, 1.3])
    with pytest.raises(ValueError, match="risk must be probabilities"):
        net_benefit([0, 1], [-0.1, 0.5], [0.2])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        net_benefit([0, 1], [0.1, 0.5], [0.0, 0.5])


def test_delong_of_identical_scores_and_bad_alternative() -> None:
    with pytest.raises(ValueError, match="rank the cases identically"):
        delong_test(Y, S, [2 * s for s in S])
    with pytest.raises(ValueError, match="two-sided, greater or less"):
        delong_test(Y, S, [0, 1, 0, 1, 0, 1], alternative="bigger")


def test_bootstrap_is_deterministic_and_close_to_delong() -> None:
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=400) < 0.4).astype(int)
    score = y + rng.normal(size=400)
    a = bootstrap_auc_ci(y, score, n_boot=1000, seed=5)
    b = bootstrap_auc_ci(y, score, n_boot=1000, seed=5)
    assert a == b
    delong = roc_auc(y, score)
    assert a.auc == pytest.approx(delong.auc)
    assert a.ci_low == pytest.approx(delong.ci_low, abs=0.015)
    assert a.ci_high == pytest.approx(delong.ci_high, abs=0.015)


def test_threshold_metrics_by_hand() -> None:
    m = threshold_metrics(Y, S, 0.4)  # called positive: 0.4, 0.8, 0.4, 0.4
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 2, 1, 1)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(1 / 3)
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.ppv == pytest.approx(0.5) and m.npv == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    none = threshold_metrics(Y, S, 0.9)
    assert np.isnan(none.ppv) and none.specificity == 1.0


def test_youden_threshold_and_roc_points() -> None:
    fpr, tpr, thresholds = roc_points(Y, S)
    assert thresholds[0] == np.inf and fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    j = dict(zip(thresholds, tpr - fpr, strict=True))
    assert j[0.8] == pytest.approx(j[0.35]) == pytest.approx(1 / 3)  # a tie: take the strictest
    # the strictest best threshold (score 0.8), placed midway to the next lower score
    assert youden_threshold(Y, S) == pytest.approx(0.6)
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)
    assert youden_threshold([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.1]) == np.inf  # no better than none


def test_hosmer_lemeshow_needs_three_groups() -> None:
    with pytest.raises(ValueError, match="only 2 distinct probability groups"):
        hosmer_lemeshow([0, 1, 0, 1], [0.2, 0.2, 0.7, 0.7])


def test_baseline_table_picks_tests_by_distribution() -> None:
    rng = np.random.default_rng(1)
    n = 200
    frame = pd.DataFrame(
        {
            "group": np.r_[np.zeros(100, int), np.ones(100, int)],
            "age": np.r_[rng.normal(60, 10, 100), rng.normal(65, 10, 100)],
            "glucose": np.r_[rng.lognormal(2, 0.8, 100), rng.lognormal(2.2, 0.8, 100)],
            "sex": rng.choice(["f", "m"], n),
            "rare": np.r_[np.zeros(97), np.ones(3), np.zeros(98), np.ones(2)].astype(int),
        }
    )
    kinds = {"age": "continuous", "glucose": "continuous", "sex": "categorical",
             "rare": "binary"}  # fmt: skip
    table = baseline_table(frame, "group", kinds).set_index(["variable", "level"])
    assert table.loc[("age", "mean ± SD"), "test"] == "Welch t-test"
    assert table.loc[("glucose", "median [IQR]"), "test"] == "Mann-Whitney U"
    assert table.loc[("sex", "f"), "test"] == "chi-square"
    assert table.loc[("rare", "0"), "test"] == "Fisher exact"
    assert table.loc[("rare", "1"), "group=0 (n=100)"] == "3 (3.0%)"
    from scipy import stats

    expected = stats.ttest_ind(frame.age[:100], frame.age[100:], equal_var=False).pvalue
    assert table.loc[("age", "mean ± SD"), "p_value"] == pytest.approx(expected)
    a = frame.age[:100]
    assert table.loc[("age", "mean ± SD"), "group=0 (n=100)"] == f"{a.mean():.2f} ± {a.std():.2f}"


@pytest.mark.parametrize("size", [500, 60_000])  # 60,000: rows sorted in threads
def test_one_sort_placements_equal_sun_and_xu_midranks_with_ties(size: int) -> None:
    """The one-sort placements (fusion.stats.roc._placements) equal Sun & Xu's three
    midrank passes, on scores with many ties and on scores with none."""
    from fusion.stats.roc import _placements, midrank

    rng = np.random.default_rng(3)
    y = (rng.uniform(size=size) < 0.3).astype(int)
    scores = np.vstack([rng.integers(0, 8, size), y + rng.integers(0, 3, size),
                        y + rng.normal(size=size)]).astype(float)  # fmt: skip
    aucs, v10, v01 = _placements(y, scores)
    m, n = int(y.sum()), int((1 - y).sum())
    for r, s in enumerate(scores):
        pos, neg = s[y == 1], s[y == 0]
        tz = midrank(np.concatenate([pos, neg]))
        assert np.allclose(v10[r], (tz[:m] - midrank(pos)) / n, rtol=0, atol=1e-12)
        assert np.allclose(v01[r], 1 - (tz[m:] - midrank(neg)) / m, rtol=0, atol=1e-12)
        assert aucs[r] == pytest.approx((tz[:m].sum() - m * (m + 1) / 2) / (m * n), abs=1e-12)


def test_bootstrap_auc_by_counting_equals_sorting_every_resample() -> None:
    """The same draws give the same AUCs whether each resample is sorted (Mann-Whitney by
    midranks) or counted over the ranks found once; so the CI is the same."""
    from fusion.stats import bootstrap_auc_ci
    from fusion.stats.roc import _auc

    rng = np.random.default_rng(4)
    y = (rng.uniform(size=300) < 0.4).astype(int)
    s = np.round(y + rng.normal(size=300), 1)  # ties across and within classes
    pos, neg = s[y == 1], s[y == 0]
    draws = np.random.default_rng(11)
    aucs = [_auc(pos[draws.integers(0, len(pos), len(pos))],
                 neg[draws.integers(0, len(neg), len(neg))]) for _ in range(200)]  # fmt: skip
    low, high = np.quantile(aucs, [0.025, 0.975])
    ours = bootstrap_auc_ci(y, s, n_boot=200, seed=11)
    assert ours.ci_low == pytest.approx(low, abs=1e-12)
    assert ours.ci_high == pytest.approx(high, abs=1e-12)


def test_resample_weights_in_blocks_are_the_one_shot_draws() -> None:
    """Blocks of resamples keep memory bounded and change no number: the counts equal
    those of drawing every resample at once from the same seed."""
    from fusion.stats.bootstrap import case_weight_blocks

    n, n_boot = 50, 23
    draws = np.random.default_rng(8).integers(0, n, (n_boot, n))
    expected = np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)
    blocks = list(case_weight_blocks(n, n_boot, 8, cells=7 * n))  # 7 resamples a block
    assert [len(b) for b in blocks] == [7, 7, 7, 2]
    assert np.array_equal(np.vstack(blocks), expected)
