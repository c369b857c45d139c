"""The ``fusion`` command line.

Heavy libraries are imported inside each command, so ``fusion --help`` starts at once.
Bad input (:class:`fusion.errors.FusionError`) is printed as its message, without a
traceback, and exits with status 2 (with ``-v``, a failure whose cause is not bad input
also prints that cause's traceback); a QC run with failed cases exits with status 1.
Ctrl-C or SIGTERM stops the workers, keeps every finished case in the cache and exits
with status 130.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from fusion.errors import FusionError

if TYPE_CHECKING:
    from fusion.stages.context import RunOptions

log = logging.getLogger("fusion")
# the registry's order (fusion.stages), spelled out so `fusion --help` imports nothing
# heavy; tests/test_architecture.py checks that the two agree
STAGE_NAMES = ("qc", "splits", "classifier", "segmentation", "rois", "involvement", "radiomics",
               "deep", "models", "statistics", "report")  # fmt: skip


def _options(args: argparse.Namespace) -> RunOptions:
    from fusion.stages.context import RunOptions

    return RunOptions(
        reports=Path(args.reports),
        cache=None if args.no_cache else Path(args.cache),
        jobs=args.jobs,
        scheduler=args.scheduler,
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from fusion.atomic import write_csv_atomic
    from fusion.config import load_study
    from fusion.io.qc import qc_table
    from fusion.stages.context import check_study

    study = load_study(args.study)
    if study.radiomics is not None:  # a bad parameter file is found now, not after QC
        from fusion.io.radiomics_params import load_params

        load_params(study.radiomics.params)
    options = _options(args)
    out = Path(args.out) if args.out else options.reports / study.name / "tables" / "qc.csv"
    table = qc_table(check_study(study, options).qc)
    write_csv_atomic(table, out)
    _print_qc(table)
    counts = table.status.value_counts()
    print(
        f"{study.name}: {len(table)} cases: {counts.get('ok', 0)} ok, "
        f"{counts.get('warn', 0)} with warnings, {counts.get('fail', 0)} failed. "
        f"Table written to {out}"
    )
    return 1 if counts.get("fail", 0) else 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from fusion.config import load_study
    from fusion.stages import deep, radiomics
    from fusion.stages.context import build_context

    study = load_study(args.study)
    ctx = build_context(study, _options(args))
    checked = ctx.checked
    excluded = len(checked.cases) - len(checked.passed)
    if args.stage == "radiomics":
        run = radiomics.extract(ctx).run
        computed, cached, failures = run.computed, run.cached, run.failures
        allowed = study.radiomics.max_failures if study.radiomics else 0
    else:
        out = deep.extract(ctx)
        computed, cached, failures = out.computed, out.cached, out.failures
        allowed = study.deep.max_failures if study.deep else 0
        print(f"weights: {out.weights.source}; device: {out.device}")
        if out.weights.warning:
            print(f"WARNING: {out.weights.warning}", file=sys.stderr)
    print(
        f"{study.name}: {args.stage} for {len(checked.passed)} cases ({excluded} excluded by "
        f"QC): {computed} computed, {cached} from cache, {len(failures)} failed. "
        f"Tables in {ctx.tables}"
    )
    for failure in failures:
        print(f"  failed: {failure.case_id}: {failure.error}: {failure.message}")
    if len(failures) > allowed:
        names = ", ".join(f.case_id for f in failures)
        print(f"{len(failures)} case(s) failed (allowed: {allowed}): {names}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    from fusion.config import load_study
    from fusion.pipeline import run_study

    study = load_study(args.study)
    start = time.monotonic()
    redraw = args.command == "report"
    result = run_study(study, _options(args), only="report" if redraw else args.only,
                       start=getattr(args, "start", None), rerun=redraw)  # fmt: skip
    elapsed = time.monotonic() - start
    ran = [name for name in result.stages if name not in result.up_to_date]
    skipped = f"; up to date: {', '.join(result.up_to_date)}" if result.up_to_date else ""
    print(f"{study.name}: ran {', '.join(ran) or 'nothing'}{skipped} in {elapsed:.1f} s")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from fusion.pipeline import RunOptions, run_study
    from fusion.replay import replay_study

    out = Path(args.out)
    cache = None if args.no_cache else Path(args.cache)
    study, notes = replay_study(Path(args.provenance), out, cache)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    options = RunOptions(reports=out, cache=cache, jobs=args.jobs, scheduler=args.scheduler)
    result = run_study(study, options)
    print(f"{study.name}: replayed into {out / study.name}")
    print(f"report: {result.report}")
    return 0


def _cmd_roi(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from fusion.atomic import atomic_path
    from fusion.io.images import read_image
    from fusion.io.rois import list_structures, read_roi

    image = read_image(Path(args.image), args.series) if args.image else None
    if args.action == "list":
        rows = list_structures(Path(args.file), image)
        print(f"{'number':>6}  {'voxels':>9}  name")
        for row in rows:
            voxels = "-" if row["voxels"] is None else str(row["voxels"])
            print(f"{row['number']:>6}  {voxels:>9}  {row['name']}")
        return 0
    if image is None or not args.out:
        print("fusion roi export needs --image and --out", file=sys.stderr)
        return 2
    roi = read_roi(Path(args.file), image, args.structure or None)
    with atomic_path(Path(args.out)) as tmp:
        sitk.WriteImage(roi, str(tmp), useCompression=True)
    counts = sitk.GetArrayViewFromImage(roi)
    print(f"wrote {args.out}: {int((counts > 0).sum())} voxels in the ROI")
    return 0


def _print_qc(table) -> None:  # noqa: ANN001 - a pandas DataFrame; pandas is imported lazily
    width = max([len("case"), *(len(c) for c in table.case_id)])
    print(f"{'case':<{width}}  {'status':<6}  problems")
    for row in table.itertuples():
        print(f"{row.case_id:<{width}}  {row.status:<6}  {row.problems or '-'}")


def _cmd_demo_data(args: argparse.Namespace) -> int:
    if args.study == "pneumothorax":
        from fusion.demo_radiograph import generate_pneumothorax_cohort

        n, seed = args.n or 600, 17 if args.seed is None else args.seed
        manifest = generate_pneumothorax_cohort(args.out, n, seed, jobs=args.jobs)
        print(f"pneumothorax demo cohort of {n} radiographs written; manifest: {manifest}")
        return 0
    if args.study == "lung":
        from fusion.demo_chest import generate_lung_cohort

        n, seed = args.n or 22, 13 if args.seed is None else args.seed
        manifest = generate_lung_cohort(args.out, n, seed, jobs=args.jobs)
        print(f"lung-involvement demo cohort of {n} patients written; manifest: {manifest}")
        return 0
    if args.study == "mediastinal":
        from fusion.demo_chest import generate_mediastinal_cohort

        per_site = args.n or 12
        seed = 11 if args.seed is None else args.seed
        manifest = generate_mediastinal_cohort(args.out, per_site, seed, jobs=args.jobs)
        print(f"mediastinal demo cohort ({per_site} cases per institution); manifest: {manifest}")
        return 0
    from fusion.demo import generate_demo_cohort

    n, seed = args.n or 235, 7 if args.seed is None else args.seed
    manifest = generate_demo_cohort(args.out, n=n, seed=seed, jobs=args.jobs)
    print(f"demo cohort of {n} cases written; manifest: {manifest}")
    return 0


def _cmd_seg(args: argparse.Namespace) -> int:
    """``seg train``: QC and the segmentation stage (train, then predict and evaluate the
    tuning, test and external cases); ``seg predict``: also the ROI stage, which runs the
    unet generators on every case; ``seg evaluate``: the stage's tables and the report."""
    from fusion.config import load_study
    from fusion.pipeline import applicable_stages, run_study

    study = load_study(args.study)
    if study.segmentation is None:
        raise FusionError(f"{args.study}: the study has no segmentation section")
    options = _options(args)
    stages = {
        "train": ["qc", "segmentation"],
        "predict": ["qc", "segmentation", "rois"],
        "evaluate": ["qc", "segmentation", "rois", "involvement", "report"],
    }[args.action]
    for stage in [s for s in stages if s in applicable_stages(study)]:
        run_study(study, options, only=stage)
    tables = options.reports / study.name / "tables"
    print(f"{study.name}: seg {args.action} done; tables: {tables}/seg_*.csv")
    summary = tables / "seg_summary.csv"
    if summary.is_file():
        import pandas as pd

        frame = pd.read_csv(summary)
        for row in frame[frame.metric == "dice"].to_dict("records"):
            print(f"  {row['variant']:<14} {row['set']:<32} {row['class']:<12} "
                  f"{row['scans']:<13} Dice {row['mean']:.3f} [{row['ci_low']:.3f}, "
                  f"{row['ci_high']:.3f}] (n = {row['n']})")  # fmt: skip
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from fusion.errors import ManifestError
    from fusion.io.dicom_crawl import write_manifest
    from fusion.io.spreadsheet import read_table
    from fusion.threads import cores

    outcomes = None
    if args.outcomes:
        table = read_table(Path(args.outcomes))
        if args.id_column not in table.frame.columns:
            raise ManifestError(
                f"{table.where}: no column {args.id_column!r} (give the one holding the "
                f"DICOM PatientID with --id-column); columns: "
                f"{', '.join(map(repr, table.frame.columns))}"
            )
        outcomes = table.frame.set_index(args.id_column)
    out = Path(args.out)
    mapping = Path(args.mapping) if args.mapping else out.with_name(f"{out.stem}.patients.csv")
    result = write_manifest(Path(args.dicom), out, args.jobs or cores(), outcomes, mapping)
    print(f"{result.files_read} DICOM files read, {result.files_skipped} other files skipped")
    print(f"{len(result.rows)} new series with an ROI -> {out} (one row each; check the label "
          "column)")  # fmt: skip
    for note in result.notes:
        print(note)
    print(f"case ID -> PatientID: {mapping} (keep it private: the only file fusion writes "
          "with a DICOM identifier)")  # fmt: skip
    if result.unpaired:
        print(f"{len(result.unpaired)} ROI file(s) not paired with a series "
              f"({out.with_name(out.stem + '.unpaired.csv')}):")  # fmt: skip
        for row in result.unpaired:
            print(f"  {row['file']}: {row['reason']}")
    if not result.structures.empty:
        print("structures (ROI files, patients) and the cohort.structures pattern suggested:")
        for pattern, group in result.structures.groupby("suggested_pattern", sort=False):
            names = ", ".join(f"{r.structure} ({r.roi_files}, {r.patients})"
                              for r in group.itertuples())  # fmt: skip
            note = next((n for n in group.note if n), "")
            print(f"  {pattern!r}: {names}" + (f"  [{note}]" if note else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion",
        description="Radiomics + deep-feature fusion for CT studies: QC, features, models, "
        "statistics and a reproducible report.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    how = argparse.ArgumentParser(add_help=False)  # how to run; never what comes out
    how.add_argument("--reports", default="reports", help="reports folder (default reports)")
    how.add_argument("--cache", default=".cache/fusion", help="per-case cache folder")
    how.add_argument("--no-cache", action="store_true", help="recompute everything")
    how.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    where = how.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    where.add_argument("--cluster", help="start a Dask cluster for this run from a YAML "
                       "file (SLURM, PBS or local; see fusion/cluster.py)")  # fmt: skip
    common = argparse.ArgumentParser(add_help=False, parents=[how])
    common.add_argument("study", help="study file, e.g. pipelines/demo_hematoma.yaml")

    check = sub.add_parser(
        "check", parents=[common], help="check every case of a study and write the QC table"
    )
    check.add_argument("--out", help="CSV path (default reports/<study>/tables/qc.csv)")
    check.set_defaults(func=_cmd_check)

    extract = sub.add_parser("extract", help="run one feature stage alone")
    stages = extract.add_subparsers(dest="stage", required=True)
    radiomics = stages.add_parser(
        "radiomics", parents=[common], help="PyRadiomics features of every case that passes QC"
    )
    radiomics.set_defaults(func=_cmd_extract)
    deep = stages.add_parser(
        "deep", parents=[common], help="ResNet50 features of multi-plane crops around each ROI"
    )
    deep.set_defaults(func=_cmd_extract)

    run = sub.add_parser(
        "run", parents=[common], help="run a study end to end: QC to the HTML report"
    )
    run.add_argument("--only", metavar="STAGE", help=f"run one stage: {', '.join(STAGE_NAMES)}")
    run.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
    run.set_defaults(func=_cmd_run)
    report = sub.add_parser(
        "report",
        parents=[common],
        help="draw the report again from the saved tables, even when up to date",
    )
    report.set_defaults(func=_cmd_run, only=None)

    replay = sub.add_parser(
        "replay", help="re-run a finished study from its provenance.json into another folder"
    )
    replay.add_argument("provenance", help="reports/<study>/provenance.json")
    replay.add_argument("--out", required=True, help="reports folder for the replay")
    replay.add_argument("--cache", default=".cache/fusion", help="per-case cache folder")
    replay.add_argument("--no-cache", action="store_true", help="recompute everything")
    replay.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    replay.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    replay.set_defaults(func=_cmd_replay)

    roi = sub.add_parser("roi", help="list or export the structures of an ROI file")
    roi.add_argument("action", choices=["list", "export"])
    roi.add_argument("file", help="RTSTRUCT, DICOM-SEG, .seg.nrrd or label map")
    roi.add_argument("--image", help="the image (file or DICOM folder) to rasterise onto")
    roi.add_argument("--series", help="SeriesInstanceUID when the folder holds several")
    roi.add_argument("--structure", action="append", help="name or pattern (repeatable)")
    roi.add_argument("--out", help="NIfTI file to write (export)")
    roi.set_defaults(func=_cmd_roi)

    manifest = sub.add_parser(
        "manifest", help="write a manifest from a DICOM export: series paired with their "
        "RTSTRUCT/SEG, case IDs that are not DICOM identifiers",
    )  # fmt: skip
    manifest.add_argument("dicom", help="folder of the DICOM export (searched recursively)")
    manifest.add_argument("--out", required=True, help="manifest CSV to write")
    manifest.add_argument("--outcomes", help="outcome spreadsheet (CSV, .xlsx, .ods) with one "
                          "row per patient: its columns join the manifest")  # fmt: skip
    manifest.add_argument("--id-column", default="PatientID",
                          help="the outcome sheet's column of DICOM PatientIDs")  # fmt: skip
    manifest.add_argument("--mapping", help="where to write the case ID -> PatientID file "
                          "(default: beside the manifest, <name>.patients.csv)")  # fmt: skip
    manifest.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    manifest.set_defaults(func=_cmd_manifest)

    seg = sub.add_parser(
        "seg", parents=[how], help="segmentation: train, predict or evaluate a study's U-Nets"
    )
    seg.add_argument("action", choices=["train", "predict", "evaluate"],
                     help="train (and evaluate), predict every case's ROIs, or evaluate and "
                     "report")  # fmt: skip
    seg.add_argument("study", help="study file, e.g. pipelines/demo_mediastinal.yaml")
    seg.set_defaults(func=_cmd_seg)

    demo = sub.add_parser("demo-data", help="write a synthetic demo cohort")
    demo.add_argument("--out", required=True, help="folder to write the cohort into")
    demo.add_argument(
        "--study", choices=["hematoma", "mediastinal", "lung", "pneumothorax"],
        default="hematoma", help="hematoma (head CT, default), mediastinal or lung (chest "
        "CT), pneumothorax (chest radiographs)",
    )  # fmt: skip
    demo.add_argument("--n", type=int, default=None,
                      help="cases (hematoma, default 235; lung, 22; pneumothorax, 600) or "
                      "cases per institution (mediastinal, default 12)")  # fmt: skip
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (7; mediastinal 11, lung 13, pneumothorax 17)",
    )
    demo.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    demo.set_defaults(func=_cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("radiomics", "pykwalify", "distributed", "numexpr"):  # INFO lines: noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _terminate)  # restored below: main() is
    try:  # also called in-process (tests, notebooks), whose forked children inherit it
        if getattr(args, "cluster", None):
            from fusion.cluster import running_cluster

            with running_cluster(args.cluster) as address:
                args.scheduler = address
                return args.func(args)
        return args.func(args)
    except FusionError as exc:
        cause = exc.__cause__
        if args.verbose and cause is not None and not isinstance(cause, FusionError):
            traceback.print_exception(cause)
        print(f"fusion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"fusion {args.command}: interrupted; the workers were stopped and every finished "
            "case is cached: run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:  # None: a handler set outside Python, which cannot be put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``kill``) unwinds like Ctrl-C: workers stopped, finished work kept."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
