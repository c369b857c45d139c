"""Numbers as a reader sees them: p-values, counts and tables in HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd


def p_text(value: float | None) -> str:
    """A p-value as a reader sees it: '<0.001', never 0.000; '–' when missing."""
    if value is None or pd.isna(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


# columns that hold p-values, and columns that hold counts (a CSV read back gives a
# count with a missing value a float dtype: "6.000" features, "4.000" epochs)
P_COLUMN = re.compile(r"(^p$|_p$|^p_|p_value)")
COUNT_COLUMN = re.compile(
    r"(^n$|^n_|_n$|count|epoch|voxels|cases|positives|events|folds|features|parameters|"
    r"^tp$|^fp$|^tn$|^fn$)"
)


def html_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as an HTML table: p-values as '<0.001' (never 0.000), counts as whole
    numbers, other floats to ``digits``."""
    shown = frame.copy()
    for col in shown.columns:
        name = str(col)
        values = shown[col]
        if P_COLUMN.search(name) and pd.api.types.is_numeric_dtype(values):
            shown[col] = values.map(p_text)
        elif pd.api.types.is_float_dtype(values):
            whole = values.dropna().map(float.is_integer).all()
            if whole and COUNT_COLUMN.search(name):
                shown[col] = values.map(lambda v: "–" if pd.isna(v) else f"{v:.0f}")
            else:
                shown[col] = values.map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")
    return shown.to_html(index=False, border=0, na_rep="–", escape=True)


def _read(tables: Path, name: str) -> pd.DataFrame:
    path = tables / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()
