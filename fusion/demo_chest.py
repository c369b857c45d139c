"""The synthetic chest-CT cohort of the mediastinal-tumour segmentation demo.

Small volumes (96 x 96 voxels in-plane at 4 mm, 240 mm of the chest in z) with body
wall and fat, two lungs with vessels, heart, aorta, spine and sternum, and an anterior
mediastinal tumour (thymoma-like: soft tissue in front of the great vessels, behind the
sternum) of varying size, shape and contrast. Some cases have a second, smaller lesion
and some none. Institutions differ the way scanners and protocols do: noise, sharpness
(blur), slice thickness and a HU offset. The first three institutions train and tune;
the others are external, as in the multi-institution design of seed 002.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from fusion.atomic import write_csv_atomic
from fusion.demo import render_all, write_volume

SHAPE_XY = (96, 96)
PIXEL_MM = 4.0
EXTENT_Z_MM = 240.0
# institution: (noise SD in HU, blur sigma in mm, slice thickness in mm, HU offset)
INSTITUTIONS = {
    "A": (12.0, 0.0, 5.0, 0.0),
    "B": (20.0, 2.0, 5.0, 10.0),
    "C": (8.0, 1.0, 6.0, -10.0),
    "D": (28.0, 3.0, 5.0, 15.0),  # external: noisier and blurrier than any training site
    "E": (15.0, 1.0, 4.0, -20.0),  # external: thinner slices and a HU offset
}
TRAINING_SITES = ("A", "B", "C")


def _grid(nz: int, dz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nx, ny = SHAPE_XY
    return np.meshgrid(
        (np.arange(nz) - (nz - 1) / 2) * dz,
        (np.arange(ny) - (ny - 1) / 2) * PIXEL_MM,
        (np.arange(nx) - (nx - 1) / 2) * PIXEL_MM,
        indexing="ij",
        sparse=True,
    )


def _lesion(z, y, x, centre, radii, rng) -> np.ndarray:  # noqa: ANN001
    """A lobulated ellipsoid: its radius modulated by low-order spherical ripples."""
    dz, dy, dx = (z - centre[2]) / radii[2], (y - centre[1]) / radii[1], (x - centre[0]) / radii[0]
    r = np.sqrt(dx**2 + dy**2 + dz**2)
    theta = np.arctan2(dy, dx)
    ripple = 1 + 0.12 * np.sin(rng.integers(2, 5) * theta + rng.uniform(0, 6)) * np.tanh(dz + 2)
    return r < ripple


def render_case(index: int, seed: int, site: str) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """HU volume (z, y, x), tumour mask, slice thickness and the truth of one case."""
    rng = np.random.default_rng([seed, index])
    noise, blur, dz, offset = INSTITUTIONS[site]
    nz = round(EXTENT_Z_MM / dz)
    z, y, x = _grid(nz, dz)
    s = rng.uniform(0.92, 1.08)  # body size
    vol = np.full((nz, *SHAPE_XY), -1000.0, dtype=np.float32)
    body = (x / (170 * s)) ** 2 + ((y - 5) / (120 * s)) ** 2 < 1
    body = np.broadcast_to(body, vol.shape)
    vol[body] = -100.0  # subcutaneous and mediastinal fat
    muscle = body & ((x / (160 * s)) ** 2 + ((y - 5) / (110 * s)) ** 2 > 1)
    vol[muscle] = 45.0
    lungs = np.zeros(vol.shape, bool)
    for side in (-1, 1):
        lung = ((x - side * 75 * s) / (58 * s)) ** 2 + ((y - 10) / (80 * s)) ** 2 + (
            (z + 10) / 120
        ) ** 2 < 1
        lungs |= lung
    vol[lungs] = -850.0
    vessels = ndimage.gaussian_filter(rng.standard_normal(vol.shape).astype(np.float32), 1.2)
    vol[lungs & (vessels > 1.8 * vessels.std())] = 40.0  # lung vessels
    heart = ((x - 20) / 55) ** 2 + ((y - 15) / 50) ** 2 + ((z + 60) / 55) ** 2 < 1
    vol[heart] = 45.0
    aorta = ((x - 5) / 14) ** 2 + ((y - 25) / 14) ** 2 < 1
    vol[np.broadcast_to(aorta, vol.shape) & (z > -20)] = 160.0  # contrast in the aorta
    spine = (x / 22) ** 2 + ((y - 95 * s) / 22) ** 2 < 1
    vol[np.broadcast_to(spine, vol.shape)] = 600.0
    sternum = (x / 18) ** 2 + ((y + 95 * s) / 6) ** 2 < 1
    vol[np.broadcast_to(sternum, vol.shape)] = 500.0

    tumour = np.zeros(vol.shape, bool)
    n_lesions = int(rng.choice([0, 1, 2], p=[0.15, 0.7, 0.15]))
    if index % 12 == 11:  # so that each site's tuning cases include one without a tumour
        n_lesions = 0
    radii_first = None
    for k in range(n_lesions):  # anterior mediastinum: behind the sternum, before the aorta
        size = rng.uniform(16, 34) if k == 0 else rng.uniform(10, 15)
        radii = np.array([size, size * rng.uniform(0.6, 0.9), size * rng.uniform(0.8, 1.3)])
        cy = -55 * s + rng.uniform(-8, 8)
        cx = rng.uniform(-15, 15) if k == 0 else rng.choice([-1, 1]) * rng.uniform(30, 40)
        cz = rng.uniform(-20, 60) if k == 0 else rng.uniform(-40, 70)
        tumour |= _lesion(z, y, x, (cx, cy, cz), radii, rng) & body & ~lungs
        radii_first = radii if k == 0 else radii_first
    contrast = rng.uniform(25, 90)  # HU: faint to clearly enhancing (fat is -100)
    texture = ndimage.gaussian_filter(rng.standard_normal(vol.shape).astype(np.float32), 1.0)
    vol[tumour] = contrast + 15 * texture[tumour] / max(texture.std(), 1e-6)

    if blur:
        vol = ndimage.gaussian_filter(vol, [blur / dz, blur / PIXEL_MM, blur / PIXEL_MM])
    vol += offset + rng.normal(0, noise, vol.shape).astype(np.float32)
    truth = {
        "lesions": n_lesions,
        "contrast_hu": round(contrast, 1),
        "diameter_mm": round(2 * float(radii_first[0]), 1) if n_lesions else 0.0,
    }
    return np.clip(np.round(vol), -1024, 3000).astype(np.int16), tumour.astype(np.uint8), dz, truth


def _make(args: tuple[int, int, str, str, Path]) -> dict:
    index, seed, case_id, site, out = args
    volume, mask, dz, truth = render_case(index, seed, site)
    write_volume(volume, (PIXEL_MM, PIXEL_MM, dz), out / "images" / f"{case_id}.nii.gz")
    write_volume(mask, (PIXEL_MM, PIXEL_MM, dz), out / "masks" / f"{case_id}.nii.gz")
    return {"case_id": case_id, "institution": site, "slice_mm": dz, **truth}


def generate_mediastinal_cohort(
    out: str | Path, per_site: int = 12, seed: int = 11, jobs: int | None = None
) -> Path:
    """Write ``per_site`` cases per institution and ``manifest.csv`` under ``out``.

    In the training sites, one case in six is the tuning set; the other sites are the
    external test set (the study names them in ``cohort.external_institutions``). The
    manifest's ``label`` says whether the case has a tumour (case-level detection).
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    tasks = [
        (i, seed, f"MED{i + 1:03d}", site, out)
        for i, site in enumerate(s for s in INSTITUTIONS for _ in range(per_site))
    ]
    rows = render_all(_make, tasks, jobs, chunksize=2)
    truth = pd.DataFrame(rows)
    split = [
        ("tuning" if i % 6 == 5 else "train") if site in TRAINING_SITES else "test"
        for i, site in zip(range(len(truth)), truth.institution, strict=True)
    ]
    manifest = truth[["case_id"]].assign(
        image=[f"images/{c}.nii.gz" for c in truth.case_id],
        reference=[f"masks/{c}.nii.gz" for c in truth.case_id],
        tumour=(truth.lesions > 0).astype(int),
        split=split,
        institution=truth.institution,
    )
    write_csv_atomic(truth, out / "truth.csv")
    write_csv_atomic(manifest, out / "manifest.csv")
    return out / "manifest.csv"


# ------------------------------------------------------------------ lung involvement

LUNG_PIXEL_MM = 3.5
LUNG_SHAPE_XY = (96, 96)
LUNG_SLICE_MM = 7.0
LUNG_SLICES = 36
PATTERNS = {1: "ggo", 2: "reticulation"}


def render_lung_case(
    index: int, seed: int, severity: float, offset_mm: float = 0.0, table: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chest CT (z, y, x) in HU with lungs, airways, vessels, heart, spine and a table;
    GGO and reticulation of extent ``severity`` (0..1), mostly subpleural and basal as in
    systemic sclerosis. Returns the image, the lung truth (1 right, 2 left) and the
    pattern truth (1 GGO, 2 reticulation)."""
    rng = np.random.default_rng([seed, index, 3])
    nx, ny = LUNG_SHAPE_XY
    z, y, x = np.meshgrid(
        (np.arange(LUNG_SLICES) - (LUNG_SLICES - 1) / 2) * LUNG_SLICE_MM,
        (np.arange(ny) - (ny - 1) / 2) * LUNG_PIXEL_MM,
        (np.arange(nx) - (nx - 1) / 2) * LUNG_PIXEL_MM - offset_mm,
        indexing="ij", sparse=True,
    )  # fmt: skip
    shape = (LUNG_SLICES, ny, nx)
    s = rng.uniform(0.93, 1.05)
    vol = np.full(shape, -1000.0, np.float32)
    body = np.broadcast_to((x / (150 * s)) ** 2 + (y / (105 * s)) ** 2 < 1, shape)
    vol[body] = 40.0
    fat = body & np.broadcast_to((x / (140 * s)) ** 2 + (y / (95 * s)) ** 2 < 1, shape)
    vol[fat] = -90.0
    lungs = np.zeros(shape, np.uint8)
    for label, side in ((1, -1), (2, 1)):  # LPS: the right lung at negative x
        inside = ((x - side * 62 * s) / (50 * s)) ** 2 + ((y + 5) / (72 * s)) ** 2 + (
            (z + 15) / 115
        ) ** 2 < 1
        lungs[inside & body] = label
    heart = ((x - 15) / 45) ** 2 + ((y + 20) / 40) ** 2 + ((z + 70) / 45) ** 2 < 1
    lungs[heart] = 0
    vol[lungs > 0] = -860.0
    vol[heart & body] = 40.0
    spine = np.broadcast_to((x / 18) ** 2 + ((y - 80 * s) / 18) ** 2 < 1, shape)
    vol[spine] = 500.0
    # airways: the trachea from the top down to the carina, then two main bronchi
    airway = np.broadcast_to((x / 8) ** 2 + ((y - 35 * s) / 8) ** 2 < 1, shape) & (z > 30)
    for side in (-1, 1):
        t = np.clip((30 - z) / 40, 0, 1)  # 0 at the carina, 1 at the hilum
        cx, cy = side * 45 * s * t, 35 * s - 10 * t
        airway = airway | ((((x - cx) / 5) ** 2 + ((y - cy) / 5) ** 2 < 1) & (z <= 30) & (z > -10))
    airway &= body
    lungs[ndimage.binary_dilation(airway, iterations=1)] = 0
    vessels = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    vol[(lungs > 0) & (vessels > 2.0 * vessels.std())] = 30.0

    # disease: subpleural and basal, from smooth random fields
    inside = lungs > 0
    depth = ndimage.distance_transform_edt(inside, sampling=(LUNG_SLICE_MM, LUNG_PIXEL_MM,
                                                             LUNG_PIXEL_MM))  # fmt: skip
    basal = np.clip((60 - z) / 180, 0, 1)  # more disease towards the bases
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1, 3, 3))
    field /= max(float(field.std()), 1e-6)
    score = field + 2.5 * basal + 1.5 * np.exp(-depth / 20.0)
    pattern = np.zeros(shape, np.uint8)
    if severity > 0:
        cut = np.quantile(score[inside], 1 - severity)
        diseased = inside & (score >= cut)
        sub = field + 3.0 * np.exp(-depth / 12.0)  # reticulation: the most subpleural part
        reticular = diseased & (sub >= np.quantile(sub[diseased], 0.6))
        pattern[diseased] = 1
        pattern[reticular] = 2
        vol[diseased] = -620 + 40 * field[diseased]
        lines = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.5, 1, 1))
        net = np.abs(lines / max(float(lines.std()), 1e-6)) < 0.35  # a fine linear network
        vol[reticular & net] = -150.0
        vol[reticular & ~net] = -700.0
    vol[airway] = -1000.0
    if table:  # the scanner table under the patient, with an air gap
        plank = np.broadcast_to((y > 112 * s) & (y < 122 * s) & (np.abs(x) < 160), shape)
        vol[plank] = 150.0
    vol += rng.normal(0, 15, shape).astype(np.float32)
    return np.clip(np.round(vol), -1024, 3000).astype(np.int16), lungs, pattern


def _make_lung(args: tuple[int, int, str, float, float, Path]) -> dict:
    index, seed, case_id, severity, offset, out = args
    volume, lungs, pattern = render_lung_case(index, seed, severity, offset)
    spacing = (LUNG_PIXEL_MM, LUNG_PIXEL_MM, LUNG_SLICE_MM)
    write_volume(volume, spacing, out / "images" / f"{case_id}.nii.gz")
    write_volume(lungs, spacing, out / "lungs" / f"{case_id}.nii.gz")
    write_volume(pattern, spacing, out / "patterns" / f"{case_id}.nii.gz")
    voxels = lungs > 0
    return {
        "case_id": case_id, "severity": round(severity, 3), "offset_mm": round(offset, 1),
        "ggo_pct": round(100 * float((pattern[voxels] == 1).mean()), 3),
        "reticulation_pct": round(100 * float((pattern[voxels] == 2).mean()), 3),
    }  # fmt: skip


def generate_lung_cohort(
    out: str | Path, n: int = 22, seed: int = 13, jobs: int | None = None
) -> Path:
    """``n`` patients (the paper's 22): severities from none to a lung nearly full of
    disease, patients off-centre on the table; the last ``round(n * 5 / 22)`` are the test
    set (17 train / 5 test for n = 22), one patient per scan."""
    out = Path(out)
    for folder in ("images", "lungs", "patterns"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    severities = np.clip(rng.beta(1.3, 3.0, n), 0, 0.95)
    severities[rng.integers(0, n)] = 0.95  # one lung nearly full of disease
    severities[[2, n - 2]] = 0.0  # a patient without a pattern in training and in test
    offsets = rng.uniform(-25, 25, n)
    tasks = [(i, seed, f"SSC{i + 1:02d}", float(severities[i]), float(offsets[i]), out)
             for i in range(n)]  # fmt: skip
    rows = render_all(_make_lung, tasks, jobs, chunksize=1)
    truth = pd.DataFrame(rows)
    n_test = round(n * 5 / 22)
    manifest = truth[["case_id"]].assign(
        image=[f"images/{c}.nii.gz" for c in truth.case_id],
        reference=[f"patterns/{c}.nii.gz" for c in truth.case_id],
        lung_reference=[f"lungs/{c}.nii.gz" for c in truth.case_id],
        diseased=(truth.ggo_pct + truth.reticulation_pct > 0).astype(int),
        split=["train"] * (n - n_test) + ["test"] * n_test,
        patient=truth.case_id,
    )
    write_csv_atomic(truth, out / "truth.csv")
    write_csv_atomic(manifest, out / "manifest.csv")
    return out / "manifest.csv"
