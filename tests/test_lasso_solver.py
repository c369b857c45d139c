"""The compiled binomial LASSO path: optimal by its KKT conditions on the designs that
made earlier versions slow or stall, and equal to an independent solver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from fusion.learn.lasso import lambda_grid
from fusion.learn.lasso_solver import binomial_lasso_path

REF = Path(__file__).resolve().parent / "reference"
MAX_SWEEPS = 10_000


def design(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, p = {"iid": (250, 100), "correlated": (250, 100), "wide": (120, 400)}[kind]
    X = rng.standard_normal((n, p))
    if kind != "iid":  # blocks of near-copies, as radiomics and deep features come
        X[:, 10:20] = X[:, :10] + 0.3 * rng.standard_normal((n, 10))
    beta = np.zeros(p)
    beta[:8] = 0.6
    y = (rng.uniform(size=n) < expit(X @ beta - 0.5)).astype(float)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def kkt_violation(X: np.ndarray, y: np.ndarray, coef: np.ndarray, b0: float, lam: float) -> float:
    """The largest breach of the optimality conditions of ``-loglik / n + lam ||b||_1``:
    the intercept's gradient, ``|g_j| <= lam`` where b_j = 0 and ``g_j = lam sign(b_j)``
    elsewhere. The solver's ``tol`` bounds each breach divided by the square root of
    its curvature (at most 1/2), so a breach below ``tol`` means converged."""
    r = y - expit(X @ coef + b0)
    g = X.T @ r / len(y)
    on = coef != 0
    breach = np.where(on, np.abs(g - lam * np.sign(coef)), np.maximum(np.abs(g) - lam, 0))
    return max(breach.max(), abs(r.mean()))


@pytest.mark.parametrize("kind", ["iid", "correlated", "wide"])
def test_every_lambda_is_optimal(kind: str) -> None:
    X, y = design(kind)
    lambdas = lambda_grid(X, y, 100, None)
    coefs, intercepts, sweeps = binomial_lasso_path(X, y, lambdas, tol=1e-8)
    assert sweeps.max() < MAX_SWEEPS
    worst = max(
        kkt_violation(X, y, c, b, lam) for c, b, lam in zip(coefs, intercepts, lambdas, strict=True)
    )
    assert worst < 1e-8
    assert np.abs(coefs[0]).max() < 1e-12  # lambda_max selects nothing
    assert (coefs[-1] != 0).sum() > 8  # and the path ends with the signal and more


def test_the_demo_fold_where_support_steps_cycled_converges() -> None:
    """A fold of the demo's radiomics features (121 cases, 35 features correlated up to
    0.91) where exact support steps that stopped at a sign change sent coordinate
    descent round a cycle until the sweep cap (10,000) at the 31st lambda."""
    data = np.load(REF / "lasso_cycle.npz")
    X, y, lambdas = data["X"], data["y"], data["lambdas"]
    coefs, intercepts, sweeps = binomial_lasso_path(X, y, lambdas, tol=1e-4)
    assert sweeps.max() < 2_000
    i = 30
    assert kkt_violation(X, y, coefs[i], intercepts[i], lambdas[i]) < 1e-4


def test_agrees_with_scikit_learn_saga() -> None:
    """An independent solver of the same objective: saga with C = 1 / (n lambda) and an
    unpenalised intercept."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((80, 6))
    y = (rng.uniform(size=80) < expit(X[:, 0] - 0.5 * X[:, 1])).astype(float)
    lambdas = lambda_grid(X, y, 20, None)
    coefs, intercepts, _ = binomial_lasso_path(X, y, lambdas, tol=1e-10)
    for i in (5, 12, 19):
        saga = LogisticRegression(
            l1_ratio=1.0, solver="saga", C=1 / (len(y) * lambdas[i]), tol=1e-12,
            max_iter=100_000,
        ).fit(X, y)  # fmt: skip
        assert np.allclose(coefs[i], saga.coef_[0], atol=1e-5)
        assert intercepts[i] == pytest.approx(saga.intercept_[0], abs=1e-5)
