"""The reproducible mode: a network trained twice, under different thread settings and
kernel environments, gives bit-identical weights and scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fusion.engine import StageRun
from fusion.errors import FusionError
from fusion.reproducible import PINS, pin_environment

# Trains fusion's U-Net (MONAI, PReLU: its weight gradient is a whole-tensor reduction,
# split per thread) three Adam steps in the reproducible mode; prints hashes and state.
TRAIN = """
import hashlib, json
import sys
from fusion.reproducible import pin_environment, torch_mode
pin_environment()
import torch
from fusion.config import UNetSpec
from fusion.seg.network import build_unet
torch.set_num_threads(1)  # what the machine would pick; the mode overrides it
with torch_mode({"threads": 2, "kernels": sys.argv[1]}):
    torch.manual_seed(0)
    spec = UNetSpec(dims=3, channels=[4, 8, 16], strides=[2, 2], res_units=1)
    net = build_unet(spec, 2)
    x = torch.randn(2, 1, 16, 16, 16)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = net(x).softmax(1)[:, 1].mean()
        loss.backward()
        opt.step()
    weights = hashlib.sha256()
    for p in net.state_dict().values():
        weights.update(p.detach().numpy().tobytes())
    scores = net(x).detach().numpy().tobytes()
    state = {"threads": torch.get_num_threads(), "onednn": torch.backends.mkldnn.enabled,
             "isa": torch.backends.cpu.get_cpu_capability()}
print(json.dumps({"weights": weights.hexdigest(), "scores": hashlib.sha256(scores).hexdigest(),
                  **state}))
"""


def _train(kernels: str, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    out = subprocess.run([sys.executable, "-c", TRAIN, kernels], env=clean | env,
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["portable", "onednn"])
def test_training_is_bit_identical_whatever_the_threads_and_isa(kernels: str) -> None:
    plain = _train(kernels, {})
    # a machine that would run one thread, on another ISA and MKL path, without AVX-512
    other = _train(kernels, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                             "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                             "ONEDNN_MAX_CPU_ISA": "SSE41"})  # fmt: skip
    assert plain == other
    assert plain["threads"] == 2 and plain["onednn"] is (kernels == "onednn")
    if os.uname().machine == "x86_64":
        assert plain["isa"] == "AVX2"


def test_mode_refuses_a_process_whose_torch_ran_unpinned(monkeypatch) -> None:
    import torch  # noqa: F401 - loaded, as after an earlier network in this process

    monkeypatch.setenv("MKL_CBWR", "AUTO")
    with pytest.raises(FusionError, match="before its kernel settings were pinned"):
        pin_environment()
    monkeypatch.setenv("MKL_CBWR", PINS["MKL_CBWR"])
    pin_environment()  # pinned already: nothing to do


def test_mode_restores_the_process_settings() -> None:
    import torch

    from fusion.reproducible import torch_mode

    before = (torch.get_num_threads(), torch.backends.mkldnn.enabled)
    with torch_mode({"threads": 1, "kernels": "portable"}):
        assert torch.get_num_threads() == 1 and not torch.backends.mkldnn.enabled
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.backends.mkldnn.enabled) == before
    assert not torch.are_deterministic_algorithms_enabled()


def test_unet_roi_runs_in_the_mode_and_its_key_says_so(tmp_path: Path) -> None:
    from fusion.config import Study
    from fusion.rois.stage import generator_settings, rois_settings

    base = {"name": "s", "cohort": {"manifest": str(_manifest(tmp_path)),
                                    "columns": {"case_id": "c", "image": "i", "label": "y"}},
            "rois": {"tumour": {"generator": "unet",
                                "settings": {"checkpoint": "x.pt", "device": "cpu"}}}}  # fmt: skip
    plain = Study.model_validate(base)
    pinned = Study.model_validate(base | {"reproducible": {"threads": 3}})
    fast = Study.model_validate(base | {"reproducible": {"threads": 3, "kernels": "onednn"}})
    assert generator_settings(pinned, "tumour")["reproducible"] == {
        "threads": 3,
        "kernels": "portable",
    }
    assert generator_settings(plain, "tumour")["reproducible"] is None
    keys = {str(rois_settings(s, "tumour")) for s in (plain, pinned, fast)}
    assert len(keys) == 3  # each mode its own cached label maps


@pytest.mark.parametrize("mode", [{"threads": 3, "kernels": "onednn"}, None])
def test_a_unet_roi_tells_the_engine_the_threads_each_task_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: dict | None
) -> None:  # fmt: skip
    """A unet generator runs torch on the mode's threads whatever the engine allots it,
    so the engine is told (it then fits its workers to them: ``test_engine.py``)."""
    import fusion.rois.stage as rois
    from fusion.cohort import Case
    from fusion.config import Study

    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"weights")
    study = Study.model_validate({
        "name": "s", "reproducible": mode,
        "cohort": {"manifest": str(_manifest(tmp_path)),
                   "columns": {"case_id": "c", "image": "i", "label": "y"}},
        "rois": {"tumour": {"generator": "unet",
                            "settings": {"checkpoint": str(checkpoint), "device": "cpu"}}},
    })  # fmt: skip
    asked = []

    def run_tasks(fn, tasks, cache, **options):  # noqa: ANN001, ANN003, ANN202, ARG001
        asked.append(options["task_threads"])
        return StageRun()

    monkeypatch.setattr(rois, "run_tasks", run_tasks)
    case = Case(case_id="a", image=tmp_path / "a.nii.gz", roi=None, label=0)
    rois.run_rois(study, [case], pd.Series({"a": "train"}), {"a": ("i", "r")}, tmp_path, None)
    assert asked == [3 if mode else None]


def _manifest(folder: Path) -> Path:
    path = folder / "manifest.csv"
    path.write_text("c,i,y\n")
    return path
