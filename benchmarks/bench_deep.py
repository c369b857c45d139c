"""Deep-feature stage end to end vs the bare model forward, side by side, in one run.

The stage reads each demo case from disk, cuts and windows its five planes in DataLoader
workers and runs ResNet50; the bare forward runs the same model on random tensors of the
same batch size, device and precision. The ratio (stage crops/s over bare crops/s) says
how well reading and preprocessing hide behind the model: 1.0 is perfect.

    .venv/bin/python benchmarks/bench_deep.py [--cases 60] [--device auto]

Uses data/demo_hematoma when present, else generates the cases it needs in a temporary
folder. No cache: every case is computed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fusion.cohort import load_cohort
from fusion.config import DeepSpec, load_study
from fusion.demo import generate_demo_cohort
from fusion.device import pick_device
from fusion.features.deep import build_model, run_deep
from fusion.hashing import case_digests
from fusion.nets.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]


def bare_forward(spec: DeepSpec, device: str, crops: int) -> float:
    """Crops per second of the model alone on random input, as the stage runs it."""
    model = build_model(spec, load_weights(DeepSpec(weights="random")), seed=0).to(device)
    cuda = device.startswith("cuda")
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    batch = torch.rand(spec.batch_size, 3, spec.size, spec.size, device=device)
    if cuda:
        batch = batch.to(memory_format=torch.channels_last)
    batches = max(1, crops // spec.batch_size)
    with torch.inference_mode():
        for i in range(batches + 1):  # the first batch warms up and is not timed
            if i == 1:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if cuda:
                with torch.autocast("cuda", dtype=dtype):
                    model(batch).float().cpu()
            else:
                model(batch).cpu()
        if cuda:
            torch.cuda.synchronize()
    return batches * spec.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_deep_"))
    try:
        demo = ROOT / "data" / "demo_hematoma"
        if not (demo / "manifest.csv").is_file():
            demo = work / "demo"
            generate_demo_cohort(demo, n=args.cases)
        text = (ROOT / "pipelines" / "demo_hematoma.yaml").read_text()
        study_path = ROOT / "pipelines" / ".bench_deep.yaml"
        study_path.write_text(text.replace("../data/demo_hematoma", str(demo)))
        try:
            study = load_study(study_path)
        finally:
            study_path.unlink()
        spec = study.deep.model_copy(
            update={"weights": "random", "device": args.device, "batch_size": args.batch_size}
        )
        study = study.model_copy(update={"deep": spec})
        study._source = ROOT / "pipelines" / "demo_hematoma.yaml"
        cases = load_cohort(study)[: args.cases]
        digests = case_digests(cases)
        device = pick_device(args.device)
        planes = len(spec.offsets_mm)
        run_deep(study, cases[: max(1, spec.batch_size // planes)], digests, None)  # warm-up
        start = time.perf_counter()
        out = run_deep(study, cases, digests, None)
        stage = len(out.features) * planes / (time.perf_counter() - start)
        bare = bare_forward(spec, device, crops=len(cases) * planes)
        print(f"device {device}, {torch.get_num_threads()} torch threads, batch {spec.batch_size}"
              f" crops, {len(cases)} cases x {planes} planes, {spec.size} px")  # fmt: skip
        print(f"stage end to end:   {stage:8.1f} crops/s")
        print(f"bare model forward: {bare:8.1f} crops/s")
        print(f"ratio stage / bare: {stage / bare:8.2f}  (target >= 0.85)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
