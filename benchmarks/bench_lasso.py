"""LASSO with cross-validation: fusion's LassoSelector beside R's cv.glmnet, one run.

    .venv/bin/python benchmarks/bench_lasso.py [--n 250] [--p 100] [--folds 5] [--repeats 3]

Same standardised data, same fold ids, same 100-lambda path (glmnet's default, computed
once and given to both), binomial deviance. Prints each side's best time of
``--repeats`` (R's from ``system.time`` inside R, so R's start-up is not counted;
fusion's after one warm-up call that loads the numba-compiled solver), the ratio, and
whether lambda.min, lambda.1se and the selected features agree. Needs ``Rscript`` with
glmnet (Debian: r-base-core r-cran-glmnet).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import PredefinedSplit

from fusion.learn.lasso import LassoSelector, lambda_grid

R_SCRIPT = """
suppressMessages(library(glmnet))
d <- read.csv("{data}"); lam <- read.csv("{lambdas}")$lambda
X <- as.matrix(d[, grepl("^x", names(d))])
best <- Inf
for (r in 1:{repeats}) {{
  t <- system.time(cv <- cv.glmnet(X, d$y, family = "binomial", lambda = lam,
                                   foldid = d$foldid, standardize = FALSE,
                                   type.measure = "deviance"))[["elapsed"]]
  best <- min(best, t)
}}
b <- as.matrix(coef(cv, s = "lambda.1se"))[-1, 1]
cat(best, cv$lambda.min, cv$lambda.1se, paste(which(b != 0) - 1, collapse = " "),
    length(cv$lambda), sep = "\\n")
"""


def synthetic(
    n: int, p: int, folds: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features, 8 informative and 10 highly correlated with them, and a
    logistic outcome; fold ids stratified by outcome."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    X[:, 10:20] = X[:, :10] + 0.3 * rng.standard_normal((n, 10))
    beta = np.zeros(p)
    beta[:8] = 0.6
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ beta - 0.5)))).astype(int)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    foldid = np.empty(n, dtype=int)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        foldid[rows] = np.arange(len(rows)) % folds + 1
    return X, y, foldid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--p", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y, foldid = synthetic(args.n, args.p, args.folds)
    lambdas = lambda_grid(X, y.astype(float), 100, None)

    def fit() -> LassoSelector:
        return LassoSelector(lambdas=lambdas, cv=PredefinedSplit(foldid - 1)).fit(X, y)

    start = time.perf_counter()
    fit()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sel = fit()
        times.append(time.perf_counter() - start)
    ours = min(times)

    with tempfile.TemporaryDirectory() as tmp:
        data, grid = Path(tmp) / "data.csv", Path(tmp) / "lambdas.csv"
        table = pd.DataFrame(X, columns=[f"x{j + 1}" for j in range(args.p)])
        table["y"], table["foldid"] = y, foldid
        table.to_csv(data, index=False, float_format="%.17g")
        pd.DataFrame({"lambda": lambdas}).to_csv(grid, index=False, float_format="%.17g")
        script = R_SCRIPT.format(data=data, lambdas=grid, repeats=args.repeats)
        out = subprocess.run(
            ["Rscript", "-e", script], capture_output=True, text=True, check=True
        ).stdout.split("\n")
    r_time, r_min, r_1se = float(out[0]), float(out[1]), float(out[2])
    r_support = [int(j) for j in out[3].split()]
    print(
        f"n = {args.n}, p = {args.p}, {args.folds}-fold CV, 100 lambdas "
        f"(glmnet fitted {out[4]} of them before its early stop)"
    )
    print(f"R cv.glmnet:          {r_time:6.3f} s")
    print(
        f"fusion LassoSelector: {ours:6.3f} s  (first call {first:.2f} s, numba cache load "
        f"or compile included)  speed ratio glmnet/fusion {r_time / ours:.2f}"
    )
    print(f"lambda.min  R {r_min:.6g}  fusion {sel.lambda_min_:.6g}")
    print(f"lambda.1se  R {r_1se:.6g}  fusion {sel.lambda_1se_:.6g}")
    same = sel.get_support(indices=True).tolist() == r_support
    print(f"features at lambda.1se: {len(r_support)} in R, same in fusion: {same}")


if __name__ == "__main__":
    main()
