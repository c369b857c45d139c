"""A small study end to end: every report table agrees with values recomputed from the
saved scores; the statistician's notebook runs on it; reruns are cached and identical."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from nbclient import NotebookClient

from fusion.cli import main
from fusion.config import load_study
from fusion.demo import generate_demo_cohort
from fusion.errors import FusionError
from fusion.pipeline import run_study
from fusion.report.check import structure_problems
from fusion.seeds import stream
from fusion.stages.context import RunOptions
from fusion.stats import (
    bootstrap_auc_ci,
    delong_test,
    improve_prob,
    roc_auc,
    threshold_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a whole study with every stage
SECTIONS = ["warnings", "methods", "cohort", "features", "performance", "figures", "clinical",
            "galleries", "provenance"]  # fmt: skip


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):  # noqa: ANN201
    """40 synthetic cases, one of them broken, through every stage with random weights."""
    root = tmp_path_factory.mktemp("e2e")
    generate_demo_cohort(root / "data", n=40, seed=3, jobs=2)
    manifest = pd.read_csv(root / "data" / "manifest.csv")
    manifest.loc[5, "roi"] = "masks/missing.nii.gz"  # excluded by QC, reported
    mask = root / "data" / manifest.loc[7, "roi"]  # a second label: kept, with a QC warning
    image = sitk.ReadImage(str(mask))
    array = sitk.GetArrayFromImage(image)
    array[0, :2, :2] = 2
    extra = sitk.GetImageFromArray(array)
    extra.CopyInformation(image)
    sitk.WriteImage(extra, str(mask), useCompression=True)
    manifest.to_csv(root / "data" / "manifest.csv", index=False)
    demo = yaml.safe_load((ROOT / "pipelines" / "demo_hematoma.yaml").read_text())
    demo["name"] = "small"
    demo["cohort"]["manifest"] = "data/manifest.csv"
    demo["radiomics"]["params"] = str(ROOT / "pipelines" / "radiomics" / "head_ct_hematoma.yaml")
    demo["deep"] |= {"weights": "random", "size": 64, "num_workers": 0}
    demo["evaluation"] = {"cv_folds": 3, "lasso": {"folds": 3, "n_lambda": 15}}
    (root / "small.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    args = ["run", str(root / "small.yaml"), "--reports", str(root / "reports"),
            "--cache", str(root / "cache"), "-j", "2"]  # fmt: skip
    assert main(args) == 0
    return root, root / "reports" / "small", args


def table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / "tables" / f"{name}.csv", dtype={"case_id": str})


def test_report_has_every_section_and_is_self_contained(study_run) -> None:
    _, folder, _ = study_run
    html = (folder / "index.html").read_text()
    assert structure_problems(html) == []  # no empty section, placeholder, blank figure
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert "RANDOM, not pretrained" in html
    assert "passed through ResNet50 (RANDOM weights, not pretrained" in html  # the methods
    assert "ICH006" in html and "ROI file not found" in html  # the excluded case, with reason
    assert "Cases kept with QC warnings" in html and "extra_labels" in html  # ICH008
    assert "cross-validated (training set)" in html and "apparent AUC" in html
    for heading in ("Sample size", "Reclassification", "Differences in net benefit"):
        assert re.search(f"<h3[^>]*>{heading}</h3>", html), heading
    assert html.count("<svg") >= 6 and "data:image/png;base64," in html
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html and "<script" not in html
    for name in (
        "roc_train",
        "roc_test",
        "dca_train",
        "dca_test",
        "calibration_train",
        "calibration_test",
        "dca_difference_test",
    ):
        assert (folder / "figures" / f"{name}.svg").is_file()
        assert (folder / "figures" / f"{name}.png").is_file()
    assert not (folder / "figures" / "dca_difference_train.svg").exists()  # in the table only
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["seed"] == 7 and provenance["cases_hashed"] == 40
    assert provenance["settings"]["evaluation"]["cv_folds"] == 3
    assert provenance["radiomics_params"]["setting"]["binWidth"] == 5
    assert set(provenance["git"]) == {"commit", "dirty"}
    assert len(provenance["fusion_source_sha256"]) == 64
    assert set(provenance["stage_keys"]) == {"qc", "rois", "radiomics", "deep", "models",
                                             "statistics", "report"}  # fmt: skip
    assert provenance["deep_weights"]["pretrained"] is False
    # the seeded random weights are hashed: a replay can check it got the same network
    assert len(provenance["deep_weights"]["sha256"]) == 64
    packages = set(provenance["packages"])
    assert {"monai", "glum", "pydicom", "highdicom", "pillow", "dask"} <= packages
    torch_info = provenance["torch"]  # what can move the network's numbers
    assert torch_info["reproducible_mode"] is True and torch_info["threads"] == 2
    assert torch_info["pins"]["MKL_CBWR"] == "AVX2"
    if platform.machine() == "x86_64":
        assert torch_info["cpu_capability"] == "AVX2"
    assert "+" in torch_info["torch"] or torch_info["cuda"] is None  # the build, not "2.14.1"
    # no absolute path: the study file relative to the report, the rest to the study file
    assert provenance["study_file"] == "../../small.yaml"
    assert provenance["settings"]["cohort"]["manifest"] == "data/manifest.csv"
    assert not json.dumps(provenance).count(str(folder.parent.parent))
    assert len(provenance["manifest_sha256"]) == 64
    assert (folder / "tables" / "README.md").is_file()


def test_report_tables_agree_with_the_saved_scores(study_run) -> None:
    _, folder, _ = study_run
    scores = table(folder, "scores")
    cohort = table(folder, "cohort")
    assert cohort.set_index("case_id").loc["ICH006", "included"] == False  # noqa: E712
    assert set(scores.case_id) == set(cohort.case_id[cohort.included])
    thresholds = table(folder, "model_summary").set_index("model").threshold
    perf = table(folder, "performance")
    assert set(perf.model) == {"radiomics", "deep", "fused", "clinical", "combined", "texture",
                               "texture_harmonised", "radiomics_robust", "control_shuffled",
                               "control_elsewhere", "control_permuted"}  # fmt: skip
    controls = table(folder, "negative_controls")
    assert set(controls.control) == {"control_shuffled", "control_elsewhere", "control_permuted"}
    assert set(table(folder, "harmonisation").site) <= {"CT-A", "CT-B", "CT-C"}
    assert table(folder, "feature_robustness").cases.max() <= (cohort.set == "train").sum()
    for row in perf.itertuples():
        part = scores[(scores.model == row.model) & (scores.set == row.set)]
        auc = roc_auc(part.label, part.score)
        assert (row.auc, row.auc_ci_low, row.auc_ci_high) == pytest.approx(
            (auc.auc, auc.ci_low, auc.ci_high), abs=1e-12
        )
        # the study's seed is 7; every bootstrap draws from its "bootstrap" stream
        boot = bootstrap_auc_ci(part.label, part.score, n_boot=2000, seed=stream(7, "bootstrap"))
        assert (row.auc_boot_ci_low, row.auc_boot_ci_high) == (boot.ci_low, boot.ci_high)
        m = threshold_metrics(part.label, part.prob, thresholds[row.model])  # a probability
        assert (row.sensitivity, row.specificity, row.tp, row.fn) == pytest.approx(
            (m.sensitivity, m.specificity, m.tp, m.fn)
        )
        assert np.allclose(part.prob, 1 / (1 + np.exp(-part.score)))
        assert row.n == len(part) and row.positives == part.label.sum()
    delong = table(folder, "delong")
    # train and test: every pair of the 8 models that are not controls (the test study
    # drops the demo's planned comparisons), and each of 3 controls with its own model
    assert len(delong) == 2 * (28 + 3)
    pairs = set(zip(delong.model_a, delong.model_b, strict=True))
    assert ("radiomics_robust", "control_shuffled") in pairs
    assert not any("control" in a or ("control" in b and a != "radiomics_robust")
                   for a, b in pairs)  # fmt: skip
    first = delong[delong.set == "test"].iloc[0]
    test = scores[scores.set == "test"]
    wide = test.pivot(index="case_id", columns="model", values="score")
    labels = test.drop_duplicates("case_id").set_index("case_id").label.loc[wide.index]
    again = delong_test(labels, wide[first.model_a], wide[first.model_b])
    assert (first.z, first.p_value) == pytest.approx((again.z, again.p_value), abs=1e-12)
    reclass = table(folder, "reclassification")
    first = reclass[reclass.set == "test"].iloc[0]
    wide_p = test.pivot(index="case_id", columns="model", values="prob")
    r = improve_prob(labels, wide_p[first.model_b], wide_p[first.model_a])
    assert (first.nri, first.nri_se, first.idi, first.idi_se) == pytest.approx(
        (r.nri, r.nri_se, r.idi, r.idi_se), abs=1e-12
    )
    diff = table(folder, "net_benefit_difference")
    assert len(diff) == 2 * (28 + 3) * 99  # the compared pairs, both sets, every threshold
    assert (diff.ci_low <= diff.difference + 1e-12).all()
    size = table(folder, "sample_size").set_index("model")
    assert size.loc["clinical", "parameters"] == 6  # age, sex (one dummy), four more
    assert not size.adequate.any()  # 31 training cases are few for any model
    nb = table(folder, "net_benefit")
    assert set(nb.columns) == {"set", "model", "threshold", "net_benefit", "nb_ci_low",
                               "nb_ci_high", "treat_all", "treat_none"}  # fmt: skip
    assert (nb.nb_ci_low <= nb.net_benefit + 1e-12).all()
    assert (nb.net_benefit <= nb.nb_ci_high + 1e-12).all()
    assert not table(folder, "clinical_multivariable").empty
    assert "odds_ratio" in table(folder, "clinical_univariable").columns
    assert not table(folder, "table1_train").empty


def test_rerun_is_cached_and_gives_identical_tables(study_run, capsys) -> None:
    root, folder, args = study_run
    before = {p.name: p.read_bytes() for p in (folder / "tables").glob("*.csv")}
    html = folder / "index.html"
    drawn = html.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    after = {p.name: p.read_bytes() for p in (folder / "tables").glob("*.csv")}
    assert before == after
    # nothing the report shows changed: it is not drawn again
    assert "; up to date: models, statistics, report in" in capsys.readouterr().out
    assert html.stat().st_mtime_ns == drawn
    study = load_study(root / "small.yaml")
    options = RunOptions(reports=root / "reports", cache=root / "cache")
    scores = folder / "tables" / "scores.csv"
    stamp = scores.stat().st_mtime_ns
    result = run_study(study, options, start="models")
    assert result.stages == ["models", "statistics", "report"]
    assert scores.stat().st_mtime_ns == stamp  # inputs unchanged: the models were not refit
    changed = study.model_copy(update={"seed": 8})
    changed._source = study.source
    run_study(changed, options, only="models")
    assert scores.stat().st_mtime_ns != stamp  # a changed setting refits
    run_study(study, options, only="models")
    assert scores.read_bytes() == before["scores.csv"]  # and the seed back gives the same
    assert run_study(study, options, only="report").report == folder / "index.html"
    assert html.stat().st_mtime_ns == drawn  # every input back as it was
    performance = folder / "tables" / "performance.csv"
    performance.write_bytes(before["performance.csv"] + b"\n")  # other bytes, same table
    assert run_study(study, options, only="report").up_to_date == []  # drawn again
    assert html.stat().st_mtime_ns != drawn
    performance.write_bytes(before["performance.csv"])
    drawn = html.stat().st_mtime_ns
    assert main(["report", *args[1:]]) == 0  # `fusion report` draws it whatever the key
    assert "small: ran report in" in capsys.readouterr().out
    assert html.stat().st_mtime_ns != drawn


def test_the_report_key_follows_what_it_shows_and_not_what_it_draws(study_run) -> None:
    """The report is skipped on an unchanged key, so its key must move with everything it
    shows: an excluded case's image (its gallery slice; no other stage's key holds it)
    and a crop another stage left in figures/crops/, but not its own figures."""
    import dataclasses

    from fusion.stages import STAGES
    from fusion.stages.context import build_context
    from fusion.stages.keys import stage_key

    root, folder, _ = study_run
    options = RunOptions(reports=root / "reports", cache=root / "cache")
    ctx = build_context(load_study(root / "small.yaml"), options)
    report = STAGES["report"]
    key = stage_key(report, ctx)
    digests = {**ctx.checked.digests, "ICH006": ("another image", "missing")}
    moved = dataclasses.replace(ctx, checked=dataclasses.replace(ctx.checked, digests=digests))
    assert stage_key(report, moved) != key
    for path, shown in ((next((folder / "figures" / "crops").glob("*.png")), True),
                        (folder / "figures" / "roc_test.svg", False)):  # fmt: skip
        content = path.read_bytes()
        path.write_bytes(content + b" ")
        try:
            assert (stage_key(report, ctx) != key) is shown, path.name
        finally:
            path.write_bytes(content)
    assert stage_key(report, ctx) == key


def test_a_stage_stopped_half_way_is_not_up_to_date(study_run, monkeypatch) -> None:
    """Ctrl-C while the report is drawn (provenance written, figures half done) must not
    leave the previous run's marker: the next run with that key would skip the stage."""
    from fusion.stages import STAGES

    root, folder, _ = study_run
    study = load_study(root / "small.yaml")
    options = RunOptions(reports=root / "reports", cache=root / "cache")

    def stopped(self, ctx) -> None:  # noqa: ANN001
        (ctx.folder / "provenance.json").write_text("{}")  # what a run writes first
        raise KeyboardInterrupt

    monkeypatch.setattr(type(STAGES["report"]), "run", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, options, only="report", rerun=True)
    monkeypatch.undo()
    assert run_study(study, options, only="report").up_to_date == []
    assert json.loads((folder / "provenance.json").read_text())["seed"] == 7


def test_a_failing_stage_is_named_and_earlier_outputs_stay(study_run, tmp_path) -> None:
    root, folder, _ = study_run
    study = load_study(root / "small.yaml")
    options = RunOptions(reports=tmp_path, cache=root / "cache")
    with pytest.raises(FusionError, match=r"stage 'models' failed: .*qc.csv not found"):
        run_study(study, options, only="models")
    with pytest.raises(
        FusionError,
        match="unknown stage .model.; stages: qc, splits, classifier.*Did you mean .models.",
    ):
        run_study(study, options, only="model")


def test_replay_from_provenance_reproduces_the_tables(study_run, tmp_path, capsys) -> None:
    root, folder, _ = study_run
    out = tmp_path / "replay"
    args = ["replay", str(folder / "provenance.json"), "--out", str(out), "--cache",
            str(root / "cache"), "-j", "2"]  # fmt: skip
    assert main(args) == 0
    replayed = out / "small" / "tables"
    names = sorted(p.name for p in (folder / "tables").glob("*.csv"))
    assert names == sorted(p.name for p in replayed.glob("*.csv"))
    for name in names:
        assert (replayed / name).read_bytes() == (folder / "tables" / name).read_bytes(), name
    # changed data cannot be replayed into the same tables: said, not done
    manifest = root / "data" / "manifest.csv"
    original = manifest.read_bytes()
    try:
        manifest.write_bytes(original + b"\n")
        assert main(args) == 2
        assert "the manifest changed since the recorded run" in capsys.readouterr().err
    finally:
        manifest.write_bytes(original)


def test_statistician_notebook_runs_on_the_study(study_run) -> None:
    _, folder, _ = study_run
    notebook = nbformat.read(ROOT / "notebooks" / "statistician.ipynb", as_version=4)
    os.environ["FUSION_REPORT"] = str(folder)
    try:
        resources = {"metadata": {"path": str(ROOT / "notebooks")}}
        NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources).execute()
    finally:
        del os.environ["FUSION_REPORT"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "AUC" in printed and "p = " in printed
    assert np.isfinite(float(printed.split("z = ")[1].split(",")[0]))
