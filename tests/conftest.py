"""Shared builders: small synthetic images, ROIs, manifests and study files on disk."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from fusion.reproducible import PINS

# The reproducible mode's kernel pins, set before any test loads torch, so that tests may
# run reproducible studies in this process (fusion.reproducible.pin_environment).
os.environ.update(PINS)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> Iterator[None]:
    """Every worker process a test started, and every process pool's thread, is gone
    when it ends (10 s of grace). Python joins a pool's thread at exit, and the thread
    waits for its workers: CI once hung there for an hour after every test had passed.
    This names the test instead. joblib's loky workers (scikit-learn's n_jobs) are left
    out: loky keeps them for reuse by design and stops them itself."""
    yield
    deadline = time.monotonic() + 10
    while (alive := _lingering()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"outlived the test: {alive}"


def _lingering() -> list:
    processes = [p for p in multiprocessing.active_children()
                 if not type(p).__name__.startswith("Loky")]  # fmt: skip
    pool_threads = [t for t in threading.enumerate()
                    if type(t).__module__ == "concurrent.futures.process"]  # fmt: skip
    return processes + pool_threads


def needs_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when that data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def write_image(
    path: Path,
    array: np.ndarray,
    spacing: tuple[float, ...] = (1.0, 1.0, 2.0),
    origin: tuple[float, ...] | None = None,
    direction: tuple[float, ...] | None = None,
) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def ct_volume(shape: tuple[int, int, int] = (12, 32, 32), seed: int = 0) -> np.ndarray:
    """A small CT-like volume (numpy z, y, x): air around a water-ish body with noise."""
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1000.0, dtype=np.float32)
    vol[:, 4:-4, 4:-4] = 40 + rng.normal(0, 5, (shape[0], shape[1] - 8, shape[2] - 8))
    return vol


def cube_roi(shape: tuple[int, int, int] = (12, 32, 32), label: int = 1) -> np.ndarray:
    roi = np.zeros(shape, dtype=np.uint8)
    roi[4:8, 12:20, 12:20] = label
    return roi


@pytest.fixture
def make_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest and a study file; return the study file's path.

    ``rows`` are manifest rows (dicts); ``study`` overrides keys of the study mapping.
    """

    def _make(rows: list[dict], study: dict | None = None, name: str = "study.yaml") -> Path:
        cohort_dir = tmp_path / "cohort"
        cohort_dir.mkdir(exist_ok=True)
        pd.DataFrame(rows).to_csv(cohort_dir / "manifest.csv", index=False)
        spec = {
            "name": "unit",
            "seed": 1,
            "cohort": {"manifest": "cohort/manifest.csv"},
        }
        for key, value in (study or {}).items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return _make


@pytest.fixture
def good_case(tmp_path: Path) -> Callable[[str], dict]:
    """Write a passing image + ROI pair for ``case_id``; return its manifest row."""

    def _make(case_id: str, label: int = 0, split: str = "train") -> dict:
        folder = tmp_path / "cohort"
        write_image(folder / "img" / f"{case_id}.nii.gz", ct_volume())
        write_image(folder / "roi" / f"{case_id}.nii.gz", cube_roi())
        return {
            "case_id": case_id,
            "image": f"img/{case_id}.nii.gz",
            "roi": f"roi/{case_id}.nii.gz",
            "label": label,
            "split": split,
        }

    return _make


class KillAtEpoch:
    """Wraps ``module._epoch_fn`` (a trainer's epoch factory) so that epoch ``epoch``
    raises KeyboardInterrupt, as a killed run would stop, until :meth:`disarm`;
    ``ran`` lists the epochs trained after the kill (what a resume had to redo)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, epoch: int) -> None:
        self.epoch: int | None = epoch
        self.ran: list[int] = []
        real = module._epoch_fn

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            inner = real(*args, **kwargs)

            def epoch_fn(epoch: int):  # noqa: ANN202
                if epoch == self.epoch:
                    raise KeyboardInterrupt
                if self.epoch is None:
                    self.ran.append(epoch)
                return inner(epoch)

            return epoch_fn

        monkeypatch.setattr(module, "_epoch_fn", wrapped)

    def disarm(self) -> None:
        """Let the next run train through (and record its epochs in ``ran``)."""
        self.epoch = None
