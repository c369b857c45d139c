"""The built-in demo cohort: synthetic non-contrast head CTs with an intracerebral hematoma.

Modelled on the hematoma-expansion study (235 patients, 8:2 train/test split). Each case
is a 192 x 192 x 24 volume of 1 x 1 x 5 mm voxels in HU: air, scalp, skull, brain
parenchyma with grey/white texture, ventricles (CSF), a hematoma of 50-90 HU with an
irregular outline and internal heterogeneity, a rim of perihematomal oedema, and noise.

Generative model of the outcome (documented so a user can check what the pipeline
should find). Per case, independently, from ``numpy.random.default_rng([seed, i])``:

- heterogeneity ``h ~ U(0, 1)``: the SD of the hematoma's internal texture is
  ``3 + 12 h`` HU;
- boundary ``b ~ U(0, 1)``: in the hematoma's outer 3 mm shell (the sub-region at the
  border between hematoma and brain, as in the habitat study) the texture SD is
  ``3 + 14 b`` HU and the mean ``6 b`` HU lower, on a finer-grained field: signal that
  a boundary habitat isolates and the whole ROI dilutes;
- irregularity ``s ~ U(0, 1)``: the amplitude of the random-field perturbation of the
  outline is ``0.08 + 0.5 s`` of the radius;
- volume ``log(v / ml) ~ N(log 15, 0.7)``, clipped to [2, 90] ml;
- clinical covariates: age ~ N(64, 11) years, sex (62 % male), onset-to-CT time
  ~ U(0.5, 6) h, GCS, glucose ~ N(7.5, 2) mmol/L, systolic BP ~ N(165, 25) mmHg;
- ``logit P(expansion) = -0.9 + 1.1 z(h) + 0.9 z(b) + 0.8 z(s) + 0.6 z(log v)
  - 0.35 z(onset) + 0.2 z(SBP) + 0.15 z(glucose)``, with ``z`` the standardisation
  under the sampling distribution; ``expansion ~ Bernoulli``.

Texture heterogeneity (of the whole hematoma and of its boundary shell), shape
irregularity and volume carry the signal; the clinical covariates carry a weak one. The
latent values are written to ``truth.csv`` beside the manifest. The split is stratified
by outcome, 20 % test, drawn from ``default_rng(seed)``.

Scanners: each case was imaged on one of three scanners (``scanner`` in the manifest),
each with its own HU calibration offset and extra noise (:data:`SCANNERS`). The scanner
does not depend on the outcome, but the test set was imaged mostly on the noisiest one
(:data:`SCANNER_MIX`, drawn from ``default_rng([seed, i, 1])`` after the split, so the
values above do not move): its noise inflates every texture SD, so a model that learned
"heterogeneous means expansion" on the training scanners calls noisy test cases high
risk. ComBat, fitted on the training cases (which include that scanner), removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from fusion.atomic import atomic_path, write_csv_atomic
from fusion.engine import worker_signals

SHAPE_XYZ = (192, 192, 24)
SPACING_MM = (1.0, 1.0, 5.0)
LOGIT_INTERCEPT = -0.9
COEFFICIENTS = {
    "heterogeneity": 1.1,
    "boundary": 0.9,
    "irregularity": 0.8,
    "log_volume": 0.6,
    "onset_to_ct_h": -0.35,
    "sbp_mmhg": 0.2,
    "glucose_mmol_l": 0.15,
}
_UNIFORM_SD = 1 / np.sqrt(12)
# scanner -> (HU calibration offset, SD of the extra noise in HU) added to the whole image
SCANNERS = {"CT-A": (0.0, 0.0), "CT-B": (10.0, 6.0), "CT-C": (-12.0, 16.0)}
# split -> the probability of each scanner (in SCANNERS' order)
SCANNER_MIX = {"train": (0.5, 0.3, 0.2), "test": (0.2, 0.2, 0.6)}


@dataclass(frozen=True, slots=True)
class DemoCase:
    """Latent and observed values of one synthetic case."""

    case_id: str
    heterogeneity: float
    boundary: float
    irregularity: float
    volume_ml: float
    age: float
    sex: str
    onset_to_ct_h: float
    gcs: int
    glucose_mmol_l: float
    sbp_mmhg: float
    expansion: int


def _draw_case(case_id: str, rng: np.random.Generator) -> DemoCase:
    h, s = rng.uniform(), rng.uniform()
    volume = float(np.clip(np.exp(rng.normal(np.log(15.0), 0.7)), 2.0, 90.0))
    age = float(np.clip(rng.normal(64, 11), 30, 95))
    sex = "male" if rng.uniform() < 0.62 else "female"
    onset = float(rng.uniform(0.5, 6.0))
    gcs = int(np.clip(np.round(15 - rng.gamma(1.5, 1.6) - volume / 30), 3, 15))
    glucose = float(np.clip(rng.normal(7.5, 2.0), 3.5, 20))
    sbp = float(np.clip(rng.normal(165, 25), 95, 250))
    b = rng.uniform()
    z = {
        "heterogeneity": (h - 0.5) / _UNIFORM_SD,
        "boundary": (b - 0.5) / _UNIFORM_SD,
        "irregularity": (s - 0.5) / _UNIFORM_SD,
        "log_volume": (np.log(volume) - np.log(15.0)) / 0.7,
        "onset_to_ct_h": (onset - 3.25) / (5.5 * _UNIFORM_SD),
        "sbp_mmhg": (sbp - 165) / 25,
        "glucose_mmol_l": (glucose - 7.5) / 2.0,
    }
    logit = LOGIT_INTERCEPT + sum(COEFFICIENTS[k] * z[k] for k in COEFFICIENTS)
    expansion = int(rng.uniform() < 1 / (1 + np.exp(-logit)))
    return DemoCase(
        case_id, round(h, 4), round(b, 4), round(s, 4), round(volume, 3), round(age, 1), sex,
        round(onset, 2), gcs, round(glucose, 2), round(sbp, 1), expansion,
    )  # fmt: skip


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float) -> np.ndarray:
    """Gaussian random field with unit SD, correlated over ``sigma_mm`` (numpy z, y, x)."""
    sigma = [sigma_mm / sp for sp in SPACING_MM[::-1]]
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def _render(case: DemoCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The HU volume and hematoma mask of one case, in numpy (z, y, x) order."""
    nx, ny, nz = SHAPE_XYZ
    z, y, x = np.meshgrid(
        (np.arange(nz) - (nz - 1) / 2) * SPACING_MM[2],
        (np.arange(ny) - (ny - 1) / 2) * SPACING_MM[1],
        (np.arange(nx) - (nx - 1) / 2) * SPACING_MM[0],
        indexing="ij",
        sparse=True,
    )
    scale = rng.uniform(0.92, 1.06)
    semi = np.array([68.0, 84.0, 70.0]) * scale  # x, y, z semi-axes of the head in mm
    radial = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + ((z + 10) / semi[2]) ** 2)
    depth = (1 - radial) * semi[:2].mean()  # approximate depth below the skin in mm
    volume = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    volume[depth > 0] = 40.0  # scalp
    skull = (depth > 3) & (depth <= 3 + rng.uniform(5, 8))
    volume[skull] = 1100 + 250 * _smooth_noise(rng, volume.shape, 3.0)[skull]
    brain = depth > 11
    volume[brain] = 34 + 4 * _smooth_noise(rng, volume.shape, 4.0)[brain]
    for side in (-1, 1):  # lateral ventricles
        vent = ((x - side * 9) / 6) ** 2 + ((y + 5) / 22) ** 2 + ((z + 5) / 16) ** 2 < 1
        volume[vent & brain] = 6.0

    # hematoma: a sphere of the drawn volume, its outline perturbed by a random field
    radius = (3 * case.volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    side = rng.choice([-1, 1])
    amplitude = 0.08 + 0.5 * case.irregularity
    z_room = min(12.0, max(0.0, 50.0 - radius * (1 + 1.5 * amplitude)))  # clear of the ends
    centre = (side * rng.uniform(18, 30), rng.uniform(-15, 15), rng.uniform(-z_room, z_room))
    dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / radius
    outline = np.clip(_smooth_noise(rng, volume.shape, max(radius / 2.5, 2.0)), -1.5, 1.5)
    hematoma = (dist + amplitude * outline < 1) & brain
    oedema = ndimage.binary_dilation(hematoma, iterations=3) & brain & ~hematoma
    volume[oedema] = 20 + 3 * rng.standard_normal(int(oedema.sum()))
    texture = _smooth_noise(rng, volume.shape, 2.0)
    mean_hu = rng.uniform(58, 75)
    hu_sd = 3 + 12 * case.heterogeneity
    volume[hematoma] = np.clip(mean_hu + hu_sd * texture[hematoma], 42, 95)
    depth = ndimage.distance_transform_edt(hematoma, sampling=SPACING_MM[::-1])
    shell = hematoma & (depth <= 3.0)  # the boundary sub-region
    rim = _smooth_noise(rng, volume.shape, 1.2)
    b = case.boundary
    volume[shell] = np.clip(mean_hu - 6 * b + (3 + 14 * b) * rim[shell], 42, 95)
    volume += rng.normal(0, 4.0, volume.shape).astype(np.float32)
    return np.round(volume).astype(np.int16), hematoma.astype(np.uint8)


def write_volume(array: np.ndarray, spacing_xyz: tuple[float, ...], path: Path) -> None:
    """Write a (z, y, x) array centred on the origin, atomically (every demo cohort)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    shape_xyz = array.shape[::-1]
    image.SetOrigin(tuple(-(n - 1) / 2 * sp for n, sp in zip(shape_xyz, spacing_xyz, strict=True)))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def render_all(make: Callable[[Any], Any], tasks: list, jobs: int | None, chunksize: int) -> list:
    """``make`` over ``tasks`` in a process pool (``jobs``, default up to 8 cores) or, with
    one job, in this process; results in task order."""
    jobs = jobs or min(os.cpu_count() or 1, 8)
    if jobs > 1:
        with ProcessPoolExecutor(jobs, initializer=worker_signals) as pool:
            return list(pool.map(make, tasks, chunksize=chunksize))
    return [make(t) for t in tasks]


def _imaged(volume: np.ndarray, scanner: str, rng: np.random.Generator) -> np.ndarray:
    """The volume as ``scanner`` images it: its HU offset and extra noise."""
    offset, noise = SCANNERS[scanner]
    imaged = volume + offset + rng.normal(0, noise, volume.shape) if noise else volume + offset
    return np.round(imaged).astype(np.int16)


def _make_case(args: tuple[int, int, str, Path, str]) -> DemoCase:
    index, seed, case_id, out, scanner = args
    rng = np.random.default_rng([seed, index])
    case = _draw_case(case_id, rng)
    volume, mask = _render(case, rng)
    volume = _imaged(volume, scanner, np.random.default_rng([seed, index, 2]))
    write_volume(volume, SPACING_MM, out / "images" / f"{case_id}.nii.gz")
    write_volume(mask, SPACING_MM, out / "masks" / f"{case_id}.nii.gz")
    return case


def _stratified_split(labels: np.ndarray, seed: int, test_size: float = 0.2) -> list[str]:
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * len(labels), dtype=object)
    n_test = round(test_size * len(labels))
    positives = int(labels.sum())
    for cls, k in ((1, round(n_test * positives / len(labels))), (0, None)):
        idx = np.flatnonzero(labels == cls)
        k = n_test - (split == "test").sum() if k is None else k
        split[rng.permutation(idx)[:k]] = "test"
    return split.tolist()


def generate_demo_cohort(
    out: str | Path, n: int = 235, seed: int = 7, jobs: int | None = None
) -> Path:
    """Write ``n`` synthetic cases and ``manifest.csv`` under ``out``; return the manifest.

    The same ``n`` and ``seed`` give the same bytes. The manifest is written last, so its
    presence means the cohort is complete.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n)))
    ids = [f"ICH{i + 1:0{width}d}" for i in range(n)]
    # the outcome first (cheap: no image), so the scanner can follow the split
    labels = np.array([_draw_case(c, np.random.default_rng([seed, i])).expansion
                       for i, c in enumerate(ids)])  # fmt: skip
    split = _stratified_split(labels, seed)
    scanners = [str(np.random.default_rng([seed, i, 1]).choice(list(SCANNERS),
                                                                p=SCANNER_MIX[split[i]]))
                for i in range(n)]  # fmt: skip
    tasks = [(i, seed, c, out, scanners[i]) for i, c in enumerate(ids)]
    cases = render_all(_make_case, tasks, jobs, chunksize=4)
    truth = pd.DataFrame([asdict(c) for c in cases]).assign(scanner=scanners)
    manifest = truth[["case_id"]].assign(
        image=[f"images/{c}.nii.gz" for c in truth.case_id],
        roi=[f"masks/{c}.nii.gz" for c in truth.case_id],
        expansion=truth.expansion,
        split=split,
        scanner=truth.scanner,
        age=truth.age,
        sex=truth.sex,
        onset_to_ct_h=truth.onset_to_ct_h,
        gcs=truth.gcs,
        glucose_mmol_l=truth.glucose_mmol_l,
        sbp_mmhg=truth.sbp_mmhg,
    )
    write_csv_atomic(truth, out / "truth.csv")
    write_csv_atomic(manifest, out / "manifest.csv")
    return out / "manifest.csv"
