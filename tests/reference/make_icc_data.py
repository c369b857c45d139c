"""Write tests/reference/icc_data.csv: 12 cases measured 4 times (an ROI and three
perturbations) for 3 features of high, middling and poor reliability, plus a condition
shift that ICC(3,1) ignores and ICC(1,1) does not. Then `Rscript tests/reference/icc.R`
writes r_icc.csv with psych::ICC's values."""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
n, k = 12, 4
rows = []
truth = rng.normal(0, 1, (n, 3))
for case in range(n):
    for rater in range(k):
        noise = rng.normal(0, [0.1, 0.6, 1.5])
        shift = np.array([0.0, 0.3, 0.0]) * rater  # a systematic shift of one condition
        values = truth[case] + noise + shift
        rows.append({"case": case, "rater": rater, **{f"f{j}": v for j, v in enumerate(values)}})
target = Path(__file__).with_name("icc_data.csv")
pd.DataFrame(rows).to_csv(target, index=False, float_format="%.17g")
print(f"wrote {target}")
