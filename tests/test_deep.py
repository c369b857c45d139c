"""Deep-feature stage: plane choice, interpolation, crops, windows, weights, determinism."""

from __future__ import annotations

import hashlib
import signal
import sys
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion.config import DeepSpec, load_study
from fusion.errors import FusionError
from fusion.features.crops import (
    AIR_HU,
    crop_geometry,
    largest_cross_section,
    multiplane_crops,
    resample_square,
    resolve_windows,
    sample_plane,
    window,
)
from fusion.features.deep import aggregate, build_model
from fusion.nets.weights import load_weights
from fusion.stages.context import RunOptions, build_context, check_study
from fusion.stages.deep import extract as extract_deep
from tests.conftest import _lingering, ct_volume, cube_roi, write_image

SPACING = (0.5, 0.5, 5.0)


def test_largest_cross_section_is_the_slice_with_most_area() -> None:
    roi = np.zeros((6, 20, 20), np.uint8)
    roi[1, 5:8, 5:8] = 1  # 9
    roi[3, 2:10, 2:9] = 1  # 56: the largest
    roi[4, 2:9, 2:10] = 1  # 56 as well: the first one wins
    roi[5, 0:5, 0:5] = 1  # 25
    assert largest_cross_section(roi) == 3
    with pytest.raises(ValueError, match="empty"):
        largest_cross_section(np.zeros((2, 3, 3)))


def test_planes_between_slices_are_interpolated_in_mm() -> None:
    # HU rise linearly with z (2 HU per mm), so linear interpolation is exact
    nz = 8
    z_mm = np.arange(nz) * SPACING[2]
    volume = np.broadcast_to((2.0 * z_mm)[:, None, None], (nz, 16, 16)).astype(np.float32)
    roi = np.zeros((nz, 16, 16), bool)
    roi[4, 6:10, 6:10] = True
    geometry = crop_geometry(roi, SPACING, [-2, -1, 0, 1, 2], margin_mm=1.0)
    assert geometry.central_slice == 4
    assert geometry.positions == pytest.approx((3.6, 3.8, 4.0, 4.2, 4.4))
    for offset, position in zip([-2, -1, 0, 1, 2], geometry.positions, strict=True):
        plane = sample_plane(volume, position, AIR_HU)
        assert plane == pytest.approx(np.full((16, 16), 2.0 * (4 * 5.0 + offset)), abs=1e-4)
    # beyond half a slice outside the volume there is only air
    assert (sample_plane(volume, -0.6, AIR_HU) == AIR_HU).all()
    assert (sample_plane(volume, nz - 0.6, AIR_HU) == volume[-1]).all()


def test_crop_is_a_square_in_mm_around_the_roi_with_margin() -> None:
    roi = np.zeros((3, 40, 60), bool)
    roi[1, 10:14, 20:40] = True  # 4 rows x 20 columns of 0.5 mm: 2 mm x 10 mm
    g = crop_geometry(roi, SPACING, [0.0], margin_mm=10.0)
    assert g.side_mm == pytest.approx(10.0 + 2 * 10.0)
    assert g.centre_mm == pytest.approx(((20 + 39) / 2 * 0.5, (10 + 13) / 2 * 0.5))
    assert g.central_area_mm2 == pytest.approx(80 * 0.25)


def test_crop_leaving_the_volume_is_padded_with_air() -> None:
    plane = np.full((20, 20), 40.0, np.float32)
    crop = resample_square(plane, (1.0, 1.0), (0.0, 0.0), side_mm=20.0, size=20, fill=AIR_HU)
    # the crop is centred on the corner voxel: the upper-left three quarters lie outside
    assert (crop[:9, :] == AIR_HU).all() and (crop[:, :9] == AIR_HU).all()
    assert (crop[11:, 11:] == 40.0).all()
    assert crop.shape == (20, 20)


def test_window_presets_and_channels() -> None:
    assert window(np.array([0.0, 40.0, 80.0, 1000.0, -1000.0]), 40, 80).tolist() == [
        0.0, 0.5, 1.0, 1.0, 0.0,
    ]  # fmt: skip
    assert resolve_windows("brain") == [(40.0, 80.0)] * 3
    assert resolve_windows(["brain", "subdural", "bone"]) == [
        (40.0, 80.0), (75.0, 215.0), (400.0, 1800.0),
    ]  # fmt: skip
    assert resolve_windows("soft_tissue")[0] == (40.0, 400.0)
    assert resolve_windows("lung")[0] == (-600.0, 1500.0)
    assert resolve_windows("50,150") == [(50.0, 150.0)] * 3
    with pytest.raises(ValueError, match="unknown window 'brian'; presets: brain, subdural"):
        resolve_windows("brian")
    with pytest.raises(ValueError, match="one window or three"):
        resolve_windows(["brain", "bone"])


def test_multiplane_crops_shape_and_mask_outside_roi() -> None:
    volume = ct_volume((12, 32, 32))
    roi = cube_roi((12, 32, 32)).astype(bool)
    kwargs = dict(offsets_mm=[-2, 0, 2], margin_mm=4.0, size=48, windows=resolve_windows("brain"))
    crops, g = multiplane_crops(volume, roi, (1.0, 1.0, 2.0), **kwargs)
    assert crops.shape == (3, 3, 48, 48) and crops.dtype == np.float32
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    masked, _ = multiplane_crops(
        volume, roi, (1.0, 1.0, 2.0), mask_outside_roi=True, mask_dilation_mm=0.0, **kwargs
    )
    # margin 4 mm around an 8 mm ROI in a 16 mm crop: the outer quarter is outside the ROI
    assert (masked[:, :, :10, :] == 0).all()
    assert masked[1, 0, 24, 24] == crops[1, 0, 24, 24]


def test_aggregation_modes() -> None:
    planes = np.array([[1.0, 5.0], [3.0, 1.0]])
    assert aggregate(planes, "mean").tolist() == [2.0, 3.0]
    assert aggregate(planes, "max").tolist() == [3.0, 5.0]
    assert aggregate(planes, "concat").tolist() == [1.0, 5.0, 3.0, 1.0]


def test_offline_imagenet_error_says_how_to_fix_and_random_fallback(monkeypatch) -> None:
    from torchvision.models import ResNet50_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", offline)
    with pytest.raises(FusionError) as err:
        load_weights(DeepSpec(weights="imagenet"))
    msg = str(err.value)
    assert "resnet50-11ad3fa6.pth" in msg and "checkpoints" in msg
    assert "deep.weights" in msg and "allow_random_weights: true" in msg
    fallback = load_weights(DeepSpec(weights="imagenet", allow_random_weights=True))
    assert fallback.state_dict is None and not fallback.pretrained
    assert "RANDOM weights" in fallback.warning and "NOT pretrained" in fallback.warning


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(3)
    reference = resnet50(weights=None).eval()
    path = tmp_path / "resnet50.pt"
    torch.save(reference.state_dict(), path)
    weights = load_weights(DeepSpec(weights=str(path)))
    assert weights.pretrained and weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    model = build_model(DeepSpec(weights=str(path)), weights, seed=99)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected = torch.flatten(reference.avgpool(_trunk(reference, x)), 1)
        assert torch.equal(model(x), expected)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    wrong = load_weights(DeepSpec(weights=str(tmp_path / "wrong.pt")))
    with pytest.raises(FusionError, match="not a ResNet50 state dict"):
        build_model(DeepSpec(), wrong, seed=0)


def _trunk(m, x):  # noqa: ANN001, ANN202 - torchvision's ResNet forward up to avgpool
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def _study(make_study, tmp_path: Path, n: int, **deep) -> Path:
    rows = []
    for i in range(n):
        write_image(tmp_path / "cohort" / f"i{i}.nrrd", ct_volume((12, 32, 32), seed=i))
        write_image(tmp_path / "cohort" / f"r{i}.nrrd", cube_roi((12, 32, 32)))
        rows.append({"case_id": f"c{i}", "image": f"i{i}.nrrd", "roi": f"r{i}.nrrd",
                     "label": i % 2})  # fmt: skip
    spec = {"weights": "random", "size": 64, "batch_size": 10, "num_workers": 0, **deep}
    return make_study(rows, {"deep": spec})


def run(path: Path, tmp_path: Path, cache: bool = True):
    study = load_study(path)
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache" if cache else None)
    return extract_deep(build_context(study, options))


def test_stage_is_deterministic_cached_and_writes_strips(make_study, tmp_path: Path) -> None:
    path = _study(make_study, tmp_path, 3, num_workers=1)
    first = run(path, tmp_path)
    assert first.features.shape == (3, 1 + 2048)
    assert first.features.columns[1] == "deep:resnet50_0"
    assert (first.computed, first.cached) == (3, 0)
    assert not first.weights.pretrained
    again = run(path, tmp_path, cache=False)
    assert again.features.equals(first.features)  # same seed, same inputs: same numbers
    warm = run(path, tmp_path)
    assert (warm.computed, warm.cached) == (0, 3)
    assert np.allclose(warm.features.iloc[:, 1:].to_numpy(), first.features.iloc[:, 1:].to_numpy())
    strips = sorted((tmp_path / "reports" / "unit" / "figures" / "crops").iterdir())
    assert [p.name for p in strips] == ["c0.png", "c1.png", "c2.png"]
    from PIL import Image

    assert Image.open(strips[0]).size == (5 * 64 + 4 * 4, 64)


def test_concat_and_layer_options(make_study, tmp_path: Path) -> None:
    out = run(_study(make_study, tmp_path, 1, aggregate="concat", layer="layer3"), tmp_path)
    assert out.features.shape == (1, 1 + 5 * 1024)


def test_unreadable_case_is_a_failure_of_that_case_only(make_study, tmp_path: Path) -> None:
    path = _study(make_study, tmp_path, 2)
    (tmp_path / "cohort" / "r1.nrrd").write_bytes(b"garbage")
    study = load_study(path)
    options = RunOptions(reports=tmp_path / "reports", cache=tmp_path / "cache")
    ctx = build_context(study, options)
    checked = ctx.checked
    out = extract_deep(ctx)
    assert out.features.case_id.tolist() == ["c0"]  # c1 was excluded by QC
    from fusion.features.deep import run_deep

    out = run_deep(study, checked.cases, checked.digests, None)
    assert out.features.case_id.tolist() == ["c0"]
    assert [f.case_id for f in out.failures] == ["c1"]
    assert "cannot read ROI" in out.failures[0].message


def test_crop_workers_in_turn_give_the_serial_features(make_study, tmp_path: Path) -> None:
    """On the CPU, worker processes prepare a chunk of cases while the model waits
    (fusion.features.deep._batches): the features, their order, the strips and a
    broken case's failure are those of preparing every case in the main process."""
    from fusion.features.deep import run_deep

    path = _study(make_study, tmp_path, 5)
    study = load_study(path)
    checked = check_study(study, RunOptions(reports=tmp_path / "r", cache=tmp_path / "c"))
    (tmp_path / "cohort" / "r3.nrrd").write_bytes(b"garbage")  # broken after QC
    outs = {}
    for workers in (0, 1, 2):  # one case a batch: 1 worker prepares chunks of 4, 2 of 8
        spec = study.deep.model_copy(update={"num_workers": workers, "batch_size": 5})
        strips = tmp_path / f"strips{workers}"
        strips.mkdir()
        outs[workers] = run_deep(study.model_copy(update={"deep": spec}), checked.cases,
                                 checked.digests, None, strips)  # fmt: skip
        assert [f.case_id for f in outs[workers].failures] == ["c3"]
        assert "cannot read ROI" in outs[workers].failures[0].message
    assert outs[0].features.case_id.tolist() == ["c0", "c1", "c2", "c4"]
    for workers in (1, 2):
        assert outs[workers].features.equals(outs[0].features)
        for name in ("c0.png", "c4.png"):
            png = (tmp_path / f"strips{workers}" / name).read_bytes()
            assert png == (tmp_path / "strips0" / name).read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers forked on Linux")
def test_a_crop_worker_that_dies_fails_its_case_only(make_study, tmp_path, monkeypatch) -> None:
    """A case whose crop-preparing worker dies (os._exit: a kill, the OOM killer) breaks
    the pool; its chunk's other cases are retried alone in a fresh pool and succeed, and
    the case fails as WorkerDied, not as a hang or a lost run."""
    import os

    import fusion.features.deep as deep

    path = _study(make_study, tmp_path, 4)
    study = load_study(path)
    checked = check_study(study, RunOptions(reports=tmp_path / "r", cache=tmp_path / "c"))
    real = deep.prepare_case

    def dies_on_c1(case, *args):  # noqa: ANN001, ANN002, ANN202
        if case.case_id == "c1":
            os._exit(9)
        return real(case, *args)

    monkeypatch.setattr(deep, "prepare_case", dies_on_c1)  # the forked workers inherit it
    spec = study.deep.model_copy(update={"num_workers": 2, "batch_size": 5})
    with _cli_sigterm():  # as under `fusion run`: the handler CI's hang came from
        out = deep.run_deep(study.model_copy(update={"deep": spec}), checked.cases,
                            checked.digests, None)  # fmt: skip
    assert out.features.case_id.tolist() == ["c0", "c2", "c3"]
    assert [(f.case_id, f.error) for f in out.failures] == [("c1", "WorkerDied")]
    assert _lingering() == []  # the broken pool's survivors and its thread too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers forked on Linux")
def test_an_error_in_the_stage_stops_its_crop_workers_at_once(make_study, tmp_path,
                                                              monkeypatch) -> None:  # fmt: skip
    """An error while results are saved (a full disk) stops the crop workers before it
    propagates, not when the traceback that holds the stage's frames is freed."""
    import fusion.features.deep as deep

    path = _study(make_study, tmp_path, 4)
    study = load_study(path)
    checked = check_study(study, RunOptions(reports=tmp_path / "r", cache=tmp_path / "c"))

    def full_disk(*args) -> None:  # noqa: ANN002
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deep, "_write_strip", full_disk)
    spec = study.deep.model_copy(update={"num_workers": 2, "batch_size": 5})
    with pytest.raises(OSError, match="No space left") as caught:
        deep.run_deep(study.model_copy(update={"deep": spec}), checked.cases,
                      checked.digests, None)  # fmt: skip
    assert caught.traceback  # still held, with the stage's frames
    assert _lingering() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers forked on Linux")
def test_crop_workers_drop_the_parents_signal_handlers(capfd) -> None:
    """Forked crop workers die on SIGTERM and ignore Ctrl-C, whatever the parent set. With
    `fusion run`'s SIGTERM handler (KeyboardInterrupt) inherited, a worker the pool
    terminated could catch it as its task's error and wait for a pipe nobody read: the
    pool's thread never ended, and CI hung at interpreter exit after every test passed.

    Twenty rounds: a worker reaped by the pool's own thread could still read as alive
    right after the pool stopped, about one round in ten (the failure CI saw). A worker
    stopped while still starting must not catch the SIGTERM either: the pool forks with
    the stop signals held (``test_engine.py`` tests that hold on its own)."""
    from fusion.features.deep import _ChunkPool

    for _ in range(20):
        with _cli_sigterm(), _ChunkPool([{"case_id": "a"}, {"case_id": "b"}], 2) as pool:
            handlers = [pool.pool.submit(signal.getsignal, s).result()
                        for s in (signal.SIGTERM, signal.SIGINT)]  # fmt: skip
            assert pool.prepare(range(2)) == [{"case_id": "a"}, {"case_id": "b"}]
            processes = list(pool.pool._processes.values())
        assert handlers == [signal.SIG_DFL, signal.SIG_IGN]
        assert len(processes) == 2
        # gone: stopped, or already out on the pool's own shutdown signal
        assert {p.exitcode for p in processes} <= {-signal.SIGTERM, 0}
    assert "KeyboardInterrupt" not in capfd.readouterr().err  # no worker caught a SIGTERM


@contextmanager
def _cli_sigterm() -> Iterator[None]:
    from fusion.cli import _terminate

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_dask_cluster_gives_the_local_features(make_study, tmp_path: Path) -> None:
    """With a scheduler each case is a task on the cluster (one model per worker); the
    features equal the local ones up to float rounding of a different batch size, and a
    broken case is a failure of that case only."""
    from distributed import LocalCluster

    from fusion.features.deep import run_deep

    path = _study(make_study, tmp_path, 3)
    local = run(path, tmp_path, cache=False)
    study = load_study(path)
    options = RunOptions(reports=tmp_path / "dask", cache=tmp_path / "dask-cache")
    checked = check_study(study, options)
    (tmp_path / "cohort" / "r2.nrrd").write_bytes(b"garbage")  # broken after QC
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = run_deep(study, checked.cases, checked.digests, tmp_path / "dask-cache",
                          tmp_path / "strips", scheduler=cluster.scheduler_address)  # fmt: skip
    assert remote.computed == 2 and [f.case_id for f in remote.failures] == ["c2"]
    assert "Traceback" in remote.failures[0].traceback
    a = local.features.set_index("case_id").loc[["c0", "c1"]].to_numpy()
    b = remote.features.set_index("case_id").loc[["c0", "c1"]].to_numpy()
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "strips").iterdir()) == ["c0.png", "c1.png"]


def test_finetune_trains_on_the_training_cases_only_and_changes_the_features(
    make_study, tmp_path: Path, monkeypatch
) -> None:
    """deep.weights: finetune trains on the models stage's training cases (never a test
    case), is cached, and the fine-tuned weights give other features than the start."""
    import fusion.learn.cnn.train as train_module
    from fusion.cohort import load_cohort
    from fusion.learn.splits import assign_sets

    seen = []
    original = train_module.train_classifier

    def spy(arch, fit, val, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(set(fit.case_ids) | set(val.case_ids))
        return original(arch, fit, val, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_classifier", spy)
    finetune = {"start": "random", "max_epochs": 1, "batch_size": 8, "validation_size": 0.3,
                "freeze": {"head_epochs": 0, "train_blocks": 1}}  # fmt: skip
    path = _study(make_study, tmp_path, 12, weights="finetune", size=32, finetune=finetune)
    tuned = run(path, tmp_path)
    study = load_study(path)
    sets = assign_sets(load_cohort(study), study.evaluation.test_size, study.seed)
    assert seen and seen[0] <= set(sets.index[sets == "train"])
    assert len(seen[0]) == (sets == "train").sum()
    assert tuned.weights.source.startswith("fine-tuned from random")
    assert tuned.weights.sha256 and len(tuned.weights.sha256) == 64
    again = run(path, tmp_path)
    assert len(seen) == 1 and (again.computed, again.cached) == (0, 12)  # nothing retrained
    start = run(_study(make_study, tmp_path, 12, size=32), tmp_path, cache=False)
    assert not np.allclose(start.features.iloc[:, 1:].to_numpy(),
                           tuned.features.iloc[:, 1:].to_numpy())  # fmt: skip
