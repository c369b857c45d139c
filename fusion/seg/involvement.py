"""Lung involvement per patient (seed 003): pattern volume inside the lung divided by the
lung volume, in mm^3 so that anisotropic voxels count right, for each pattern and for
all patterns together, over both lungs, per lung and per zone (upper, middle and lower
third of the lungs' height in mm).

The lung is the study's ``lung`` ROI (the automatic outline) for both the prediction and
the reference, so the two differ only in the pattern segmentation, as in the paper; the
outline itself is checked against a reference lung mask where the manifest gives one.
The stage runs after the ROI stage and reads what the segmentation and ROI stages wrote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from fusion.config import Study

ZONES = ("upper", "middle", "lower")


def zones(lung: np.ndarray, spacing_zyx: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Upper, middle and lower third of the lungs' height in mm (z grows towards the
    head in LPS, so the upper zone has the largest z)."""
    slices = np.flatnonzero(lung.any(axis=(1, 2)))
    z_mm = np.arange(lung.shape[0]) * spacing_zyx[0]
    low, high = z_mm[slices[0]] - spacing_zyx[0] / 2, z_mm[slices[-1]] + spacing_zyx[0] / 2
    cuts = np.linspace(low, high, 4)
    out = {}
    for name, (a, b) in zip(ZONES, [(cuts[2], cuts[3]), (cuts[1], cuts[2]), (cuts[0], cuts[1])],
                            strict=True):  # fmt: skip
        keep = (z_mm >= a) & ((z_mm < b) if name != "upper" else (z_mm <= b))
        out[name] = lung & keep[:, None, None]
    return out


def involvement(
    patterns: np.ndarray,
    lungs: np.ndarray,
    spacing_zyx: tuple[float, ...],
    classes: dict[int, str],
    lung_names: dict[int, str],
) -> list[dict]:
    """Rows (region, pattern, lung_ml, pattern_ml, percent) of one patient."""
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    lung = lungs > 0
    regions = {"both lungs": lung}
    regions |= {name: lungs == k for k, name in lung_names.items()}
    regions |= zones(lung, spacing_zyx)
    kinds = {name: patterns == k for k, name in classes.items()}
    if len(classes) > 1:
        kinds["combined"] = patterns > 0
    rows = []
    for region, mask in regions.items():
        lung_ml = mask.sum() * voxel_ml
        for pattern, found in kinds.items():
            pattern_ml = (found & mask).sum() * voxel_ml
            rows.append({
                "region": region, "pattern": pattern, "lung_ml": lung_ml,
                "pattern_ml": pattern_ml,
                "percent": 100.0 * pattern_ml / lung_ml if lung_ml else float("nan"),
            })  # fmt: skip
    return rows


def involvement_tables(study: Study, folder, cases) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    """Per patient (the evaluated cases) reference and predicted involvement, their
    agreement per pattern, and the outline's Dice against the reference lungs."""
    from fusion.cohort import read_manifest
    from fusion.io.images import read_image
    from fusion.io.rois import read_roi
    from fusion.stats.agreement import agreement

    spec = study.segmentation
    inv = spec.involvement
    variant = next(iter(spec.variants))
    predictions = folder / "segmentation" / "predictions" / variant
    lung_dir = folder / "rois" / inv.lung_roi
    manifest = read_manifest(study.cohort).set_index(study.cohort.columns.case_id)
    rows, outline, skipped = [], [], []
    names = {1: "right_lung", 2: "left_lung"}
    for case in cases:
        pred_path = predictions / f"{case.case_id}.nii.gz"
        lung_path = lung_dir / f"{case.case_id}.nii.gz"
        if not lung_path.is_file():
            skipped.append({"case_id": case.case_id, "reason": "no lung outline (see rois.csv)"})
            continue
        image = read_image(case.image, case.series_uid)
        spacing = image.GetSpacing()[::-1]
        lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(lung_path)))
        reference_lung = (
            manifest.loc[case.case_id].get(inv.lung_reference) if inv.lung_reference else None
        )
        if isinstance(reference_lung, str):  # the outline is checked on every case
            ref = sitk.GetArrayFromImage(
                read_roi(study.cohort.manifest.parent / reference_lung, image)
            )
            for k, name in names.items():
                p, r = lungs == k, ref == k
                outline.append({"case_id": case.case_id, "lung": name,
                                "dice": 2 * (p & r).sum() / max(p.sum() + r.sum(), 1),
                                "outline_ml": p.sum() * np.prod(spacing) / 1000,
                                "reference_ml": r.sum() * np.prod(spacing) / 1000})  # fmt: skip
        if not pred_path.is_file() or case.reference is None:
            continue  # involvement: the evaluated cases with a reference
        for source, path in (("reference", case.reference), ("predicted", pred_path)):
            labels = sitk.GetArrayFromImage(read_roi(path, image))
            rows += [{"case_id": case.case_id, "source": source, **r}
                     for r in involvement(labels, lungs, spacing, spec.labels, names)]  # fmt: skip
    frame = pd.DataFrame(rows)
    out = {"involvement_skipped": pd.DataFrame(skipped, columns=["case_id", "reason"]),
           "lung_outline": pd.DataFrame(outline)}  # fmt: skip
    if frame.empty:
        return out | {"involvement": frame, "involvement_agreement": pd.DataFrame()}
    wide = frame.pivot_table(index=["case_id", "region", "pattern", "lung_ml"],
                             columns="source", values="percent").reset_index()  # fmt: skip
    wide["difference"] = wide.predicted - wide.reference
    # which set each case is in, as the segmentation stage drew it: the tuning patients
    # chose the model's epoch, so agreement is measured on the held-out patients only
    seg_cases = pd.read_csv(folder / "tables" / "seg_cases.csv", dtype={"case_id": str})
    sets = seg_cases[seg_cases.model == "final"].drop_duplicates("case_id")
    wide.insert(1, "set", wide.case_id.map(dict(zip(sets.case_id, sets.set, strict=True))))
    held_out = wide[wide.set != "tuning"]
    level = study.evaluation.conf_level
    stats_rows = []
    for (region, pattern), part in held_out.groupby(["region", "pattern"], sort=False):
        if len(part) < 2:
            continue
        a = agreement(part.predicted, part.reference, level)
        stats_rows.append({
            "region": region, "pattern": pattern, "n": a.n, "bias": a.bland_altman.bias,
            "sd_difference": a.bland_altman.sd, "loa_low": a.bland_altman.loa_low,
            "loa_high": a.bland_altman.loa_high, "icc": a.icc.icc, "icc_ci_low": a.icc.ci_low,
            "icc_ci_high": a.icc.ci_high, "pearson_r": a.pearson_r, "pearson_p": a.pearson_p,
            "spearman_rho": a.spearman_rho, "spearman_p": a.spearman_p,
        })  # fmt: skip
    return out | {"involvement": wide, "involvement_agreement": pd.DataFrame(stats_rows)}
