"""Run per-case work units over an executor, with a per-case cache and isolated failures.

One code path for every scale: a stage turns its cases into picklable :class:`Task`s and
hands them to :func:`run_tasks`, which maps them over a ``concurrent.futures.Executor``:
local worker processes by default, or a Dask distributed cluster through
``Client.get_executor()`` when a scheduler address is given. Workers read their own case
from disk; only paths and results cross process boundaries.

Results are cached per case under a content key (the stage builds it from the input
files' hashes and every setting that matters). The parent writes each entry atomically as
its result arrives, so a run killed at any moment resumes where it stopped with no
corrupt entry. A case that raises is recorded with its traceback; a case that kills its
worker (segfault, out of memory) is found by re-running the unfinished cases one per
fresh process, so it costs the other cases nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    Executor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from fusion.atomic import write_text_atomic
from fusion.errors import FusionError
from fusion.threads import cores, native_threads, threads_per_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Task:
    """One case's work: ``fn(payload)`` must be a picklable, module-level call."""

    case_id: str
    key: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Failure:
    case_id: str
    error: str
    message: str
    traceback: str = ""


def failures_frame(failures: list[Failure], stage: str) -> pd.DataFrame:
    """The failures table every per-case stage writes."""
    return pd.DataFrame(
        [[f.case_id, stage, f.error, f.message, f.traceback] for f in failures],
        columns=["case_id", "stage", "error", "message", "traceback"],
    )


@dataclass(slots=True)
class StageRun:
    """What :func:`run_tasks` returns: results by case, failures, and cache counts."""

    results: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def cache_key(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts``: equal settings give equal keys."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# cohort fields that never change a per-case result (QC, features): the case record
# carries its own files (hashed by content), series UID and label
CASE_COHORT_EXCLUDES = (
    "manifest",  # the case's files enter the key by content, its series by UID
    "columns",  # which column holds what: the case record already says
    "label_map",  # outcomes do not enter per-case work
    "external_institutions",  # set membership does not enter per-case work
)


def stage_settings(
    study: BaseModel, sections: Mapping[str, Collection[str]], **derived: Any
) -> dict[str, Any]:
    """The validated settings a stage's output depends on, for its cache key.

    ``sections`` maps a top-level study field (``qc``, ``cohort``, ``seed``...) to the
    sub-fields left *out*; each stage states why next to its list, and
    ``tests/test_cache_keys.py`` walks every field and checks that all others change the
    key, so a field added to the study later enters the key by itself. ``derived`` adds
    resolved values (device, precision, parameter-file content) the study does not hold.
    """
    dumped = study.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name, excluded in sections.items():
        value = dumped[name]
        if isinstance(value, dict) and excluded:
            value = {k: v for k, v in value.items() if k not in excluded}
        out[name] = value
    return out | derived


class Store:
    """The one layout of everything fusion caches, per stage:
    ``root/<stage>/<key[:2]>/<key><suffix>``. A per-case result is a JSON file
    (:meth:`get` / :meth:`put`); a file artefact (a label map, its notes) sits beside it
    under the same key (:meth:`path` with its suffix); an artefact of several files (a
    training run's checkpoints) gets a folder of its own (:meth:`folder`)."""

    def __init__(self, root: str | Path, stage: str) -> None:
        self.root = Path(root) / stage

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Any | None:
        path = self.path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))["value"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, OSError):
            log.warning("discarding unreadable cache entry %s", path)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, value: Any) -> None:
        write_text_atomic(json.dumps({"value": value}, allow_nan=True), self.path(key))


def _call(fn: Callable[[Any], Any], payload: Any, threads: int = 1) -> tuple[str, Any]:
    """Run in the worker: turn any exception into data, so it travels back intact.

    Native libraries get ``threads`` threads, so workers x threads fit the cores."""
    try:
        with native_threads(threads):
            return "ok", fn(payload)
    except Exception as exc:  # noqa: BLE001 - MemoryError and friends are per-case too
        return "error", (type(exc).__name__, str(exc), traceback.format_exc())


@contextmanager
def make_executor(jobs: int | None = None, scheduler: str | None = None) -> Iterator[Executor]:
    """Local worker processes (``jobs``, default all cores) or a Dask cluster's executor."""
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise FusionError(
                f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: "
                f"{exc}); check the address (tcp://host:8786) or run without --scheduler"
            ) from None
        with client:
            yield client.get_executor(pure=False)
        return
    pool = _process_pool(jobs or cores())
    try:
        yield pool
    except BaseException:
        stop_pool(pool)  # Ctrl-C or a failure in the parent: no worker outlives the run
        raise
    pool.shutdown(wait=True)


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: safe after the parent has started threads (torch, Dask), cheaper than spawn
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C to the parent, and exit when the parent is gone (killed)."""
    worker_signals()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="fusion-parent-watch", daemon=True).start()


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # how a parent stops its workers


def worker_signals() -> None:
    """A worker process ignores Ctrl-C (its parent stops it) and dies at once on SIGTERM.

    A forked worker inherits its parent's Python handlers, and ``fusion``'s turns SIGTERM
    into KeyboardInterrupt. A pool that terminates its workers (one of them died, or
    :func:`stop_pool`) then met a worker that caught it as its task's error and waited
    for a result pipe nobody read: the pool's thread never ended, and the interpreter
    hung at exit joining it (seen on CI after the last test passed). Stop signals held
    since the fork (:func:`stop_signals_held`) are let through once the handlers are
    dropped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # POSIX
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held (blocked) in this thread while inside. A process forked
    here starts with them held, so that none reaches it while it still has the handlers
    it inherited: :func:`worker_signals` lets them through after dropping those. One
    that reaches this process meanwhile is delivered on the way out. A no-op where the
    platform has no signal masks (there the workers are not forked)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_pool(pool: ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Cancel what has not started, terminate the workers and wait until they are gone.

    A worker still alive ``grace_s`` after SIGTERM is killed. Waiting matters: the pool's
    own thread joins its workers, and Python joins that thread at exit, so a worker left
    behind would hang the interpreter there. Then waits up to ``grace_s`` for that
    thread too: it reaps workers as well, and until it has ended one already gone can
    still read as alive. 3.11 has no public call for this."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()
    if manager is not None:
        # It reaps workers too: until it ends, a worker already gone can still read as
        # alive here (its waitpid won the race, the exit code is not yet stored)
        manager.join(grace_s)


class Progress:
    """tqdm bar (count, rate, ETA) on a terminal; a plain log line every 10 % otherwise."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.start = time.monotonic()
        self.bar = None
        self.next_log = 0.1
        if total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="case")

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.total and self.done / self.total >= self.next_log:
            elapsed = time.monotonic() - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "%s: %d/%d cases, %.2f cases/s, ETA %.0f s",
                self.desc, self.done, self.total, rate, eta,
            )  # fmt: skip
            self.next_log = (int(self.done / self.total * 10) + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Task],
    cache: Store | None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    desc: str = "cases",
    task_threads: int | None = None,
) -> StageRun:
    """Map ``fn`` over ``tasks``; cached results are reused, new ones cached on arrival.

    Local workers share the cores: each gets cores / workers native threads. A task that
    takes ``task_threads`` whatever it is given (a network in the study's reproducible
    mode, whose threads are part of its numbers) gets ``cores // task_threads`` workers
    instead, at most ``jobs``: two workers of two threads on two cores ran the demo's
    U-Net ROIs at half speed."""
    run = StageRun()
    pending: list[Task] = []
    for task in tasks:
        hit = cache.get(task.key) if cache else None
        if hit is not None:
            run.results[task.case_id] = hit
            run.cached += 1
        else:
            pending.append(task)
    if not pending:
        return run
    progress = Progress(len(pending), desc)
    workers = jobs or cores()
    if task_threads and not scheduler:
        workers = max(1, min(workers, cores() // task_threads))
        if jobs is not None and workers < jobs:
            log.info("%s: %d worker(s), not %d: each task takes %d threads, on %d cores",
                     desc, workers, jobs, task_threads, cores())  # fmt: skip
    # a Dask worker sets its own threads; local workers share the cores between them
    threads = 1 if scheduler else threads_per_worker(workers)
    try:
        with make_executor(workers, scheduler) as executor:
            suspects = _map(executor, fn, pending, cache, run, progress, threads)
        # a worker died: every unfinished case is a suspect; run each in a process of its
        # own (``jobs`` at a time) so that only the culprit fails
        if suspects:
            log.warning("a worker died; re-running %d unfinished case(s) one per process",
                        len(suspects))  # fmt: skip
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda t: _alone(fn, t, cache, run, progress, threads), suspects))
    finally:
        progress.close()
    return run


def _alone(
    fn: Callable[[Any], Any],
    task: Task,
    cache: Store | None,
    run: StageRun,
    progress: Progress,
    threads: int,
) -> None:
    with _process_pool(1) as pool:
        _map(pool, fn, [task], cache, run, progress, threads, last_chance=True)


def _dask_failure(exc: Exception) -> tuple[str, str, str]:
    """A task's failure on a Dask cluster as (error, message, traceback). Dask's scheduler
    reruns a task whose worker died up to ``distributed.scheduler.allowed-failures``
    times (default 3), then raises KilledWorker: the case failed as a dead local worker
    does (``WorkerDied``), and the run goes on."""
    if type(exc).__name__ == "KilledWorker":
        return ("WorkerDied", "the Dask worker died (crash or out of memory) each time it "
                f"ran this case, retries included ({exc})", "")  # fmt: skip
    return type(exc).__name__, str(exc), ""


def _map(
    executor: Executor,
    fn: Callable[[Any], Any],
    tasks: Iterable[Task],
    cache: Store | None,
    run: StageRun,
    progress: Progress,
    threads: int,
    last_chance: bool = False,
) -> list[Task]:
    futures = {executor.submit(_call, fn, t.payload, threads): t for t in tasks}
    suspects: list[Task] = []
    for future in as_completed(futures):
        task = futures[future]
        try:
            status, value = future.result()
        except BrokenProcessPool:
            if last_chance:
                with run.lock:
                    run.failures.append(
                        Failure(task.case_id, "WorkerDied", "the worker process died (crash "
                                "or out of memory) while processing this case")
                    )  # fmt: skip
                    progress.update()
            else:
                suspects.append(task)
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. Dask's KilledWorker
            status, value = "error", _dask_failure(exc)
        if status == "ok" and cache is not None:
            cache.put(task.key, value)
        with run.lock:
            progress.update()
            if status == "ok":
                run.results[task.case_id] = value
                run.computed += 1
            else:
                run.failures.append(Failure(task.case_id, *value))
    return suspects
