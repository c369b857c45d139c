"""Make tests/reference/combat.csv: synthetic features from three sites that differ in
location and scale, with age and sex to preserve, harmonised by neuroCombat 0.2.12.

neuroCombat is not a fusion dependency (it pins nothing and is unmaintained); run this
once in a throwaway environment:

    python -m venv /tmp/nc && /tmp/nc/bin/pip install neuroCombat==0.2.12 numpy pandas
    /tmp/nc/bin/python tests/reference/make_combat_fixture.py

Ages are whole years: neuroCombat casts continuous covariates to float32.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

rng = np.random.default_rng(20261201)
sizes = {"A": 20, "B": 25, "C": 15}
shift = {"A": 0.0, "B": 1.5, "C": -1.0}
scale = {"A": 1.0, "B": 2.0, "C": 0.6}
rows = []
for site, n in sizes.items():
    for _ in range(n):
        age = int(rng.integers(40, 85))
        sex = str(rng.choice(["female", "male"]))
        base = rng.normal(0, 1, 6) + 0.05 * (age - 60) + 0.8 * (sex == "male")
        rows.append(
            {
                "site": site,
                "age": age,
                "sex": sex,
                **{f"f{k}": 10 + k + shift[site] + scale[site] * base[k] for k in range(6)},
            }
        )
frame = pd.DataFrame(rows)
features = [f"f{k}" for k in range(6)]
out = neuroCombat(
    dat=frame[features].to_numpy(dtype=float).T,
    covars=frame[["site", "age", "sex"]],
    batch_col="site",
    categorical_cols=["sex"],
    continuous_cols=["age"],
)
harmonised = pd.DataFrame(out["data"].T, columns=[f"{c}_combat" for c in features])
target = Path(__file__).with_name("combat.csv")
pd.concat([frame, harmonised], axis=1).to_csv(target, index=False, float_format="%.12g")
print(f"wrote {target}")
