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

``--multi-roi``: five ROIs per case instead (three intensity sub-regions of the tumour and
rings 0-3 and 3-6 mm outside it, as one label map with labels 1-5, built before timing),
LoG (sigma 1, 2, 3 mm) and wavelet on; PyRadiomics' CLI gets one row per (image, mask,
label) and recomputes every filter for every ROI, the stage computes each filter once
per image (``fusion.features.radiomics.execute_labels``).
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


MULTI_PARAMS = {
    "imageType": {"Original": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]}, "Wavelet": {}},
    "featureClass": {"firstorder": None, "glcm": None, "glrlm": None},
    "setting": {"binWidth": 25, "label": 1},
}


def multi_roi_mask(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """Labels 1-3: intensity tertiles inside the tumour; 4, 5: rings 0-3 and 3-6 mm."""
    import numpy as np

    inside = sitk.GetArrayFromImage(mask) > 0
    hu = sitk.GetArrayFromImage(image)
    distance = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(sitk.Cast(mask > 0, sitk.sitkUInt8), insideIsPositive=False,
                                     squaredDistance=False, useImageSpacing=True)
    )  # fmt: skip
    labels = np.zeros(inside.shape, np.uint8)
    cuts = np.quantile(hu[inside], [1 / 3, 2 / 3])
    labels[inside] = 1 + np.searchsorted(cuts, hu[inside])
    labels[(distance > 0) & (distance <= 3)] = 4
    labels[(distance > 3) & (distance <= 6)] = 5
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def write_study(
    folder: Path, rows: list[dict], name: str, params: Path = PARAMS, labels: list | None = None
) -> Path:
    with (folder / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    study = {
        "name": name,
        "cohort": {"manifest": f"{name}.csv", "modality": "CT"},
        "radiomics": {"params": str(params), **({"labels": labels} if labels else {})},
        "qc": {"roi_at_border": "ignore", "min_roi_voxels": 1},
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
    parser.add_argument("--multi-roi", action="store_true", help="5 ROIs per case, LoG+wavelet")
    args = parser.parse_args()
    if args.multi_roi:
        return multi_roi(args.jobs)
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


def multi_roi(jobs: int) -> None:
    cases = sorted(p.name for p in STS.iterdir() if (p / "ct").is_dir())
    work = Path(tempfile.mkdtemp(prefix="bench_multi_roi_"))
    try:
        params = work / "params.yaml"
        params.write_text(yaml.safe_dump(MULTI_PARAMS))
        rows, batch = [], []
        for i, case in enumerate(cases):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(STS / case / "ct")))
            image = reader.Execute()
            mask = sitk.ReadImage(str(STS / case / "reference_mask.nii.gz"))
            image_path, mask_path = work / f"{case}.nrrd", work / f"{case}_rois.nrrd"
            sitk.WriteImage(image, str(image_path))
            sitk.WriteImage(multi_roi_mask(image, mask), str(mask_path))
            rows.append({"case_id": case, "image": str(image_path), "roi": str(mask_path),
                         "label": i % 2})  # fmt: skip
            batch += [{"ID": f"{case}_{k}", "Image": str(image_path), "Mask": str(mask_path),
                       "Label": k} for k in range(1, 6)]  # fmt: skip
        with (work / "batch.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["ID", "Image", "Mask", "Label"])
            writer.writeheader()
            writer.writerows(batch)
        study = write_study(work, rows, "bench_multi", params, labels=[1, 2, 3, 4, 5])
        reference = timed(
            [str(BIN / "pyradiomics"), str(work / "batch.csv"), "--param", str(params),
             "--jobs", str(jobs), "-o", str(work / "pyradiomics.csv"), "-f", "csv"]
        )  # fmt: skip
        stage = timed(
            [str(BIN / "fusion"), "extract", "radiomics", str(study), "-j", str(jobs),
             "--cache", str(work / "cache"), "--reports", str(work / "reports")]
        )  # fmt: skip
        n = len(batch)
        print(f"{len(cases)} STS cases x 5 ROIs = {n} ROIs, N = {jobs} worker processes, "
              "Original + LoG (3 sigmas) + wavelet (8)")  # fmt: skip
        print(
            f"{'PyRadiomics batch CLI:':<32}{reference:7.2f} s  {60 * n / reference:7.1f} ROIs/min"
        )
        print(f"{'fusion stage, cold:':<32}{stage:7.2f} s  {60 * n / stage:7.1f} ROIs/min")
        print(f"{'ratio stage / PyRadiomics:':<32}{reference / stage:7.2f}x (target >= 1.5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
