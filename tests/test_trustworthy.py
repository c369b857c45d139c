"""Ways in which a published number could silently be wrong (issue "Trustworthy numbers").

One test (or a few) per item of that issue; each failed on the code before the fix.
Items 1 and 3 are tested in ``test_cache_keys.py`` and ``test_learn.py``, the replay of
item 9 in ``test_end_to_end.py``.
"""

from __future__ import annotations

import gzip
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fusion.cli import main
from fusion.cohort import Case
from fusion.config import ModelSpec, load_study
from fusion.errors import FusionError
from fusion.pipeline import run_study
from fusion.stages.context import RunOptions, check_study
from fusion.stats import (
    auc_value,
    calibration,
    calibration_curve,
    delong_test_unpaired,
    roc_auc,
)
from fusion.stats.evaluate import calibration_table, delong_table, performance_table
from tests.conftest import ct_volume, cube_roi, needs_shared, write_image

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ 2. patients


def test_random_split_keeps_each_patient_on_one_side() -> None:
    from fusion.learn.splits import assign_sets

    cases = [Case(f"c{i}", Path("x"), None, (i // 2) % 2, patient=f"p{i // 2}")
             for i in range(60)]  # fmt: skip
    sets = assign_sets(cases, 0.2, 3)
    per_patient = pd.Series(sets.to_numpy(), index=[c.patient for c in cases])
    assert per_patient.groupby(level=0).nunique().max() == 1
    assert (sets == "test").sum() == 12  # 1/5 of the patients, 2 scans each


def _duplicated_patients(n_patients: int = 50, seed: int = 0) -> tuple:
    """Two identical scans per patient, features pure noise: only a leak can predict."""
    rng = np.random.default_rng(seed)
    y = np.repeat((rng.uniform(size=n_patients) < 0.5).astype(int), 2)
    X = pd.DataFrame(np.repeat(rng.normal(size=(n_patients, 5)), 2, axis=0),
                     columns=[f"radiomics:f{j}" for j in range(5)])  # fmt: skip
    return X, y, np.repeat(np.arange(n_patients), 2)


@pytest.mark.slow
def test_every_cv_groups_by_patient() -> None:
    """Out-of-fold scores of noise look excellent when a patient's twin scan sits in the
    training folds; grouped by patient they are what they are: chance."""
    from fusion.config import EvaluationSpec
    from fusion.learn.models import fit_model

    X, y, patients = _duplicated_patients()
    spec = ModelSpec(features=["radiomics"], classifier="svm", lasso=False,
                     correlation_threshold=None)  # fmt: skip
    ev = EvaluationSpec(cv_folds=5)
    leaky = fit_model("m", spec, X, y, ev, seed=1)
    grouped = fit_model("m", spec, X, y, ev, seed=1, groups=patients)
    assert auc_value(y, leaky.oof_score) > 0.8  # 0.84-0.93 over seeds 1-5
    assert auc_value(y, grouped.oof_score) < 0.7
    lasso = fit_model("m", spec.model_copy(update={"lasso": True}), X, y, ev, 1, None, patients)
    assert type(lasso.pipeline.named_steps["lasso"].cv).__name__ == "StratifiedGroupKFold"


# ------------------------------------------------------------------ 4. calibration


def test_flexible_calibration_curve() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 4000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    curve = calibration_curve(y, p)
    assert np.abs(curve.observed - curve.predicted).max() < 0.06  # calibrated data
    assert (curve.ci_low <= curve.observed).all() and (curve.observed <= curve.ci_high).all()
    # with one degree of freedom it is the logistic recalibration line (checked against R)
    from scipy.special import expit, logit

    q = np.clip(p**2 * 1.3, 0.01, 0.99)  # miscalibrated
    line, c = calibration_curve(y, q, df=1), calibration(y, q)
    assert np.allclose(line.observed, expit(c.intercept + c.slope * logit(line.predicted)))


def test_near_constant_probabilities_get_a_note_and_no_curve() -> None:
    y = np.r_[np.zeros(30), np.ones(20)].astype(int)
    p = 0.4 + np.linspace(0, 0.001, 50)
    with pytest.raises(ValueError, match="nearly constant"):
        calibration_curve(y, p)
    frame = pd.DataFrame({"set": "test", "model": "m", "label": y, "prob": p})
    row = calibration_table(frame).iloc[0]
    assert "nearly constant" in row.note


# ------------------------------------------------------------------ 5. failure budgets


def _rows(tmp_path: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        write_image(tmp_path / "cohort" / f"img{i}.nii.gz", ct_volume(seed=i))
        write_image(tmp_path / "cohort" / f"roi{i}.nii.gz", cube_roi())
        rows.append({"case_id": f"c{i}", "image": f"img{i}.nii.gz", "roi": f"roi{i}.nii.gz",
                     "label": i % 2})  # fmt: skip
    return rows


def test_fusion_run_enforces_the_radiomics_failure_budget(make_study, tmp_path) -> None:
    """c1 fails in PyRadiomics after passing QC: shape2D with force2D raises for an ROI
    over several slices (PyRadiomics 3.0.1 tests the slice count the wrong way round);
    the one-slice ROIs of c0 and c2 go through."""
    rows = _rows(tmp_path, 3)
    flat = np.zeros((12, 32, 32), np.uint8)
    flat[6, 12:20, 12:20] = 1
    for i in (0, 2):
        write_image(tmp_path / "cohort" / f"roi{i}.nii.gz", flat)
    (tmp_path / "cohort" / "params.yaml").write_text(
        "imageType: {Original: {}}\nfeatureClass: {shape2D:, firstorder:}\n"
        "setting: {binWidth: 25, force2D: true}\n"
    )
    study = {"radiomics": {"params": "cohort/params.yaml"}}
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache", jobs=1)
    with pytest.raises(FusionError, match=r"1 case\(s\) failed \(allowed: 0.*c1: "):
        run_study(load_study(make_study(rows, study)), options, only="radiomics")
    study["radiomics"]["max_failures"] = 1
    run_study(load_study(make_study(rows, study)), options, only="radiomics")


def test_excluded_cases_carry_the_stage_error(make_study, tmp_path) -> None:
    from fusion.learn.table import excluded_from_all, feature_table

    rows = _rows(tmp_path, 2)
    study = load_study(make_study(rows, {"models": {"m": {"features": ["radiomics"]}}}))
    cases = [Case("c0", Path("x"), None, 0), Case("c1", Path("x"), None, 1)]
    block = pd.DataFrame({"radiomics:f": [1.0]}, index=pd.Index(["c0"], name="case_id"))
    why = {"radiomics": {"c1": "radiomics failed: ValueError: mask has 1 voxel"}}
    table, exclusions = feature_table(study, cases, {"radiomics": block}, why)
    assert exclusions.to_dict("records") == [
        {"case_id": "c1", "model": "m", "reason": "radiomics failed: ValueError: mask has 1 voxel"}
    ]
    assert excluded_from_all(study, exclusions).case_id.tolist() == ["c1"]


def test_a_case_without_one_roi_stays_in_the_other_models(make_study, tmp_path) -> None:
    """A habitat too small to measure leaves that habitat's model only; a model built on
    its score loses the case too, and paired comparisons stand on the common cases."""
    from fusion.learn.table import excluded_from_all, feature_table
    from fusion.stats.evaluate import delong_table

    rows = _rows(tmp_path, 2)
    models = {"whole": {"features": ["radiomics:whole"]},
              "core": {"features": ["radiomics:habitat_core"]},
              "stacked": {"features": ["core-score", "clinical"]}}  # fmt: skip
    study = load_study(make_study(rows, {"models": models}))
    cases = [Case(f"c{i}", Path("x"), None, i % 2) for i in range(3)]
    block = pd.DataFrame({"radiomics:whole:f": [1.0, 2.0, 3.0],
                          "radiomics:habitat_core:f": [1.0, np.nan, 3.0]},
                         index=pd.Index(["c0", "c1", "c2"], name="case_id"))  # fmt: skip
    table, exclusions = feature_table(study, cases, {"radiomics": block})
    assert list(table.index) == ["c0", "c1", "c2"]
    assert exclusions[["case_id", "model"]].values.tolist() == [["c1", "core"], ["c1", "stacked"]]
    assert "no radiomics features for ROI 'habitat_core'" in exclusions.reason.iloc[0]
    assert exclusions.reason.iloc[1] == "no score from model 'core'"
    assert excluded_from_all(study, exclusions).empty
    rng = np.random.default_rng(0)
    scores = pd.DataFrame([{"case_id": f"c{i}", "set": "test", "label": i % 2, "model": m,
                            "score": rng.normal() + (i % 2)}
                           for m in ("whole", "core") for i in range(40)
                           if not (m == "core" and i < 4)])  # fmt: skip
    row = delong_table(scores).iloc[0]
    assert row.cases == 36
    assert row.note == (
        "paired on the 36 cases both models scored (whole: 40, core: 36; "
        "the others lack one model's features)"
    )


# ------------------------------------------------------------------ 6. orientation


def test_crops_do_not_depend_on_how_the_volume_is_stored(tmp_path) -> None:
    """One physical image stored LPS, RAS, with x/y permuted, and slice-axis first:
    identical crops (so identical deep features)."""
    from fusion.config import DeepSpec
    from fusion.features.deep import CropDataset

    rng = np.random.default_rng(2)
    array = rng.normal(40, 20, (14, 40, 36)).astype(np.float32)
    roi = np.zeros(array.shape, np.uint8)
    roi[5:9, 8:20, 20:30] = 1  # off-centre and asymmetric: a mirror image would differ
    roi[6, 8:12, 28:34] = 1
    image, mask = sitk.GetImageFromArray(array), sitk.GetImageFromArray(roi)
    for im in (image, mask):
        im.SetSpacing((0.8, 0.9, 2.5))
    crops = []
    for i, orientation in enumerate(("LPS", "RAS", "PLS", "SRA")):
        write_image_obj = sitk.DICOMOrient(image, orientation)
        sitk.WriteImage(write_image_obj, str(tmp_path / f"i{i}.nii.gz"))
        sitk.WriteImage(sitk.DICOMOrient(mask, orientation), str(tmp_path / f"m{i}.nii.gz"))
        case = Case(f"c{i}", tmp_path / f"i{i}.nii.gz", tmp_path / f"m{i}.nii.gz", 0)
        spec = DeepSpec(size=48, offsets_mm=[-2, 0, 2], window="50,200")
        item = CropDataset([case], spec, 1, None)[0]
        assert "error" not in item, item.get("error")
        crops.append(item["crops"])
    for other in crops[1:]:
        assert np.allclose(other, crops[0], atol=1e-6)


def test_oblique_slices_fail_qc_when_planes_are_cut(make_study, tmp_path) -> None:
    angle = np.radians(40)
    direction = (1, 0, 0, 0, np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle))
    write_image(tmp_path / "cohort" / "img.nii.gz", ct_volume(), direction=direction)
    write_image(tmp_path / "cohort" / "roi.nii.gz", cube_roi(), direction=direction)
    row = {"case_id": "a", "image": "img.nii.gz", "roi": "roi.nii.gz", "label": 0}
    options = RunOptions(reports=tmp_path / "r", cache=None, jobs=1)
    with_deep = load_study(make_study([row], {"deep": {"weights": "random"}}))
    problem = check_study(with_deep, options).qc[0].problems[0]
    assert problem.code == "oblique" and "40.0 degrees" in problem.message
    assert check_study(load_study(make_study([row])), options).qc[0].passed  # radiomics only


# ------------------------------------------------------------------ 7. threads


def _thread_budget(_: object) -> dict:
    from threadpoolctl import threadpool_info

    return {
        "native": max(i["num_threads"] for i in threadpool_info()),
        "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
    }


def test_workers_times_threads_never_exceed_the_cores() -> None:
    import numpy  # noqa: F401 - loads BLAS, so threadpoolctl has a pool to report

    from fusion.engine import Task, run_tasks
    from fusion.threads import cores

    jobs = 2
    run = run_tasks(_thread_budget, [Task(f"c{i}", "", None) for i in range(4)], None,
                    jobs=jobs)  # fmt: skip
    for value in run.results.values():
        assert value["native"] * jobs <= max(cores(), jobs)
        assert value["itk"] * jobs <= max(cores(), jobs)


# ------------------------------------------------------------------ 8. no silent paths


def test_auc_with_one_positive_explains_itself() -> None:
    y, s = [0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9]
    with pytest.raises(ValueError, match="at least two positive and two negative"):
        roc_auc(y, s)
    assert auc_value(y, s) == 1.0
    row = performance_table(pd.DataFrame({"set": "test", "model": "m", "label": y,
                                          "score": s}), {"m": 0.5}).iloc[0]  # fmt: skip
    assert row.auc == 1.0 and "at least two positive" in row.note


def test_unpaired_delong_guards_zero_variance() -> None:
    y = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="zero DeLong variance"):
        delong_test_unpaired(y, [0.1, 0.2, 0.8, 0.9], y, [0.3, 0.4, 0.6, 0.7])


def test_failed_hosmer_lemeshow_and_delong_keep_their_reason() -> None:
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    prob = np.where(np.arange(20) % 2, 0.3, 0.6)  # two distinct values: no HL groups
    frame = pd.DataFrame({"set": "test", "model": "m", "label": y, "prob": prob})
    assert "Hosmer-Lemeshow not computed" in calibration_table(frame).hl_note[0]
    scores = pd.concat([frame.assign(model=m, case_id=range(20), score=prob) for m in "ab"])
    assert "rank the cases identically" in delong_table(scores).note[0]


@pytest.mark.slow
def test_model_errors_name_the_model_and_lasso_convergence_is_reported() -> None:
    from fusion.config import EvaluationSpec
    from fusion.learn.models import fit_model
    from fusion.learn.study import summary_tables

    X, y, _ = _duplicated_patients()
    X.iloc[0, 0] = np.inf
    spec = ModelSpec(features=["radiomics"], lasso=False, correlation_threshold=None)
    with pytest.raises(FusionError, match="model 'broken': fitting failed: ValueError"):
        fit_model("broken", spec, X, y, EvaluationSpec(cv_folds=3), 0)
    from fusion.learn.study import fit_study_models
    from tests.test_learn import study as learn_study
    from tests.test_learn import synthetic

    summary = summary_tables(fit_study_models(learn_study(), *synthetic()))["model_summary"]
    assert summary.set_index("model").loc["rad", "lasso_converged"] == True  # noqa: E712
    assert (summary.lasso_n_iter[summary.model == "rad"] > 0).all()


def test_deep_crop_failures_keep_their_traceback(tmp_path) -> None:
    from fusion.config import DeepSpec
    from fusion.features.deep import CropDataset

    case = Case("c", tmp_path / "none.nii.gz", tmp_path / "none.nii.gz", 0)
    item = CropDataset([case], DeepSpec(), 1, None)[0]
    assert item["error"][0] == "FusionError" and "Traceback" in item["error"][2]


def test_verbose_prints_the_traceback_of_an_unexpected_failure(make_study, tmp_path,
                                                               capsys) -> None:  # fmt: skip
    study = make_study(_rows(tmp_path, 2))
    tables = tmp_path / "reports" / "unit" / "tables"
    tables.mkdir(parents=True)
    (tables / "scores.csv").write_text("case_id\nc0\n")  # no model column: a KeyError
    (tables / "model_summary.csv").write_text("model,threshold\nm,0\n")
    args = ["run", str(study), "--only", "statistics", "--reports", str(tmp_path / "reports")]
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-v", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "stage 'statistics' failed" in err


def test_truncated_rtstruct_is_a_broken_file_not_an_unsupported_format(tmp_path) -> None:
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi

    sts = needs_shared("sts", "STS_001")
    data = (sts / "rtstruct.dcm").read_bytes()
    (tmp_path / "rt.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(FusionError, match="broken DICOM file"):
        read_roi(tmp_path / "rt.dcm", read_image(sts / "ct"), ["GTV*"])


# ------------------------------------------------------------------ 10. big cohorts


def test_a_warm_run_reads_no_image_bytes(tmp_path, monkeypatch) -> None:
    import fusion.hashing as hashing

    folder = tmp_path / "dicom"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.dcm").write_bytes(os.urandom(1000))
    write_image(tmp_path / "roi.nii.gz", cube_roi())
    case = Case("a", folder, tmp_path / "roi.nii.gz", 0)
    read = []
    real = hashing._content_digest
    monkeypatch.setattr(hashing, "_content_digest", lambda p: read.append(p) or real(p))
    cold = hashing.case_digests([case], cache=tmp_path / "cache")
    assert len(read) == 4
    read.clear()
    assert hashing.case_digests([case], cache=tmp_path / "cache") == cold and read == []
    (folder / "1.dcm").write_bytes(os.urandom(1000))  # a changed slice is read again
    changed = hashing.case_digests([case], cache=tmp_path / "cache")
    assert read == [folder / "1.dcm"] and changed != cold
    assert hashing.case_digests([case]) == changed  # the same digests without a cache


# ------------------------------------------------------------------ 11. packaging


def test_requirements_match_what_the_code_uses() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"]
    assert "scikit-learn>=1.6,<1.10" in deps  # validate_data and tags: 1.6; tested to 1.9
    assert "threadpoolctl>=3.1" in deps
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)


# ------------------------------------------------------------------ 12. bad input


def test_truncated_nifti_fails_loudly(tmp_path) -> None:
    from fusion.io.images import read_image

    path = write_image(tmp_path / "img.nii.gz", ct_volume())
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))  # a complete, short stream
    with pytest.raises(FusionError, match=r"truncated file: \d+ bytes of data.*needs \d+"):
        read_image(path)
    path.write_bytes(gzip.compress(data)[:3000])  # a cut gzip stream
    with pytest.raises(FusionError, match="truncated or corrupt"):
        read_image(path)
    plain = write_image(tmp_path / "img.nii", ct_volume())
    plain.write_bytes(plain.read_bytes()[:5000])
    with pytest.raises(FusionError, match="truncated file"):
        read_image(plain)


def test_nifti_gz_in_several_members_or_zero_padded_reads_as_one_image(tmp_path) -> None:
    """The single inflate behind the truncation check reads what the gzip module reads:
    a file of several gzip members (pigz, concatenated) and zero padding after one."""
    import SimpleITK as sitk

    from fusion.io.images import read_image

    path = write_image(tmp_path / "img.nii.gz", ct_volume())
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]) + b"\0" * 64)
    again = sitk.GetArrayFromImage(read_image(path))
    assert np.array_equal(again, ct_volume())
    path.write_bytes(gzip.compress(data) + b"trailing garbage")
    with pytest.raises(FusionError, match="truncated or corrupt"):
        read_image(path)


def test_a_constant_model_is_reported_and_the_others_still_come_out() -> None:
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=60) < 0.4).astype(int)
    good = y + rng.normal(size=60)
    frames = [pd.DataFrame({"case_id": range(60), "set": "test", "label": y, "model": m,
                            "score": s, "prob": 1 / (1 + np.exp(-s))})
              for m, s in (("good", good), ("constant", np.zeros(60)))]  # fmt: skip
    scores = pd.concat(frames, ignore_index=True)
    cal = calibration_table(scores).set_index("model")
    assert np.isfinite(cal.loc["good", "slope"])
    assert "vary" in cal.loc["constant", "note"] or "constant" in cal.loc["constant", "note"]
    perf = performance_table(scores, {"good": 0.0, "constant": 0.0}).set_index("model")
    assert perf.loc["constant", "auc"] == 0.5 and perf.loc["good", "auc"] > 0.7


def test_extra_labels_in_a_mask_are_a_named_warning(make_study, tmp_path) -> None:
    roi = cube_roi()
    roi[9, 2:5, 2:5] = 2
    write_image(tmp_path / "cohort" / "img.nii.gz", ct_volume())
    write_image(tmp_path / "cohort" / "roi.nii.gz", roi)
    row = {"case_id": "a", "image": "img.nii.gz", "roi": "roi.nii.gz", "label": 0}
    result = check_study(load_study(make_study([row])), RunOptions(cache=None, jobs=1)).qc[0]
    problem = next(p for p in result.problems if p.code == "extra_labels")
    assert problem.severity == "warn" and "labels [1, 2]" in problem.message


def test_check_validates_the_pyradiomics_parameter_file(make_study, tmp_path, capsys) -> None:
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "params.yaml").write_text("setting: {binWidht: 5}\n")
    study = make_study(_rows(tmp_path, 1), {"radiomics": {"params": "cohort/params.yaml"}})
    assert main(["check", str(study), "--reports", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "setting.binWidht: unknown key" in err and "Did you mean 'binWidth'?" in err


@pytest.mark.slow
def test_unreachable_scheduler_is_a_clear_error(make_study, tmp_path, capsys) -> None:
    study = make_study(_rows(tmp_path, 1))
    args = ["check", str(study), "--no-cache", "--scheduler", "tcp://127.0.0.1:9"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err


def test_ctrl_c_stops_the_workers_and_exits_130(monkeypatch, capsys) -> None:
    from fusion.engine import make_executor

    with pytest.raises(KeyboardInterrupt), make_executor(jobs=2) as pool:
        pool.submit(time.sleep, 60)
        time.sleep(0.5)
        processes = list(pool._processes.values())
        raise KeyboardInterrupt
    for process in processes:
        process.join(timeout=5)
        assert not process.is_alive()

    def interrupted(args) -> int:  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr("fusion.cli._cmd_demo_data", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["demo-data", "--out", "x"]) == 130
    assert "every finished case is cached" in capsys.readouterr().err
    # main's SIGTERM handler lasts as long as main: children forked later by the same
    # process (tests, a notebook) must not inherit it
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_killed_parent_leaves_no_worker_behind() -> None:
    code = (
        "import time, sys\n"
        "from fusion.engine import make_executor\n"
        "with make_executor(jobs=2) as pool:\n"
        "    futures = [pool.submit(time.sleep, 120) for _ in range(2)]\n"
        "    time.sleep(1)\n"
        "    print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "    time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failed_run_moves_the_previous_report_aside(make_study, tmp_path) -> None:
    study = load_study(make_study(_rows(tmp_path, 2)))
    folder = tmp_path / "reports" / "unit"
    (folder / "tables").mkdir(parents=True)
    for old in ("index.html", "tables/scores.csv", "tables/performance.csv"):
        (folder / old).write_text("from an earlier run")
    options = RunOptions(reports=tmp_path / "reports", cache=None)
    with pytest.raises(FusionError, match="stage 'models' failed"):
        run_study(study, options, start="models")  # qc.csv is missing
    assert not (folder / "index.html").exists() and not (folder / "tables/scores.csv").exists()
    assert (folder / "stale" / "index.html").is_file()
    assert (folder / "stale" / "tables" / "performance.csv").is_file()
    assert "failed at stage 'models'" in (folder / "FAILED.txt").read_text()


@pytest.mark.slow
def test_model_fitting_logs_progress_and_small_classes_name_the_setting(caplog) -> None:
    from fusion.config import EvaluationSpec
    from fusion.learn.models import fit_model
    from fusion.learn.study import fit_study_models
    from tests.test_learn import study as learn_study
    from tests.test_learn import synthetic

    with caplog.at_level(logging.INFO, logger="fusion.learn.study"):
        fit_study_models(learn_study(), *synthetic())
    assert "models: fitting 'rad' (1/4) on 90 training cases" in caplog.text
    X = pd.DataFrame({"radiomics:f": np.arange(12.0)})
    y = np.r_[np.zeros(9), np.ones(3)].astype(int)
    spec = ModelSpec(features=["radiomics"], lasso=False, correlation_threshold=None)
    with pytest.raises(FusionError, match=r"evaluation.cv_folds = 5.*only 3 positive and 9 "
                                          r"negative.*at most 3"):  # fmt: skip
        fit_model("m", spec, X, y, EvaluationSpec(cv_folds=5), 0)


def test_a_set_without_positives_says_auc_undefined() -> None:
    from fusion.report.html import report_warnings

    frame = pd.DataFrame({"set": "test", "model": "m", "label": [0, 0, 0],
                          "score": [0.1, 0.2, 0.3]})  # fmt: skip
    assert performance_table(frame, {"m": 0.5}).note[0] == "AUC undefined: no positive case among 3"
    cohort = pd.DataFrame({"case_id": ["a", "b", "c"], "set": "test", "label": 0,
                           "included": True})  # fmt: skip
    warnings = report_warnings(cohort, None, pd.DataFrame({"model": []}))
    assert "The test set has no positive case: AUC undefined." in warnings
    assert not any("unstable" in w and "0 case(s) with outcome 1" in w for w in warnings)


# ------------------------------------------------------------------ 3. stacked models


def test_stacked_model_cv_is_nested(monkeypatch) -> None:
    """``combined`` uses ``fused``'s score. In its cross-validation, every fit made for
    outer fold k (fused and combined alike) sees none of fold k's cases, so no fold's
    labels reach its own out-of-fold scores, not even through fused's scores."""
    import fusion.learn.study as study_module
    from fusion.learn.models import folds
    from fusion.learn.study import Stacking
    from tests.test_learn import study as learn_study
    from tests.test_learn import synthetic

    table, labels, sets = synthetic()
    train = table.index[sets == "train"]
    seen: list[set[str]] = []
    real = study_module.fit_model

    def recording(name, spec, X, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(set(X.index))
        return real(name, spec, X, *args, **kwargs)

    monkeypatch.setattr(study_module, "fit_model", recording)
    spec = learn_study()
    stacking = Stacking(spec, table, labels.to_numpy(), None, {})
    rows = np.flatnonzero((sets == "train").to_numpy())
    oof = stacking.nested_oof("combined", rows)
    splits = list(folds(3, spec.seed, False).split(rows, labels.to_numpy()[rows]))
    assert len(seen) == 2 * len(splits)  # per outer fold: fused, then combined
    for k, (_, va) in enumerate(splits):
        held_out = set(train[va])
        for fitted_on in seen[2 * k : 2 * k + 2]:
            assert not fitted_on & held_out
    assert np.isfinite(oof).all() and auc_value(labels[train], oof) > 0.6


def test_decision_curve_bootstrap_band() -> None:
    from fusion.stats import net_benefit
    from fusion.stats.dca import net_benefit_ci

    rng = np.random.default_rng(5)
    risk = rng.uniform(0.05, 0.95, 300)
    y = (rng.uniform(size=300) < risk).astype(int)
    thresholds = np.arange(0.05, 0.95, 0.05)
    point = net_benefit(y, risk, thresholds).model.to_numpy()
    band = net_benefit_ci(y, risk, thresholds, n_boot=400, seed=1)
    assert ((band.ci_low <= point + 1e-12) & (point <= band.ci_high + 1e-12)).all()
    assert (band.ci_high - band.ci_low).between(0.01, 0.2).all()
    again = net_benefit_ci(y, risk, thresholds, n_boot=400, seed=1)
    assert band.equals(again)  # seeded
    # the band is that of the recomputed statistic: one resample by hand
    counts = np.bincount(np.random.default_rng(1).integers(0, 300, 300), minlength=300)
    resampled = net_benefit(np.repeat(y, counts), np.repeat(risk, counts), thresholds)
    first = net_benefit_ci(y, risk, thresholds, n_boot=1, seed=1)
    assert np.allclose(first.ci_low, resampled.model)
