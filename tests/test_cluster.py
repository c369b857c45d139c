"""``fusion run --cluster``: a cluster file starts a Dask cluster for the run (local here;
SLURM and PBS through dask-jobqueue, whose job script is checked without a queue)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusion.cli import main
from fusion.cluster import ClusterSpec, jobqueue_cluster, load_cluster, running_cluster
from fusion.engine import Task, cache_key, run_tasks
from fusion.errors import ConfigError


def cube(x: int) -> int:
    return x**3


def _file(tmp_path: Path, **spec) -> Path:  # noqa: ANN003
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_a_local_cluster_file_runs_the_tasks_on_its_workers(tmp_path: Path) -> None:
    tasks = [Task(f"c{v}", cache_key("cube", v), v) for v in range(6)]
    with running_cluster(_file(tmp_path, kind="local", jobs=2, cores=1)) as address:
        assert address.startswith("tcp://")
        run = run_tasks(cube, tasks, None, scheduler=address)
    assert run.results == {f"c{v}": v**3 for v in range(6)}


@pytest.mark.slow
def test_fusion_run_with_a_cluster_file(make_study, good_case, tmp_path: Path) -> None:
    study = make_study([good_case("a"), good_case("b", label=1)])
    cluster = _file(tmp_path, kind="local", jobs=2, cores=1)
    args = ["run", str(study), "--only", "qc", "--reports", str(tmp_path / "r"),
            "--cache", str(tmp_path / "c"), "--cluster", str(cluster)]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "r" / "unit" / "tables" / "qc.csv").is_file()
    with pytest.raises(SystemExit):  # one or the other
        main([*args, "--scheduler", "tcp://127.0.0.1:8786"])


def test_the_slurm_job_script_carries_the_cluster_file(tmp_path: Path) -> None:
    path = _file(tmp_path, kind="slurm", jobs=3, cores=8, processes=4, memory="32GB",
                 walltime="04:00:00", queue="normal", account="radiomics",
                 job_extra_directives=["--qos=long"])  # fmt: skip
    spec = load_cluster(path)
    cluster = jobqueue_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p normal", "#SBATCH -A radiomics", "#SBATCH --qos=long",
                 "#SBATCH -t 04:00:00", "#SBATCH --cpus-per-task=8", "--nworkers 4",
                 "--nthreads 2"):  # fmt: skip
        assert line in script, line


def test_a_bad_cluster_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster.yaml: not a valid cluster file"):
        load_cluster(_file(tmp_path, kind="kubernetes"))
    with pytest.raises(ConfigError, match="cluster file not found"):
        load_cluster(tmp_path / "missing.yaml")
    assert ClusterSpec(kind="local").allowed_failures == 1
