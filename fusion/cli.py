"""The ``fusion`` command line.

Heavy libraries are imported inside each command, so ``fusion --help`` starts at once.
Bad input (:class:`fusion.errors.FusionError`) is printed as its message, without a
traceback, and exits with status 2; a QC run with failed cases exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fusion.errors import FusionError

log = logging.getLogger("fusion")


def _cmd_check(args: argparse.Namespace) -> int:
    from fusion.atomic import write_csv_atomic
    from fusion.cohort import load_cohort
    from fusion.config import load_study
    from fusion.io.qc import check_cohort, qc_table

    study = load_study(args.study)
    cases = load_cohort(study)
    table = qc_table(check_cohort(cases, study))
    out = Path(args.out) if args.out else Path(args.reports) / study.name / "tables" / "qc.csv"
    write_csv_atomic(table, out)
    _print_qc(table)
    counts = table.status.value_counts()
    print(
        f"{study.name}: {len(table)} cases: {counts.get('ok', 0)} ok, "
        f"{counts.get('warn', 0)} with warnings, {counts.get('fail', 0)} failed. "
        f"Table written to {out}"
    )
    return 1 if counts.get("fail", 0) else 0


def _print_qc(table) -> None:  # noqa: ANN001 - a pandas DataFrame; pandas is imported lazily
    width = max([len("case"), *(len(c) for c in table.case_id)])
    print(f"{'case':<{width}}  {'status':<6}  problems")
    for row in table.itertuples():
        print(f"{row.case_id:<{width}}  {row.status:<6}  {row.problems or '-'}")


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from fusion.demo import generate_demo_cohort

    manifest = generate_demo_cohort(args.out, n=args.n, seed=args.seed, jobs=args.jobs)
    print(f"demo cohort of {args.n} cases written; manifest: {manifest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion",
        description="Radiomics + deep-feature fusion for CT studies: QC, features, models, "
        "statistics and a reproducible report.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="check every case of a study and write the QC table")
    check.add_argument("study", help="study file, e.g. pipelines/demo_hematoma.yaml")
    check.add_argument("--out", help="CSV path (default reports/<study>/tables/qc.csv)")
    check.add_argument("--reports", default="reports", help="reports folder (default reports)")
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser("demo-data", help="write the synthetic hematoma-expansion cohort")
    demo.add_argument("--out", required=True, help="folder to write the cohort into")
    demo.add_argument("--n", type=int, default=235, help="number of cases (default 235)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    demo.set_defaults(func=_cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except FusionError as exc:
        print(f"fusion {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
