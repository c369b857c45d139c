"""The order of a study's stages, and where each reads and writes its tables.

This is the only module that knows the order: qc -> classifier -> segmentation ->
rois -> involvement -> radiomics -> deep -> models -> statistics -> report. Each stage reads what
earlier stages wrote under ``reports/<study>/tables`` and writes its own tables there,
so ``--from`` and ``--only`` can start anywhere whose inputs exist. A stage that fails
stops the run with a :class:`StageError` naming the stage; what finished stages wrote
stays.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusion.atomic import write_csv_atomic, write_text_atomic
from fusion.cohort import Case, load_cohort
from fusion.config import Study
from fusion.engine import Failure, failures_frame, stage_settings
from fusion.errors import FusionError
from fusion.features.deep import DeepOutput, run_deep
from fusion.features.radiomics import RadiomicsOutput, run_radiomics
from fusion.hashing import case_digests
from fusion.io.qc import QCResult, qc_table, run_qc
from fusion.provenance import source_hash
from fusion.threads import cores

STAGES = ("qc", "classifier", "segmentation", "rois", "involvement", "radiomics", "deep",
          "models", "statistics", "report")  # fmt: skip

# what each stage writes under reports/<study>/, so that a failed run can move what
# later stages wrote in an earlier run out of the way (it no longer matches the inputs)
STAGE_OUTPUTS = {
    "qc": ["tables/qc.csv"],
    "classifier": ["tables/cnn_*.csv", "tables/gradcam*.csv", "tables/.classifier.key",
                   "figures/gradcam"],
    "segmentation": ["tables/seg_*.csv", "tables/.segmentation.key", "segmentation"],
    "rois": ["tables/rois.csv", "rois"],
    "involvement": ["tables/involvement*.csv", "tables/lung_outline.csv"],
    "radiomics": ["tables/radiomics_*.csv"],
    "deep": ["tables/deep_*.csv", "tables/deep_weights.json", "figures/crops"],
    "models": ["tables/cohort.csv", "tables/scores.csv", "tables/model_summary.csv",
               "tables/model_tuning.csv", "tables/selected_features.csv", "tables/lasso_*.csv",
               "tables/.models.key"],
    "statistics": ["tables/performance.csv", "tables/delong.csv", "tables/calibration*.csv",
                   "tables/net_benefit*.csv", "tables/reclassification.csv",
                   "tables/sample_size.csv", "tables/roc_points.csv", "tables/table1_*.csv",
                   "tables/clinical_*.csv", "tables/.statistics.key"],
    "report": ["index.html", "provenance.json", "figures/*.svg", "figures/*.png"],
}  # fmt: skip
FAILED_NOTE = "FAILED.txt"


class StageError(FusionError):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {cause}")
        self.stage = stage


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run, not what: the results never depend on these."""

    reports: Path = Path("reports")
    cache: Path | None = Path(".cache/fusion")
    jobs: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True, slots=True)
class Checked:
    """The cohort after QC: every case, its QC result, and the content hashes."""

    cases: list[Case]
    qc: list[QCResult]
    digests: dict[str, tuple[str, str]]

    @property
    def passed(self) -> list[Case]:
        ok = {r.case_id for r in self.qc if r.passed}
        return [c for c in self.cases if c.case_id in ok]


def tables_dir(study: Study, options: RunOptions) -> Path:
    return options.reports / study.name / "tables"


def qc_stage(study: Study, options: RunOptions, out: Path | None = None) -> Checked:
    """Load the manifest, check every case, write ``qc.csv``."""
    cases = load_cohort(study)
    digests = case_digests(cases, cache=options.cache)
    results = run_qc(
        study, cases, digests, options.cache, jobs=options.jobs, scheduler=options.scheduler
    )
    write_csv_atomic(qc_table(results), out or tables_dir(study, options) / "qc.csv")
    return Checked(cases, results, digests)


def classifier_stage(study: Study, options: RunOptions, checked: Checked) -> None:
    """Train the study's image classifiers on the cases that passed QC, score the
    held-out sets, explain them with Grad-CAM, and write the statistics (``scores``,
    ``performance``, ``delong``... as in outcome-model studies, plus ``cnn_*`` and
    ``gradcam*``). Skipped when its key is unchanged and its outputs are there."""
    from fusion.device import pick_device
    from fusion.learn.cnn.stage import model_path, run_classifier, stage_key, write_tables

    folder = options.reports / study.name
    device = pick_device(study.classifier.device)
    key = stage_key(study, checked.passed, checked.digests, device)
    models = [model_path(folder, a) for a in study.classifier.architectures]
    if _up_to_date(folder / "tables", "classifier", key, options, "cnn_models") and all(
        m.is_file() for m in models
    ):
        return
    excluded = {r.case_id: "QC: " + "; ".join(str(p) for p in r.problems)
                for r in checked.qc if not r.passed}  # fmt: skip
    tables = run_classifier(study, checked.passed, checked.digests, folder, device, excluded)
    write_tables(tables, folder, key)


def segmentation_stage(study: Study, options: RunOptions, checked: Checked) -> None:
    """Train the study's U-Nets, predict and evaluate (``tables/seg_*.csv``); the final
    models are published for the ``unet`` ROI generator. Skipped when its key (settings,
    case contents, fusion's source) is unchanged and its outputs are there."""
    from fusion.device import pick_device
    from fusion.seg.stage import model_path, run_segmentation, stage_key, write_tables

    folder = options.reports / study.name
    key = stage_key(study, checked.passed, checked.digests,
                    pick_device(study.segmentation.device))  # fmt: skip
    models = [model_path(folder, v) for v in study.segmentation.variants]
    if _up_to_date(folder / "tables", "segmentation", key, options, "seg_cases") and all(
        m.is_file() for m in models
    ):
        return
    tables = run_segmentation(study, checked.passed, checked.digests, folder, options.cache)
    write_tables(tables, folder, key)


def rois_stage(study: Study, options: RunOptions, checked: Checked) -> dict:
    """The study's generated ROIs (``rois`` section) for the cases that passed QC, under
    ``reports/<study>/rois/``; ``rois.csv`` lists their labels and notes. Returns case ->
    ROI name -> GeneratedRoi (empty without a ``rois`` section)."""
    from fusion.learn.splits import assign_sets
    from fusion.rois.stage import run_rois

    if not study.rois:
        return {}
    cohort_mode = any(spec.mode == "cohort" for spec in study.rois.values())
    sets = (
        assign_sets(checked.cases, study.evaluation.test_size, study.seed)
        if cohort_mode  # a population clustering needs the training cases
        else pd.Series(dtype=str)
    )
    generated, table = run_rois(
        study, checked.passed, sets, checked.digests, options.reports / study.name,
        options.cache, jobs=options.jobs, scheduler=options.scheduler,
    )  # fmt: skip
    write_csv_atomic(table, tables_dir(study, options) / "rois.csv")
    return generated


def involvement_stage(study: Study, options: RunOptions, checked: Checked) -> None:
    """Lung involvement of the evaluated cases from the segmentation stage's predictions
    and the lung ROIs (seconds: recomputed on every run)."""
    from fusion.seg.involvement import involvement_tables

    folder = options.reports / study.name
    for name, table in involvement_tables(study, folder, checked.passed).items():
        write_csv_atomic(table, tables_dir(study, options) / f"{name}.csv")


def radiomics_stage(
    study: Study, options: RunOptions, checked: Checked, generated: dict | None = None
) -> RadiomicsOutput:
    """Extract radiomics for the cases that passed QC (from the drawn ROI and every
    generated one); write the stage's four tables."""
    if generated is None:
        generated = rois_stage(study, options, checked)  # from the cache when unchanged
    output = run_radiomics(
        study, checked.passed, checked.digests, options.cache,
        jobs=options.jobs, scheduler=options.scheduler, generated=generated,
    )  # fmt: skip
    tables = tables_dir(study, options)
    write_csv_atomic(output.features, tables / "radiomics_features.csv")
    write_csv_atomic(output.diagnostics, tables / "radiomics_diagnostics.csv")
    write_csv_atomic(output.failures, tables / "radiomics_failures.csv")
    write_csv_atomic(output.nan_features, tables / "radiomics_nan_features.csv")
    return output


def deep_stage(
    study: Study, options: RunOptions, checked: Checked, generated: dict | None = None
) -> DeepOutput:
    """ResNet50 features for the cases that passed QC (around the drawn ROI, or the
    generated ROI ``deep.roi``); crop strips for the report."""
    folder = options.reports / study.name
    if study.deep is not None and study.deep.roi is not None and generated is None:
        generated = rois_stage(study, options, checked)  # from the cache when unchanged
    output = run_deep(
        study,
        checked.passed,
        checked.digests,
        options.cache,
        strips_dir=folder / "figures" / "crops",
        jobs=options.jobs,
        scheduler=options.scheduler,
        generated=generated,
    )
    tables = tables_dir(study, options)
    write_csv_atomic(output.features, tables / "deep_features.csv")
    write_csv_atomic(output.geometry, tables / "deep_crop_geometry.csv")
    write_csv_atomic(failures_frame(output.failures, "deep"), tables / "deep_failures.csv")
    weights = {
        "source": output.weights.source, "sha256": output.weights.sha256,
        "pretrained": output.weights.pretrained, "warning": output.weights.warning,
        "device": output.device, "settings_key": output.settings_key,
    }  # fmt: skip
    write_text_atomic(json.dumps(weights, indent=2), tables / "deep_weights.json")
    return output


def enforce_budget(stage: str, failures: list[Failure], allowed: int) -> None:
    """Stop the run when more cases failed than ``<stage>.max_failures`` allows."""
    if len(failures) > allowed:
        detail = "; ".join(f"{f.case_id}: {f.error}: {f.message}" for f in failures[:10])
        raise FusionError(
            f"{len(failures)} case(s) failed (allowed: {allowed}; set {stage}.max_failures "
            f"to go on without them; every failure is in tables/{stage}_failures.csv): "
            f"{detail}{' ...' if len(failures) > 10 else ''}"
        )


def _failure_reasons(tables: Path) -> dict[str, dict[str, str]]:
    """block -> case -> 'radiomics failed: <error>: <message>' from the failures tables."""
    reasons: dict[str, dict[str, str]] = {}
    for block in ("radiomics", "deep"):
        path = tables / f"{block}_failures.csv"
        if path.is_file() and path.stat().st_size > 1:
            frame = pd.read_csv(path, dtype={"case_id": str}).fillna("")
            reasons[block] = {r.case_id: f"{block} failed: {r.error}: {r.message}"
                              for r in frame.itertuples()}  # fmt: skip
    return reasons


def _read_table(tables: Path, name: str, stage: str) -> pd.DataFrame:
    path = tables / f"{name}.csv"
    if not path.is_file():
        raise FusionError(f"{path} not found: run the {stage} stage first")
    return pd.read_csv(path, dtype={"case_id": str})


# study fields the table stages depend on; the top-level fields left out (name,
# description, qc, radiomics, deep) act only through the tables these stages read
MODELS_KEY_SECTIONS = {
    "seed": (), "clinical": (), "models": (), "evaluation": (),
    "cohort": ("manifest",),  # a path: the manifest's content is hashed instead
}  # fmt: skip
STATISTICS_KEY_SECTIONS = {
    "seed": (), "clinical": (), "evaluation": (),  # models act through scores.csv
    "cohort": ("manifest",),
}  # fmt: skip


def _stage_key(study: Study, tables: Path, stage: str, inputs: list[str], settings: dict) -> str:
    """Hash of a table stage's inputs (the tables it reads, the manifest), its settings
    and fusion's own source (a code change re-runs the stage once)."""
    h = hashlib.sha256(f"{stage}:{source_hash()}".encode())
    for name in inputs:
        path = tables / f"{name}.csv"
        h.update(path.read_bytes() if path.is_file() else b"absent")
    h.update(study.cohort.manifest.read_bytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _up_to_date(tables: Path, stage: str, key: str, options: RunOptions, output: str) -> bool:
    """True when the stage's last run had this key, its output is there and caching is
    on: nothing to redo."""
    marker = tables / f".{stage}.key"
    return (
        options.cache is not None
        and (tables / f"{output}.csv").is_file()
        and marker.is_file()
        and marker.read_text() == key
    )


def models_stage(study: Study, options: RunOptions) -> None:
    """Assemble the modelling table, split, fit every model; write scores and summaries.

    Skipped when its input tables, the manifest and the settings are unchanged since
    its last run (the fitted models are deterministic for a seed)."""
    from fusion.learn.splits import assign_sets, patient_groups
    from fusion.learn.study import fit_study_models, summary_tables
    from fusion.learn.table import feature_table, radiomics_wide

    tables = tables_dir(study, options)
    settings = stage_settings(study, MODELS_KEY_SECTIONS)
    inputs = ["qc", "radiomics_features", "deep_features", "radiomics_failures", "deep_failures"]
    key = _stage_key(study, tables, "models", inputs, settings)
    if _up_to_date(tables, "models", key, options, "scores"):
        return
    cases = load_cohort(study)
    qc = _read_table(tables, "qc", "qc").set_index("case_id")
    blocks = {}
    if study.radiomics is not None:
        blocks["radiomics"] = radiomics_wide(_read_table(tables, "radiomics_features", "radiomics"))
    if study.deep is not None:
        blocks["deep"] = _read_table(tables, "deep_features", "deep").set_index("case_id")
    passed = [c for c in cases if qc.status.get(c.case_id) != "fail"]
    table, missing = feature_table(study, passed, blocks, _failure_reasons(tables))
    sets = assign_sets(cases, study.evaluation.test_size, study.seed)
    reasons = {cid: f"QC: {qc.problems[cid]}" for cid in qc.index[qc.status == "fail"]}
    reasons |= dict(zip(missing.case_id, missing.reason, strict=True))
    cohort = pd.DataFrame(
        {
            "case_id": [c.case_id for c in cases],
            "set": [sets[c.case_id] for c in cases],
            "label": [c.label for c in cases],
            "included": [c.case_id in table.index for c in cases],
            "reason": [reasons.get(c.case_id, "") for c in cases],
            "split_source": "manifest" if any(c.split for c in cases) else "random",
        }
    )
    write_csv_atomic(cohort, tables / "cohort.csv")
    labels = pd.Series({c.case_id: c.label for c in cases})[table.index]
    out = fit_study_models(study, table, labels, sets[table.index], patient_groups(cases),
                           jobs=options.jobs or cores())  # fmt: skip
    write_csv_atomic(out.scores, tables / "scores.csv")
    for name, frame in summary_tables(out).items():
        write_csv_atomic(frame, tables / f"{name}.csv")
    write_text_atomic(key, tables / ".models.key")


def statistics_stage(study: Study, options: RunOptions) -> None:
    """Every statistic of the report, as tidy tables, from the saved scores (skipped when
    those and the settings are unchanged)."""
    from fusion.learn.table import clinical_frame
    from fusion.stats import evaluate

    tables = tables_dir(study, options)
    settings = stage_settings(study, STATISTICS_KEY_SECTIONS)
    inputs = ["scores", "model_summary", "cohort", "qc"]
    key = _stage_key(study, tables, "statistics", inputs, settings)
    if _up_to_date(tables, "statistics", key, options, "performance"):
        return
    scores = _read_table(tables, "scores", "models")
    summary = _read_table(tables, "model_summary", "models")
    thresholds = dict(zip(summary.model, summary.threshold, strict=True))
    ev = study.evaluation
    out = evaluate.statistics_tables(scores, thresholds, ev, study.seed)
    out["sample_size"] = evaluate.sample_size_table(
        summary, scores, ev.sample_size.nagelkerke_r2, ev.sample_size.cox_snell_r2,
        ev.sample_size.c_statistic, ev.sample_size.shrinkage,
    )  # fmt: skip
    cohort = _read_table(tables, "cohort", "models").set_index("case_id")
    included = cohort[cohort.included]
    cases = [c for c in load_cohort(study) if c.case_id in included.index]
    frame = clinical_frame(study, cases).rename(columns=lambda c: c.removeprefix("clinical:"))
    qc = _read_table(tables, "qc", "qc").set_index("case_id")
    frame["roi_volume_ml"] = qc.roi_volume_ml.reindex(frame.index)
    frame = frame.join(included[["label", "set"]])
    covariates = {c.name: c.type for c in study.clinical}
    references = {c.name: c.reference for c in study.clinical if c.reference}
    out |= evaluate.clinical_tables(
        frame, {**covariates, "roi_volume_ml": "continuous"}, covariates, references
    )
    for name, table in out.items():
        write_csv_atomic(table, tables / f"{name}.csv")
    write_text_atomic(key, tables / ".statistics.key")


def report_stage(
    study: Study, options: RunOptions, digests: dict[str, tuple[str, str]] | None = None
) -> Path:
    """Provenance, figures and the self-contained HTML report. ``digests`` are the QC
    stage's file hashes when it ran in this process; otherwise the files are hashed."""
    from fusion.provenance import provenance
    from fusion.report.html import build_report

    folder = options.reports / study.name
    weights_file = folder / "tables" / "deep_weights.json"
    weights = json.loads(weights_file.read_text()) if weights_file.is_file() else None
    if digests is None:
        digests = case_digests(load_cohort(study), cache=options.cache)
    info = provenance(study, digests, weights, _stage_keys(study, folder / "tables", weights))
    if study.classifier is not None:
        from fusion.report.classifier import provenance_models

        info["classifier_models"] = provenance_models(folder / "tables")
    write_text_atomic(json.dumps(info, indent=2), folder / "provenance.json")
    return build_report(study, folder)


def _stage_keys(study: Study, tables: Path, weights: dict | None) -> dict[str, str]:
    """The settings part of each stage's cache key (a per-case key adds the case's
    content hashes), as recorded in the provenance."""
    from fusion.engine import cache_key
    from fusion.features.radiomics import load_params, radiomics_settings
    from fusion.io.qc import qc_settings

    keys = {"qc": cache_key(qc_settings(study))}
    if study.rois:
        from fusion.rois.stage import rois_settings

        folder = tables.parent
        keys |= {f"rois:{name}": cache_key(rois_settings(study, name, folder))
                 for name in study.rois}  # fmt: skip
    if study.radiomics is not None:
        params = load_params(study.radiomics.params)
        keys["radiomics"] = cache_key(radiomics_settings(study, params))
    if weights and weights.get("settings_key"):
        keys["deep"] = weights["settings_key"]
    for stage in ("classifier", "segmentation", "models", "statistics"):
        marker = tables / f".{stage}.key"
        if marker.is_file():
            keys[stage] = marker.read_text()
    return keys


@dataclass(slots=True)
class RunResult:
    report: Path | None = None
    stages: list[str] = field(default_factory=list)
    checked: Checked | None = None
    generated: dict | None = None


def applicable_stages(study: Study) -> list[str]:
    """The stages a study has: a stage without its section is skipped."""
    no_outcome_model = not study.models and (study.segmentation or study.classifier) is not None
    skip = {
        "classifier": study.classifier is None,
        "segmentation": study.segmentation is None,
        "rois": not study.rois,
        "involvement": study.segmentation is None or study.segmentation.involvement is None,
        "radiomics": study.radiomics is None,
        "deep": study.deep is None,
        # a segmentation or image-classifier study may have no outcome model to fit
        "models": no_outcome_model,
        "statistics": no_outcome_model,
    }
    return [s for s in STAGES if not skip.get(s, False)]


def run_study(
    study: Study, options: RunOptions, only: str | None = None, start: str | None = None
) -> RunResult:
    """Run the stages in order (all, ``--only`` one, or ``--from`` one onwards)."""
    for name in (only, start):
        if name is not None and name not in STAGES:
            raise FusionError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    applicable = applicable_stages(study)
    selected = [only] if only else list(STAGES[STAGES.index(start) :] if start else STAGES)
    selected = [s for s in selected if s in applicable]
    if only and not selected:
        raise FusionError(f"stage {only!r} does not apply to this study (it has no "
                          f"{'models' if only == 'statistics' else only} section)")  # fmt: skip
    result = RunResult()

    def checked() -> Checked:
        if result.checked is None:
            result.checked = qc_stage(study, options)
        return result.checked

    def generated() -> dict:
        if result.generated is None:
            result.generated = rois_stage(study, options, checked())
        return result.generated

    steps: dict[str, Callable[[], object]] = {
        "qc": checked,
        "classifier": lambda: classifier_stage(study, options, checked()),
        "segmentation": lambda: segmentation_stage(study, options, checked()),
        "rois": generated,
        "involvement": lambda: involvement_stage(study, options, checked()),
        "radiomics": lambda: enforce_budget(
            "radiomics",
            radiomics_stage(study, options, checked(), generated()).run.failures,
            study.radiomics.max_failures,
        ),
        "deep": lambda: enforce_budget(
            "deep",
            deep_stage(study, options, checked(), generated()).failures,
            study.deep.max_failures,
        ),
        "models": lambda: models_stage(study, options),
        "statistics": lambda: statistics_stage(study, options),
        "report": lambda: report_stage(
            study, options, result.checked.digests if result.checked else None
        ),
    }
    folder = options.reports / study.name
    for stage in selected:
        try:
            value = steps[stage]()
        except Exception as exc:  # noqa: BLE001 - every failure names its stage
            error = StageError(stage, exc)
            _mark_stale(folder, stage, error)
            raise error from exc
        if stage == "report":
            result.report = value  # type: ignore[assignment]
            (folder / FAILED_NOTE).unlink(missing_ok=True)
            shutil.rmtree(folder / "stale", ignore_errors=True)
        result.stages.append(stage)
    return result


def _mark_stale(folder: Path, failed: str, error: StageError) -> None:
    """After a failed stage, move what it and later stages wrote in an earlier run into
    ``stale/`` (a report next to new tables would contradict them) and say so in
    ``FAILED.txt``; the failures tables stay, since they show what went wrong now."""
    moved = []
    for stage in STAGES[STAGES.index(failed) :]:
        for pattern in STAGE_OUTPUTS[stage]:
            for path in sorted(folder.glob(pattern)):
                if path.name.endswith("_failures.csv"):
                    continue
                target = folder / "stale" / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                shutil.move(path, target)
                moved.append(str(path.relative_to(folder)))
    if not folder.is_dir():
        return
    text = (
        f"This study's last run failed at stage {failed!r}:\n{error}\n\n"
        + (f"Outputs of this and later stages were moved to stale/: "
           f"{', '.join(moved)}\n" if moved else "")
        + "They will be written again by the next successful run.\n"
    )  # fmt: skip
    write_text_atomic(text, folder / FAILED_NOTE)
