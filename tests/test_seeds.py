"""The seed policy: every random stream derived from study.seed by name, in one place."""

from __future__ import annotations

import re
from pathlib import Path

from fusion.seeds import STREAMS, stream

ROOT = Path(__file__).resolve().parents[1] / "fusion"


def test_streams_are_reproducible_and_independent_by_name_and_index() -> None:
    assert stream(7, "cv/folds") == stream(7, "cv/folds")
    seeds = {stream(7, "cv/folds"), stream(7, "bootstrap"), stream(8, "cv/folds"),
             stream(7, "classifier/batches", 0), stream(7, "classifier/batches", 1)}  # fmt: skip
    assert len(seeds) == 5
    assert stream(7, "a", 98) != stream(7, "ab")  # the name's length separates the two
    assert all(0 <= s < 2**32 for s in seeds)


def test_every_stream_the_code_draws_is_documented_in_one_place() -> None:
    used = set()
    for path in ROOT.rglob("*.py"):
        for name in re.findall(r"\bstream\([^,]+, f?\"([^\"]+)\"", path.read_text()):
            used.add(re.sub(r"\{[^}]+\}", "<name>", name))
    documented = {re.sub(r"<[^>]+>", "<name>", name) for name in STREAMS}
    batches = {"classifier/batches", "segmentation/batches"}  # with the epoch as index
    assert used - batches <= documented
    assert {f"{b}/<epoch>" for b in batches} <= set(STREAMS)
    assert len(used) >= 10


def test_a_habitat_is_clustered_with_the_study_seed_unless_it_names_one(tmp_path) -> None:
    from fusion.config import RoiSpec, Study
    from fusion.rois.stage import generator_settings, rois_settings

    (tmp_path / "m.csv").write_text("case_id,image,roi,label\n")
    base = Study.model_validate({"name": "s", "seed": 3, "cohort": {"manifest": "m.csv"}},
                                context={"base": tmp_path})  # fmt: skip
    study = base.model_copy(update={"rois": {"hab": RoiSpec(generator="habitat")}})
    assert generator_settings(study, "hab")["seed"] == stream(3, "habitat/hab")
    other = study.model_copy(update={"seed": 4})
    assert rois_settings(other, "hab") != rois_settings(study, "hab")  # the key follows it
    fixed = study.model_copy(update={"rois": {"hab": RoiSpec(generator="habitat",
                                                             settings={"seed": 0})}})  # fmt: skip
    assert generator_settings(fixed, "hab")["seed"] == 0
