"""Which set each case belongs to: train, test, or an external set per institution.

The manifest's split column is used when it gives a split for every internal case;
when it gives none, a stratified random split (test share and seed from the study) is
drawn. With a patient column the split is drawn by patient (scikit-learn's
``StratifiedGroupKFold``, first fold as the test set, so the test share is 1/k with
k = round(1 / test_size)): two scans of one patient never land on both sides. A
manifest that splits only some cases is an error: silently mixing a given and a drawn
split would be impossible to report.
"""

from __future__ import annotations

import pandas as pd

from fusion.cohort import Case
from fusion.errors import ManifestError


def folds(n_splits: int, seed: int | None, grouped: bool):  # noqa: ANN201 - a CV splitter
    """The CV splitter of every CV in a model (LASSO, tuning, out-of-fold scores):
    stratified, shuffled with ``seed``, and by patient when patients are known."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if grouped:
        return StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits, shuffle=True, random_state=seed)


def set_name(case: Case) -> str:
    if case.is_external:
        return f"external:{case.institution}"
    return str(case.split)


def patient_groups(cases: list[Case]) -> pd.Series | None:
    """case_id -> patient (a case without one is its own patient); None without a
    patient column, so ungrouped studies keep scikit-learn's plain stratified folds."""
    if all(c.patient is None for c in cases):
        return None
    return pd.Series({c.case_id: c.patient or f"case:{c.case_id}" for c in cases})


def _grouped_split(cases: list[Case], test_size: float, seed: int) -> tuple[list[str], list[str]]:
    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, round(1 / test_size))
    ids = [c.case_id for c in cases]
    groups = patient_groups(cases)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    train, test = next(splitter.split(ids, [c.label for c in cases], groups[ids]))
    return [ids[i] for i in train], [ids[i] for i in test]


def assign_sets(cases: list[Case], test_size: float, seed: int) -> pd.Series:
    """case_id -> set name ('train', 'test', 'external:<institution>')."""
    from sklearn.model_selection import train_test_split

    internal = [c for c in cases if not c.is_external]
    given = [c for c in internal if c.split is not None]
    sets = {c.case_id: set_name(c) for c in cases if c.split is not None}
    if given and len(given) < len(internal):
        blank = [c.case_id for c in internal if c.split is None]
        raise ManifestError(
            f"the manifest gives a split for {len(given)} of {len(internal)} internal cases; "
            f"give one for every case or for none. Without a split: {', '.join(blank[:10])}"
            + (" ..." if len(blank) > 10 else "")
        )
    if not given:
        ids = [c.case_id for c in internal]
        labels = [c.label for c in internal]
        if any(c.patient is not None for c in internal):
            train, test = _grouped_split(internal, test_size, seed)
        else:
            train, test = train_test_split(
                ids, test_size=test_size, stratify=labels, random_state=seed
            )
        sets |= dict.fromkeys(train, "train") | dict.fromkeys(test, "test")
    series = pd.Series({c.case_id: sets[c.case_id] for c in cases}, name="set")
    if (series == "train").sum() == 0:
        raise ManifestError("no case is in the training set")
    return series
