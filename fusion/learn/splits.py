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
from fusion.config import ClassifierSpec, SegmentationSpec, Study
from fusion.errors import ManifestError
from fusion.seeds import stream


def folds(n_splits: int, seed: int | None, grouped: bool):  # noqa: ANN201 - a CV splitter
    """The CV splitter of every CV in a model (LASSO, tuning, out-of-fold scores):
    stratified, shuffled with the study seed's ``cv/folds`` stream, and by patient when
    patients are known."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    seed = None if seed is None else stream(seed, "cv/folds")
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
    """case_id -> set name ('train', 'test', 'external:<institution>'); ``seed``: the
    study's, whose ``split/test`` stream draws the test set."""
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
            train, test = _grouped_split(internal, test_size, stream(seed, "split/test"))
        else:
            train, test = train_test_split(
                ids, test_size=test_size, stratify=labels, random_state=stream(seed, "split/test")
            )
        sets |= dict.fromkeys(train, "train") | dict.fromkeys(test, "test")
    series = pd.Series({c.case_id: sets[c.case_id] for c in cases}, name="set")
    if (series == "train").sum() == 0:
        raise ManifestError("no case is in the training set")
    return series


def classifier_sets(cases: list[Case], spec: ClassifierSpec, seed: int) -> pd.Series:
    """case_id -> 'train', 'validation', 'test' or 'external:<institution>'."""
    named = {c.case_id: set_name(c) for c in cases if c.split is not None or c.is_external}
    internal = [c for c in cases if not c.is_external]
    given = [c for c in internal if c.split is not None]
    if given and len(given) < len(internal):
        raise ManifestError(f"the manifest gives a split for {len(given)} of {len(internal)} "
                          "internal cases; give one for every case or for none")  # fmt: skip
    if not given:
        train, test = draw_split(internal, spec.test_size, stream(seed, "split/test"))
        named |= dict.fromkeys(test, "test")
        internal = [c for c in internal if c.case_id in set(train)]
        named |= dict.fromkeys(train, "train")
    if "validation" not in named.values():
        pool = [c for c in internal if named[c.case_id] == "train"]
        share = spec.validation_size / (1 - (0 if given else spec.test_size))
        train, validation = draw_split(pool, share, stream(seed, "split/validation"))
        named |= dict.fromkeys(validation, "validation")
    return pd.Series({c.case_id: named[c.case_id] for c in cases}, name="set")


def draw_split(cases: list[Case], share: float, seed: int) -> tuple[list[str], list[str]]:
    """Split off ``share`` of ``cases``, stratified by label, grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    ids = [c.case_id for c in cases]
    labels = [c.label for c in cases]
    if min(sum(labels), len(labels) - sum(labels)) < 2:
        raise ManifestError(f"{len(cases)} cases with {sum(labels)} positive cannot be split "
                          "into sets that each hold both classes")  # fmt: skip
    if any(c.patient is not None for c in cases):
        groups = [c.patient or f"case:{c.case_id}" for c in cases]
        # one fold of k is held out; a small set caps k at its smaller class's count
        k = max(2, min(round(1 / share), sum(labels), len(labels) - sum(labels)))
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        keep, held = next(splitter.split(ids, labels, groups))
        return [ids[i] for i in keep], [ids[i] for i in held]
    keep, held = train_test_split(ids, test_size=share, stratify=labels, random_state=seed)
    return list(keep), list(held)


def draw_tuning(train: list[str], patients: dict[str, str], fraction: float,
                seed: int) -> list[str]:  # fmt: skip
    """``fraction`` of the training patients' cases, drawn by patient (not stratified: a
    segmentation study need not have a label)."""
    from sklearn.model_selection import GroupShuffleSplit

    split = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
    _, held = next(split.split(train, groups=[patients[c] for c in train]))
    return [train[i] for i in held]


def segmentation_sets(cases: list[Case], spec: SegmentationSpec, seed: int) -> pd.Series:
    """case_id -> 'train', 'tuning' or the manifest's evaluation set; a case the manifest
    gives no split is a training case, and without manifest tuning cases
    ``spec.tuning_fraction`` of the training patients become the tuning set."""
    named = {c.case_id: set_name(c) if c.split is not None or c.is_external else "train"
             for c in cases}  # fmt: skip
    train = [c for c, s in named.items() if s == "train"]
    if not train:
        raise ManifestError("segmentation: no training case (manifest split 'train')")
    if "tuning" not in named.values():
        patients = {c.case_id: c.patient or c.case_id for c in cases}
        drawn = draw_tuning(train, patients, spec.tuning_fraction, stream(seed, "split/tuning"))
        named |= dict.fromkeys(drawn, "tuning")
    return pd.Series({c.case_id: named[c.case_id] for c in cases}, name="set")


def study_sets(study: Study, cases: list[Case]) -> pd.DataFrame:
    """The one split of a study, for every case of the manifest (QC failures included, so
    a case failing QC never moves another case between sets): ``tables/sets.csv``.

    Columns: case_id, patient, set, source (manifest, external institution, or drawn).
    One policy for every study kind: the manifest's split when it gives one; otherwise
    a test set drawn stratified by label and grouped by patient (:func:`assign_sets`),
    external institutions held out; a kind that needs a set from the training cases (a
    classifier's validation set, a segmentation's tuning set) draws it from them with
    the study's seed. A segmentation study's cases without a split are training cases
    (its evaluation sets come from the manifest)."""
    seed = study.seed
    if study.classifier is not None:
        sets = classifier_sets(cases, study.classifier, seed)
    elif study.segmentation is not None and not study.models:
        sets = segmentation_sets(cases, study.segmentation, seed)
    else:
        sets = assign_sets(cases, study.evaluation.test_size, seed)

    def source(case: Case) -> str:
        if case.is_external:
            return "external institution"
        if case.split is not None and sets[case.case_id] == set_name(case):
            return "manifest"
        if study.segmentation is not None and sets[case.case_id] == "train":
            return "no split in the manifest: training"
        if study.segmentation is not None:
            return f"drawn by patient from the training cases (seed {seed})"
        grouped = ", grouped by patient" if any(c.patient for c in cases) else ""
        return f"drawn (stratified by label{grouped}; seed {seed})"

    return pd.DataFrame({
        "case_id": [c.case_id for c in cases],
        "patient": [c.patient or "" for c in cases],
        "set": [sets[c.case_id] for c in cases],
        "source": [source(c) for c in cases],
    })  # fmt: skip
