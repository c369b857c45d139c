"""ComBat harmonisation of features across sites, as a scikit-learn transformer fitted
on training rows only.

ComBat (Johnson, Li and Rabinovic, Biostatistics 2007; for imaging features Fortin et
al., NeuroImage 2018, the neuroCombat package) models each feature as

    y_ij = alpha + X_ij beta + gamma_i + delta_i * eps_ij

for a case j of site i: a grand mean, the effects of biological covariates to preserve,
and a site's additive (gamma) and multiplicative (delta) effects. Features are
standardised by the pooled residual SD, each site's location and scale are estimated
and shrunk towards their mean over features by empirical Bayes (parametric priors,
iterated to convergence), and the site effects are removed. The formulas, defaults and
the iteration's stopping rule are neuroCombat 0.2.12's; ``fit_transform`` agrees with
``neuroCombat(...)["data"]`` to 1e-6 on ``tests/reference/combat.csv``.

Unlike neuroCombat, the parameters are learned by :meth:`ComBat.fit` and applied by
:meth:`ComBat.transform` without looking at the rows being transformed, so inside a
scikit-learn Pipeline nothing of a validation or test case shapes them (WORC fits its
ComBat on training and test features together). A row's own covariates give its
preserved part (neuroCombat's ``neuroCombatFromTraining`` uses the training mean
instead). A site that had no training row follows ``unseen``:

- ``error`` (default): a ``ValueError`` naming the site;
- ``own``: the site's location and scale are estimated, by the same empirical Bayes,
  from the rows of that site being transformed (their features only, never labels),
  on the training standardisation. Its rows are then harmonised together, so a single
  row of an unseen site cannot be (``ValueError``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

Unseen = Literal["error", "own"]


def _priors(gamma_hat: np.ndarray, delta_hat: np.ndarray) -> tuple[float, float, float, float]:
    """One site's empirical Bayes hyper-parameters over features: the normal prior of
    gamma (mean, variance) and the inverse-gamma prior of delta (a, b), by moments."""
    gamma_bar, t2 = float(gamma_hat.mean()), float(gamma_hat.var(ddof=1))
    m, s2 = float(delta_hat.mean()), float(delta_hat.var(ddof=1))
    return gamma_bar, t2, (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2


def _shrink(z: np.ndarray, conv: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """One site's standardised rows (cases, features) -> (gamma*, delta*) per feature,
    parametric empirical Bayes iterated until the largest relative change is below
    ``conv`` (neuroCombat's ``it_sol``)."""
    n = z.shape[0]
    gamma_hat = z.mean(axis=0)
    delta_hat = z.var(axis=0, ddof=1)
    delta_hat[delta_hat == 0] = 1
    gamma_bar, t2, a, b = _priors(gamma_hat, delta_hat)
    g_old, d_old = gamma_hat.copy(), delta_hat.copy()
    while True:
        g_new = (t2 * n * gamma_hat + d_old * gamma_bar) / (t2 * n + d_old)
        sum2 = ((z - g_new) ** 2).sum(axis=0)
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max((abs(g_new - g_old) / g_old).max(), (abs(d_new - d_old) / d_old).max())
        g_old, d_old = g_new, d_new
        if not change > conv:
            return g_new, d_new


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat with covariates, fitted on the training rows (module docstring).

    ``X`` is a DataFrame whose column ``site`` names each row's site (scanner,
    institution); the columns in ``covariates`` (numeric; encode categorical ones as
    0/1 columns) are the biological effects to preserve; every other column is a
    feature to harmonise. ``transform`` returns the features (the site and covariate
    columns removed), shape (rows, features), in their input order; missing values are
    not allowed (impute before).

    Fitted attributes: ``sites_`` (training sites, sorted), ``features_``,
    ``beta_`` ((1 + covariates, features): the grand mean and covariate effects),
    ``var_pooled_`` (features,), ``gamma_star_`` and ``delta_star_`` ((sites, features)).

    Raises:
        ValueError: a site with fewer than two training rows, a missing value, or a site
            unseen in training (with ``unseen="error"``; ``own`` with one row).
    """

    def __init__(self, site: str = "site", covariates: tuple[str, ...] = (),
                 unseen: Unseen = "error") -> None:  # fmt: skip
        self.site = site
        self.covariates = covariates
        self.unseen = unseen

    def _split(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(X, pd.DataFrame) or self.site not in X:
            raise ValueError(f"ComBat needs a DataFrame with the site column {self.site!r}")
        covariates = list(self.covariates)
        features = [c for c in X.columns if c != self.site and c not in covariates]
        if hasattr(self, "features_") and features != self.features_:
            raise ValueError("ComBat: the features differ from those it was fitted on")
        values = X[features].to_numpy(dtype=float)
        if np.isnan(values).any():
            raise ValueError("ComBat: missing feature values (impute before harmonising)")
        return X[self.site].astype(str).to_numpy(), X[covariates].to_numpy(float), values

    def fit(self, X: pd.DataFrame, y: object = None) -> ComBat:
        sites, cov, values = self._split(X)
        self.features_ = [c for c in X.columns if c != self.site and c not in self.covariates]
        self.sites_, counts = np.unique(sites, return_counts=True)
        if (counts < 2).any():
            few = ", ".join(self.sites_[counts < 2])
            raise ValueError(f"ComBat: site(s) {few} have fewer than two training rows")
        onehot = (sites[:, None] == self.sites_[None, :]).astype(float)
        design = np.hstack([onehot, cov])
        coef = np.linalg.solve(design.T @ design, design.T @ values)  # (sites + cov, features)
        grand = (counts / len(sites)) @ coef[: len(self.sites_)]
        self.beta_ = np.vstack([grand, coef[len(self.sites_) :]])
        residual = values - design @ coef
        var_pooled = (residual**2).mean(axis=0)
        var_pooled[var_pooled == 0] = np.median(var_pooled != 0)  # as neuroCombat
        self.var_pooled_ = var_pooled
        z = self._standardise(cov, values)
        shrunk = [_shrink(z[sites == s]) for s in self.sites_]
        self.gamma_star_ = np.array([g for g, _ in shrunk])
        self.delta_star_ = np.array([d for _, d in shrunk])
        return self

    def _standardise(self, cov: np.ndarray, values: np.ndarray) -> np.ndarray:
        preserved = self.beta_[0] + cov @ self.beta_[1:]
        return (values - preserved) / np.sqrt(self.var_pooled_)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "gamma_star_")
        sites, cov, values = self._split(X)
        z = self._standardise(cov, values)
        gamma, delta = np.empty_like(z), np.empty_like(z)
        for site in np.unique(sites):
            rows = sites == site
            known = np.flatnonzero(self.sites_ == site)
            if len(known):
                gamma[rows], delta[rows] = self.gamma_star_[known[0]], self.delta_star_[known[0]]
            elif self.unseen == "own" and rows.sum() >= 2:
                gamma[rows], delta[rows] = _shrink(z[rows])
            else:
                why = ("has one row here: its location and scale cannot be estimated"
                       if self.unseen == "own" else "had no training row (unseen='error'); "
                       "set unseen='own' to estimate it from its own rows")  # fmt: skip
                raise ValueError(f"ComBat: site {site!r} {why}")
        adjusted = (z - gamma) / np.sqrt(delta)
        return adjusted * np.sqrt(self.var_pooled_) + self.beta_[0] + cov @ self.beta_[1:]

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "features_")
        return np.asarray(self.features_, dtype=object)


class SiteComBat(TransformerMixin, BaseEstimator):
    """:class:`ComBat` as a step of a model's Pipeline (before the imputer): it takes the
    model's DataFrame (indexed by case_id) and harmonises the columns that start with
    one of ``prefixes`` (``radiomics:``, ``deep:``), passing the others through.

    The site of each row is looked up in ``sites`` (case_id -> site, from the manifest)
    and its biological covariates in ``covariates`` (case_id -> numeric columns; 0/1 for
    categorical levels), so neither has to be a feature. Missing feature values are
    filled with the training rows' median first, and missing covariates with the training
    mean (both learned in ``fit``, as the model's own imputer would); a column missing in
    every training row passes through unharmonised. Fitted: ``combat_`` (the
    :class:`ComBat`), ``columns_`` (the harmonised columns), ``medians_``.

    Raises:
        ValueError: a row whose case has no site, or what :class:`ComBat` raises.
    """

    def __init__(self, sites: pd.Series | None = None, covariates: pd.DataFrame | None = None,
                 prefixes: tuple[str, ...] = ("radiomics:", "deep:"),
                 unseen: Unseen = "error") -> None:  # fmt: skip
        self.sites = sites
        self.covariates = covariates
        self.prefixes = prefixes
        self.unseen = unseen

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise ValueError("SiteComBat needs a DataFrame indexed by case_id")
        sites = self.sites.reindex(X.index.astype(str))
        if sites.isna().any():
            missing = ", ".join(map(str, X.index[sites.isna().to_numpy()][:5]))
            raise ValueError(f"ComBat: no site for case(s) {missing}")
        frame = X[self.columns_].fillna(self.medians_)
        frame.insert(0, "__site__", sites.to_numpy())
        if self.covariates is not None and len(self.covariates.columns):
            cov = self.covariates.reindex(X.index.astype(str)).fillna(self.cov_means_)
            for column in cov.columns:
                frame[f"__cov__{column}"] = cov[column].to_numpy(float)
        return frame

    def _covariate_names(self) -> tuple[str, ...]:
        names = [] if self.covariates is None else list(self.covariates.columns)
        return tuple(f"__cov__{c}" for c in names)

    def fit(self, X: pd.DataFrame, y: object = None) -> SiteComBat:
        chosen = [c for c in X.columns if str(c).startswith(self.prefixes)]
        self.medians_ = X[chosen].median()
        self.columns_ = [c for c in chosen if not np.isnan(self.medians_[c])]
        if self.covariates is not None:
            self.cov_means_ = self.covariates.reindex(X.index.astype(str)).mean()
        self.combat_ = ComBat("__site__", self._covariate_names(), self.unseen)
        self.combat_.fit(self._frame(X))
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "combat_")
        out = X.copy()
        out[self.columns_] = self.combat_.transform(self._frame(X))
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "combat_")
        return self.feature_names_in_
