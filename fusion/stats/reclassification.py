"""Reclassification: how a new model moves the risks of events and non-events against an
old one. Continuous NRI and IDI as R's ``Hmisc::improveProb`` (Pencina et al. 2008,
2011), categorical NRI at risk thresholds a study sets (Pencina et al. 2008), with the
same variance formulas. Both models' probabilities must be for the same cases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from fusion.stats._checks import as_outcome, as_probabilities, both_classes


@dataclass(frozen=True, slots=True)
class Reclassification:
    """NRI for events (up - down among events), non-events (down - up among non-events)
    and in total (their sum), each with its standard error and z; for the continuous NRI
    a move is any change of probability, for the categorical NRI a change of risk
    category. IDI (continuous only; NaN for the categorical one) is the change of mean
    probability among events minus that among non-events."""

    n_events: int
    n_nonevents: int
    up_events: int
    down_events: int
    up_nonevents: int
    down_nonevents: int
    nri: float
    nri_se: float
    nri_z: float
    nri_p: float
    nri_events: float
    nri_events_se: float
    nri_nonevents: float
    nri_nonevents_se: float
    idi: float = float("nan")
    idi_se: float = float("nan")
    idi_z: float = float("nan")
    idi_p: float = float("nan")


def _check(y: ArrayLike, old: ArrayLike, new: ArrayLike) -> tuple[np.ndarray, ...]:
    y = as_outcome(y)
    p_old = as_probabilities(old, len(y), "old")
    p_new = as_probabilities(new, len(y), "new")
    both_classes(y, "reclassification")
    return y, p_old, p_new


def _z_p(value: float, se: float) -> tuple[float, float]:
    if not se > 0:
        return float("nan"), float("nan")
    z = value / se
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _nri(y: np.ndarray, up: np.ndarray, down: np.ndarray) -> dict[str, float]:
    """NRI from per-case moves, with Hmisc::improveProb's variances."""
    events, nonevents = y == 1, y == 0
    n1, n0 = int(events.sum()), int(nonevents.sum())
    u1, d1 = int(up[events].sum()), int(down[events].sum())
    u0, d0 = int(up[nonevents].sum()), int(down[nonevents].sum())
    v1 = (u1 + d1) / n1**2 - (u1 - d1) ** 2 / n1**3
    v0 = (d0 + u0) / n0**2 - (d0 - u0) ** 2 / n0**3
    nri_events, nri_nonevents = (u1 - d1) / n1, (d0 - u0) / n0
    nri, se = nri_events + nri_nonevents, float(np.sqrt(v1 + v0))
    z, p = _z_p(nri, se)
    return {"n_events": n1, "n_nonevents": n0, "up_events": u1, "down_events": d1,
            "up_nonevents": u0, "down_nonevents": d0, "nri": nri, "nri_se": se,
            "nri_z": z, "nri_p": p, "nri_events": nri_events,
            "nri_events_se": float(np.sqrt(v1)), "nri_nonevents": nri_nonevents,
            "nri_nonevents_se": float(np.sqrt(v0))}  # fmt: skip


def improve_prob(y: ArrayLike, old: ArrayLike, new: ArrayLike) -> Reclassification:
    """Continuous (category-free) NRI and IDI of ``new`` over ``old``, as
    ``Hmisc::improveProb(old, new, y)``; raises ValueError for one outcome class."""
    y, p_old, p_new = _check(y, old, new)
    d = p_new - p_old
    events, nonevents = y == 1, y == 0
    idi = float(d[events].mean() - d[nonevents].mean())
    var = d[events].var(ddof=1) / events.sum() + d[nonevents].var(ddof=1) / nonevents.sum()
    se = float(np.sqrt(var))
    z, p = _z_p(idi, se)
    return Reclassification(**_nri(y, d > 0, d < 0), idi=idi, idi_se=se, idi_z=z, idi_p=p)


def categorical_nri(
    y: ArrayLike, old: ArrayLike, new: ArrayLike, cutoffs: ArrayLike
) -> Reclassification:
    """Categorical NRI of ``new`` over ``old`` with risk categories cut at ``cutoffs``
    (increasing, strictly inside 0..1; a risk equal to a cutoff falls in the higher
    category); a move is a change of category."""
    y, p_old, p_new = _check(y, old, new)
    cuts = np.asarray(cutoffs, dtype=float).reshape(-1)
    if len(cuts) == 0 or (cuts <= 0).any() or (cuts >= 1).any() or (np.diff(cuts) <= 0).any():
        raise ValueError(f"risk cutoffs must increase strictly inside (0, 1); got {cuts.tolist()}")
    c_old = np.searchsorted(cuts, p_old, side="right")
    c_new = np.searchsorted(cuts, p_new, side="right")
    return Reclassification(**_nri(y, c_new > c_old, c_new < c_old))
