"""Negative controls and the new learned steps, unit by unit: the shuffled and elsewhere
ROIs, the intensity ops, the permuted outcome, the flag of a control that performs like
its model, and no leakage through the robustness selection or ComBat inside a study's
models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fusion.config import Study
from fusion.errors import FusionError
from fusion.io.intensity import apply_op
from fusion.learn.models import CaseInputs
from fusion.learn.study import fit_study_models
from fusion.rois import make_generator
from fusion.rois.perturb import dilate_mm
from fusion.stats.evaluate import negative_control_table
from fusion.stats.roc import auc_value
from tests.test_learn import synthetic


def _image(hu: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:  # noqa: ANN001
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(spacing)
    return image


def _scene(seed: int = 0) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """A body of 40 HU (an ellipse in air) holding a ROI of 70 HU with texture."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:10, :60, :60]
    body = ((y - 30) ** 2 / 26**2 + (x - 30) ** 2 / 24**2) <= 1
    roi = ((y - 25) ** 2 + (x - 28) ** 2 <= 36) & (z >= 3) & (z <= 6)
    hu = np.where(body, 40.0, -1000.0) + np.where(roi, 30 + 10 * np.sin(x / 2.0), 0.0)
    hu += rng.normal(0, 2, hu.shape)
    image = _image(hu)
    mask = sitk.GetImageFromArray(roi.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask, body


def test_shuffled_voxels_keep_the_histogram_and_lose_the_texture() -> None:
    image, mask, _ = _scene()
    result = make_generator("shuffle", seed=4)(image, mask)
    assert result.image_op == {"op": "shuffle", "seed": 4}
    assert np.array_equal(sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(mask))
    before = sitk.GetArrayFromImage(image)
    after = sitk.GetArrayFromImage(apply_op(image, result.image, result.image_op))
    inside = sitk.GetArrayFromImage(mask) > 0
    assert np.array_equal(np.sort(after[inside]), np.sort(before[inside]))  # the histogram
    assert np.array_equal(after[~inside], before[~inside])  # nothing outside moves
    assert not np.array_equal(after[inside], before[inside])

    # the texture: neighbours along x no longer resemble each other
    def neighbour_corr(values: np.ndarray) -> float:
        a, b = values[:, :, :-1][inside[:, :, :-1] & inside[:, :, 1:]], values[:, :, 1:][
            inside[:, :, :-1] & inside[:, :, 1:]]  # fmt: skip
        return float(np.corrcoef(a, b)[0, 1])

    assert neighbour_corr(before) > 0.6 and abs(neighbour_corr(after)) < 0.1
    again = apply_op(image, result.image, result.image_op)
    assert np.array_equal(sitk.GetArrayFromImage(again), after)  # seeded


def test_noise_op_adds_seeded_noise_of_the_given_sd() -> None:
    image, mask, _ = _scene()
    out = sitk.GetArrayFromImage(apply_op(image, mask, {"op": "noise", "sd_hu": 8, "seed": 1}))
    diff = out - sitk.GetArrayFromImage(image)
    assert diff.std() == pytest.approx(8, rel=0.02) and abs(diff.mean()) < 0.1
    with pytest.raises(ValueError, match="unknown intensity op 'blur'"):
        apply_op(image, mask, {"op": "blur"})


def test_elsewhere_is_the_same_shape_inside_the_body_away_from_the_roi() -> None:
    image, mask, body = _scene()
    spacing = mask.GetSpacing()[::-1]
    drawn = sitk.GetArrayFromImage(mask) > 0
    places = set()
    for seed in range(5):
        result = make_generator("elsewhere", margin_mm=3, seed=seed)(image, mask)
        moved = sitk.GetArrayFromImage(result.image) > 0
        assert moved.sum() == drawn.sum() and not result.notes
        assert body[moved].all()  # wholly inside the body
        assert not (moved & dilate_mm(drawn, spacing, 3)).any()  # 3 mm from the drawn ROI
        # the same shape: the bounding boxes' contents are equal
        box = lambda m: m[tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(m))]  # noqa: E731
        assert np.array_equal(box(moved), box(drawn))
        places.add(tuple(np.argwhere(moved)[0]))
    assert len(places) == 5  # seeded draws land in different places
    same = make_generator("elsewhere", margin_mm=3, seed=0)(image, mask)
    first = make_generator("elsewhere", margin_mm=3, seed=0)(image, mask)
    assert np.array_equal(sitk.GetArrayFromImage(same.image), sitk.GetArrayFromImage(first.image))
    # an organ too small to hold the ROI: an empty map and a note, not an error
    tight = make_generator("elsewhere", hu_range=(60, 80), margin_mm=3)(image, mask)
    assert not sitk.GetArrayFromImage(tight.image).any()
    assert "no place" in tight.notes[0]


def test_a_control_is_flagged_when_it_reaches_the_real_models_ci() -> None:
    performance = pd.DataFrame({
        "model": ["real", "shuffled", "permuted"] * 2, "set": ["test"] * 3 + ["train"] * 3,
        "estimate": "held-out", "auc": [0.85, 0.80, 0.52, 0.9, 0.6, 0.5],
        "auc_ci_low": [0.75, 0.70, 0.40, 0.8, 0.5, 0.4],
        "auc_ci_high": [0.95, 0.90, 0.64, 1.0, 0.7, 0.48],
    })  # fmt: skip
    delong = pd.DataFrame(
        {
            "set": ["test", "test"],
            "model_a": ["real", "real"],
            "model_b": ["shuffled", "permuted"],
            "p_value": [0.4, 0.001],
        }
    )
    table = negative_control_table(
        performance,
        delong,
        {"shuffled": ("real", "shuffled voxels"), "permuted": ("real", "permuted outcome")},
    )
    row = table.set_index(["control", "set"])
    assert row.loc[("shuffled", "test"), "flag"] and not row.loc[("shuffled", "train"), "flag"]
    assert "volume or intensity histogram" in row.loc[("shuffled", "test"), "warning"]
    assert row.loc[("shuffled", "test"), "delong_p"] == 0.4
    assert (
        not row.loc[("permuted", "test"), "flag"] and row.loc[("permuted", "test"), "warning"] == ""
    )
    assert np.isnan(row.loc[("permuted", "train"), "delong_p"])  # no test on that set
    assert row.loc[("permuted", "test"), "note"] == ""
    assert "below chance" in row.loc[("permuted", "train"), "note"]


def _trust_study(**models) -> Study:
    return Study.model_validate({
        "name": "t", "seed": 3, "cohort": {"manifest": __file__,
                                           "columns": {"site": "site"}},
        "clinical": [{"name": "age", "type": "continuous"},
                     {"name": "sex", "type": "categorical", "reference": "female"}],
        "evaluation": {"cv_folds": 3, "lasso": {"folds": 3, "n_lambda": 10}},
        "perturbations": {"variants": [{"kind": "erode"}, {"kind": "dilate"}]},
        "harmonisation": {"covariates": ["age", "sex"]},
        "models": models,
    })  # fmt: skip


def _trust_inputs(table: pd.DataFrame, test: np.ndarray, seed: int = 0) -> CaseInputs:
    """The drawn ROI's radiomics and two perturbations (f0-f5 stable, the rest shaky),
    three sites by case order, covariates age and sex."""
    rng = np.random.default_rng(seed)
    radiomics = [c for c in table.columns if c.startswith("radiomics:")]
    frames = []
    for k, roi in enumerate(("whole", "perturbed1-erode", "perturbed2-dilate")):
        part = table[radiomics].copy()
        if k:
            sd = np.where(np.arange(len(radiomics)) < 6, 0.05, 2.0)
            part += rng.normal(0, 1, part.shape) * sd
        frames.append(part.assign(roi=roi).rename_axis("case_id").reset_index())
    sites = pd.Series(np.array(["A", "B", "C"])[np.arange(len(table)) % 3], index=table.index)
    covariates = pd.DataFrame(
        {"age": table["clinical:age"], "sex=male": (table["clinical:sex"] == "male").astype(float)}
    )
    return CaseInputs(
        perturbed=pd.concat(frames, ignore_index=True),
        rois=("whole", "perturbed1-erode", "perturbed2-dilate"),
        sites=sites,
        covariates=covariates,
        prefixes=("radiomics:", "deep:"),
    )


def _learned(out) -> dict[str, object]:  # noqa: ANN001
    fit = out.fits["rad"]
    robust, combat = fit.pipeline.named_steps["robust"], fit.pipeline.named_steps["harmonise"]
    state = {"support": robust.support_.tolist(),
             "icc": robust.robustness_.icc.tolist(), "lasso": fit.lasso.coef_.tolist(),
             "medians": combat.medians_.tolist()}  # fmt: skip
    for name in ("beta_", "var_pooled_", "gamma_star_", "delta_star_"):
        state[name] = getattr(combat.combat_, name).tolist()
    return state


@pytest.mark.slow
def test_robust_selection_and_combat_learn_nothing_from_the_test_cases() -> None:
    table, y, sets = synthetic()
    site_shift = np.array([0.0, 2.0, -1.5])[np.arange(len(table)) % 3]
    radiomics = [c for c in table.columns if c.startswith("radiomics:")]
    table[radiomics] = table[radiomics].add(site_shift, axis=0)
    test = (sets == "test").to_numpy()
    study = _trust_study(rad={"features": ["radiomics", "deep"], "robust": True,
                              "harmonise": True, "classifier": "logistic"})  # fmt: skip
    inputs = _trust_inputs(table, test)
    before = fit_study_models(study, table, y, sets, inputs=inputs)
    fit = before.fits["rad"]
    kept = fit.pipeline.named_steps["robust"].get_feature_names_out()
    assert {f"radiomics:f{j}" for j in range(3)} <= set(kept)
    assert not {f"radiomics:f{j}" for j in range(6, 12)} & set(kept)  # shaky ones go
    assert fit.counts["after_robust"] == len(kept)
    # every test case's features (its own and its perturbed ROIs') replaced by noise
    rng = np.random.default_rng(9)
    noisy = table.copy()
    numeric = [c for c in table.columns if c.startswith(("radiomics:", "deep:"))]
    noisy.loc[test, numeric] = rng.normal(50, 30, (test.sum(), len(numeric)))
    perturbed = inputs.perturbed.copy()
    rows = perturbed.case_id.isin(table.index[test])
    perturbed.loc[rows, radiomics] = rng.normal(0, 99, (rows.sum(), len(radiomics)))
    covariates = inputs.covariates.copy()
    covariates.loc[test] = rng.normal(0, 1, (test.sum(), 2))
    again = fit_study_models(
        study,
        noisy,
        y,
        sets,
        inputs=CaseInputs(
            perturbed=perturbed, rois=inputs.rois, sites=inputs.sites, covariates=covariates
        ),
    )
    assert _learned(again) == _learned(before)
    train = before.scores.set == "train"
    assert before.scores[train].score.equals(again.scores[train].score)


@pytest.mark.slow
def test_a_permuted_outcome_control_sits_near_chance() -> None:
    """One permutation's test AUC scatters around 0.5 (its fitted direction is random;
    SD about 0.1 at this size), so the mean over eight study seeds is what is tested;
    the real model keeps its AUC and every model is scored on the true outcome."""
    table, y, sets = synthetic(n=400, seed=2)
    sets[:] = np.where(np.arange(400) < 260, "train", "test")
    fast = {"features": ["radiomics"], "classifier": "logistic", "lasso": False}
    study = _trust_study(real=fast, permuted={**fast, "control_of": "real",
                                              "permute_outcome": True})  # fmt: skip
    aucs = {"real": [], "permuted": []}
    for seed in range(8):
        out = fit_study_models(study.model_copy(update={"seed": seed}), table, y, sets)
        test = out.scores[out.scores.set == "test"]
        assert test.groupby("model").label.apply(tuple).nunique() == 1  # the true outcome
        for model, frame in test.groupby("model"):
            aucs[model].append(auc_value(frame.label.to_numpy(), frame.score.to_numpy()))
    assert min(aucs["real"]) > 0.8
    assert abs(np.mean(aucs["permuted"]) - 0.5) < 0.07
    assert len(set(aucs["permuted"])) == 8  # each seed permutes differently


@pytest.mark.parametrize(("change", "message"), [
    ({"models": {"m": {"features": ["radiomics"], "robust": True}}, "perturbations": None},
     "robust: true but the study has no perturbations"),
    ({"models": {"m": {"features": ["radiomics"], "harmonise": True}}, "harmonisation": None},
     "harmonise: true but the study has no harmonisation"),
    ({"models": {"m": {"features": ["radiomics"], "harmonise": True}},
      "cohort": {"manifest": __file__}}, "name the site column"),
    ({"models": {"m": {"features": ["radiomics"], "permute_outcome": True}}},
     "permute_outcome makes a negative control"),
    ({"models": {"m": {"features": ["radiomics"], "control_of": "later"},
                 "later": {"features": ["radiomics"]}}}, "must name a model declared before"),
    ({"harmonisation": {"covariates": ["height"]}}, "'height' is not a clinical covariate"),
    ({"rois": {"perturbed1-erode": {"generator": "ring"}}}, "clashes with a perturbation"),
])  # fmt: skip
def test_study_checks_name_what_is_missing(change: dict, message: str) -> None:
    from pydantic import ValidationError

    spec = {
        "name": "t", "cohort": {"manifest": __file__, "columns": {"site": "site"}},
        "clinical": [{"name": "age", "type": "continuous"}],
        "perturbations": {"variants": [{"kind": "erode"}]}, "harmonisation": {},
        "models": {"m": {"features": ["radiomics"]}},
    }  # fmt: skip
    spec |= change
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(ValidationError, match=message):
        Study.model_validate(spec)
    assert _trust_study(m={"features": ["radiomics"]}).auxiliary_rois() == frozenset(
        {"perturbed1-erode", "perturbed2-dilate"})  # fmt: skip


def test_a_segmenters_roi_is_judged_against_its_other_thresholds() -> None:
    """perturbations.of names a generated ROI and its variants name declared ROIs (the
    same U-Net at other thresholds): those become the ICC's measurements, stay out of
    the radiomics block, and a variant that perturbs the drawn ROI is refused."""
    from pydantic import ValidationError

    from fusion.learn.study import case_inputs

    unet = {"generator": "unet", "settings": {"checkpoint": "u.pt"}}
    spec = {
        "name": "t", "cohort": {"manifest": __file__},
        "rois": {"tumour": unet,
                 "tumour_t03": {**unet, "settings": {"checkpoint": "u.pt", "threshold": 0.3}},
                 "tumour_t07": {**unet, "settings": {"checkpoint": "u.pt", "threshold": 0.7}}},
        "perturbations": {"of": "tumour", "variants": [{"roi": "tumour_t03"},
                                                        {"roi": "tumour_t07"}]},
        "models": {"m": {"features": ["radiomics:tumour"], "robust": True}},
    }  # fmt: skip
    study = Study.model_validate(spec)
    assert study.auxiliary_rois() == frozenset({"tumour_t03", "tumour_t07"})
    assert set(study.rois) == {"tumour", "tumour_t03", "tumour_t07"}  # nothing generated
    radiomics = pd.DataFrame(
        {
            "case_id": ["a", "b"] * 3,
            "roi": np.repeat(["tumour", "tumour_t03", "tumour_t07"], 2),
            "radiomics:f": [1.0, 5.0, 1.1, 5.2, 0.9, 4.8],
        }
    )
    inputs = case_inputs(study, [], radiomics)
    assert inputs.rois == ("tumour", "tumour_t03", "tumour_t07")
    with pytest.raises(FusionError, match="no radiomics features of 'tumour'.*tumour_t03"):
        case_inputs(study, [], radiomics[radiomics.roi != "tumour"])
    bad = {**spec, "perturbations": {"of": "tumour", "variants": [{"kind": "erode"}]}}
    with pytest.raises(ValidationError, match="perturbs the drawn ROI"):
        Study.model_validate(bad)
    unknown = {**spec, "perturbations": {"of": "tumour", "variants": [{"roi": "nope"}]}}
    with pytest.raises(ValidationError, match="naming one of the study's rois"):
        Study.model_validate(unknown)


def test_comparisons_are_the_planned_pairs_and_each_control_with_its_model() -> None:
    fast = {"features": ["radiomics"], "classifier": "logistic", "lasso": False}
    study = _trust_study(a=fast, b=fast, c=fast,
                         ctrl={**fast, "control_of": "a", "permute_outcome": True})  # fmt: skip
    pairs = study.compared_pairs()
    assert {("a", "b"), ("a", "c"), ("b", "c"), ("a", "ctrl")} <= pairs
    assert ("b", "ctrl") not in pairs and ("c", "ctrl") not in pairs
    planned = study.model_copy(update={"evaluation": study.evaluation.model_copy(
        update={"comparisons": [("b", "a")]})})  # fmt: skip
    assert planned.compared_pairs() == frozenset({("a", "b"), ("b", "a"), ("a", "ctrl"),
                                                  ("ctrl", "a")})  # fmt: skip
    assert _trust_study(a=fast, b=fast).compared_pairs() is None  # every pair
    table, y, sets = synthetic()
    out = fit_study_models(study, table, y, sets)
    from fusion.stats.evaluate import delong_table

    tested = delong_table(out.scores, pairs=pairs)
    got = set(zip(tested.model_a, tested.model_b, strict=True))
    assert got == {("a", "b"), ("a", "c"), ("b", "c"),
                   ("a", "ctrl")}  # fmt: skip
    assert len(delong_table(out.scores)) == 2 * 6  # without pairs: all 6, both sets


def test_a_balanced_permutation_keeps_the_prevalence_and_drops_the_correlation() -> None:
    from fusion.learn.study import balanced_permutation

    y = np.array([1] * 40 + [0] * 60)
    for seed in range(5):
        permuted = balanced_permutation(y, seed)
        assert permuted.sum() == 40  # the prevalence
        assert (permuted[y == 1] == 1).sum() == 16  # 40 * 40 / 100: independence's count
        assert abs(np.corrcoef(y, permuted)[0, 1]) < 1e-12
    assert not np.array_equal(balanced_permutation(y, 0), balanced_permutation(y, 1))
    assert np.array_equal(balanced_permutation(y, 3), balanced_permutation(y, 3))
