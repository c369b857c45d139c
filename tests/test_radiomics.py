"""Radiomics stage: PyRadiomics' own baselines, cache, resume, failures, Dask, labels."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fusion.cli import main
from fusion.config import load_study
from fusion.errors import ConfigError
from fusion.stages.context import RunOptions, build_context
from fusion.stages.radiomics import extract as extract_radiomics
from tests.conftest import ct_volume, cube_roi, needs_shared, write_image

CLASSES = ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]
BASELINE_CASES = ["brain1", "brain2", "breast1", "lung1", "lung2"]
FAST_PARAMS = {
    "imageType": {"Original": {}},
    "featureClass": {"shape": [], "firstorder": [], "glcm": ["Contrast", "JointEntropy"]},
    "setting": {"binWidth": 10, "label": 1},
}


# brain1's ROI has two connected parts; on it, the triangle-mesh shape features of
# PyRadiomics 3.0.1 differ from the baseline (made with PyRadiomics 2.0.1b1, see the
# diagnostics_Versions_PyRadiomics row) by 0.01-0.09 %. Our stage reproduces PyRadiomics
# 3.0.1 called directly on the files to 1e-12; these four values are held to 0.1 %.
MESH_DRIFT = {
    ("brain1", f"original_shape_{name}")
    for name in ("MeshVolume", "SurfaceArea", "SurfaceVolumeRatio", "Sphericity")
}


def _pyradiomics_direct(params: dict, data: Path) -> dict[str, dict[str, float]]:
    """PyRadiomics on the file paths, with no fusion code in between."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    extractor = RadiomicsFeatureExtractor(params)
    return {
        case: {
            k: float(v)
            for k, v in extractor.execute(
                str(data / f"{case}_image.nrrd"), str(data / f"{case}_label.nrrd")
            ).items()
            if not k.startswith("diagnostics_")
        }
        for case in BASELINE_CASES
    }


def write_params(folder: Path, params: dict) -> str:
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return "params.yaml"


def synthetic_rows(tmp_path: Path, n: int, roi=None) -> list[dict]:
    rows = []
    for i in range(n):
        folder = tmp_path / "cohort"
        write_image(folder / "img" / f"c{i}.nrrd", ct_volume(seed=i))
        write_image(folder / "roi" / f"c{i}.nrrd", cube_roi() if roi is None else roi)
        rows.append(
            {"case_id": f"c{i}", "image": f"img/c{i}.nrrd", "roi": f"roi/c{i}.nrrd",
             "label": i % 2, "split": "train"}
        )  # fmt: skip
    return rows


def run_stage(study_path: Path, tmp_path: Path, **kwargs):
    study = load_study(study_path)
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", **kwargs)
    return extract_radiomics(build_context(study, options))


@pytest.mark.slow
def test_reproduces_pyradiomics_baselines(make_study, tmp_path: Path) -> None:
    """Every baseline value of the five test cases, to a relative tolerance of 1e-6."""
    data = needs_shared("pyradiomics")
    baselines = {
        c: pd.read_csv(data / "baseline" / f"baseline_{c}.csv", index_col=0) for c in CLASSES
    }
    settings = {
        ast.literal_eval(b.loc["diagnostics_Configuration_Settings", case])
        .__repr__()
        for b in baselines.values() for case in BASELINE_CASES
    }  # fmt: skip
    assert len(settings) == 1, "baselines disagree on settings"
    image_types = baselines["glcm"].loc["diagnostics_Configuration_EnabledImageTypes", "brain1"]
    params = {
        "imageType": ast.literal_eval(image_types),
        "featureClass": {c: [] for c in CLASSES},
        "setting": ast.literal_eval(settings.pop()),
    }
    rows = [
        {"case_id": c, "image": str(data / f"{c}_image.nrrd"), "roi": str(data / f"{c}_label.nrrd"),
         "label": i % 2}
        for i, c in enumerate(BASELINE_CASES)
    ]  # fmt: skip
    (tmp_path / "cohort").mkdir()
    study = {"cohort": {"modality": "MR"}, "radiomics": {"params": "cohort/params.yaml"}}
    write_params(tmp_path / "cohort", params)
    out = run_stage(make_study(rows, study), tmp_path, jobs=2)
    assert out.run.failures == []
    features = out.features.set_index("case_id")
    direct = _pyradiomics_direct(params, data)
    compared = 0
    for cls, baseline in baselines.items():
        for name in baseline.index:
            if name.startswith("diagnostics_"):
                continue
            for case in BASELINE_CASES:
                expected = float(baseline.loc[name, case])
                got = features.loc[case, f"radiomics:{name}"]
                # the stage is PyRadiomics itself, called on the same files
                assert got == pytest.approx(direct[case][name], rel=1e-12), (name, case)
                if (case, name) in MESH_DRIFT:
                    assert got == pytest.approx(expected, rel=1e-3), (cls, name, case)
                else:
                    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12), (cls, name, case)
                compared += 1
    assert compared == 5 * sum(
        (~b.index.str.startswith("diagnostics_")).sum() for b in baselines.values()
    )
    assert compared == 535  # 107 features x 5 cases
    # same input voxels as the baseline: PyRadiomics' own image and mask hashes agree
    diagnostics = out.diagnostics.set_index("case_id")
    for case in BASELINE_CASES:
        for what in ("Image-original_Hash", "Mask-original_Hash"):
            assert (
                diagnostics.loc[case, what] == baselines["shape"].loc[f"diagnostics_{what}", case]
            )
    assert not any(c.startswith("radiomics:diagnostics") for c in out.features.columns)
    assert "Versions_PyRadiomics" in out.diagnostics.columns


@pytest.mark.slow
def test_cache_hit_miss_and_invalidation(make_study, tmp_path: Path) -> None:
    rows = synthetic_rows(tmp_path, 3)
    study = {"radiomics": {"params": "cohort/" + write_params(tmp_path / "cohort", FAST_PARAMS)}}
    path = make_study(rows, study)
    first = run_stage(path, tmp_path, jobs=2)
    assert (first.run.computed, first.run.cached) == (3, 0)
    assert first.features.shape[0] == 3
    assert first.features.columns[:2].tolist() == ["case_id", "roi"]
    second = run_stage(path, tmp_path, jobs=2)
    assert (second.run.computed, second.run.cached) == (0, 3)
    pd.testing.assert_frame_equal(first.features, second.features)
    # one case's image changes: exactly that case is recomputed
    write_image(tmp_path / "cohort" / "img" / "c1.nrrd", ct_volume(seed=99))
    third = run_stage(path, tmp_path, jobs=2)
    assert (third.run.computed, third.run.cached) == (1, 2)
    f1, f3 = first.features.set_index("case_id"), third.features.set_index("case_id")
    assert f1.loc["c0"].equals(f3.loc["c0"])
    assert (
        f1.loc["c1", "radiomics:original_firstorder_Mean"]
        != f3.loc["c1", "radiomics:original_firstorder_Mean"]
    )
    # the parameters change: everything is recomputed
    write_params(tmp_path / "cohort", {**FAST_PARAMS, "setting": {"binWidth": 5, "label": 1}})
    fourth = run_stage(path, tmp_path, jobs=2)
    assert (fourth.run.computed, fourth.run.cached) == (3, 0)


@pytest.mark.slow
def test_failing_case_is_recorded_and_others_finish(make_study, tmp_path: Path, capsys) -> None:
    """A case PyRadiomics itself fails on after QC passed it: shape2D with force2D
    raises for an ROI that spans several slices (PyRadiomics 3.0.1 tests the slice
    count the wrong way round), while the one-slice ROIs of c0 and c2 go through."""
    flat = np.zeros((12, 32, 32), np.uint8)
    flat[6, 12:20, 12:20] = 1
    rows = synthetic_rows(tmp_path, 3, roi=flat)
    write_image(tmp_path / "cohort" / "roi" / "c1.nrrd", cube_roi())  # 4 slices
    params = {**FAST_PARAMS, "featureClass": {"shape2D": [], "firstorder": ["Mean"]},
              "setting": {"binWidth": 10, "label": 1, "force2D": True}}  # fmt: skip
    params = "cohort/" + write_params(tmp_path / "cohort", params)
    study = {"radiomics": {"params": params}}
    out = run_stage(make_study(rows, study), tmp_path, jobs=2)
    assert out.features.case_id.tolist() == ["c0", "c2"]
    assert out.failures.case_id.tolist() == ["c1"]
    assert "cannot compute 2D shape" in out.failures.message[0]
    assert (tmp_path / "reports" / "unit" / "tables" / "radiomics_failures.csv").is_file()
    args = ["extract", "radiomics", str(make_study(rows, study)), "--reports",
            str(tmp_path / "reports"), "--cache", str(tmp_path / "cache"), "-j", "2"]  # fmt: skip
    assert main(args) == 1
    assert "failed (allowed: 0): c1" in capsys.readouterr().err
    study["radiomics"]["max_failures"] = 1
    args[2] = str(make_study(rows, study))
    assert main(args) == 0


@pytest.mark.slow
def test_dask_cluster_gives_the_local_results(make_study, tmp_path: Path) -> None:
    from distributed import LocalCluster

    rows = synthetic_rows(tmp_path, 4)
    study = {"radiomics": {"params": "cohort/" + write_params(tmp_path / "cohort", FAST_PARAMS)}}
    path = make_study(rows, study)
    local = run_stage(path, tmp_path, jobs=2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        study_obj = load_study(path)
        options = RunOptions(
            reports=tmp_path / "dask", cache=tmp_path / "dask-cache",
            scheduler=cluster.scheduler_address,
        )  # fmt: skip
        remote = extract_radiomics(build_context(study_obj, options))
    assert remote.run.computed == 4
    pd.testing.assert_frame_equal(local.features, remote.features)


def test_several_roi_labels_give_one_row_each(make_study, tmp_path: Path) -> None:
    roi = cube_roi()
    roi[2:4, 4:10, 4:10] = 2
    rows = synthetic_rows(tmp_path, 2, roi=roi)
    params = "cohort/" + write_params(tmp_path / "cohort", FAST_PARAMS)
    out = run_stage(make_study(rows, {"radiomics": {"params": params, "labels": [1, 2]}}), tmp_path)
    assert out.features[["case_id", "roi"]].values.tolist() == [
        ["c0", "label1"], ["c0", "label2"], ["c1", "label1"], ["c1", "label2"],
    ]  # fmt: skip
    voxels = out.features["radiomics:original_shape_VoxelVolume"].tolist()
    assert voxels == [4 * 8 * 8 * 2.0, 2 * 6 * 6 * 2.0] * 2  # 1 x 1 x 2 mm voxels


@pytest.mark.slow
def test_run_killed_mid_way_resumes_without_corrupt_entries(make_study, tmp_path: Path) -> None:
    rows = synthetic_rows(tmp_path, 16)
    params = dict(FAST_PARAMS, featureClass={c: [] for c in CLASSES})
    study = {"radiomics": {"params": "cohort/" + write_params(tmp_path / "cohort", params)}}
    path = make_study(rows, study)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "fusion.cli", "extract", "radiomics", str(path), "-j", "1",
           "--cache", str(cache), "--reports", str(tmp_path / "reports")]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    entries: list[Path] = []
    deadline = time.monotonic() + 120
    while len(entries) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        entries = list((cache / "radiomics").rglob("*.json"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list((cache / "radiomics").rglob("*.json"))
    assert 3 <= len(done) < 16, "the run was not killed mid-way"
    for entry in done:
        assert len(json.loads(entry.read_text())["value"]["rois"]) == 1
    resumed = run_stage(path, tmp_path)
    assert resumed.run.cached == len(done)
    assert resumed.run.computed == 16 - len(done)
    assert resumed.features.shape[0] == 16


def test_invalid_parameter_file_is_a_config_error_before_any_case(make_study, tmp_path) -> None:
    rows = synthetic_rows(tmp_path, 1)
    bad = {"setting": {"binWidht": 5}}  # misspelt: PyRadiomics' schema rejects it
    study = {"radiomics": {"params": "cohort/" + write_params(tmp_path / "cohort", bad)}}
    with pytest.raises(ConfigError, match=r"params.yaml: invalid PyRadiomics parameter file"):
        run_stage(make_study(rows, study), tmp_path)


FILTER_PARAMS = {
    "imageType": {"Original": {}, "LoG": {"sigma": [1.0, 2.0]}, "Wavelet": {}},
    "featureClass": {"firstorder": None, "glcm": None, "shape": None},
    "setting": {"binWidth": 25, "label": 1},
}


def _compare_with_execute(image, roi, labels, params, more=()) -> None:  # noqa: ANN001
    """execute_rois on ``roi``'s labels (and the (map, label) pairs in ``more``) equals
    PyRadiomics' execute of each alone: features, and diagnostics in the same order."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from fusion.features.radiomics import execute_rois, shares_filters

    pairs = [(roi, k) for k in labels] + list(more)
    extractor = RadiomicsFeatureExtractor(params)
    assert shares_filters(extractor, len(pairs))
    for (mask, label), shared in zip(pairs, execute_rois(extractor, image, pairs), strict=True):
        alone = RadiomicsFeatureExtractor(params).execute(image, mask, label=label)
        assert list(shared) == list(alone)  # same features and diagnostics, same order
        for key, value in alone.items():
            if key.startswith("diagnostics_"):
                assert str(shared[key]) == str(value), key
            else:
                assert float(shared[key]) == pytest.approx(float(value), rel=1e-6,
                                                           abs=1e-9), key  # fmt: skip


def test_several_labels_share_each_filter_and_match_execute() -> None:
    """LoG and wavelet computed once for three ROIs give PyRadiomics' per-ROI features."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(40, 15, (16, 40, 40)).astype(np.float32))
    roi_array = np.zeros((16, 40, 40), np.uint8)
    roi_array[4:10, 8:20, 8:20] = 1
    roi_array[5:12, 22:34, 10:22] = 2
    roi_array[3:8, 10:30, 26:36] = 3
    roi = sitk.GetImageFromArray(roi_array)
    for im in (image, roi):
        im.SetSpacing((0.8, 0.8, 2.0))
    _compare_with_execute(image, roi, (1, 2, 3), FILTER_PARAMS)


def test_diagnostics_computed_once_per_image_and_map_are_pyradiomics_own() -> None:
    """The whole image's entries and each map's hash are computed once for all its
    labels (two maps here, one of three labels, and a normalised image): every ROI still
    gets exactly the diagnostics PyRadiomics' execute gives it alone. A label its map
    lacks is getMask's own error."""
    import SimpleITK as sitk
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from fusion.features.radiomics import execute_rois

    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.normal(40, 15, (12, 30, 30)).astype(np.float32))
    habitats = np.zeros((12, 30, 30), np.uint8)
    habitats[3:8, 5:15, 5:15], habitats[3:8, 15:25, 5:15], habitats[3:8, 5:25, 15:25] = 1, 2, 3
    ring = np.zeros_like(habitats)
    ring[2:10, 2:28, 2:28] = 5
    ring[habitats > 0] = 0
    maps = [sitk.GetImageFromArray(a) for a in (habitats, ring)]
    for im in (image, *maps):
        im.SetSpacing((0.8, 0.8, 2.0))
    params = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None, "shape": None},
              "setting": {"binWidth": 10, "normalize": True}}  # fmt: skip
    _compare_with_execute(image, maps[0], (1, 2, 3), params, more=[(maps[1], 5)])
    extractor = RadiomicsFeatureExtractor(params)
    absent = r"^Label \(4\) not present in mask. Choose from \[1 2 3\]$"
    with pytest.raises(ValueError, match=absent):
        execute_rois(extractor, image, [(maps[0], 1), (maps[0], 4)])
    with pytest.raises(ValueError, match=absent):
        extractor.execute(image, maps[0], label=4)


@pytest.mark.slow
def test_shared_filters_on_pyradiomics_prostate_phantom() -> None:
    import SimpleITK as sitk

    folder = needs_shared("pyradiomics")
    image = sitk.ReadImage(str(folder / "prostate_phantom_subvolume.nrrd"))
    roi = sitk.ReadImage(str(folder / "prostate_phantom_subvolume-label.nrrd"))
    _compare_with_execute(image, roi, (1, 7, 8, 9), FILTER_PARAMS)


def test_filters_are_not_shared_when_the_image_is_cropped_per_roi() -> None:
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from fusion.features.radiomics import shares_filters

    resampled = {**FILTER_PARAMS, "setting": {"resampledPixelSpacing": [1, 1, 1]}}
    assert not shares_filters(RadiomicsFeatureExtractor(resampled), 2)
    lbp = {**FILTER_PARAMS, "imageType": {"LBP3D": {}}}
    assert not shares_filters(RadiomicsFeatureExtractor(lbp), 2)
    assert not shares_filters(RadiomicsFeatureExtractor(FILTER_PARAMS), 1)
