"""The binomial LASSO path by coordinate descent, as glmnet solves it, compiled by numba.

Friedman, Hastie and Tibshirani (2010), "Regularization paths for generalized linear
models via coordinate descent", J Stat Softw 33(1), sections 2-3: for each lambda, from
the largest down, warm-started at the previous solution,

- an outer loop of iteratively reweighted least squares (the quadratic approximation of
  the log-likelihood at the current fit, weights ``p (1 - p)``),
- an inner loop of cyclic coordinate descent with soft-thresholding on the weighted
  least-squares problem, the unpenalised intercept updated first in every sweep,
- cycling over the non-zero coefficients until they converge, then once over the whole
  set to see whether another feature enters (glmnet's active-set cycling),
- over the *strong set* of Tibshirani et al. (2012, JRSS-B 74(2)) only: the features
  already active and those whose gradient exceeds ``2 lambda - lambda_prev``; when it has
  converged, any other feature that violates the KKT condition ``|x_j' (y - p)| / n <=
  lambda`` joins the set and the fit repeats.

It minimises ``-loglik / n + lambda * ||beta||_1``, glmnet's objective. The previous
solver (glum's general GLM path) gave the same coefficients 15-25 times slower on the
small problems of a study's models stage, where the LASSO runs in every CV fold of every
model; ``benchmarks/bench_lasso.py`` compares this one with ``cv.glmnet`` side by side.

Two details keep the answers those of the exact minimiser rather than of glmnet's
approximations: the residual uses the true probabilities (only the IRLS weights are
floored at ``1e-5``, as glmnet floors them, so a nearly separated fold stays stable),
and a lambda is done when the objective's own KKT conditions hold to ``tol``, measured
like a coefficient change weighted by the curvature ``h_j`` (``|violation_j| /
sqrt(h_j)``). glmnet's default ``thresh = 1e-7`` (on ``h_j delta_j^2``, times the null
deviance) is about 3e-4 in these units; fusion's default 1e-4 is a little stricter, and
the glmnet agreement test runs at 1e-8 against ``thresh = 1e-14``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

WEIGHT_FLOOR = 1e-5  # glmnet's pmin: IRLS weights p(1 - p) never fall below it
# The exact support step is tried once the signs have stayed the same for this many sweeps
# without convergence (benchmarks/bench_lasso.py: 1 is fastest when n > p and slowest when
# p > n, where the support nears n; 10 balances the two).
SETTLED_SWEEPS = 10
# A support step that stops at a sign change can send coordinate descent round a cycle
# (a feature dropped there re-enters, another sign flips); after this many unsuccessful
# ones in an IRLS step, coordinate descent alone finishes it (it always converges).
SUPPORT_TRIES = 3


@njit(cache=True)
def _expit(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _support_step(X, lam, b0, beta, w, z, strong):  # noqa: ANN001, ANN202
    """Move to the exact minimiser of the weighted least-squares LASSO step on the
    current support and signs, or towards it as far as the signs allow.

    With the support and signs of ``beta`` fixed, that minimiser solves a linear system
    in the intercept and the non-zero coefficients. If no sign flips, it is taken
    whole; it is the step's solution (returned with True) when every other strong
    feature also satisfies its KKT condition. If a sign would flip, the step stops
    where the first coefficient reaches zero (an active-set step: the objective falls
    along the segment). Coordinate descent then goes on from the new point. This is
    what reaches ``tol`` = 1e-8 on correlated features, where plain coordinate descent
    converges linearly at a rate close to 1.
    """
    n, p = X.shape
    support = np.flatnonzero(beta)
    m = len(support)
    if m + 1 > n:
        return b0, beta, False
    A = np.empty((n, m + 1))
    A[:, 0] = 1.0
    for a in range(m):
        A[:, a + 1] = X[:, support[a]]
    Aw = A * w[:, None]
    rhs = Aw.T @ z / n
    for a in range(m):
        rhs[a + 1] -= lam * np.sign(beta[support[a]])
    try:
        sol = np.linalg.solve(Aw.T @ A / n, rhs)
    except Exception:  # noqa: BLE001 - singular: coordinate descent goes on
        return b0, beta, False
    t, blocking = 1.0, -1
    for a in range(m):
        old = beta[support[a]]
        if np.sign(sol[a + 1]) != np.sign(old):
            ta = old / (old - sol[a + 1])
            if ta < t:
                t, blocking = ta, a
    new = beta.copy()
    for a in range(m):
        new[support[a]] += t * (sol[a + 1] - beta[support[a]])
    if blocking >= 0:
        new[support[blocking]] = 0.0
        return b0 + t * (sol[0] - b0), new, False
    r = w * (z - A @ sol)
    for j in range(p):
        if strong[j] and new[j] == 0.0 and abs(X[:, j] @ r) / n > lam * (1.0 + 1e-9):
            return sol[0], new, False
    return sol[0], new, True


@njit(cache=True)
def _irls_cd(X, y, lam, beta, b0, eta, strong, tol, max_sweeps):  # noqa: ANN001, ANN202
    """Solve one lambda on the features where ``strong`` is True, in place on ``beta``
    and ``eta``; return the intercept and the number of sweeps used."""
    n, p = X.shape
    w = np.empty(n)
    z = np.empty(n)
    res = np.empty(n)
    h = np.zeros(p)
    sweeps = 0
    while sweeps < max_sweeps:
        beta_old, b0_old, eta_old = beta.copy(), b0, eta.copy()
        f_old = _objective(y, eta, beta, lam)
        for i in range(n):
            q = _expit(eta[i])
            w[i] = max(q * (1.0 - q), WEIGHT_FLOOR)
            res[i] = y[i] - q  # = w * (working response - eta)
            z[i] = eta[i] + res[i] / w[i]
        wsum = w.sum()
        for j in range(p):
            if strong[j]:
                h[j] = (w * X[:, j] * X[:, j]).sum() / n
        signs = np.sign(beta)
        settled = 0  # sweeps the signs have not changed
        tries = 0  # support steps that did not solve the step
        full = True  # a sweep over the whole strong set, else over the non-zero ones only
        while sweeps < max_sweeps:  # coordinate descent on the quadratic approximation
            sweeps += 1
            change = 0.0
            d = res.sum() / wsum
            if d != 0.0:
                b0 += d
                res -= w * d
                change = max(change, np.sqrt(wsum / n) * abs(d))
            for j in range(p):
                if not strong[j] or h[j] == 0.0 or (not full and beta[j] == 0.0):
                    continue
                g = 0.0
                for i in range(n):
                    g += X[i, j] * res[i]
                u = g / n + h[j] * beta[j]
                new = 0.0
                if u > lam:
                    new = (u - lam) / h[j]
                elif u < -lam:
                    new = (u + lam) / h[j]
                d = new - beta[j]
                if d != 0.0:
                    beta[j] = new
                    for i in range(n):
                        res[i] -= w[i] * X[i, j] * d
                    change = max(change, np.sqrt(h[j]) * abs(d))
            if change < tol:
                if full:
                    break
                full = True  # the non-zero ones converged: does any other feature enter?
                continue
            full = False
            now = np.sign(beta)
            settled = settled + 1 if np.all(now == signs) else 0
            if settled >= SETTLED_SWEEPS and tries < SUPPORT_TRIES:
                settled = 0  # step to the settled support's exact solution
                tries += 1
                b0, stepped, solved = _support_step(X, lam, b0, beta, w, z, strong)
                beta[:] = stepped
                if solved:
                    break
                res[:] = w * (z - b0 - X @ beta)
                now = np.sign(beta)
            signs = now
        eta[:] = b0  # the linear predictor at the new coefficients
        for j in range(p):
            if beta[j] != 0.0:
                eta += X[:, j] * beta[j]
        # a proximal Newton step: backtrack if it did not lower the objective (pure IRLS
        # can cycle near separation, where the quadratic approximation is poor)
        t = 1.0
        while _objective(y, eta, beta, lam) > f_old + 1e-12 * abs(f_old) and t > 1e-6:
            t *= 0.5
            beta[:] = beta_old + 0.5 * (beta - beta_old)
            b0 = b0_old + 0.5 * (b0 - b0_old)
            eta[:] = eta_old + 0.5 * (eta - eta_old)
        # converged when the true objective's KKT conditions hold to tol (in the same
        # curvature-weighted units as a coefficient change): one gradient, where
        # confirming by another IRLS step would cost a sweep and a support step
        r = np.empty(n)
        for i in range(n):
            r[i] = y[i] - _expit(eta[i])
        worst = abs(r.sum() / n) / np.sqrt(wsum / n)
        for j in range(p):
            if strong[j] and h[j] > 0.0:
                g = (X[:, j] @ r) / n
                on = beta[j] != 0.0
                off = abs(g - lam * np.sign(beta[j])) if on else max(abs(g) - lam, 0.0)
                worst = max(worst, off / np.sqrt(h[j]))
        if worst < tol:
            break
    return b0, sweeps


@njit(cache=True)
def _objective(y, eta, beta, lam):  # noqa: ANN001, ANN202
    """``-loglik / n + lambda * ||beta||_1``."""
    f = 0.0
    for i in range(len(y)):
        e = eta[i]
        f += max(e, 0.0) + np.log1p(np.exp(-abs(e))) - y[i] * e
    return f / len(y) + lam * np.abs(beta).sum()


@njit(cache=True)
def _gradient(X, y, eta):  # noqa: ANN001, ANN202
    """``x_j' (y - p) / n`` for every feature."""
    n, p = X.shape
    r = np.empty(n)
    for i in range(n):
        r[i] = y[i] - _expit(eta[i])
    return X.T @ r / n


@njit(cache=True)
def _path(X, y, lambdas, tol, max_sweeps):  # noqa: ANN001, ANN202
    n, p = X.shape
    coefs = np.zeros((len(lambdas), p))
    intercepts = np.zeros(len(lambdas))
    sweeps_used = np.zeros(len(lambdas), dtype=np.int64)
    ybar = y.mean()
    b0 = np.log(ybar / (1.0 - ybar))
    beta = np.zeros(p)
    eta = np.full(n, b0)
    active = np.zeros(p, dtype=np.bool_)
    for k in range(len(lambdas)):
        lam = lambdas[k]
        previous = lambdas[k - 1] if k > 0 else lam
        grad = _gradient(X, y, eta)
        strong = active.copy()
        for j in range(p):
            if abs(grad[j]) >= 2.0 * lam - previous:
                strong[j] = True
        total = 0
        while True:
            b0, sweeps = _irls_cd(X, y, lam, beta, b0, eta, strong, tol, max_sweeps - total)
            total += sweeps
            grad = _gradient(X, y, eta)
            violated = False
            for j in range(p):
                if not strong[j] and abs(grad[j]) > lam * (1.0 + 1e-9):
                    strong[j] = True
                    violated = True
            if not violated or total >= max_sweeps:
                break
        for j in range(p):
            if beta[j] != 0.0:
                active[j] = True
        coefs[k] = beta
        intercepts[k] = b0
        sweeps_used[k] = total
    return coefs, intercepts, sweeps_used


def binomial_lasso_path(
    X: np.ndarray, y: np.ndarray, lambdas: np.ndarray, tol: float = 1e-8, max_sweeps: int = 10_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients along a decreasing lambda path of the L1-penalised logistic model.

    ``X`` (n, p) float, ``y`` (n,) in {0, 1} with both classes present, ``lambdas``
    decreasing. Returns coefficients (len(lambdas), p), intercepts (len(lambdas),) and
    the coordinate-descent sweeps each lambda took (``max_sweeps`` means it stopped
    before converging).
    """
    X = np.asfortranarray(X, dtype=np.float64)  # the solver reads columns
    y = np.ascontiguousarray(y, dtype=np.float64)
    lambdas = np.ascontiguousarray(lambdas, dtype=np.float64)
    return _path(X, y, lambdas, float(tol), int(max_sweeps))
