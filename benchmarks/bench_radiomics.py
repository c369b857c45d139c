"""Radiomics stage vs PyRadiomics' own batch command line, side by side, in one run.

Workload: the eight STS CT cases of ../shared/data/sts (DICOM series + the reference
mask) with the demo study's PyRadiomics parameter file. PyRadiomics' command line cannot
read a DICOM folder, so the series are first converted to NRRD (not timed) and both tools
read the same NRRD files; the stage is then also timed on the DICOM series themselves.

Both tools run as commands (interpreter start and imports included), with the same
parameters and the same number of worker processes N:

    .venv/bin/python benchmarks/bench_radiomics.py [--jobs N]

Prints cases per minute for each, their ratio (stage / PyRadiomics, higher is better),
and the warm re-run time of the stage (every case from its cache), both as a command
(dominated by interpreter start and imports) and through the Python API in one process.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import yaml

ROOT = Path(__file__).resolve().parents[1]
STS = ROOT.parent / "shared" / "data" / "sts"
PARAMS = ROOT / "pipelines" / "radiomics" / "head_ct_hematoma.yaml"
BIN = Path(sys.executable).parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def write_study(folder: Path, rows: list[dict], name: str) -> Path:
    with (folder / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    study = {
        "name": name,
        "cohort": {"manifest": f"{name}.csv", "modality": "CT"},
        "radiomics": {"params": str(PARAMS)},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def in_process(study_path: Path, work: Path, jobs: int) -> tuple[float, float]:
    """QC + radiomics through the Python API, cold (empty cache) and then warm."""
    from fusion.config import load_study
    from fusion.pipeline import RunOptions, qc_stage, radiomics_stage

    study = load_study(study_path)
    options = RunOptions(reports=work / "reports_api", cache=work / "cache_api", jobs=jobs)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        radiomics_stage(study, options, qc_stage(study, options))
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if not STS.is_dir():
        sys.exit(f"benchmark data not found: {STS}")
    cases = sorted(p.name for p in STS.iterdir() if (p / "ct").is_dir())
    work = Path(tempfile.mkdtemp(prefix="bench_radiomics_"))
    try:
        nrrd_rows, dicom_rows, batch = [], [], []
        for i, case in enumerate(cases):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(STS / case / "ct")))
            image_path = work / f"{case}.nrrd"
            sitk.WriteImage(reader.Execute(), str(image_path))
            mask = STS / case / "reference_mask.nii.gz"
            batch.append({"ID": case, "Image": str(image_path), "Mask": str(mask)})
            common = {"case_id": f"case{i}", "roi": str(mask), "label": i % 2}
            nrrd_rows.append({**common, "image": str(image_path)})
            dicom_rows.append({**common, "image": str(STS / case / "ct")})
        with (work / "batch.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["ID", "Image", "Mask"])
            writer.writeheader()
            writer.writerows(batch)
        nrrd_study = write_study(work, nrrd_rows, "bench_nrrd")
        dicom_study = write_study(work, dicom_rows, "bench_dicom")

        def stage(study: Path, cache: str) -> list[str]:
            return [str(BIN / "fusion"), "extract", "radiomics", str(study),
                    "-j", str(args.jobs), "--cache", str(work / cache),
                    "--reports", str(work / "reports")]  # fmt: skip

        reference = timed(
            [str(BIN / "pyradiomics"), str(work / "batch.csv"), "--param", str(PARAMS),
             "--jobs", str(args.jobs), "-o", str(work / "pyradiomics.csv"), "-f", "csv"]
        )  # fmt: skip
        cold = timed(stage(nrrd_study, "cache_nrrd"))
        warm = timed(stage(nrrd_study, "cache_nrrd"))
        cold_dicom = timed(stage(dicom_study, "cache_dicom"))
        cold_api, warm_api = in_process(nrrd_study, work, args.jobs)
        n = len(cases)

        def line(label: str, seconds: float) -> str:
            return f"{label:<32}{seconds:7.2f} s  {60 * n / seconds:7.1f} cases/min"

        print(f"{n} STS cases, N = {args.jobs} worker processes, params {PARAMS.name}")
        print(line("PyRadiomics batch CLI (NRRD):", reference))
        print(line("fusion stage, cold (NRRD):", cold))
        print(
            f"{'ratio stage / PyRadiomics:':<32}{reference / cold:7.2f}x (>= 1: as fast or faster)"
        )
        print(f"{'fusion stage, warm (cached):':<32}{warm:7.2f} s  (command: mostly start-up)")
        print(
            f"{'in process, cold -> warm:':<32}{cold_api:7.2f} s -> {warm_api:.3f} s "
            f"({cold_api / warm_api:.0f}x faster warm)"
        )
        print(line("fusion stage, cold (DICOM):", cold_dicom))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
