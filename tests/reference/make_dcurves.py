"""Net-benefit reference values from the Python package dcurves (run once; output committed).

    python tests/reference/make_dcurves.py   # with dcurves installed (pip install dcurves)

Reads data.csv; writes dcurves_net_benefit.csv (threshold, model, treat_all, treat_none).
"""

from pathlib import Path

import dcurves
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    data = pd.read_csv(HERE / "data.csv")[["y", "prob"]]
    thresholds = np.round(np.arange(0.01, 1.0, 0.01), 2)
    result = dcurves.dca(data=data, outcome="y", modelnames=["prob"], thresholds=thresholds)
    wide = result.pivot(index="threshold", columns="model", values="net_benefit")
    out = pd.DataFrame(
        {
            "threshold": wide.index,
            "model": wide["prob"].to_numpy(),
            "treat_all": wide["all"].to_numpy(),
            "treat_none": wide["none"].to_numpy(),
        }
    )
    out.to_csv(HERE / "dcurves_net_benefit.csv", index=False, float_format="%.17g")
    print(f"dcurves {dcurves.__version__ if hasattr(dcurves, '__version__') else ''}: "
          f"{len(out)} thresholds")  # fmt: skip


if __name__ == "__main__":
    main()
