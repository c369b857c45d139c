"""Clinical tables: logistic regression with odds ratios, and "Table 1" by outcome group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

VariableTypes = Sequence[str] | Mapping[str, str]


def _types(data: pd.DataFrame, variables: VariableTypes) -> dict[str, str]:
    """name -> continuous | categorical | binary; text columns are categorical."""
    if isinstance(variables, Mapping):
        types = dict(variables)
    else:
        types = {
            v: "continuous" if pd.api.types.is_numeric_dtype(data[v]) else "categorical"
            for v in variables
        }
    missing = [v for v in types if v not in data.columns]
    if missing:
        raise ValueError(f"columns not in the data: {', '.join(missing)}")
    bad = {v: t for v, t in types.items() if t not in ("continuous", "categorical", "binary")}
    if bad:
        raise ValueError(f"unknown variable types {bad}; use continuous, categorical or binary")
    return types


def _levels(series: pd.Series, reference: str | None) -> list[str]:
    levels = sorted(series.dropna().astype(str).unique())
    if reference is not None:
        if str(reference) not in levels:
            raise ValueError(f"reference level {reference!r} not among {levels}")
        levels.remove(str(reference))
        levels.insert(0, str(reference))
    return levels


def _design(
    data: pd.DataFrame, types: dict[str, str], references: Mapping[str, str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Numeric design matrix with an intercept; each categorical level but the reference
    becomes a 0/1 column named ``variable[level]``; term -> reference level."""
    columns: dict[str, pd.Series] = {"(Intercept)": pd.Series(1.0, index=data.index)}
    reference_of: dict[str, str] = {}
    for var, kind in types.items():
        if kind == "continuous":
            columns[var] = pd.to_numeric(data[var], errors="raise").astype(float)
            continue
        levels = _levels(data[var], references.get(var))
        text = data[var].astype(str).where(data[var].notna())
        for level in levels[1:]:
            term = f"{var}[{level}]"
            columns[term] = (text == level).astype(float).where(text.notna())
            reference_of[term] = levels[0]
    return pd.DataFrame(columns), reference_of


def logistic_or_table(
    data: pd.DataFrame,
    outcome: str,
    covariates: VariableTypes,
    reference: Mapping[str, str] | None = None,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Multivariable logistic regression (statsmodels Logit, as R's glm binomial) with
    Wald intervals (R's confint.default). Rows with a missing value are dropped.

    Columns: term, reference (the reference level of a categorical term), coef, se,
    odds_ratio, ci_low, ci_high (of the odds ratio), p_value, n. The intercept is not an
    odds ratio (its exponent is the odds of the outcome when every covariate is 0 or at
    its reference level), so its odds-ratio columns are empty and its coef stands alone.
    """
    import statsmodels.api as sm

    types = _types(data, covariates)
    frame = data[[outcome, *types]].dropna()
    y = frame[outcome].astype(float)
    if not set(np.unique(y)) <= {0.0, 1.0} or y.nunique() < 2:
        raise ValueError(f"outcome {outcome!r} must be 0/1 with both classes present")
    X, reference_of = _design(frame, types, reference or {})
    fit = sm.Logit(y, X).fit(disp=0, method="newton", maxiter=100)
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    coef, se = fit.params, fit.bse
    slope = (X.columns != "(Intercept)").astype(float)
    slope[slope == 0] = np.nan  # the intercept's odds-ratio columns stay empty
    return pd.DataFrame(
        {
            "term": X.columns,
            "reference": [reference_of.get(t, "") for t in X.columns],
            "coef": coef.to_numpy(),
            "se": se.to_numpy(),
            "odds_ratio": np.exp(coef.to_numpy()) * slope,
            "ci_low": np.exp((coef - z * se).to_numpy()) * slope,
            "ci_high": np.exp((coef + z * se).to_numpy()) * slope,
            "p_value": fit.pvalues.to_numpy(),
            "n": len(frame),
        }
    )


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def baseline_table(
    data: pd.DataFrame,
    group: str,
    variables: VariableTypes,
    alpha_normal: float = 0.05,
) -> pd.DataFrame:
    """ "Table 1" by a two-level group (e.g. the outcome).

    Continuous: mean +- SD and Welch's t-test when Shapiro-Wilk does not reject
    normality (p > ``alpha_normal``) in either group, else median [IQR] and the
    Mann-Whitney U test. Categorical and binary: n (%) per level; Pearson's chi-square
    (without continuity correction), or Fisher's exact test for a 2 x 2 table with an
    expected count below 5. The test used is a column.
    """
    types = _types(data, variables)
    frame = data.dropna(subset=[group])
    labels = sorted(frame[group].unique())
    if len(labels) != 2:
        raise ValueError(f"group {group!r} must have two levels, found {labels}")
    parts = [frame[frame[group] == g] for g in labels]
    names = [f"{group}={g} (n={len(p)})" for g, p in zip(labels, parts, strict=True)]
    rows = []
    for var, kind in types.items():
        if kind == "continuous":
            values = [pd.to_numeric(p[var], errors="raise").dropna().to_numpy() for p in parts]
            normal = all(len(v) >= 3 and stats.shapiro(v).pvalue > alpha_normal for v in values)
            if normal:
                cells = [f"{_fmt(v.mean())} ± {_fmt(v.std(ddof=1))}" for v in values]
                test, p = "Welch t-test", stats.ttest_ind(*values, equal_var=False).pvalue
            else:
                cells = [
                    f"{_fmt(np.median(v))} [{_fmt(np.quantile(v, 0.25))}, "
                    f"{_fmt(np.quantile(v, 0.75))}]"
                    for v in values
                ]
                test = "Mann-Whitney U"
                p = stats.mannwhitneyu(*values, alternative="two-sided").pvalue
            missing = sum(int(pp[var].isna().sum()) for pp in parts)
            rows.append(
                {"variable": var, "level": "mean ± SD" if normal else "median [IQR]",
                 names[0]: cells[0], names[1]: cells[1], "p_value": float(p), "test": test,
                 "missing": missing}
            )  # fmt: skip
            continue
        table = pd.crosstab(frame[var].astype(str).where(frame[var].notna()), frame[group])
        table = table.reindex(columns=labels, fill_value=0)
        counts = table.to_numpy()
        expected = stats.contingency.expected_freq(counts)
        if counts.shape == (2, 2) and (expected < 5).any():
            test, p = "Fisher exact", stats.fisher_exact(counts).pvalue
        elif counts.shape[0] < 2:
            test, p = "none (one level)", float("nan")
        else:
            test = "chi-square"
            p = stats.chi2_contingency(counts, correction=False).pvalue
        missing = int(frame[var].isna().sum())
        for i, level in enumerate(table.index):
            cells = [
                f"{counts[i, j]} ({100 * counts[i, j] / max(counts[:, j].sum(), 1):.1f}%)"
                for j in range(2)
            ]
            rows.append(
                {"variable": var, "level": str(level), names[0]: cells[0], names[1]: cells[1],
                 "p_value": float(p) if i == 0 else float("nan"),
                 "test": test if i == 0 else "", "missing": missing if i == 0 else 0}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["variable", "level", *names, "p_value", "test", "missing"])
