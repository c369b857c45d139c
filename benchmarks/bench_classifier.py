"""Image-classifier throughput, side by side with a bare torch loop, in one run.

Training: fusion's loop (seeded batch augmentation on the device, BCE, Adam, autocast and
a gradient scaler on CUDA, validation and two checkpoints after every epoch) against a
bare loop of forward, backward and step over the same images, model, batch size and
precision, with no augmentation, validation or checkpoint. Images/s counts training
images; the ratio (fusion / bare) says what fusion's bookkeeping costs: 1.0 is free.
Inference: fusion's ``predict`` (ImageNet normalisation, autocast, sigmoid, back to
NumPy) against a bare forward of the same batches.

    .venv/bin/python benchmarks/bench_classifier.py [--device auto]
        [--arch resnet50 densenet121] [--size 64] [--images 420] [--batch 32] [--epochs 2]

Defaults are the demo pneumothorax study's settings (420 training images of 64 pixels,
batch 32). Fixed costs (building the model, the last checkpoint write) are in both
timings; an epoch's checkpoint is written while the next one trains.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusion.config import ClassifierSpec
from fusion.device import autocast, grad_scaler, pick_device
from fusion.learn.cnn.data import Images
from fusion.learn.cnn.network import build_classifier
from fusion.learn.cnn.train import predict, train_classifier


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def images(n: int, size: int, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.float32)
    empty = np.zeros((n, size, size), bool)
    pixels = rng.random((n, size, size), dtype=np.float32)
    return Images([f"i{k}" for k in range(n)], pixels, labels, empty, empty[:, 0, 0])


def bare_training(arch: str, data: Images, batch: int, epochs: int, device: str) -> float:
    """Seconds for ``epochs`` of forward/backward/step over ``data`` in batches,
    building the model included (as in fusion's loop)."""
    start = time.perf_counter()
    model = build_classifier(arch, None, 0).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = grad_scaler(device)
    x_all = torch.from_numpy(data.pixels)[:, None]
    y_all = torch.from_numpy(data.labels)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for i in range(0, len(x_all), batch):
            x = x_all[i : i + batch].to(device).expand(-1, 3, -1, -1)
            y = y_all[i : i + batch].to(device)
            optimiser.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(x).squeeze(1).float()
            scaler.scale(loss_fn(logits, y)).backward()
            scaler.step(optimiser)
            scaler.update()
    _sync(device)
    return time.perf_counter() - start


def fusion_training(arch: str, train: Images, val: Images, batch: int, epochs: int,
                    device: str) -> float:  # fmt: skip
    spec = ClassifierSpec(architectures=[arch], weights="random", image_size=train.pixels.shape[-1],
                          batch_size=batch, max_epochs=epochs, patience=epochs,
                          freeze={"head_epochs": 0, "train_blocks": 5})  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        train_classifier(arch, train, val, spec, None, {}, Path(folder), 0, device)
        _sync(device)
        return time.perf_counter() - start


def bare_inference(model, pixels: np.ndarray, batch: int, device: str) -> float:  # noqa: ANN001
    x_all = torch.from_numpy(pixels)[:, None]
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        for i in range(0, len(x_all), batch):
            model(x_all[i : i + batch].to(device).expand(-1, 3, -1, -1)).float().cpu()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", nargs="+", default=["resnet50", "densenet121"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=420, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = pick_device(args.device)
    name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {device} ({name}); {args.images} training images of {args.size}x{args.size}, "
          f"batch {args.batch}, {args.epochs} epochs")  # fmt: skip
    train = images(args.images, args.size, 0)
    val = images(max(args.batch, args.images // 8), args.size, 1)
    print(f"{'arch':<12} {'what':<10} {'fusion img/s':>13} {'bare img/s':>11} {'ratio':>6}")
    for arch in args.arch:
        bare_training(arch, train, args.batch, 1, device)  # warm-up: kernels, allocator
        bare = args.images * args.epochs / bare_training(arch, train, args.batch, args.epochs,
                                                         device)  # fmt: skip
        ours = args.images * args.epochs / fusion_training(arch, train, val, args.batch,
                                                           args.epochs, device)  # fmt: skip
        print(f"{arch:<12} {'training':<10} {ours:>13.1f} {bare:>11.1f} {ours / bare:>6.2f}")
        model = build_classifier(arch, None, 0).to(device).eval()
        pixels = np.concatenate([train.pixels] * 2)
        bare_inference(model, pixels[: args.batch], args.batch, device)  # warm-up
        bare = len(pixels) / bare_inference(model, pixels, args.batch, device)
        start = time.perf_counter()
        predict(model, pixels, device, args.batch)
        _sync(device)
        ours = len(pixels) / (time.perf_counter() - start)
        print(f"{arch:<12} {'inference':<10} {ours:>13.1f} {bare:>11.1f} {ours / bare:>6.2f}")


if __name__ == "__main__":
    main()
