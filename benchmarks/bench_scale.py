"""How fusion's cost grows with the cohort: N = 200 ... 10,000 small synthetic cases.

Each N runs in a fresh process (so peak memory is its own) through QC, radiomics (a
light parameter file: original image, firstorder, shape, GLCM), a small deep stage
(ResNet50 with random weights on three 32 x 32 planes per case), the models stage (a
logistic LASSO and an RBF SVM on the radiomics features) and statistics, with ``--jobs``
local worker processes and, with ``--dask``, again on a Dask ``LocalCluster`` with the
same number of workers, side by side. For each N and stage it records the wall time,
the time per case, the peak resident memory of the parent and of the largest worker
(sampled every 0.2 s with psutil), and the stage's cache on disk; the table goes to
``benchmarks/results/scale.csv`` and a log-log plot of time against N per stage to
``benchmarks/results/scale.png``.

The cases (24 x 64 x 64 voxels of 1 x 1 x 3 mm, int16 CT with a body, a textured
spherical ROI whose size and texture carry a weak outcome signal) are generated once
under ``--data`` and shared by every N (the first N of them).

    .venv/bin/python benchmarks/bench_scale.py --n 200 1000 --dask
    .venv/bin/python benchmarks/bench_scale.py --n 200 1000 5000 10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PARAMS = ("imageType: {Original: {}}\nfeatureClass: {firstorder:, shape:, glcm:}\n"
          "setting: {binWidth: 10, label: 1}\n")  # fmt: skip
STAGES = ("qc", "radiomics", "deep", "models", "statistics")


def make_case(args: tuple[Path, int]) -> None:
    import SimpleITK as sitk
    from scipy import ndimage

    folder, i = args
    image_path, roi_path = folder / f"i{i:05d}.nii.gz", folder / f"r{i:05d}.nii.gz"
    if roi_path.is_file():
        return
    rng = np.random.default_rng([11, i])
    z, y, x = np.mgrid[:24, :64, :64]
    body = ((y - 32) ** 2 / 28**2 + (x - 32) ** 2 / 26**2) <= 1
    label = i % 2
    radius = rng.uniform(5, 9) + 1.5 * label
    centre = (12, 32 + rng.integers(-6, 7), 32 + rng.integers(-6, 7))
    roi = ((z - centre[0]) * 3) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    texture = ndimage.gaussian_filter(rng.normal(size=z.shape), 1.0)
    texture /= texture.std()
    hu = np.where(body, 35.0, -1000.0) + np.where(roi, 30 + (4 + 6 * label) * texture, 0.0)
    hu += rng.normal(0, 5, hu.shape)
    for array, path in ((hu.astype(np.int16), image_path), (roi.astype(np.uint8), roi_path)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 3.0))
        sitk.WriteImage(image, str(path.with_suffix(".tmp.nii.gz")), useCompression=True)
        os.replace(path.with_suffix(".tmp.nii.gz"), path)


def cohort(data: Path, n: int, jobs: int) -> Path:
    """The first ``n`` cases (generated when missing) and their manifest, study and
    parameter file under ``data/n<N>``; returns the study file."""
    cases = data / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(make_case, [(cases, i) for i in range(n)], chunksize=32))
    folder = data / f"n{n}"
    folder.mkdir(exist_ok=True)
    rows = [{"case_id": f"c{i:05d}", "image": str(cases / f"i{i:05d}.nii.gz"),
             "roi": str(cases / f"r{i:05d}.nii.gz"), "label": i % 2,
             "split": "test" if i % 5 == 0 else "train"} for i in range(n)]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "params.yaml").write_text(PARAMS)
    import yaml

    (folder / "study.yaml").write_text(yaml.safe_dump({
        "name": f"scale{n}", "seed": 1,
        "cohort": {"manifest": "manifest.csv"},
        "radiomics": {"params": "params.yaml"},
        # a small deep stage: ResNet50 (random weights) on three 32-pixel planes a case
        "deep": {"weights": "random", "allow_random_weights": True, "size": 32,
                 "offsets_mm": [-3.0, 0.0, 3.0], "batch_size": 30},
        "evaluation": {"bootstrap": 2000},
        "models": {"lasso_logistic": {"features": ["radiomics"], "classifier": "logistic"},
                   "svm": {"features": ["radiomics"], "classifier": "svm"}},
    }, sort_keys=False))  # fmt: skip
    return folder / "study.yaml"


class Peaks:
    """Peak RSS of this process and of its largest descendant, sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.parent = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.parent = max(self.parent, self.me.memory_info().rss)
                for child in self.me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):  # it may end meanwhile
                        self.worker = max(self.worker, child.memory_info().rss)

    def reset(self) -> None:
        self.parent = self.worker = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def du(path: Path) -> int:
    """Bytes on disk (allocated blocks: a small JSON file takes a whole block)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def one(study_file: Path, jobs: int, scheduler: str | None) -> list[dict]:
    """Every stage of one study in this process, timed; rows of the table."""
    from fusion.config import load_study
    from fusion.pipeline import run_study
    from fusion.stages.context import RunOptions

    study = load_study(study_file)
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    options = RunOptions(reports=work / "reports", cache=work / "cache", jobs=jobs,
                         scheduler=scheduler)  # fmt: skip
    peaks, rows = Peaks(), []
    n = len(pd.read_csv(study.cohort.manifest))
    # every stage after the first starts from the run context: the cohort, its content
    # hashes and QC read back from the cache ("warm context", timed on its own)
    for stage in (*STAGES[:1], "warm context", *STAGES[1:]):
        peaks.reset()
        start = time.perf_counter()
        run_study(study, options, only="qc" if stage == "warm context" else stage)
        wall = time.perf_counter() - start
        rows.append({"n": n, "stage": stage, "executor": "dask" if scheduler else "local",
                     "jobs": jobs, "wall_s": round(wall, 2),
                     "ms_per_case": round(1000 * wall / n, 2),
                     "parent_peak_mb": round(peaks.parent / 2**20),
                     "worker_peak_mb": round(peaks.worker / 2**20),
                     "cache_mb": round(du(work / "cache" / stage) / 2**20, 1),
                     "digests_mb": round(du(work / "cache" / "digests") / 2**20, 1)})  # fmt: skip
    peaks.stop()
    shutil.rmtree(work)  # reports and caches of every N add up
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dask", action="store_true", help="also on a Dask LocalCluster")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "bench_scale")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the table and plot")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.jobs, args.scheduler)))
        return
    rows = []
    for n in args.n:
        study = cohort(args.data, n, args.jobs)
        runs = [None]
        if args.dask:
            runs.append("dask")
        for how in runs:
            cmd = [sys.executable, __file__, "--one", str(study), "--jobs", str(args.jobs)]
            if how == "dask":
                cmd = [sys.executable, "-c", DASK_CHILD, str(study), str(args.jobs)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            rows += got
            for r in got:
                print(f"N={r['n']:>6} {r['executor']:>5} {r['stage']:<12} {r['wall_s']:>8.1f} s "
                      f"{r['ms_per_case']:>7.1f} ms/case  parent {r['parent_peak_mb']:>5} MB  "
                      f"worker {r['worker_peak_mb']:>5} MB  cache {r['cache_mb']:>6} MB",
                      flush=True)  # fmt: skip
            write(pd.DataFrame(rows), args.out)  # after every run: a long one loses nothing
    print(f"written: {args.out / 'scale.csv'}, {args.out / 'scale.png'}")


def write(table: pd.DataFrame, out: Path) -> None:
    """The table and its plot; rows of other N already there are kept."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scale.csv"
    if path.is_file():
        old = pd.read_csv(path)
        keep = ~old.set_index(["n", "executor"]).index.isin(
            table.set_index(["n", "executor"]).index)  # fmt: skip
        table = pd.concat([old[keep], table], ignore_index=True)
    table = table.sort_values(["executor", "n"], kind="stable")
    table.to_csv(path, index=False)
    plot(table, out / "scale.png")


# a child that starts a LocalCluster with the same workers and runs the study on it
DASK_CHILD = """
import json, sys
from pathlib import Path
from distributed import LocalCluster
sys.path.insert(0, str(Path(sys.argv[0]).resolve().parent))
from benchmarks.bench_scale import one
study, jobs = Path(sys.argv[1]), int(sys.argv[2])
with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                  dashboard_address=None) as cluster:
    print(json.dumps(one(study, jobs, cluster.scheduler_address)))
"""


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = dict(zip(dict.fromkeys(table.stage), plt.get_cmap("tab10").colors, strict=False))
    for (stage, how), part in table.groupby(["stage", "executor"], sort=False):
        ax.loglog(part.n, part.wall_s, marker="o", ls="-" if how == "local" else "--",
                  color=colours[stage], label=f"{stage} ({how})")  # fmt: skip
    ns = np.array(sorted(table.n.unique()))
    ax.loglog(ns, ns / ns[0] * table.wall_s.min(), color="grey", lw=0.8, ls=":",
              label="linear")  # fmt: skip
    ax.set_xlabel("cases (N)")
    ax.set_ylabel("wall time (s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
