"""The house's import rules hold: layers and no cycles (``[tool.importlinter]`` in
pyproject.toml, checked by import-linter), and every stage is registered in run order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_a_layer_that_imports_upwards_breaks_the_contract(tmp_path: Path) -> None:
    """The contract is not vacuous: the same layers over a copy of the package in which
    io imports the pipeline are reported broken."""
    import shutil

    shutil.copytree(ROOT / "fusion", tmp_path / "fusion",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    spreadsheet = tmp_path / "fusion" / "io" / "spreadsheet.py"
    spreadsheet.write_text(spreadsheet.read_text() + "\nfrom fusion import pipeline  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True,
                          text=True, check=False, env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 1
    assert "fusion.io.spreadsheet -> fusion.pipeline" in done.stdout


def test_stages_run_in_the_house_order_and_the_command_names_them() -> None:
    from fusion.cli import STAGE_NAMES
    from fusion.stages import STAGES

    assert list(STAGES) == ["qc", "splits", "classifier", "segmentation", "rois",
                            "involvement", "radiomics", "deep", "models", "statistics",
                            "report"]  # fmt: skip
    assert list(STAGE_NAMES) == list(STAGES)
