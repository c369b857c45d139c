"""Robustness, harmonisation and negative controls wired into a study: perturbed ROIs
give feature_robustness.csv and a robust selection; ComBat runs inside the models'
Pipelines with the manifest's sites; negative-control models sit beside the real one,
and a model that learns only the ROI's volume is caught by the shuffled-voxel control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_image

SITE_OFFSET_HU = {"A": 0.0, "B": 25.0, "C": -20.0}
PARAMS = ("imageType: {Original: {}}\nfeatureClass: {firstorder:, shape:, glcm:}\n"
          "setting: {binWidth: 10}\n")  # fmt: skip


def _cohort(folder: Path, n: int = 36) -> list[dict]:
    """Head-CT-like volumes: a body of ~30 HU in air, a ROI of ~60 HU whose radius is
    larger for label 1 (the only signal: its volume), and per site an offset and noise."""
    rng = np.random.default_rng(11)
    z, y, x = np.mgrid[:12, :64, :64]
    body = ((y - 32) ** 2 / 29**2 + (x - 32) ** 2 / 27**2) <= 1
    rows = []
    for i in range(n):
        label, site = i % 2, "ABC"[i % 3]
        radius = 5.0 + 3.0 * label + rng.uniform(-0.8, 0.8)
        cy, cx = 32 + rng.integers(-4, 5), 32 + rng.integers(-4, 5)
        roi = ((y - cy) ** 2 + (x - cx) ** 2 + ((z - 6) * 2) ** 2) <= radius**2
        noise = rng.normal(0, 4 + 3 * "ABC".index(site), z.shape)
        hu = np.where(body, 30.0, -1000.0) + np.where(roi, 30.0, 0.0) + noise
        hu = np.where(body, hu + SITE_OFFSET_HU[site], hu)
        write_image(folder / f"i{i}.nii.gz", hu.astype(np.float32))
        write_image(folder / f"r{i}.nii.gz", roi.astype(np.uint8))
        rows.append({"case_id": f"c{i:02d}", "image": f"i{i}.nii.gz", "roi": f"r{i}.nii.gz",
                     "label": label, "site": site,
                     "split": "test" if i >= n - 12 else "train"})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def trust_run(tmp_path_factory):  # noqa: ANN001, ANN201
    from fusion.config import load_study
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    tmp = tmp_path_factory.mktemp("trust")
    rows = _cohort(tmp / "cohort")
    pd.DataFrame(rows).to_csv(tmp / "cohort" / "manifest.csv", index=False)
    (tmp / "cohort" / "params.yaml").write_text(PARAMS)
    fast = {"classifier": "logistic", "lasso": False}
    study = {
        "name": "trust", "seed": 3,
        "cohort": {"manifest": "cohort/manifest.csv", "columns": {"site": "site"}},
        "radiomics": {"params": "cohort/params.yaml"},
        "rois": {"shuffled": {"generator": "shuffle", "settings": {"seed": 1}},
                 "elsewhere": {"generator": "elsewhere",
                               "settings": {"margin_mm": 2, "seed": 2}}},
        "perturbations": {"icc": "ICC3", "variants": [{"kind": "erode", "distance_mm": 1},
                                       {"kind": "dilate", "distance_mm": 1},
                                       {"kind": "noise", "noise_hu": 5, "seed": 4}]},
        "harmonisation": {"blocks": ["radiomics"]},
        "evaluation": {"cv_folds": 3, "bootstrap": 0},
        "models": {
            "radiomics": {"features": ["radiomics"], "robust": True, "harmonise": True, **fast},
            "shuffled": {"features": ["radiomics:shuffled"], "control_of": "radiomics",
                         "robust": True, "harmonise": True, **fast},
            "elsewhere": {"features": ["radiomics:elsewhere"], "control_of": "radiomics",
                          "robust": True, "harmonise": True, **fast},
            "permuted": {"features": ["radiomics"], "control_of": "radiomics",
                         "permute_outcome": True, "robust": True, "harmonise": True, **fast},
        },
    }  # fmt: skip
    import yaml

    (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    run_study(load_study(tmp / "study.yaml"), RunOptions(reports=tmp / "r", cache=None, jobs=1),
              start=None)  # fmt: skip
    return tmp / "r" / "trust"


def _table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / "tables" / f"{name}.csv")


@pytest.mark.slow
def test_perturbations_give_a_robustness_table_and_a_robust_selection(trust_run) -> None:  # noqa: ANN001
    robustness = _table(trust_run, "feature_robustness").set_index("feature")
    assert robustness.cases.eq(24).all()  # the training cases only
    assert {"icc_perturbed1-erode", "icc_perturbed2-dilate", "icc_perturbed3-noise"} <= set(
        robustness.columns)  # fmt: skip
    volume = robustness.loc["original_shape_VoxelVolume"]
    assert volume.kind == "ICC3" and volume.robust and volume.icc > 0.9
    assert volume["icc_perturbed3-noise"] == pytest.approx(1.0)  # noise leaves the shape
    summary = _table(trust_run, "model_summary").set_index("model")
    kept = int(robustness.robust.sum())
    assert summary.loc["radiomics", "n_after_robust"] == kept < summary.loc["radiomics", "n_input"]
    features = _table(trust_run, "radiomics_features")
    assert set(features.roi) == {"whole", "shuffled", "elsewhere", "perturbed1-erode",
                                 "perturbed2-dilate", "perturbed3-noise"}  # fmt: skip
    # the auxiliary ROIs never enter the radiomics block
    selected = _table(trust_run, "selected_features")
    assert not selected.feature[selected.model == "radiomics"].str.contains("perturbed").any()


@pytest.mark.slow
def test_combat_runs_inside_the_models_with_the_manifest_sites(trust_run) -> None:  # noqa: ANN001
    table = _table(trust_run, "harmonisation")
    radiomics = table[table.model == "radiomics"].set_index("site")
    assert list(radiomics.index) == ["A", "B", "C"]
    assert radiomics.training_cases.sum() == 24
    examples = _table(trust_run, "harmonisation_examples")
    first = examples[examples.feature == examples.feature.iloc[0]]
    train = first[first.set == "train"]
    spread = lambda col: train.groupby("site")[col].mean().std()  # noqa: E731
    assert spread("after") < 0.2 * spread("before")  # the site means come together


@pytest.mark.slow
def test_a_volume_only_model_is_caught_by_the_shuffled_control(trust_run) -> None:  # noqa: ANN001
    controls = _table(trust_run, "negative_controls").set_index(["control", "set"])
    shuffled = controls.loc[("shuffled", "test")]
    assert shuffled.kind == "shuffled voxels"
    assert shuffled.auc_model > 0.9 and shuffled.flag  # same volume, same histogram
    assert "volume" in shuffled.warning
    permuted = controls.loc[("permuted", "test")]
    assert permuted.kind == "permuted outcome"
    assert not permuted.flag
    html = (trust_run / "index.html").read_text()
    assert "Negative controls" in html and "shuffled voxels" in html
