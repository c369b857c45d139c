"""The engine: cache round trip, corrupt entries, raised errors and dead workers isolated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusion.engine import Store, Task, cache_key, run_tasks


def square_or_fail(x: int) -> int:
    if x == 3:
        raise MemoryError("pretend the case is too large")
    if x == 5:
        os._exit(9)  # the worker dies without a word, as on a segfault or the OOM killer
    return x * x


def tasks(values: list[int]) -> list[Task]:
    return [Task(f"c{v}", cache_key("sq", v), v) for v in values]


def die_once_or_always(payload: tuple[Path, int]) -> int:
    """Case 5's worker dies the first time only (a transient out-of-memory kill under
    load); case 7's every time (a case that crashes its worker)."""
    marker, x = payload
    if x == 5 and not marker.exists():
        marker.touch()
        os._exit(9)
    if x == 7:
        os._exit(9)
    return x * x


def marked_tasks(marker: Path, values: list[int]) -> list[Task]:
    return [Task(f"c{v}", cache_key("die", v), (marker, v)) for v in values]


def test_cache_key_is_canonical() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_results_are_cached_and_reused(tmp_path: Path) -> None:
    cache = Store(tmp_path, "sq")
    first = run_tasks(square_or_fail, tasks([1, 2, 4]), cache, jobs=2)
    assert first.results == {"c1": 1, "c2": 4, "c4": 16}
    assert (first.computed, first.cached) == (3, 0)
    second = run_tasks(square_or_fail, tasks([1, 2, 4, 6]), cache, jobs=2)
    assert second.results == {"c1": 1, "c2": 4, "c4": 16, "c6": 36}
    assert (second.computed, second.cached) == (1, 3)


def test_corrupt_entry_is_discarded_and_recomputed(tmp_path: Path) -> None:
    cache = Store(tmp_path, "sq")
    run_tasks(square_or_fail, tasks([2]), cache, jobs=1)
    entry = cache.path(cache_key("sq", 2))
    entry.write_text('{"value": 4')  # truncated
    again = run_tasks(square_or_fail, tasks([2]), cache, jobs=1)
    assert again.results == {"c2": 4} and again.computed == 1
    assert json.loads(entry.read_text()) == {"value": 4}


def test_raised_error_and_dead_worker_cost_only_their_case(tmp_path: Path) -> None:
    cache = Store(tmp_path, "sq")
    run = run_tasks(square_or_fail, tasks([1, 2, 3, 4, 5, 6, 7]), cache, jobs=2)
    assert run.results == {"c1": 1, "c2": 4, "c4": 16, "c6": 36, "c7": 49}
    failed = {f.case_id: f for f in run.failures}
    assert set(failed) == {"c3", "c5"}
    assert failed["c3"].error == "MemoryError"
    assert "pretend the case is too large" in failed["c3"].message
    assert "Traceback" in failed["c3"].traceback
    assert failed["c5"].error == "WorkerDied"
    # failures are not cached: the next run tries them again
    assert not cache.path(cache_key("sq", 3)).exists()


def test_a_killed_local_worker_costs_one_retry_not_the_run(tmp_path: Path) -> None:
    run = run_tasks(die_once_or_always, marked_tasks(tmp_path / "died", [1, 2, 5, 6, 7]),
                    None, jobs=2)  # fmt: skip
    assert run.results == {"c1": 1, "c2": 4, "c5": 25, "c6": 36}  # 5 succeeded on its retry
    assert [(f.case_id, f.error) for f in run.failures] == [("c7", "WorkerDied")]


@pytest.mark.slow
def test_a_killed_dask_worker_costs_one_retry_not_the_run(tmp_path: Path) -> None:
    import dask
    from distributed import LocalCluster

    # one retry of a task whose worker died (Dask's default is 3), then KilledWorker; a
    # worker holds only the task it runs (saturation 1.0: Dask's default of 1.1 queues a
    # second one there, and a death counts against every task the worker held)
    settings = {"distributed.scheduler.allowed-failures": 1,
                "distributed.scheduler.worker-saturation": 1.0}  # fmt: skip
    with dask.config.set(settings), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        run = run_tasks(die_once_or_always, marked_tasks(tmp_path / "died", [1, 2, 5, 6, 7]),
                        None, scheduler=cluster.scheduler_address)  # fmt: skip
    assert run.results == {"c1": 1, "c2": 4, "c5": 25, "c6": 36}
    failed = {f.case_id: f for f in run.failures}
    assert list(failed) == ["c7"] and failed["c7"].error == "WorkerDied"
    assert "each time it ran this case" in failed["c7"].message


def _starts_slowly() -> None:
    """A forked worker still busy starting (with the parent's handlers) when it is
    stopped; then the drop every fusion worker makes, then work it never gets to."""
    import time

    from fusion.engine import worker_signals

    time.sleep(0.5)
    worker_signals()
    time.sleep(30)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked workers only")
def test_a_stop_signal_held_from_the_fork_reaches_the_worker_after_its_handlers_drop() -> None:
    """SIGTERM sent while a forked worker still has `fusion run`'s handler (which raises
    KeyboardInterrupt: a traceback, exit code 1) is held until the worker has dropped
    it, and then ends the worker as SIGTERM does (the crop pool forks so)."""
    import multiprocessing
    import signal

    from fusion.cli import _terminate
    from fusion.engine import stop_signals_held

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with stop_signals_held():
            worker = multiprocessing.get_context("fork").Process(target=_starts_slowly)
            worker.start()
        os.kill(worker.pid, signal.SIGTERM)  # before its handlers drop
        worker.join(10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert worker.exitcode == -signal.SIGTERM  # not 1: no KeyboardInterrupt in it


def _twice(x: int) -> int:
    return 2 * x


@pytest.mark.parametrize(("cores", "task_threads", "jobs", "workers"), [
    (2, 2, None, 1),  # the mediastinal demo's unet ROIs: one worker of two threads
    (8, 2, None, 4),
    (8, 2, 2, 2),  # -j 2 still holds
    (2, 2, 4, 1),  # -j 4 cut down, and said so
    (2, 4, None, 1),  # the task's threads, always
    (2, None, None, 2),  # no such task: the workers share the cores
])  # fmt: skip
def test_tasks_that_take_their_own_threads_get_cores_over_threads_workers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cores: int,
    task_threads: int | None, jobs: int | None, workers: int,
) -> None:  # fmt: skip
    """Native threads x workers stay within the cores when a task sets its own threads
    (a network in a reproducible mode): two workers of two threads on two cores ran the
    demo's U-Net ROIs at half speed."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    import fusion.engine as engine

    started = []

    @contextmanager
    def executor(n: int, scheduler: str | None):  # noqa: ANN202, ARG001
        started.append(n)
        with ThreadPoolExecutor(n) as pool:
            yield pool

    monkeypatch.setattr(engine, "cores", lambda: cores)
    monkeypatch.setattr(engine, "make_executor", executor)
    tasks = [Task(f"c{i}", f"k{i}", i) for i in range(3)]
    with caplog.at_level("INFO", "fusion.engine"):
        run = run_tasks(_twice, tasks, None, jobs=jobs, desc="ROI net", task_threads=task_threads)
    assert started == [workers]
    assert run.results == {"c0": 0, "c1": 2, "c2": 4}
    cut = f"ROI net: {workers} worker(s), not {jobs}"
    assert (cut in caplog.text) == (jobs is not None and workers < jobs)
