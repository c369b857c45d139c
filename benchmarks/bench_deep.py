"""Deep-feature stage end to end vs the bare model forward, side by side, in one run.

The stage reads each demo case from disk, cuts and windows its five planes in DataLoader
workers and runs ResNet50; the bare forward runs the same model on random tensors of the
same batch size, device and precision. The ratio (stage crops/s over bare crops/s) says
how well reading and preprocessing hide behind the model: 1.0 is perfect.

    .venv/bin/python benchmarks/bench_deep.py [--cases 60] [--device auto]

Uses data/demo_hematoma when present, else generates the cases it needs in a temporary
folder. Each repeat runs the stage as a study run does (a fresh cache and QC strip folder: every
case is computed and written), then the bare forward; the median ratio is printed.
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
    parser.add_argument("--repeats", type=int, default=3, help="stage and bare runs, in turn")
    parser.add_argument("--workers", type=int, help="crop-preparing processes")
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
            update={"weights": "random", "device": args.device, "batch_size": args.batch_size,
                    "num_workers": args.workers}
        )  # fmt: skip
        study = study.model_copy(update={"deep": spec})
        study._source = ROOT / "pipelines" / "demo_hematoma.yaml"
        cases = load_cohort(study)[: args.cases]
        digests = case_digests(cases)
        device = pick_device(args.device)
        planes = len(spec.offsets_mm)
        run_deep(study, cases[: max(1, spec.batch_size // planes)], digests, None)  # warm-up
        print(f"device {device}, {torch.get_num_threads()} torch threads, batch {spec.batch_size}"
              f" crops, {len(cases)} cases x {planes} planes, {spec.size} px, crop workers "
              f"{'the stage default' if args.workers is None else args.workers}")  # fmt: skip
        ratios = []
        for r in range(args.repeats):  # side by side, in turn: a busy neighbour hits both
            cache, strips = work / f"cache{r}", work / f"strips{r}"
            strips.mkdir()
            start = time.perf_counter()
            out = run_deep(study, cases, digests, cache, strips)  # as a run: cache, QC strips
            stage = len(out.features) * planes / (time.perf_counter() - start)
            bare = bare_forward(spec, device, crops=len(cases) * planes)
            ratios.append(stage / bare)
            print(f"run {r + 1}: stage {stage:6.1f} crops/s, bare forward {bare:6.1f} crops/s, "
                  f"ratio {stage / bare:.2f}", flush=True)  # fmt: skip
        print(f"median ratio stage / bare: {sorted(ratios)[len(ratios) // 2]:.2f} "
              f"(target >= 0.85)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
