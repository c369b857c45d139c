"""Write the data sets the reference values are computed on (run once; outputs committed).

    python tests/reference/make_data.py

Then compute the references from these files: ``Rscript tests/reference/reference.R``
(R with pROC and glmnet: Debian packages r-base-core, r-cran-proc, r-cran-glmnet) and
``python tests/reference/make_dcurves.py`` (a Python with the dcurves package).
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(20261122)
    n = 140
    y = (rng.uniform(size=n) < 0.4).astype(int)
    # two correlated scores with ties (rounded), the first better than the second
    latent = rng.normal(size=n)
    score_a = np.round(1.2 * y + latent + rng.normal(0, 0.6, n), 1)
    score_b = np.round(0.7 * y + latent + rng.normal(0, 0.9, n), 1)
    prob = 1 / (1 + np.exp(-(-0.6 + 1.4 * (score_a - score_a.mean()) / score_a.std())))
    age = np.round(rng.normal(62, 11, n), 1)
    sex = np.where(rng.uniform(size=n) < 0.55, "male", "female")
    site = rng.choice(["A", "B", "C"], size=n, p=[0.5, 0.3, 0.2])
    smoker = (rng.uniform(size=n) < 0.3).astype(int)
    glucose = np.round(rng.lognormal(np.log(7), 0.3, n), 2)  # skewed: median [IQR]
    pd.DataFrame(
        {"y": y, "score_a": score_a, "score_b": score_b, "prob": np.round(prob, 6),
         "age": age, "sex": sex, "site": site, "smoker": smoker, "glucose": glucose}
    ).to_csv(HERE / "data.csv", index=False)  # fmt: skip

    m = 90
    y2 = (rng.uniform(size=m) < 0.5).astype(int)
    pd.DataFrame({"y": y2, "score": np.round(0.8 * y2 + rng.normal(size=m), 2)}).to_csv(
        HERE / "unpaired.csv", index=False
    )

    # LASSO: 150 cases, 12 standardised features, 3 of them informative; fixed folds
    k, p = 150, 12
    X = rng.normal(size=(k, p))
    X[:, 5] = 0.7 * X[:, 0] + 0.3 * X[:, 5]  # correlated with an informative feature
    logit = -0.3 + 1.2 * X[:, 0] - 0.9 * X[:, 1] + 0.6 * X[:, 2]
    yl = (rng.uniform(size=k) < 1 / (1 + np.exp(-logit))).astype(int)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # population SD, as the pipeline's scaler
    frame = pd.DataFrame(np.round(X, 8), columns=[f"x{i + 1}" for i in range(p)])
    frame["y"] = yl
    frame["foldid"] = np.tile(np.arange(1, 6), k // 5)[rng.permutation(k)]
    frame.to_csv(HERE / "lasso.csv", index=False)


if __name__ == "__main__":
    main()
