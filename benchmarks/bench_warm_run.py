"""A warm run on a DICOM cohort: how long, and how many bytes it reads.

The 8 soft-tissue sarcoma CT series of ../shared/data/sts (DICOM + RTSTRUCT) go through
QC and radiomics once cold, then warm (every case cached) a few times, in this process,
so ``/proc/self/io`` counts every byte the run reads (a warm run starts no workers).
Run it with another checkout first on PYTHONPATH to measure that version side by side:

    .venv/bin/python benchmarks/bench_warm_run.py
    PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/bench_warm_run.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

STS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts"
PARAMS = {"imageType": {"Original": {}}, "featureClass": {"firstorder": None, "shape": None},
          "setting": {"binWidth": 25, "label": 1}}  # fmt: skip


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def main() -> None:
    import fusion
    from fusion.config import load_study
    from fusion.stages.context import RunOptions, build_context
    from fusion.stages.radiomics import extract as extract_radiomics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, help="warm repetitions")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not STS.is_dir():
        raise SystemExit(f"shared data not found: {STS}")
    root = Path(tempfile.mkdtemp(prefix="bench_warm_"))
    rows = [{"case_id": c.name, "image": str(c / "ct"), "roi": str(c / "rtstruct.dcm"),
             "label": i % 2} for i, c in enumerate(sorted(STS.glob("STS_*")))]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "study.yaml").write_text(yaml.safe_dump({
        "name": "sts", "cohort": {"manifest": "manifest.csv", "structures": ["GTV*"]},
        "radiomics": {"params": "params.yaml"},
    }))  # fmt: skip
    study = load_study(root / "study.yaml")
    options = RunOptions(reports=root / "reports", cache=root / "cache", jobs=args.jobs)
    image_bytes = sum(p.stat().st_size for c in STS.glob("STS_*") for p in (c / "ct").iterdir())

    def run() -> tuple[float, int]:
        start, before = time.perf_counter(), bytes_read()
        extract_radiomics(build_context(study, options))
        return time.perf_counter() - start, bytes_read() - before

    print(f"fusion from {Path(fusion.__file__).parent}; {len(rows)} DICOM cases, "
          f"{image_bytes / 1e6:.1f} MB of CT slices")  # fmt: skip
    cold = run()
    warm = [run() for _ in range(args.warm)]
    print(f"{'run':<6} {'seconds':>8} {'MB read':>8}")
    print(f"{'cold':<6} {cold[0]:8.2f} {cold[1] / 1e6:8.1f}")
    for seconds, read in warm:
        print(f"{'warm':<6} {seconds:8.2f} {read / 1e6:8.1f}")


if __name__ == "__main__":
    main()
