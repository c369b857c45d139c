"""A Dask cluster started for one run from a small YAML (``fusion run --cluster
slurm.yaml``): SLURM or PBS batch jobs through dask-jobqueue (``pip install
'fusion[hpc]'``), or a local cluster (the same code path on one machine).

```yaml
kind: slurm          # slurm | pbs | local
jobs: 4              # batch jobs (local: worker processes)
cores: 8             # cores per job
processes: 4         # Dask workers per job (each gets cores / processes threads)
memory: 32GB         # per job
walltime: "04:00:00"
queue: normal        # optional: partition / queue
account: radiomics   # optional
job_extra_directives: ["--qos=long"]   # optional, passed to sbatch / qsub as they are
local_directory: /scratch/$USER        # optional: workers' spill folder
allowed_failures: 1  # a task whose worker died is rerun this many times, then fails
```

The workers read the cases from the paths in the manifest, so the data and the cache
folder must sit on a file system every node sees. A task whose worker dies (killed, out
of memory) is rerun ``allowed_failures`` times and then becomes that case's failure
(``WorkerDied``); the run goes on (:mod:`fusion.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusion.errors import ConfigError, FusionError


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["slurm", "pbs", "local"]
    jobs: int = Field(default=1, ge=1)
    cores: int = Field(default=2, ge=1)
    processes: int = Field(default=1, ge=1)
    memory: str = "8GB"
    walltime: str = "02:00:00"
    queue: str | None = None
    account: str | None = None
    job_extra_directives: list[str] = []
    local_directory: str | None = None
    allowed_failures: int = Field(default=1, ge=0)


def load_cluster(path: str | Path) -> ClusterSpec:
    """The cluster file, validated; a bad one is a :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cluster file not found: {path}")
    try:
        return ClusterSpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a valid cluster file: {exc}") from None


def jobqueue_cluster(spec: ClusterSpec):  # noqa: ANN201 - a dask_jobqueue cluster
    """The dask-jobqueue cluster of ``spec`` (not yet scaled: no job is submitted)."""
    try:
        import dask_jobqueue
    except ImportError:
        raise FusionError("a SLURM or PBS cluster needs dask-jobqueue: pip install "
                          "'fusion[hpc]'") from None  # fmt: skip
    make = dask_jobqueue.SLURMCluster if spec.kind == "slurm" else dask_jobqueue.PBSCluster
    return make(
        cores=spec.cores, processes=spec.processes, memory=spec.memory,
        walltime=spec.walltime, queue=spec.queue, account=spec.account,
        job_extra_directives=spec.job_extra_directives,
        local_directory=spec.local_directory,
    )  # fmt: skip


@contextmanager
def running_cluster(path: str | Path) -> Iterator[str]:
    """Start the cluster of the file at ``path`` and yield its scheduler address; the
    jobs are cancelled and the scheduler closed when the block ends."""
    import dask
    from distributed import LocalCluster

    spec = load_cluster(path)
    # a worker holds only the task it runs: a death counts against every task the worker
    # held, so with Dask's default saturation (1.1) a queued innocent case could fail
    settings = {"distributed.scheduler.allowed-failures": spec.allowed_failures,
                "distributed.scheduler.worker-saturation": 1.0}  # fmt: skip
    with dask.config.set(settings):
        if spec.kind == "local":
            cluster = LocalCluster(n_workers=spec.jobs * spec.processes,
                                   threads_per_worker=max(1, spec.cores // spec.processes),
                                   processes=True, dashboard_address=None,
                                   local_directory=spec.local_directory)  # fmt: skip
        else:
            cluster = jobqueue_cluster(spec)
            cluster.scale(jobs=spec.jobs)
        with cluster:
            yield cluster.scheduler_address
