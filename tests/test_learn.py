"""Models: glmnet agreement, no leakage from the test set, determinism, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import PredefinedSplit

from fusion.cohort import Case
from fusion.config import Study
from fusion.errors import ManifestError
from fusion.learn.lasso import LassoSelector
from fusion.learn.splits import assign_sets
from fusion.learn.study import fit_study_models

REF = Path(__file__).resolve().parent / "reference"


def test_lasso_agrees_with_glmnet() -> None:
    """Fixed folds and lambda grid: same lambda.min, lambda.1se, features, coefficients."""
    data = pd.read_csv(REF / "lasso.csv")
    cv = pd.read_csv(REF / "r_lasso_cv.csv")
    coef = pd.read_csv(REF / "r_lasso_coef.csv").set_index("term")
    X, y = data.filter(like="x").to_numpy(), data.y.to_numpy()
    for rule, column in (("lambda.min", "lambda_min"), ("lambda.1se", "lambda_1se")):
        sel = LassoSelector(
            lambdas=cv["lambda"], cv=PredefinedSplit(data.foldid), rule=rule, tol=1e-8
        ).fit(X, y)
        assert sel.lambda_min_ == cv["lambda"][cv.is_min].item()
        assert sel.lambda_1se_ == cv["lambda"][cv.is_1se].item()
        assert np.allclose(sel.cv_mean_, cv.cvm, atol=1e-6)
        assert np.allclose(sel.cv_se_, cv.cvsd, atol=1e-6)
        expected = coef[column].to_numpy()
        assert sel.support_.tolist() == (expected[1:] != 0).tolist()
        assert np.allclose(sel.coef_, expected[1:], atol=1e-6)
        assert sel.intercept_ == pytest.approx(expected[0], abs=1e-6)
        assert not sel.fallback_
    assert sel.get_support(indices=True).tolist() == [0, 1, 5]  # x1, x2, x6 at lambda.1se
    # the default, looser tolerance picks the same lambdas and features
    quick = LassoSelector(lambdas=cv["lambda"], cv=PredefinedSplit(data.foldid)).fit(X, y)
    assert (quick.lambda_min_, quick.lambda_1se_) == (sel.lambda_min_, sel.lambda_1se_)
    assert quick.support_.tolist() == sel.support_.tolist()


def synthetic(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    table = pd.DataFrame(index=[f"c{i:03d}" for i in range(n)])
    for j in range(12):
        signal = 0.9 * y if j < 3 else 0.0
        table[f"radiomics:f{j}"] = signal + rng.normal(size=n)
    table["radiomics:constant"] = 1.0
    table["radiomics:copy"] = table["radiomics:f0"] * 2 + 0.001 * rng.normal(size=n)
    for j in range(6):
        table[f"deep:resnet50_{j}"] = 0.5 * y + rng.normal(size=n)
    table["clinical:age"] = rng.normal(60, 10, n)
    table["clinical:sex"] = rng.choice(["female", "male"], n)
    table.iloc[3, 0] = np.nan  # a missing value, imputed from the training set
    sets = pd.Series(np.where(np.arange(n) < 90, "train", "test"), index=table.index)
    return table, pd.Series(y, index=table.index), sets


def study(**models) -> Study:
    spec = {
        "name": "t",
        "seed": 3,
        "cohort": {"manifest": __file__},
        "clinical": [{"name": "age", "type": "continuous"},
                     {"name": "sex", "type": "categorical", "reference": "female"}],
        "evaluation": {"cv_folds": 3, "lasso": {"folds": 3, "n_lambda": 10}},
        "models": models or {
            "rad": {"features": ["radiomics"], "classifier": "svm"},
            "fused": {"features": ["radiomics", "deep"], "classifier": "svm", "kernel": "linear"},
            "clin": {"features": ["clinical"], "classifier": "logistic", "lasso": False},
            "combined": {"features": ["fused-score", "clinical"], "classifier": "logistic",
                         "lasso": False, "correlation_threshold": None},
        },
    }  # fmt: skip
    return Study.model_validate(spec)


def fitted_state(out) -> dict[str, object]:  # noqa: ANN001
    """Every learned number of every model, for exact comparison."""
    state: dict[str, object] = {}
    for name, fit in out.fits.items():
        pipe = fit.pipeline
        num = pipe.named_steps["pre"].named_transformers_.get("num")
        if num is not None:
            state[f"{name}.impute"] = num.named_steps["impute"].statistics_.tolist()
            state[f"{name}.scale"] = num.named_steps["scale"].mean_.tolist()
        if fit.lasso is not None:
            state[f"{name}.lasso"] = fit.lasso.coef_.tolist()
        for k, model in enumerate(pipe.named_steps["model"].estimators_):
            state[f"{name}.model{k}"] = np.ravel(
                model.dual_coef_ if hasattr(model, "dual_coef_") else model.coef_
            ).tolist()
        state[f"{name}.threshold"] = fit.threshold
        state[f"{name}.platt"] = fit.platt
    return state


@pytest.fixture(scope="module")
def fitted():  # noqa: ANN201
    return fit_study_models(study(), *synthetic())


@pytest.mark.slow
def test_perturbing_the_test_set_changes_no_fitted_parameter(fitted) -> None:
    table, y, sets = synthetic()
    s = study()
    before = fitted
    perturbed = table.copy()
    test = (sets == "test").to_numpy()
    numeric = [c for c in table.columns if c != "clinical:sex"]
    rng = np.random.default_rng(9)
    perturbed.loc[test, numeric] = rng.normal(50, 30, (test.sum(), len(numeric)))
    perturbed.loc[test, "clinical:sex"] = "male"
    perturbed.iloc[np.flatnonzero(test)[:3], 1] = np.nan
    after = fit_study_models(s, perturbed, y, sets)
    assert fitted_state(after) == fitted_state(before)
    train_scores = before.scores[before.scores.set == "train"].reset_index(drop=True)
    assert train_scores.equals(after.scores[after.scores.set == "train"].reset_index(drop=True))
    # and the test scores did move, so the perturbation reached the models
    b, a = (o.scores[o.scores.set == "test"].score.to_numpy() for o in (before, after))
    assert not np.allclose(a, b)


@pytest.mark.slow
def test_same_seed_same_features_and_scores(fitted) -> None:
    a, b = fitted, fit_study_models(study(), *synthetic())
    assert a.scores.equals(b.scores)
    for name in a.fits:
        assert a.fits[name].selected.equals(b.fits[name].selected)


@pytest.mark.slow
def test_worker_processes_fit_the_same_models(fitted) -> None:
    """Each model's fold fits and final fit run in two worker processes: same numbers."""
    parallel = fit_study_models(study(), *synthetic(), jobs=2)
    assert parallel.scores.equals(fitted.scores)
    assert fitted_state(parallel) == fitted_state(fitted)


@pytest.mark.slow
def test_selection_counts_and_selected_features(fitted) -> None:
    out = fitted
    sets = synthetic()[2]
    rad = out.fits["rad"]
    assert rad.counts["input"] == 14
    assert rad.counts["after_constant_and_empty"] == 13  # the constant column goes
    assert rad.counts["after_correlation"] == 12  # f0 and its near copy: one stays
    assert 1 <= rad.counts["after_lasso"] <= 12
    assert set(rad.selected.feature) & {"radiomics:f0", "radiomics:copy", "radiomics:f1"}
    clin = out.fits["clin"]
    assert "clinical:sex_male" in clin.pipeline.named_steps["pre"].get_feature_names_out()
    # training scores are out of fold (the combined model's input too); the in-sample
    # score is kept apart as "apparent", and only for training cases
    scores = out.scores.pivot(index="case_id", columns="model", values="score")
    apparent = out.scores.pivot(index="case_id", columns="model", values="apparent_score")
    train = sets[sets == "train"].index
    assert np.array_equal(scores.loc[train, "fused"], out.fits["fused"].oof_score[train])
    assert not np.allclose(apparent.loc[train, "fused"], scores.loc[train, "fused"])
    assert apparent.loc[sets[sets == "test"].index].isna().all().all()
    assert set(out.scores.estimate[out.scores.set == "train"]) == {"cross-validated"}
    assert set(out.scores.columns) == {"case_id", "set", "label", "model", "score", "estimate",
                                       "prob", "predicted", "apparent_score"}  # fmt: skip
    # score is the calibrated logit, prob its probability, the prediction prob >= threshold
    assert np.allclose(out.scores.prob, 1 / (1 + np.exp(-out.scores.score)))
    assert (out.scores.predicted == (out.scores.prob >= out.scores.model.map(
        {m: f.threshold for m, f in out.fits.items()}))).all()  # fmt: skip
    # the threshold is the Youden threshold of the out-of-fold probabilities
    from fusion.stats import youden_threshold

    labels = out.scores.drop_duplicates("case_id").set_index("case_id").label
    oof_prob = 1 / (1 + np.exp(-rad.oof_score[train]))
    assert rad.threshold == youden_threshold(labels[train], oof_prob)


def cases(splits: list[str | None], institutions: list[str | None] | None = None) -> list[Case]:
    institutions = institutions or [None] * len(splits)
    return [
        Case(f"c{i}", Path("x"), None, i % 2, split=s, institution=inst)
        for i, (s, inst) in enumerate(zip(splits, institutions, strict=True))
    ]


def test_sets_from_manifest_random_and_external() -> None:
    given = assign_sets(cases(["train", "test", "train", "external"], [None, None, None, "B"]),
                        0.2, 1)  # fmt: skip
    assert given.tolist() == ["train", "test", "train", "external:B"]
    drawn = assign_sets(cases([None] * 20), 0.2, 1)
    assert (drawn == "test").sum() == 4
    labels = pd.Series([i % 2 for i in range(20)], index=drawn.index)
    assert labels[drawn == "test"].sum() == 2  # stratified
    assert drawn.equals(assign_sets(cases([None] * 20), 0.2, 1))
    with pytest.raises(ManifestError, match="gives a split for 1 of 3 internal cases"):
        assign_sets(cases(["train", None, None]), 0.2, 1)


def test_lasso_falls_back_when_the_chosen_lambda_selects_nothing() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 6))
    y = (rng.uniform(size=80) < 0.5).astype(int)  # pure noise: lambda.1se keeps nothing
    sel = LassoSelector(n_lambda=20, cv=4, random_state=0).fit(X, y)
    assert sel.fallback_
    i = int(np.flatnonzero(sel.lambdas_ == sel.lambda_)[0])
    assert sel.support_.sum() >= 1 and not sel.coef_path_[:i].any()  # the first to select


def test_sets_table_says_where_each_assignment_came_from(tmp_path) -> None:
    """tables/sets.csv: a set drawn from the manifest's training cases (a segmentation's
    tuning set) is 'drawn', not 'manifest'; external institutions are held out."""
    from fusion.config import SegmentationSpec, Study
    from fusion.learn.splits import study_sets

    (tmp_path / "m.csv").write_text("case_id,image,label\n")
    base = Study.model_validate({"name": "s", "seed": 3, "cohort": {"manifest": "m.csv"}},
                                context={"base": tmp_path})  # fmt: skip
    seg = base.model_copy(update={"segmentation": SegmentationSpec(
        labels={1: "tumour"}, patch_size=[32, 32, 16], tuning_fraction=0.25)})  # fmt: skip
    table = study_sets(seg, cases(["train"] * 8 + ["test", "external"], [None] * 9 + ["B"]))
    by_set = table.groupby("set").source.agg(set)
    assert by_set["train"] == {"manifest"}
    assert by_set["tuning"] == {"drawn by patient from the training cases (seed 3)"}
    assert by_set["test"] == {"manifest"} and by_set["external:B"] == {"external institution"}
    outcome = study_sets(base, cases([None] * 20))
    assert set(outcome.source) == {"drawn (stratified by label; seed 3)"}
    assert (outcome.set == "test").sum() == 4


@pytest.mark.slow
def test_an_svm_on_many_rows_is_a_linear_svm_on_a_kernel_approximation() -> None:
    """Above evaluation.svm_max_rows an RBF SVM is Nystroem + liblinear (time linear in
    the rows), still tuned and Platt-scaled out of fold, and the summary says so."""
    from fusion.learn.study import summary_tables

    table, y, sets = synthetic(n=600, seed=4)
    sets[:] = np.where(np.arange(600) < 450, "train", "test")
    spec = study(rbf={"features": ["radiomics"], "classifier": "svm", "lasso": False},
                 lin={"features": ["radiomics"], "classifier": "svm", "kernel": "linear",
                      "lasso": False})  # fmt: skip
    big = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(
        update={"svm_max_rows": 400})})  # fmt: skip
    out = fit_study_models(big, table, y, sets)
    tuned = out.fits["rbf"].tuner
    assert set(tuned.best_params_) == {"svm__C", "nystroem__gamma"}
    assert out.fits["lin"].tuner.estimators_[0].__class__.__name__ == "LinearSVC"
    summary = summary_tables(out)["model_summary"].set_index("model")
    assert "Nystroem" in summary.loc["rbf", "classifier"]
    assert "liblinear" in summary.loc["lin", "classifier"]
    test = out.scores[(out.scores.set == "test") & (out.scores.model == "rbf")]
    from fusion.stats.roc import auc_value

    assert auc_value(test.label.to_numpy(), test.score.to_numpy()) > 0.75  # still learns
    small = fit_study_models(spec, table, y, sets)  # under the limit: libsvm's SVC
    assert small.fits["rbf"].tuner.estimators_[0].__class__.__name__ == "SVC"
