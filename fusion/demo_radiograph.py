"""A synthetic chest-radiograph cohort for the pneumothorax demo (seed 004's task).

Each 256 x 256 frontal radiograph has a torso, two lungs with branching vascular
markings that thin towards the periphery, ribs, clavicles, a mediastinum with the heart
to the patient's left, and domed hemidiaphragms; exposure, contrast and noise vary per
image. A pneumothorax (about 40% of images) is a peripheral crescent of one lung, apical
and lateral, of varying depth: no lung markings in it, slightly more lucent, bounded by
a thin bright visceral pleural line. Its mask is written beside the image.

About one image in ten is written as a DICOM DX file with MONOCHROME1 photometry (air
is white in the stored values) and a VOI window, the way some CR/DX systems export, so
the demo runs through the DICOM display pipeline too. Patients may have two images
(a follow-up with the same anatomy), so splits must group by patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from fusion.atomic import atomic_path, write_csv_atomic
from fusion.demo import render_all

SIZE = 256
SPACING_MM = 1.4  # a 36 cm detector over 256 pixels


def _lungs(yy, xx, anatomy) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Right and left lung fields (image left is the patient's right)."""
    fields = []
    for side in (-1, 1):
        cx = 128 + side * anatomy["lung_dx"]
        rx, ry, top = anatomy["lung_rx"], anatomy["lung_ry"], anatomy["apex"]
        inside = ((xx - cx) / rx) ** 2 + ((yy - (top + ry)) / ry) ** 2 <= 1
        dome = top + 2 * ry - anatomy["dome"] * (1 - ((xx - cx) / rx) ** 2)
        inside &= yy < dome + (8 if side > 0 else 0)  # the left dome sits lower
        inside &= side * (xx - 128) > anatomy["mediastinum"] + (14 if side > 0 else 0) * (yy > 130)
        fields.append(inside)
    return fields[0], fields[1]


def _markings(lung: np.ndarray, hilum: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Branching vessels from the hilum, thinner and fainter towards the periphery."""
    canvas = np.zeros(lung.shape, np.float32)
    for _ in range(int(rng.integers(14, 20))):
        y, x = hilum
        angle = rng.uniform(-np.pi, np.pi)
        strength = rng.uniform(0.7, 1.0)
        for _ in range(int(rng.integers(25, 45))):
            angle += rng.normal(0, 0.18)
            y, x = y + 3 * np.sin(angle), x + 3 * np.cos(angle)
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < SIZE and 0 <= ix < SIZE):
                break
            canvas[iy, ix] += strength
            strength *= 0.95
            if rng.random() < 0.08:  # a branch
                angle += rng.choice([-0.5, 0.5])
    return ndimage.gaussian_filter(canvas, 1.0) * lung


def render_radiograph(index: int, seed: int, positive: bool, anatomy_seed: int) -> tuple:
    """(image in [0, 1] with bone bright, pneumothorax mask, description)."""
    anatomy_rng = np.random.default_rng([seed, anatomy_seed])  # a patient's anatomy
    rng = np.random.default_rng([seed, index, 1])  # this image
    anatomy = {
        "lung_dx": anatomy_rng.uniform(48, 56), "lung_rx": anatomy_rng.uniform(40, 48),
        "lung_ry": anatomy_rng.uniform(70, 82), "apex": anatomy_rng.uniform(28, 40),
        "dome": anatomy_rng.uniform(10, 22), "mediastinum": anatomy_rng.uniform(14, 20),
    }  # fmt: skip
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    body = ((xx - 128) / 118) ** 2 + ((yy - 150) / 150) ** 2 <= 1
    image = np.where(body, 0.55, 0.06).astype(np.float32)
    right, left = _lungs(yy, xx, anatomy)
    lungs = right | left
    image[lungs] = 0.22
    for lung, side in ((right, -1), (left, 1)):
        hilum = (anatomy["apex"] + anatomy["lung_ry"] * 0.9, 128 + side * 30)
        image += 0.35 * _markings(lung, hilum, rng)
    ribs = np.zeros_like(image)
    for k in range(9):  # posterior ribs: arcs falling laterally
        y0 = anatomy["apex"] + 6 + k * anatomy["lung_ry"] * 0.2
        arc = y0 + 0.004 * (xx - 128) ** 2 * rng.uniform(0.9, 1.1)
        ribs += (np.abs(yy - arc) < 3.2) & (np.abs(xx - 128) > 18)
    clavicles = np.abs(yy - (anatomy["apex"] + 4 - 0.12 * np.abs(xx - 128))) < 4
    image += 0.16 * np.clip(ribs, 0, 1) * body + 0.2 * clavicles * body
    heart = ((xx - 142) / 42) ** 2 + ((yy - 175) / 40) ** 2 <= 1
    image = np.where(heart | (np.abs(xx - 128) < anatomy["mediastinum"]) & body,
                     np.maximum(image, 0.7), image)  # fmt: skip
    mask = np.zeros(image.shape, bool)
    description = "none"
    if positive:
        side = int(rng.choice([-1, 1]))
        lung = right if side < 0 else left
        depth = rng.uniform(5, 32)  # rim depth in pixels: small to large
        inward = ndimage.distance_transform_edt(lung)
        lateral = side * (xx - 128) > anatomy["lung_dx"] * 0.55
        apical = yy < anatomy["apex"] + anatomy["lung_ry"] * rng.uniform(0.8, 1.4)
        mask = lung & (inward <= depth) & (lateral | apical) & (yy < anatomy["apex"] + 1.6 *
                                                                anatomy["lung_ry"])  # fmt: skip
        line = lung & (np.abs(inward - depth) < 1.0) & ndimage.binary_dilation(mask, iterations=2)
        image[mask] = 0.14 + 0.16 * ribs[mask].clip(0, 1)  # lucent, no markings
        image[line & ~mask] += 0.25
        description = f"{'right' if side < 0 else 'left'}, depth {depth * SPACING_MM:.0f} mm"
    image = ndimage.gaussian_filter(image, 0.8)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)  # exposure
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), mask, description


def _write_dicom(image: np.ndarray, path: Path, uid_seed: int) -> None:
    """12-bit MONOCHROME1 DX with a window covering the stored range."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.round((1 - image) * 4095).astype(np.uint16)  # MONOCHROME1: air high
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"fusion-demo-{uid_seed}"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME1"
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.ImagerPixelSpacing = [SPACING_MM, SPACING_MM]
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _make(args: tuple) -> dict:
    from PIL import Image

    index, seed, case_id, patient, anatomy_seed, positive, as_dicom, out = args
    image, mask, description = render_radiograph(index, seed, positive, anatomy_seed)
    name = f"images/{case_id}.dcm" if as_dicom else f"images/{case_id}.png"
    if as_dicom:
        _write_dicom(image, out / name, index)
    else:
        with atomic_path(out / name) as tmp:
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")
    with atomic_path(out / "masks" / f"{case_id}.png") as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    return {"case_id": case_id, "patient": patient, "image": name,
            "mask": f"masks/{case_id}.png", "pneumothorax": int(positive),
            "finding": description}  # fmt: skip


def generate_pneumothorax_cohort(out: str | Path, n: int = 600, seed: int = 17,
                                 jobs: int | None = None) -> Path:  # fmt: skip
    """``n`` radiographs (about 40% with pneumothorax) from about 0.85 n patients; no
    split in the manifest (the study draws 70/15/15 by patient)."""
    out = Path(out)
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.4
    patients, anatomy = [], []
    for i in range(n):
        follow_up = i > 0 and rng.random() < 0.15  # the previous patient's second image
        patients.append(patients[-1] if follow_up else f"P{len(set(patients)) + 1:04d}")
        anatomy.append(anatomy[-1] if follow_up else i)
    tasks = [(i, seed, f"CXR{i + 1:04d}", patients[i], anatomy[i], bool(positive[i]),
              i % 10 == 3, out) for i in range(n)]  # fmt: skip
    manifest = pd.DataFrame(render_all(_make, tasks, jobs, chunksize=16))
    write_csv_atomic(manifest, out / "manifest.csv")
    return out / "manifest.csv"
