"""DeLong AUC and paired test at n = 10^6, and the report's bootstraps at 10^5, vs pROC.

    .venv/bin/python benchmarks/bench_stats.py [--n 1000000] [--boot-n 100000] [--boot 2000]

Prints the time of roc_auc and delong_test, and, side by side on the same data,
scikit-learn's roc_auc_score (AUC only, no variance) and, when ``Rscript`` with pROC is
installed (Debian: r-base-core r-cran-proc), pROC's roc() of both scores and its paired
roc.test(method = "delong"), timed inside R (reading the data excluded), with the z the
two agree on, for continuous scores and for the same scores rounded to 0.01 (ties in
every group). Every time is the fastest of three runs (this machine's neighbours vary).
fusion sorts the two scores in two threads when the machine has two cores.

Then the bootstraps on ``--boot-n`` cases with ``--boot`` resamples: the stratified AUC
CI beside pROC's ci.auc(method = "bootstrap", boot.stratified = TRUE) on the same scores
(the two CIs differ only by their random draws), the performance table (AUC, Brier
score and F1 CIs) and the decision curve's net-benefit band over 99 thresholds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from fusion.stats import bootstrap_auc_ci, delong_test, roc_auc

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


PROC_BOOT = """
suppressMessages(library(pROC))
d <- read.csv(commandArgs(TRUE)[1])
set.seed(1)
r <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
t <- system.time(ci <- ci.auc(r, method = "bootstrap", boot.n = as.integer(commandArgs(TRUE)[2]),
                              boot.stratified = TRUE, progress = "none"))
cat(t[["elapsed"]], ci[1], ci[3], "\\n")
"""


def _rscript(
    script: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, *args: str
) -> list[str] | None:
    """Run an R script on the data (columns y, a, b); its printed fields, or None without R."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, path = Path(tmp) / "d.csv", Path(tmp) / "script.R"
        np.savetxt(data, np.column_stack([y, a, b]), delimiter=",", header="y,a,b",
                   comments="", fmt=["%d", "%.17g", "%.17g"])  # fmt: skip
        path.write_text(script)
        out = subprocess.run(["Rscript", str(path), str(data), *args], capture_output=True,
                             text=True, check=False)  # fmt: skip
    return out.stdout.split() if out.returncode == 0 else None


def proc_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """(seconds, z) of pROC's paired DeLong test on the same data, or None without R."""
    out = _rscript(PROC, y, a, b)
    return None if out is None else (float(out[0]), float(out[1]))


def bootstraps(n: int, n_boot: int) -> None:
    """The report's bootstrap CIs on ``n`` cases, ``n_boot`` resamples each, timed; with R,
    pROC's stratified bootstrap CI of the same AUC side by side."""
    from fusion.stats.dca import net_benefit_ci
    from fusion.stats.evaluate import performance_table

    rng = np.random.default_rng(1)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    a = np.round(y + rng.normal(size=n), 3)  # 3 decimals: ties, as real scores have
    prob = 1 / (1 + np.exp(-(a - 1)))
    scores = pd.DataFrame({"case_id": range(n), "set": "test", "label": y, "model": "m",
                           "score": a, "prob": prob})  # fmt: skip
    start = time.perf_counter()
    auc = bootstrap_auc_ci(y, a, n_boot=n_boot, seed=1)
    t_auc = time.perf_counter() - start
    start = time.perf_counter()
    performance_table(scores, {"m": 0.3}, n_boot=n_boot, seed=1)
    t_perf = time.perf_counter() - start
    start = time.perf_counter()
    net_benefit_ci(y, prob, np.arange(0.01, 1.0, 0.01), n_boot=n_boot, seed=1)
    t_nb = time.perf_counter() - start
    print(f"\nbootstrap, n = {n:,}, {n_boot:,} resamples")
    print(f"fusion bootstrap_auc_ci (stratified):     {t_auc:6.2f} s  "
          f"CI {auc.ci_low:.4f}-{auc.ci_high:.4f}")  # fmt: skip
    print(f"fusion performance table (AUC, Brier, F1): {t_perf:6.2f} s")
    print(f"fusion net-benefit band (99 thresholds):  {t_nb:6.2f} s")
    out = _rscript(PROC_BOOT, y, a, a, str(n_boot))
    if out is None:
        print("pROC: Rscript or pROC not installed; no side-by-side figure")
        return
    seconds, low, high = (float(v) for v in out)
    print(f"pROC ci.auc(method = 'bootstrap'):        {seconds:6.2f} s  CI {low:.4f}-{high:.4f}"
          f"  fusion {seconds / t_auc:.0f}x faster")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--boot-n", type=int, default=100_000, help="cases of the bootstraps")
    parser.add_argument("--boot", type=int, default=2000, help="resamples (0: skip)")
    args = parser.parse_args()
    n = args.n
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
    assert abs(auc.auc - ref) < 1e-9
    print(f"n = {n:,}")
    print(f"sklearn roc_auc_score (AUC only):  {t_ref:6.2f} s")
    print(f"fusion roc_auc (AUC + DeLong CI):  {t_auc:6.2f} s  ratio {t_auc / t_ref:.2f}")
    for what, (sa, sb) in (
        ("continuous scores", (a, b)),
        ("scores rounded to 0.01 (ties)", (np.round(a, 2), np.round(b, 2))),
    ):
        t_test, test = timed(lambda sa=sa, sb=sb: delong_test(y, sa, sb))
        print(f"{what}:")
        print(f"  fusion delong_test (two scores):   {t_test:6.2f} s  z = {test.z:.6f}")
        proc = proc_delong(y, sa, sb)
        if proc is None:
            print("  pROC: Rscript or pROC not installed; no side-by-side figure")
            continue
        print(f"  pROC roc x 2 + roc.test (DeLong):  {proc[0]:6.2f} s  z = {proc[1]:.6f}  "
              f"fusion {proc[0] / t_test:.1f}x faster")  # fmt: skip
    if args.boot:
        bootstraps(args.boot_n, args.boot)


if __name__ == "__main__":
    main()
