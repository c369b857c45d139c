"""ComBat as a transformer fitted on training rows: agreement with neuroCombat, no
leakage from the rows it transforms, and the policy for a site unseen in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.learn.harmonise import ComBat

REFERENCE = Path(__file__).parent / "reference" / "combat.csv"
FEATURES = [f"f{k}" for k in range(6)]


def fixture() -> pd.DataFrame:
    frame = pd.read_csv(REFERENCE)
    frame["male"] = (frame.sex == "male").astype(float)  # neuroCombat: first level dropped
    return frame


def test_fit_transform_agrees_with_neurocombat() -> None:
    frame = fixture()
    X = frame[["site", "age", "male", *FEATURES]]
    ours = ComBat(covariates=("age", "male")).fit_transform(X)
    theirs = frame[[f"{f}_combat" for f in FEATURES]].to_numpy()
    assert np.abs(ours - theirs).max() < 1e-6
    before = frame.groupby("site")[FEATURES].mean().std().mean()
    after = pd.DataFrame(ours, columns=FEATURES).groupby(frame.site).mean().std().mean()
    assert after < before / 3  # the site effects are gone


def test_transform_learns_nothing_from_the_rows_it_transforms() -> None:
    """Fitted on the training rows only: replacing every test row's features with noise
    leaves the parameters bit-identical, and a row's result does not depend on the other
    rows transformed with it."""
    frame = fixture()
    X = frame[["site", "age", "male", *FEATURES]]
    train = np.arange(len(X)) % 4 != 0
    model = ComBat(covariates=("age", "male")).fit(X[train])
    noisy = X.copy()
    noisy.loc[~train, FEATURES] = np.random.default_rng(0).normal(0, 100, ((~train).sum(), 6))
    again = ComBat(covariates=("age", "male")).fit(noisy[train])
    for name in ("beta_", "var_pooled_", "gamma_star_", "delta_star_"):
        assert np.array_equal(getattr(model, name), getattr(again, name)), name
    together = model.transform(X[~train])
    one_by_one = np.vstack([model.transform(X[~train].iloc[[i]]) for i in range((~train).sum())])
    assert np.abs(together - one_by_one).max() < 1e-12  # BLAS may round a batch differently


def test_an_unseen_site_is_an_error_or_estimated_from_its_own_rows() -> None:
    frame = fixture()
    X = frame[["site", "age", "male", *FEATURES]]
    seen = X[X.site != "C"]
    unseen = X[X.site == "C"]
    with pytest.raises(ValueError, match="site 'C' had no training row"):
        ComBat(covariates=("age", "male")).fit(seen).transform(unseen)
    model = ComBat(covariates=("age", "male"), unseen="own").fit(seen)
    harmonised = model.transform(unseen)
    # site C was shifted by -1 and scaled by 0.6: its own location/scale come off
    grand = model.transform(seen).mean(axis=0)
    assert np.abs(harmonised.mean(axis=0) - grand).mean() < np.abs(
        unseen[FEATURES].to_numpy().mean(axis=0) - grand).mean() / 2  # fmt: skip
    with pytest.raises(ValueError, match="one row here"):
        model.transform(unseen.iloc[[0]])


def test_bad_input_is_named() -> None:
    frame = fixture()
    X = frame[["site", "age", "male", *FEATURES]]
    with pytest.raises(ValueError, match="fewer than two training rows"):
        ComBat(covariates=("age", "male")).fit(X.iloc[[0, 1, 25]])  # site B: one row
    with pytest.raises(ValueError, match="site column 'scanner'"):
        ComBat(site="scanner").fit(X)
    missing = X.copy()
    missing.loc[3, "f2"] = np.nan
    with pytest.raises(ValueError, match="impute before"):
        ComBat(covariates=("age", "male")).fit(missing)
