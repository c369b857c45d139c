"""Numbers as a reader sees them: p-values never printed as 0.000, counts as whole
numbers, and Spearman's p exact for the handful of patients a demo has."""

from __future__ import annotations

import re
from html import unescape
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusion.report.format import html_table
from fusion.stats.agreement import agreement, spearman


def test_p_values_and_counts_are_printed_as_a_reader_expects() -> None:
    frame = pd.DataFrame({
        "n": [5.0, np.nan], "epochs": [4.0, 30.0], "n_after_lasso": [6.0, 2.0],
        "spearman_p": [1.4e-24, 0.0167], "pearson_p": [0.2, np.nan], "p_value": [0.0, 0.5],
        "auc": [1.0, 0.8], "bias": [2.0, 1.25],
    })  # fmt: skip
    html = html_table(frame)
    found = [unescape(c) for c in re.findall(r"<td>(.*?)</td>", html)]
    cells = pd.DataFrame(np.array(found).reshape(2, -1), columns=frame.columns)
    assert cells.n.tolist() == ["5", "–"] and cells.epochs.tolist() == ["4", "30"]
    assert cells.n_after_lasso.tolist() == ["6", "2"]
    assert cells.spearman_p.tolist() == ["<0.001", "0.017"]
    assert cells.pearson_p.tolist() == ["0.200", "–"]
    assert cells.p_value.tolist() == ["<0.001", "0.500"]
    assert cells.auc.tolist() == ["1.000", "0.800"]  # not a count: keeps its digits
    assert cells.bias.tolist() == ["2.000", "1.250"]
    assert "0.000" not in html


def test_spearman_p_is_exact_for_small_n() -> None:
    """rho = 1 with n = 5: 2 of the 120 pairings reach |rho| = 1, p = 1/60 (R's
    cor.test gives the same); scipy's t approximation says 1.4e-24."""
    rho, p = spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 60)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    expected = np.mean([
        abs(stats.spearmanr(x, y[list(perm)])[0]) >= abs(stats.spearmanr(x, y)[0]) - 1e-12
        for perm in permutations(range(7))
    ])  # fmt: skip
    assert spearman(x, y)[1] == pytest.approx(expected)
    z = rng.normal(size=30)  # n > 9: scipy's t approximation
    w = z + rng.normal(size=30)
    assert spearman(z, w) == pytest.approx(tuple(float(v) for v in stats.spearmanr(z, w)))
    assert agreement([1, 2, 3, 4, 5.5], [1.1, 2, 3.2, 4, 5]).spearman_p == pytest.approx(1 / 60)


def test_calibration_points_are_the_statistics_groups_closed_on_the_right() -> None:
    """The report plots calibration_groups.csv, whose groups are the Hosmer-Lemeshow
    ones (R's cut(include.lowest = TRUE), closed on the right); it once binned the
    scores itself, closed on the left, and disagreed with the test it sat beside."""
    import matplotlib

    matplotlib.use("Agg")
    from fusion.report.figures import calibration_figure
    from fusion.stats.evaluate import calibration_groups_table

    rng = np.random.default_rng(4)
    prob = np.round(rng.uniform(0.02, 0.98, 200), 2)  # ties at the decile breaks
    label = rng.binomial(1, prob)
    scores = pd.DataFrame({"set": "test", "model": "m", "label": label, "prob": prob})
    groups = calibration_groups_table(scores)
    breaks = np.unique(np.quantile(prob, np.linspace(0, 1, 11)))
    codes = pd.cut(prob, breaks, include_lowest=True, right=True).codes
    assert groups.n.tolist() == np.bincount(codes).tolist()
    observed = pd.Series(label).groupby(codes).mean()
    assert np.allclose(groups.observed, observed)
    left = pd.cut(prob, breaks, include_lowest=True, right=False).codes
    assert np.bincount(left[left >= 0]).tolist() != groups.n.tolist()  # ties move groups
    calibration = pd.DataFrame({"set": ["test"], "model": ["m"], "slope": [1.0],
                                "intercept": [0.0], "brier": [0.2], "note": [""]})  # fmt: skip
    fig = calibration_figure(groups, calibration, pd.DataFrame(), "test")
    points = [line for line in fig.axes[0].lines if line.get_marker() == "o"][0]
    assert np.allclose(points.get_xdata(), groups.predicted)
    assert np.allclose(points.get_ydata(), groups.observed)
