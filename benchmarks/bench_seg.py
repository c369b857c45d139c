"""Segmentation throughput, side by side with the bare model, in one run.

Inference: fusion's sliding-window prediction (Gaussian blending, 25% overlap, softmax,
back to NumPy) against a bare forward of the same network over the same number of
patches of the same batch size, device and precision. The ratio says what the window
bookkeeping and blending cost: 1.0 is free. Training: fusion's trainer (augmented
patches from cached cases, Dice + CE, Adam, a checkpoint every epoch, validation on one
volume) against a bare loop of forward, backward and step on random patches of the same
batch size; samples are training patches.

    .venv/bin/python benchmarks/bench_seg.py [--device auto] [--volume 64 64 40]
        [--patch 32 32 24] [--channels 8 16 32] [--volumes 8] [--epochs 3]

Defaults are the demo mediastinal study's network and grid.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusion.config import NormaliseSpec, SegmentationSpec, UNetSpec, VariantSpec
from fusion.device import autocast, pick_device
from fusion.seg.data import Prepared
from fusion.seg.infer import window_batch, window_inference
from fusion.seg.network import build_unet, model_meta
from fusion.seg.train import train_unet


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def windows(volume_zyx: tuple[int, ...], patch_zyx: tuple[int, ...], overlap: float = 0.25) -> int:
    """How many patches MONAI's sliding window cuts from a volume (its own arithmetic)."""
    n = 1
    for size, roi in zip(volume_zyx, patch_zyx, strict=True):
        step = max(int(roi * (1 - overlap)), 1)
        n *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return n


def bare_inference(model, patch_zyx, n_patches, device) -> float:  # noqa: ANN001
    """Seconds for the network alone on ``n_patches`` random patches, in batches of the
    size fusion's sliding window uses on this device."""
    batch = window_batch(device, tuple(patch_zyx))
    x = torch.rand(batch, 1, *patch_zyx, device=device)
    with torch.inference_mode(), autocast(device):
        model(x)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(math.ceil(n_patches / batch)):
            torch.softmax(model(x).float(), dim=1)
        _sync(device)
    return time.perf_counter() - start


def case(shape_zyx, seed) -> Prepared:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    image = rng.random(shape_zyx, dtype=np.float32)
    label = np.zeros(shape_zyx, np.int64)
    z, y, x = (s // 3 for s in shape_zyx)
    label[z : 2 * z, y : 2 * y, x : 2 * x] = 1
    return Prepared(image, label, None, None, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--volume", type=int, nargs=3, default=[64, 64, 40], help="x y z")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 32, 24], help="x y z")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    device = pick_device(args.device)
    shape, patch = tuple(reversed(args.volume)), tuple(reversed(args.patch))
    arch = UNetSpec(channels=args.channels, strides=[2] * (len(args.channels) - 1))
    torch.manual_seed(0)
    model = build_unet(arch, 2).to(device).eval()
    volumes = [case(shape, i).image for i in range(args.volumes)]

    window_inference(model, volumes[0], 3, args.patch, device)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for volume in volumes:
        window_inference(model, volume, 3, args.patch, device)
    _sync(device)
    sliding = time.perf_counter() - start
    n_patches = windows(shape, patch) * len(volumes)
    bare = bare_inference(model, patch, n_patches, device)
    voxels = len(volumes) * math.prod(shape)

    spec = SegmentationSpec(labels={1: "lesion"}, network=arch, patch_size=args.patch,
                            batch_size=args.batch_size, patches_per_case=2,
                            max_epochs=args.epochs, patience=args.epochs,
                            normalise=NormaliseSpec(mode="zscore"), cv_folds=0)  # fmt: skip
    train = [case(shape, 100 + i) for i in range(args.volumes)]
    meta = model_meta(arch, spec.labels, [1.0, 1.0, 1.0], args.patch, spec.normalise,
                      VariantSpec(), {"study": "bench"})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_unet(train, train[:1], spec, meta, Path(tmp), 0, device)
        _sync(device)
        fusion_train = time.perf_counter() - start
    samples = args.epochs * args.volumes * spec.patches_per_case
    net = build_unet(arch, 2).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.rand(spec.batch_size, 1, *patch, device=device)
    y = (torch.rand(spec.batch_size, 1, *patch, device=device) > 0.9).long()
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda")
                                  and not torch.cuda.is_bf16_supported())  # fmt: skip
    steps = math.ceil(samples / spec.batch_size)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    bare_train = time.perf_counter() - start

    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"device {device} ({name}), {torch.get_num_threads()} torch threads; volume "
          f"{'x'.join(map(str, args.volume))}, patch {'x'.join(map(str, args.patch))}, "
          f"channels {args.channels}, batch {args.batch_size}")  # fmt: skip
    print(f"sliding-window inference: {voxels / sliding:12.0f} voxels/s "
          f"({n_patches} patches in {sliding:.2f} s)")  # fmt: skip
    print(f"bare forward, same patches: {voxels / bare:10.0f} voxels/s ({bare:.2f} s)")
    print(f"ratio sliding / bare:     {bare / sliding:8.2f}  (target >= 0.8)")
    print(f"fusion training:          {samples / fusion_train:8.1f} samples/s "
          f"({samples} patches, {args.epochs} epochs incl. validation, checkpoints)")  # fmt: skip
    print(f"bare training loop:       {samples / bare_train:8.1f} samples/s")
    print(f"ratio fusion / bare:      {bare_train / fusion_train:8.2f}")


if __name__ == "__main__":
    main()
