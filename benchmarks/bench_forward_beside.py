"""A bare ResNet50 forward on the CPU, alone and beside two busy processes, in one run.

Why the deep stage's crop workers run in turn with the model on the CPU, never beside
it (``fusion.features.deep._batches``): the model's OpenMP threads take every core, and
a layer waits for its slowest thread. Two processes doing NumPy work beside the forward
are run at normal priority, at ``nice 19`` and at ``SCHED_IDLE`` (Linux: they get only
cycles nobody else wants); the forward's crops per second are printed for each, twice.

    .venv/bin/python benchmarks/bench_forward_beside.py [--threads 2] [--size 112]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import numpy as np
import torch
import torchvision


def busy(policy: str, stop: multiprocessing.synchronize.Event) -> None:
    if policy == "SCHED_IDLE":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif policy == "nice 19":
        os.nice(19)
    torch.set_num_threads(1)
    x = np.random.default_rng(0).random((200, 200))
    while not stop.is_set():
        np.fft.fft2(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the cores)")
    parser.add_argument("--size", type=int, default=112, help="crop size in pixels")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50().eval()  # random weights: the same arithmetic
    x = torch.rand(24, 3, args.size, args.size)
    context = multiprocessing.get_context("fork")
    with torch.inference_mode():
        model(x)  # warm-up
        for policy in ("alone", "SCHED_IDLE", "nice 19", "normal") * 2:
            stop = context.Event()
            workers = [] if policy == "alone" else [
                context.Process(target=busy, args=(policy, stop)) for _ in range(args.threads)
            ]  # fmt: skip
            for w in workers:
                w.start()
            time.sleep(0.3)
            start = time.perf_counter()
            for _ in range(args.batches):
                model(x)
            rate = args.batches * len(x) / (time.perf_counter() - start)
            stop.set()
            for w in workers:
                w.join()
            print(f"{policy:>10}: {rate:6.1f} crops/s", flush=True)


if __name__ == "__main__":
    main()
