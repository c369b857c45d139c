"""fusion.stats against R (pROC, glm) and dcurves, to 1e-6, on the committed fixtures.

The fixtures and the scripts that made them are in tests/reference/ (make_data.py,
reference.R, make_dcurves.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.stats import (
    calibration,
    delong_test,
    delong_test_unpaired,
    hosmer_lemeshow,
    logistic_or_table,
    net_benefit,
    roc_auc,
)

REF = Path(__file__).resolve().parent / "reference"
TOL = 1e-6


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(REF / "data.csv")


@pytest.fixture(scope="module")
def r() -> dict[str, float]:
    values = pd.read_csv(REF / "r_values.csv")
    return dict(zip(values.name, values.value, strict=True))


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_auc_and_delong_ci_match_proc(data, r, which, level) -> None:
    result = roc_auc(data.y, data[f"score_{which}"], conf_level=level)
    assert result.auc == pytest.approx(r[f"auc_{which}"], abs=TOL)
    assert result.se == pytest.approx(r[f"se_{which}"], abs=TOL)
    assert result.ci_low == pytest.approx(r[f"ci_low_{which}_{level:g}"], abs=TOL)
    assert result.ci_high == pytest.approx(r[f"ci_high_{which}_{level:g}"], abs=TOL)


@pytest.mark.parametrize(
    ("alternative", "r_name"),
    [("two-sided", "two.sided"), ("greater", "greater"), ("less", "less")],
)
def test_paired_delong_matches_proc(data, r, alternative, r_name) -> None:
    t = delong_test(data.y, data.score_a, data.score_b, alternative=alternative)
    assert t.auc_a == pytest.approx(r["auc_a"], abs=TOL)
    assert t.auc_b == pytest.approx(r["auc_b"], abs=TOL)
    assert t.z == pytest.approx(r[f"paired_z_{r_name}"], abs=TOL)
    assert t.p_value == pytest.approx(r[f"paired_p_{r_name}"], abs=TOL)
    assert t.ci_low == pytest.approx(r["paired_ci_low"], abs=TOL)
    assert t.ci_high == pytest.approx(r["paired_ci_high"], abs=TOL)


def test_unpaired_delong_matches_proc(data, r) -> None:
    u = pd.read_csv(REF / "unpaired.csv")
    t = delong_test_unpaired(data.y, data.score_a, u.y, u.score)
    assert t.auc_a == pytest.approx(r["auc_a"], abs=TOL)
    assert t.auc_b == pytest.approx(r["auc_unpaired"], abs=TOL)
    assert t.statistic == pytest.approx(r["unpaired_statistic"], abs=TOL)
    assert t.df == pytest.approx(r["unpaired_df"], abs=TOL)
    assert t.p_value == pytest.approx(r["unpaired_p"], abs=TOL)


def test_calibration_matches_glm(data, r) -> None:
    c = calibration(data.y, data.prob)
    assert c.intercept == pytest.approx(r["cal_intercept"], abs=TOL)
    assert c.slope == pytest.approx(r["cal_slope"], abs=TOL)
    assert c.citl == pytest.approx(r["cal_citl"], abs=TOL)
    assert c.brier == pytest.approx(r["cal_brier"], abs=TOL)


@pytest.mark.parametrize("groups", [10, 5])
def test_hosmer_lemeshow_matches_r(data, r, groups) -> None:
    hl = hosmer_lemeshow(data.y, data.prob, groups=groups)
    assert hl.statistic == pytest.approx(r[f"hl_statistic_{groups}"], abs=TOL)
    assert hl.df == r[f"hl_df_{groups}"]
    assert hl.p_value == pytest.approx(r[f"hl_p_{groups}"], abs=TOL)


def test_hosmer_lemeshow_with_merged_groups(data, r) -> None:
    hl = hosmer_lemeshow(data.y, data.prob.round(1), groups=10)
    assert hl.df == r["hl_coarse_df"] == 6
    assert hl.statistic == pytest.approx(r["hl_coarse_statistic"], abs=TOL)
    assert hl.p_value == pytest.approx(r["hl_coarse_p"], abs=TOL)


def test_odds_ratio_table_matches_glm(data) -> None:
    ours = logistic_or_table(
        data, "y",
        {"age": "continuous", "sex": "categorical", "site": "categorical", "smoker": "binary",
         "glucose": "continuous"},
        reference={"sex": "female"},
    )  # fmt: skip
    ref = pd.read_csv(REF / "r_logistic.csv")
    r_terms = {
        "sexmale": "sex[male]",
        "siteB": "site[B]",
        "siteC": "site[C]",
        "smoker": "smoker[1]",
    }
    ref["term"] = ref.term.replace(r_terms)
    merged = ours.merge(ref, on="term", suffixes=("", "_r"), validate="1:1")
    assert len(merged) == len(ref) == 7
    for col in ("coef", "se", "p_value"):
        assert np.allclose(merged[col], merged[f"{col}_r"], rtol=0, atol=TOL), col
    slopes = merged[merged.term != "(Intercept)"]
    for col in ("odds_ratio", "ci_low", "ci_high"):
        assert np.allclose(slopes[col], slopes[f"{col}_r"], rtol=0, atol=TOL), col
    # the intercept is a log odds, not an odds ratio: no odds ratio is printed for it
    assert merged.loc[merged.term == "(Intercept)", ["odds_ratio", "ci_low"]].isna().all(None)
    assert ours.set_index("term").loc["sex[male]", "reference"] == "female"
    assert ours.set_index("term").loc["site[B]", "reference"] == "A"
    assert (ours.n == 140).all()


def test_net_benefit_matches_dcurves(data) -> None:
    ref = pd.read_csv(REF / "dcurves_net_benefit.csv")
    ours = net_benefit(data.y, data.prob, ref.threshold)
    assert list(ours.columns) == ["threshold", "model", "treat_all", "treat_none"]
    for col in ("model", "treat_all", "treat_none"):
        assert np.allclose(ours[col], ref[col], rtol=0, atol=TOL), col


# ------------------------------------------- calibration.R: rms, Hmisc, pROC (see there)


@pytest.fixture(scope="module")
def cal_data() -> pd.DataFrame:
    return pd.read_csv(REF / "calibration.csv")


@pytest.mark.parametrize("column", ["p_old", "p_new", "p_tied"])
def test_calibration_measures_match_val_prob(cal_data, column) -> None:
    """rms::val.prob's Intercept, Slope, Brier, Eavg (ICI), E90, Emax and S:z, S:p."""
    ref = pd.read_csv(REF / "r_val_prob.csv")
    r = ref[ref.column == column].set_index("name").value.astype(float)
    c = calibration(cal_data.y, cal_data[column])
    pairs = {"intercept": "Intercept", "slope": "Slope", "brier": "Brier", "ici": "Eavg",
             "e90": "E90", "emax": "Emax", "spiegelhalter_z": "S:z",
             "spiegelhalter_p": "S:p"}  # fmt: skip
    for ours, theirs in pairs.items():
        assert getattr(c, ours) == pytest.approx(r[theirs], abs=TOL, rel=1e-6), ours
    assert c.slope_ci_low < c.slope < c.slope_ci_high
    assert 0 <= c.e50 <= c.e90 <= c.emax


@pytest.mark.parametrize(("old", "new"), [("p_old", "p_new"), ("p_new", "p_tied")])
def test_nri_and_idi_match_improve_prob(cal_data, old, new) -> None:
    from fusion.stats.reclassification import improve_prob

    ref = pd.read_csv(REF / "r_improve_prob.csv")
    r = ref[(ref.old == old) & (ref.new == new)].set_index("name").value.astype(float)
    ours = improve_prob(cal_data.y, cal_data[old], cal_data[new])
    pairs = {"nri": "nri", "nri_se": "se.nri", "nri_z": "z.nri", "nri_events": "nri.ev",
             "nri_events_se": "se.nri.ev", "nri_nonevents": "nri.ne",
             "nri_nonevents_se": "se.nri.ne", "idi": "idi", "idi_se": "se.idi",
             "idi_z": "z.idi"}  # fmt: skip
    for field, name in pairs.items():
        assert getattr(ours, field) == pytest.approx(r[name], abs=TOL), field
    assert ours.n_events == r["na"] and ours.n_nonevents == r["nb"]


def test_youden_threshold_matches_proc(data, cal_data) -> None:
    from fusion.stats import youden_threshold

    ref = pd.read_csv(REF / "r_youden.csv")
    frames = {"data.csv": data, "calibration.csv": cal_data}
    for row in ref.itertuples():
        frame = frames[row.data]
        assert youden_threshold(frame.y, frame[row.column]) == pytest.approx(row.threshold,
                                                                             abs=TOL)  # fmt: skip


@pytest.mark.parametrize(
    ("r2", "parameters", "prevalence", "expected", "epp"),
    [  # pmsampsize's own tests (tests/testthat/test_bin.R, version 1.1.x)
        (0.288, 24, 0.174, (623, 668, 221, 668), 4.84),
        (0.55, 24, 0.174, (255, 532, 221, 532), 3.86),
        (0.288, 36, 0.174, (934, 1002, 221, 1002), 4.84),
        (0.288, 24, 0.25, (623, 583, 289, 623), 6.49),
    ],
)
def test_sample_size_matches_pmsampsize(r2, parameters, prevalence, expected, epp) -> None:
    from fusion.stats.sample_size import riley_binary

    s = riley_binary(parameters, prevalence, cox_snell_r2=r2)
    assert (s.n_shrinkage, s.n_optimism, s.n_intercept, s.n_required) == expected
    assert round(s.epp_required, 2) == epp
