"""Minimum sample size for developing a binary-outcome prediction model: the three
criteria of Riley et al. (Stat Med 2019;38:1276 and BMJ 2020;368:m441), as R's
``pmsampsize(type = "b")`` computes them (its rounding included, so the numbers agree).

1. Expected shrinkage of predictor effects of at least ``shrinkage`` (0.9: at most 10%
   overfitting): n = P / ((S - 1) ln(1 - R2cs / S)).
2. A small optimism (0.05) in Nagelkerke's R2: the same formula at
   S = R2cs / (R2cs + 0.05 max R2cs).
3. The overall risk estimated within +/- 0.05: n = (1.96 / 0.05)^2 phi (1 - phi).

P is the number of candidate predictor parameters the model really considered (every
column its supervised steps saw, categorical levels counted one by one), phi the
outcome prevalence, and R2cs the anticipated Cox-Snell R2. Without prior evidence Riley
et al. suggest a conservative Nagelkerke R2 of 0.15 (R2cs = 0.15 max R2cs); an
anticipated C statistic converts to R2cs as pmsampsize's ``cstat2rsq`` does (Riley, Van
Calster & Collins, Stat Med 2021), here by quadrature of the same binormal model instead
of a simulation of a million cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, stats

DEFAULT_NAGELKERKE = 0.15


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Each criterion's minimum n, the final (largest) one, and the events and events
    per candidate parameter (EPP) it implies; ``r2_source`` says where R2cs came from."""

    parameters: int
    prevalence: float
    r2_cs: float
    max_r2_cs: float
    r2_source: str
    n_shrinkage: int
    n_optimism: int
    n_intercept: int
    shrinkage_optimism: float
    n_required: int
    events_required: float
    epp_required: float


def max_cox_snell(prevalence: float) -> float:
    """The largest Cox-Snell R2 a binary outcome with this prevalence allows:
    1 - (phi^phi (1 - phi)^(1 - phi))^2."""
    phi = prevalence
    return 1 - math.exp(2 * (phi * math.log(phi) + (1 - phi) * math.log(1 - phi)))


def cox_snell_from_c(c_statistic: float, prevalence: float) -> float:
    """Cox-Snell R2 of a logistic model with this C statistic: linear predictors normal
    with unit variance in both classes and means sqrt(2) Phi^-1(C) apart (pmsampsize's
    ``cstat2rsq``), for which the logistic model is exact; R2cs = 1 - exp(-2 (E log L -
    E log L0)) per case, by quadrature."""
    if not 0.5 < c_statistic < 1:
        raise ValueError(f"an anticipated C statistic must lie in (0.5, 1); got {c_statistic}")
    mu = math.sqrt(2) * stats.norm.ppf(c_statistic)
    phi = prevalence
    intercept = math.log(phi / (1 - phi)) - mu**2 / 2

    def expected_loglik(mean: float, event: bool) -> float:
        def integrand(x: float) -> float:
            z = intercept + mu * x
            log_p = -np.logaddexp(0, -z) if event else -np.logaddexp(0, z)
            return float(stats.norm.pdf(x, mean, 1) * log_p)

        return integrate.quad(integrand, mean - 12, mean + 12, limit=200)[0]

    loglik = phi * expected_loglik(mu, True) + (1 - phi) * expected_loglik(0.0, False)
    null = phi * math.log(phi) + (1 - phi) * math.log(1 - phi)
    return 1 - math.exp(-2 * (loglik - null))


def _n_for(parameters: int, shrinkage: float, r2: float) -> int:
    return math.ceil(parameters / ((shrinkage - 1) * math.log(1 - r2 / shrinkage)))


def riley_binary(
    parameters: int,
    prevalence: float,
    cox_snell_r2: float | None = None,
    c_statistic: float | None = None,
    nagelkerke_r2: float | None = None,
    shrinkage: float = 0.9,
) -> SampleSize:
    """Riley et al.'s minimum n for ``parameters`` candidate parameters and an outcome
    ``prevalence``; the anticipated R2cs from ``cox_snell_r2``, else ``c_statistic``,
    else ``nagelkerke_r2`` (default 0.15) times its maximum. Raises ValueError for
    values outside their range, as pmsampsize does."""
    if parameters < 1:
        raise ValueError(f"parameters must be at least 1; got {parameters}")
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must lie in (0, 1); got {prevalence}")
    if cox_snell_r2 is not None:
        r2, source = float(cox_snell_r2), f"the Cox-Snell R2 of {cox_snell_r2:g} set by the study"
    elif c_statistic is not None:
        r2 = cox_snell_from_c(c_statistic, prevalence)
        source = f"an anticipated C statistic of {c_statistic:g}"
    else:
        nagelkerke = DEFAULT_NAGELKERKE if nagelkerke_r2 is None else nagelkerke_r2
        r2 = nagelkerke * max_cox_snell(prevalence)
        source = f"a Nagelkerke R2 of {nagelkerke:g}" + (
            " (Riley et al.'s conservative default)" if nagelkerke_r2 is None else ""
        )
    if not 0 < r2 < shrinkage:
        raise ValueError(f"the anticipated Cox-Snell R2 ({r2:.4g}) must lie in (0, shrinkage)")
    n1 = _n_for(parameters, shrinkage, r2)
    # pmsampsize takes the null log likelihood at criterion 1's n and rounds max R2 to 2
    # and criterion 2's shrinkage to 3 decimals; kept, so the numbers agree with it
    events = n1 * prevalence
    null = events * math.log(events / n1) + (n1 - events) * math.log(1 - events / n1)
    max_r2 = round(1 - math.exp(2 * null / n1), 2)
    if max_r2 < r2:
        raise ValueError(f"the anticipated Cox-Snell R2 ({r2:.4g}) exceeds its maximum "
                         f"({max_r2}) at prevalence {prevalence:g}")  # fmt: skip
    s2 = round(r2 / (r2 + 0.05 * max_r2), 3)
    n2 = _n_for(parameters, s2, r2)
    n3 = math.ceil((1.96 / 0.05) ** 2 * prevalence * (1 - prevalence))
    final = max(n1, n2, n3)
    return SampleSize(
        parameters=parameters,
        prevalence=prevalence,
        r2_cs=r2,
        max_r2_cs=max_r2,
        r2_source=source,
        n_shrinkage=n1,
        n_optimism=n2,
        n_intercept=n3,
        shrinkage_optimism=s2,
        n_required=final,
        events_required=final * prevalence,
        epp_required=final * prevalence / parameters,
    )
