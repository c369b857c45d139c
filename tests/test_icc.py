"""ICC(1,1) and ICC(3,1) of many features at once, against R's psych::ICC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.stats.icc import icc

REFERENCE = Path(__file__).parent / "reference"


def _values() -> np.ndarray:
    long = pd.read_csv(REFERENCE / "icc_data.csv").sort_values(["case", "rater"])
    n, k = long.case.nunique(), long.rater.nunique()
    return long[["f0", "f1", "f2"]].to_numpy().reshape(n, k, 3)


@pytest.mark.parametrize("kind", ["ICC1", "ICC3"])
def test_icc_agrees_with_psych(kind: str) -> None:
    ours = icc(_values(), kind)
    ref = pd.read_csv(REFERENCE / "r_icc.csv")
    ref = ref[ref.type == kind].set_index("feature").loc[["f0", "f1", "f2"]]
    for name, column in (("icc", "icc"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                         ("f", "f"), ("p_value", "p")):  # fmt: skip
        assert np.allclose(getattr(ours, name), ref[column], rtol=0, atol=1e-6), name


def test_a_systematic_shift_lowers_icc1_not_icc3() -> None:
    """f1's conditions are shifted by 0.3 each: absolute agreement (ICC1) counts that as
    disagreement, consistency (ICC3) does not."""
    one, three = icc(_values(), "ICC1"), icc(_values(), "ICC3")
    assert three.icc[1] > one.icc[1]
    assert one.icc[0] > 0.95 and one.icc[2] < one.icc[1]  # ordered by the noise added


def test_icc_edge_cases_are_defined_or_refused() -> None:
    exact = np.repeat(np.arange(5.0)[:, None, None], 3, axis=1)  # no within-case variance
    assert icc(exact).icc[0] == 1.0 and icc(exact).ci_low[0] == 1.0
    with pytest.raises(ValueError, match="missing values"):
        icc(np.full((3, 2, 1), np.nan))
    with pytest.raises(ValueError, match="n, k >= 2"):
        icc(np.ones((1, 3, 2)))
