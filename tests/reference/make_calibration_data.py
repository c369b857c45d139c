"""Write calibration.csv, the data the calibration and reclassification references use
(run once; output committed).

    python tests/reference/make_calibration_data.py
    Rscript tests/reference/calibration.R   # r_val_prob.csv, r_improve_prob.csv, r_youden.csv

300 cases with a known risk; ``p_old`` is a miscalibrated model (too extreme, shifted),
``p_new`` a better one; ``p_tied`` is ``p_new`` rounded to two decimals (ties in the
smoother and in the reclassification counts).
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(20261201)
    n = 300
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    truth = -0.8 + 1.0 * x1 + 0.7 * x2
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-truth))).astype(int)
    old = 1 / (1 + np.exp(-(0.4 + 1.8 * (-0.8 + 1.0 * x1))))  # x1 only, overconfident
    new = 1 / (1 + np.exp(-(-0.7 + 0.9 * x1 + 0.8 * x2 + rng.normal(0, 0.3, n))))
    pd.DataFrame(
        {"y": y, "p_old": np.round(old, 8), "p_new": np.round(new, 8),
         "p_tied": np.round(new, 2).clip(0.01, 0.99)}
    ).to_csv(HERE / "calibration.csv", index=False)  # fmt: skip


if __name__ == "__main__":
    main()
