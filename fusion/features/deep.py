"""Deep-feature stage: ResNet50 embeddings of multi-plane crops around each ROI.

Per case, the crops of :mod:`fusion.features.crops` go through a torchvision ResNet50;
the global-average-pooled output of the chosen layer (``avgpool``: 2048 values) of each
plane is aggregated over the planes (mean, max or concatenation) into columns
``deep:resnet50_<i>``.

Weights: ``imagenet`` (torchvision's ``ResNet50_Weights.IMAGENET1K_V2`` through the
torch hub cache), a local checkpoint (a state dict, loaded with ``weights_only=True``,
its sha256 recorded) or ``random``. When ImageNet weights cannot be had (offline, empty
cache) the stage stops with instructions, unless the study sets
``allow_random_weights: true``: then it goes on with seeded random weights and says so,
loudly, in the provenance and the report.

Speed: crops are prepared by DataLoader workers, one case per item, read lazily from
disk, while the model runs; ``torch.inference_mode``; on CUDA, autocast and
channels-last. Results are cached per case like the radiomics stage.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.atomic import atomic_path
from fusion.cohort import Case
from fusion.config import DeepSpec, Study
from fusion.device import autocast, pick_device, precision
from fusion.engine import (
    CASE_COHORT_EXCLUDES,
    Failure,
    Progress,
    Store,
    cache_key,
    stage_settings,
    stop_pool,
    stop_signals_held,
    worker_signals,
)
from fusion.errors import ConfigError, FusionError
from fusion.features.crops import (
    imagenet_normalise,
    prepare_case,
    resolve_windows,
    roi_source,
)
from fusion.nets.weights import Weights, load_weights, weights_digest
from fusion.seeds import stream

log = logging.getLogger(__name__)
PREFIX = "deep:"
DEEP_CACHE_VERSION = 4  # 3: the QC strip outlines the ROI; 4: separable resampling (1 ulp)

# study fields that cannot change a case's features, each with the reason
DEEP_KEY_EXCLUDES = {
    "deep": (
        "device",  # replaced by the resolved device ("auto" -> cuda or cpu)
        "num_workers",  # crop-preparing processes: scheduling only
        "allow_random_weights",  # the weights actually used enter the key instead
        "max_failures",  # a budget for the run, not an input of any case
    ),
    "cohort": (
        *CASE_COHORT_EXCLUDES,
        "modality",  # QC's HU checks only; the CT window is a deep setting
    ),
    "reproducible": (),  # threads and kernels of the network
}


def build_model(spec: DeepSpec, weights: Weights, seed: int):  # noqa: ANN201 - torch.nn.Module
    """ResNet50 with the weights loaded, cut at ``spec.layer``, in eval mode.

    The default layer, ``avgpool``, is reached by replacing the classifier with an
    identity; any other module (``layer3``, ``layer4.2``...) through torchvision's FX
    feature extractor, which returns a dict.
    """
    import torch
    from torchvision.models import resnet50
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(stream(seed, "deep/weights"))  # random weights: the study seed's
    model = resnet50(weights=None)
    if weights.state_dict is not None:
        # the classifier (fc) is never used: a fine-tuned one-logit head is left out
        state = {k: v for k, v in weights.state_dict.items() if not k.startswith("fc.")}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            unexpected = result.unexpected_keys[:3]
            raise FusionError(f"{weights.source}: not a ResNet50 state dict (missing "
                              f"{missing[:3]}, unexpected {unexpected})")  # fmt: skip
    if spec.layer == "avgpool":
        model.fc = torch.nn.Identity()
        return model.eval()
    try:
        model.get_submodule(spec.layer)
    except AttributeError:
        modules = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(
            f"deep.layer: {spec.layer!r} is not a ResNet50 module; top-level modules: {modules}"
        ) from None
    return create_feature_extractor(model, return_nodes={spec.layer: "out"}).eval()


@dataclass(slots=True)
class DeepOutput:
    features: pd.DataFrame
    geometry: pd.DataFrame
    failures: list[Failure]
    weights: Weights
    device: str
    computed: int = 0
    cached: int = 0
    settings_key: str = ""  # hash of deep_settings: part of every case's cache key


class CropDataset:
    """One item per case: its crops prepared from disk, or the error that stopped them."""

    def __init__(
        self, cases: list[Case], spec: DeepSpec, label: int, structures: list[str] | None
    ) -> None:
        self.cases, self.spec, self.label, self.structures = cases, spec, label, structures
        self.windows = resolve_windows(spec.window)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        case = self.cases[i]
        try:
            crops, geometry = prepare_case(case, self.spec, self.label, self.structures)
            strip = strip_png(crops, geometry)  # here, not beside the model: 5-15 ms a case
        except Exception as exc:  # noqa: BLE001 - recorded against the case
            error = (type(exc).__name__, str(exc), traceback.format_exc())
            return {"case_id": case.case_id, "error": error}
        return {"case_id": case.case_id, "crops": crops, "geometry": geometry, "strip": strip}


def _prepare_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's signature
    """A crop-preparing worker uses one native thread (ITK, BLAS; DataLoader sets torch's
    to one): workers x threads stay within the cores. It is forked, so it also drops
    the parent's signal handlers (:func:`fusion.engine.worker_signals`)."""
    worker_signals()  # first: until then a SIGTERM raises KeyboardInterrupt in here
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    threadpool_limits(limits=1)


def strip_png(crops: np.ndarray, geometry: Any) -> bytes:
    """The QC strip of a case's crops (the ROI outlined), PNG-encoded at zlib level 1:
    a third of the default level's time, a few percent larger."""
    import io

    from PIL import Image

    from fusion.features.crops import crop_strip

    buffer = io.BytesIO()
    Image.fromarray(crop_strip(crops, geometry.roi_planes)).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def _on_generated(cases: list[Case], study: Study, generated: dict | None):  # noqa: ANN202
    """With ``deep.roi``: each case pointed at its generated label map, and the cases
    whose map lacks the label, as failures (a U-Net that found no tumour, say)."""
    import dataclasses

    name, label = study.deep.roi, study.deep.roi_label
    kept, failed = [], []
    for case in cases:
        roi = (generated or {}).get(case.case_id, {}).get(name)
        if roi is None or label not in roi.kept:
            reason = "was not generated" if roi is None else f"has no label {label} kept"
            failed.append(Failure(case.case_id, "NoRoi", f"generated ROI {name!r} {reason} "
                                  "for this case (see tables/rois.csv)", ""))  # fmt: skip
            continue
        kept.append(dataclasses.replace(case, roi=roi.path))
    return kept, failed


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def deep_settings(study: Study, device: str, weights_id: str, forward_batch: int) -> dict[str, Any]:
    """Everything that can change a case's features: study fields, the resolved device
    and precision, the planes per forward pass (kernels may round differently by batch
    size), the weights and the library versions."""
    import torch
    import torchvision

    return stage_settings(
        study, DEEP_KEY_EXCLUDES, device=device, precision=precision(device),
        weights=weights_id, forward_batch=forward_batch,
        versions=[DEEP_CACHE_VERSION, torch.__version__, torchvision.__version__],
    )  # fmt: skip


def aggregate(per_plane: np.ndarray, how: str) -> np.ndarray:
    """(planes, features) -> one vector: mean, max, or the planes one after another."""
    if how == "mean":
        return per_plane.mean(axis=0)
    if how == "max":
        return per_plane.max(axis=0)
    return per_plane.reshape(-1)


def run_deep(
    study: Study,
    cases: list[Case],
    digests: dict[str, tuple[str, str]],
    cache_root: Path | None,
    strips_dir: Path | None = None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    generated: dict | None = None,
    device: str | None = None,
    sets: pd.Series | None = None,
) -> DeepOutput:
    """Features for every case (cached ones read back); QC strips under ``strips_dir``.

    On one machine, DataLoader workers prepare crops while one model runs batches of
    several cases (best for a GPU). With a Dask ``scheduler``, each case is a task on the
    cluster, like the other per-case stages; each worker loads the model once.
    ``device``: the resolved device (default: ``deep.device`` resolved here); ``sets``:
    case_id -> set, whose training cases fine-tune the network (``weights: finetune``)."""
    spec = study.deep
    if spec is None:
        raise ConfigError(f"{study.source}: the study has no deep section")
    resolve_windows(spec.window)  # a bad window is a study error, not a per-case one
    base = study.source.parent if study.source else None
    device = device or pick_device(spec.device)
    failures: list[Failure] = []
    roi_digests: dict[str, str] = {}
    if spec.roi is not None:  # crops around a generated ROI: its content joins the key
        from fusion.hashing import file_digest

        cases, failures = _on_generated(cases, study, generated)
        roi_digests = {c.case_id: file_digest(c.roi) for c in cases}
    weights_ref = spec.weights  # what a cluster worker loads
    if spec.weights == "finetune":  # trained on the training set's crops first
        from fusion.features.finetune import finetune_backbone

        if sets is None:
            raise ConfigError("deep.weights: finetune needs the study's sets (run the study)")
        train = [c for c in cases if sets.get(c.case_id) == "train"]
        weights, checkpoint = finetune_backbone(study, train, digests, roi_digests,
                                                cache_root, device)  # fmt: skip
        weights_ref = str(checkpoint)
    else:
        weights = load_weights(spec, base)
    model = None  # built here only for random weights: then reused, not built twice
    if weights.sha256 is None:  # random: the seeded initial weights are the ones used
        model = build_model(spec, weights, study.seed)
        weights = replace(weights, sha256=weights_digest(model.state_dict()))
    weights_id = weights.sha256
    planes = len(spec.offsets_mm)
    batch = planes if scheduler else max(1, spec.batch_size // planes) * planes
    settings = deep_settings(study, device, weights_id, batch)
    cache = Store(cache_root, "deep") if cache_root else None
    output = DeepOutput(pd.DataFrame(), pd.DataFrame(), failures, weights, device,
                        settings_key=cache_key(settings))  # fmt: skip
    keys = {c.case_id: cache_key("deep", settings, digests[c.case_id], c.series_uid,
                                 *([roi_digests[c.case_id]] if roi_digests else []))
            for c in cases}  # fmt: skip
    # arrays, not the cache's lists: 16 KB a case where 2,048 Python floats take 65 KB
    # (x3 with aggregate: concat); the parent holds them all until the table is built
    vectors: dict[str, np.ndarray] = {}
    geometry: dict[str, dict[str, Any]] = {}
    todo = []
    for case in cases:
        hit = cache.get(keys[case.case_id]) if cache else None
        if hit is None:
            todo.append(case)
            continue
        vectors[case.case_id] = np.asarray(hit["features"], dtype=float)
        geometry[case.case_id] = hit["geometry"]
        output.cached += 1
        if strips_dir is not None and cache is not None:
            _copy_strip(cache.path(keys[case.case_id]).with_suffix(".png"), strips_dir, case)
    computed = (
        _on_cluster(study, todo, device, weights_ref, scheduler, jobs) if scheduler
        else _locally(study, weights, todo, device, model)
    )  # fmt: skip
    # closed on the way out, even by an error here (a full disk): its crop workers stop
    # then, not whenever the traceback that holds this frame is freed
    with contextlib.closing(computed):
        for case_id, result in computed:
            if isinstance(result, Failure):
                output.failures.append(result)
                continue
            vectors[case_id] = np.asarray(result["features"], dtype=float)
            geometry[case_id] = result["geometry"]
            output.computed += 1
            if cache is not None:
                cache.put(keys[case_id], {"features": result["features"],
                                          "geometry": result["geometry"]})  # fmt: skip
            cached_png = cache.path(keys[case_id]).with_suffix(".png") if cache else None
            _write_strip(result["strip"], cached_png, strips_dir, case_id)
    done = [c.case_id for c in cases if c.case_id in vectors]
    width = len(vectors[done[0]]) if done else 0
    matrix = np.empty((len(done), width))
    for row, case_id in enumerate(done):  # each vector freed as it is copied in
        matrix[row] = vectors.pop(case_id)
    output.features = pd.DataFrame(
        matrix, columns=[f"{PREFIX}resnet50_{i}" for i in range(width)], copy=False
    )
    output.features.insert(0, "case_id", done)
    output.geometry = pd.DataFrame(
        [{"case_id": c.case_id, **geometry[c.case_id]} for c in cases if c.case_id in geometry]
    )
    return output


def _result(per_plane: np.ndarray, strip: bytes, g: Any, how: str) -> dict[str, Any]:
    vector = aggregate(per_plane, how).astype(float).tolist()
    return {"features": vector, "geometry": _geometry_row(g), "strip": strip}


def _locally(study: Study, weights: Weights, cases: list[Case], device: str, model=None):  # noqa: ANN001, ANN202
    """(case_id, result or Failure) for each case, batched through one model (``model``:
    already built with ``weights``, or None)."""
    import torch

    if not cases:
        return
    spec = study.deep
    model = (model if model is not None else build_model(spec, weights, study.seed)).to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    dataset = CropDataset(cases, spec, *roi_source(study))
    for item, per_plane in _embed(model, dataset, spec, device):
        if "error" in item:
            yield item["case_id"], Failure(item["case_id"], *item["error"])
        else:
            yield item["case_id"], _result(per_plane, item["strip"], item["geometry"],
                                           spec.aggregate)  # fmt: skip


def _on_cluster(study: Study, cases: list[Case], device: str, weights: str, scheduler: str,
                jobs: int | None):  # noqa: ANN202 # fmt: skip
    """(case_id, result or Failure) for each case, one engine task per case; ``weights``:
    what each worker loads (``deep.weights``, or the fine-tuned checkpoint)."""
    from fusion.engine import Task, run_tasks

    tasks = [Task(c.case_id, "", (c, study, device, weights)) for c in cases]
    run = run_tasks(embed_case, tasks, None, jobs=jobs, scheduler=scheduler, desc="deep features")
    yield from run.results.items()
    yield from ((f.case_id, f) for f in run.failures)


def embed_case(payload: tuple[Case, Study, str, str]) -> dict[str, Any]:
    """Worker task: one case's crops through the worker's model; raises on a broken case."""
    case, study, device, weights = payload
    spec = study.deep
    crops, geometry = prepare_case(case, spec, *roi_source(study))
    loaded = spec.model_copy(update={"weights": weights})
    model = _worker_model(loaded.model_dump_json(), str(study.source), study.seed, device)
    strip = strip_png(crops, geometry)
    return _result(forward(model, crops, device), strip, geometry, spec.aggregate)


@functools.lru_cache(maxsize=1)
def _worker_model(spec_json: str, source: str, seed: int, device: str):  # noqa: ANN202
    """The model, loaded once per worker process and kept for its next cases (the one
    piece of per-process state: loading ResNet50 costs more than a case)."""
    spec = DeepSpec.model_validate_json(spec_json)
    base = Path(source).parent if source != "None" else None
    return build_model(spec, load_weights(spec, base), seed).to(device)


def _geometry_row(g: Any) -> dict[str, Any]:
    return {
        "central_slice": g.central_slice,
        "central_area_mm2": round(g.central_area_mm2, 4),
        "plane_positions": " ".join(f"{p:.4f}" for p in g.positions),
        "crop_side_mm": round(g.side_mm, 4),
    }


def _embed(model, dataset: CropDataset, spec: DeepSpec, device: str):  # noqa: ANN001, ANN202
    """Yield (item, per-plane features) in dataset order; batches of planes."""
    planes = len(spec.offsets_mm)
    progress = Progress(len(dataset), "deep features")
    try:
        for items in _batches(dataset, spec, device):
            good = [it for it in items if "crops" in it]
            results: dict[str, np.ndarray] = {}
            if good:
                feats = forward(model, np.concatenate([it["crops"] for it in good]), device)
                feats = feats.reshape(len(good), planes, -1)
                results = {it["case_id"]: f for it, f in zip(good, feats, strict=True)}
            for it in items:
                progress.update()
                yield it, results.get(it["case_id"])
    finally:
        progress.close()


def _batches(dataset: CropDataset, spec: DeepSpec, device: str):  # noqa: ANN202
    """Prepared items, one forward batch at a time, in dataset order.

    On a GPU, DataLoader workers prepare the next batches while the model runs. On the
    CPU the model's threads already take every core: a worker preparing crops beside
    them preempts one, and every layer waits for it (measured on 2 cores: the stage at
    0.54-0.58 of the bare forward with 1-2 such workers, 0.68 with none). There the
    workers prepare a chunk of cases while the model waits, then the model runs the
    chunk while they wait: forward time plus preparation time / workers."""
    from torch.utils.data import DataLoader

    from fusion.threads import cores

    per_batch = max(1, spec.batch_size // len(spec.offsets_mm))
    workers = spec.num_workers if spec.num_workers is not None else min(4, cores())
    if device.startswith("cuda") or workers == 0:
        yield from DataLoader(
            dataset, batch_size=per_batch, num_workers=workers, collate_fn=_collate,
            pin_memory=device.startswith("cuda"), persistent_workers=False,
            worker_init_fn=_prepare_worker, prefetch_factor=4 if workers else None,
        )  # fmt: skip
        return
    chunk = per_batch * 4 * workers  # 4 forward batches between two preparing turns
    with _ChunkPool(dataset, workers) as pool:
        for start in range(0, len(dataset), chunk):
            items = pool.prepare(range(start, min(start + chunk, len(dataset))))
            for first in range(0, len(items), per_batch):
                yield items[first : first + per_batch]


class _ChunkPool:
    """Worker processes that prepare dataset items on demand (the CPU path of
    :func:`_batches`). A case whose worker dies (killed, out of memory) breaks the pool:
    its chunk's unfinished cases are then retried one at a time in a fresh pool, so the
    one that kills its worker again fails alone (``WorkerDied``), as in the other
    per-case stages, and the others go on."""

    def __init__(self, dataset: CropDataset, workers: int) -> None:
        import multiprocessing
        import sys

        # fork on Linux (no re-import: the workers start in milliseconds); elsewhere the
        # platform's default, as fork is unsafe there once torch is loaded
        method = "fork" if sys.platform.startswith("linux") else None
        self.context = multiprocessing.get_context(method)
        self.dataset, self.workers = dataset, workers
        self.pool = self._start(workers)

    def _start(self, workers: int):  # noqa: ANN202 - a ProcessPoolExecutor
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=self.context,
                                   initializer=_chunk_worker, initargs=(self.dataset,))  # fmt: skip
        if self.context.get_start_method() == "fork":
            # a fork pool forks all its workers at the first submit: with the stop signals
            # held, none reaches a worker before it has dropped the parent's handlers
            with stop_signals_held():
                pool.submit(int)
        return pool

    def prepare(self, indices: range) -> list[dict[str, Any]]:
        from concurrent.futures.process import BrokenProcessPool

        items: dict[int, dict[str, Any]] = {}
        chunksize = max(1, len(indices) // (4 * self.workers))  # few round trips
        try:
            for i, item in zip(
                indices, self.pool.map(_prepared, indices, chunksize=chunksize), strict=True
            ):
                items[i] = item
        except BrokenProcessPool:
            pass
        suspects = [i for i in indices if i not in items]
        for i in suspects:
            self._restart(1)
            try:
                items[i] = self.pool.submit(_prepared, i).result()
            except BrokenProcessPool:
                message = ("the process preparing this case's crops died (crash or out of "
                           "memory), twice")  # fmt: skip
                items[i] = {"case_id": self.dataset.cases[i].case_id,
                            "error": ("WorkerDied", message, "")}  # fmt: skip
        if suspects:
            self._restart(self.workers)
        return [items[i] for i in indices]

    def _restart(self, workers: int) -> None:
        stop_pool(self.pool)  # the broken pool's survivors too: none outlives its pool
        self.pool = self._start(workers)

    def __enter__(self) -> _ChunkPool:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_pool(self.pool)  # idle, or the run is unwinding: bounded either way


_DATASET: CropDataset | None = None  # a chunk worker's cases (set once, by its initializer)


def _chunk_worker(dataset: CropDataset) -> None:
    global _DATASET  # noqa: PLW0603 - per-process state of a pool worker
    _DATASET = dataset
    _prepare_worker(0)


def _prepared(i: int) -> dict[str, Any]:
    return _DATASET[i]


def forward(model, crops: np.ndarray, device: str) -> np.ndarray:  # noqa: ANN001
    """Pooled features of a batch of crops (n, 3, H, W) in [0, 1]: (n, features)."""
    import torch

    with torch.inference_mode():
        batch = torch.from_numpy(imagenet_normalise(crops)).to(device, non_blocking=True)
        if device.startswith("cuda"):
            batch = batch.to(memory_format=torch.channels_last)
            with autocast(device):
                out = model(batch)
        else:
            out = model(batch)
        out = out["out"] if isinstance(out, dict) else out
        if out.ndim == 4:  # a convolutional layer: global average pooling
            out = out.mean(dim=(2, 3))
        return out.float().cpu().numpy()


def _write_strip(png: bytes, cached: Path | None, folder: Path | None, case_id: str) -> None:
    for target in (cached, folder / f"{case_id}.png" if folder else None):
        if target is not None:
            with atomic_path(target) as tmp:
                tmp.write_bytes(png)


def _copy_strip(source: Path, folder: Path, case: Case) -> None:
    target = folder / f"{case.case_id}.png"
    if source.is_file() and not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(source.read_bytes())
