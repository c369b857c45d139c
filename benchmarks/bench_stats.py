"""DeLong AUC and paired test at n = 10^6: O(n log n) by midranks (Sun & Xu, 2014).

    .venv/bin/python benchmarks/bench_stats.py [--n 1000000]

Prints the time of roc_auc and delong_test, and, side by side, scikit-learn's
roc_auc_score (AUC only, no variance) on the same data as the reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from fusion.stats import delong_test, roc_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    a = y + rng.normal(size=n)
    b = 0.5 * y + rng.normal(size=n)

    def timed(f):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        result = f()
        return time.perf_counter() - start, result

    t_ref, ref = timed(lambda: roc_auc_score(y, a))
    t_auc, auc = timed(lambda: roc_auc(y, a))
    t_test, test = timed(lambda: delong_test(y, a, b))
    assert abs(auc.auc - ref) < 1e-9
    print(f"n = {n:,}")
    print(f"sklearn roc_auc_score (AUC only):  {t_ref:6.2f} s")
    print(f"fusion roc_auc (AUC + DeLong CI):  {t_auc:6.2f} s  ratio {t_auc / t_ref:.2f}")
    print(f"fusion delong_test (two scores):   {t_test:6.2f} s  z = {test.z:.2f}")


if __name__ == "__main__":
    main()
