"""DeLong AUC and paired test at n = 10^6: O(n log n), one sort per score.

    .venv/bin/python benchmarks/bench_stats.py [--n 1000000]

Prints the time of roc_auc and delong_test, and, side by side on the same data,
scikit-learn's roc_auc_score (AUC only, no variance) and, when ``Rscript`` with pROC is
installed (Debian: r-base-core r-cran-proc), pROC's roc() of both scores and its paired
roc.test(method = "delong"), timed inside R (reading the data excluded), with the z the
two agree on. Every time is the fastest of three runs (this machine's neighbours vary).
fusion sorts the two scores in two threads when the machine has two cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fusion.stats import delong_test, roc_auc

PROC = """
suppressMessages(library(pROC))
d <- read.csv(commandArgs(TRUE)[1])
best <- Inf
for (i in 1:3) {  # the fastest of three, as for fusion
  t <- system.time({
    ra <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
    rb <- roc(d$y, d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
    test <- roc.test(ra, rb, method = "delong", paired = TRUE)
  })
  best <- min(best, t[["elapsed"]])
}
cat(best, test$statistic, "\n")
"""


def proc_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """(seconds, z) of pROC's paired DeLong test on the same data, or None without R."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, script = Path(tmp) / "d.csv", Path(tmp) / "proc.R"
        np.savetxt(data, np.column_stack([y, a, b]), delimiter=",", header="y,a,b",
                   comments="", fmt=["%d", "%.17g", "%.17g"])  # fmt: skip
        script.write_text(PROC)
        out = subprocess.run(["Rscript", str(script), str(data)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        return None
    seconds, z = out.stdout.split()
    return float(seconds), float(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    a = y + rng.normal(size=n)
    b = 0.5 * y + rng.normal(size=n)

    def timed(f):  # noqa: ANN001, ANN202 - the fastest of three runs, as for pROC
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = f()
            best = min(best, time.perf_counter() - start)
        return best, result

    t_ref, ref = timed(lambda: roc_auc_score(y, a))
    t_auc, auc = timed(lambda: roc_auc(y, a))
    t_test, test = timed(lambda: delong_test(y, a, b))
    assert abs(auc.auc - ref) < 1e-9
    print(f"n = {n:,}")
    print(f"sklearn roc_auc_score (AUC only):  {t_ref:6.2f} s")
    print(f"fusion roc_auc (AUC + DeLong CI):  {t_auc:6.2f} s  ratio {t_auc / t_ref:.2f}")
    print(f"fusion delong_test (two scores):   {t_test:6.2f} s  z = {test.z:.6f}")
    proc = proc_delong(y, a, b)
    if proc is None:
        print("pROC: Rscript or pROC not installed; no side-by-side figure")
    else:
        print(
            f"pROC roc x 2 + roc.test (DeLong):  {proc[0]:6.2f} s  z = {proc[1]:.6f}  "
            f"fusion {proc[0] / t_test:.1f}x faster"
        )


if __name__ == "__main__":
    main()
