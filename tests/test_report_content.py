"""What each report says, point by point (issue "Reports a reviewer accepts"): the
structure checks every rendered report passes, TRIPOD+AI numbering, multiplicity,
subgroups, segmentation conventions, the classifier's wording and the galleries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.report.check import structure_problems
from fusion.stats import roc_auc

STYLE = "<style>table { display: block; overflow-x: auto; }</style>"


def page(body: str) -> str:
    return f"<html><head>{STYLE}</head><body>{body}</body></html>"


def test_structure_check_finds_what_a_reader_would() -> None:
    good = page("<h2>1. A</h2><h3>a</h3><p>text</p><h2>2. B</h2><table><tr><td>1</td></tr>"
                "</table>")  # fmt: skip
    assert structure_problems(good) == []
    empty = page("<h2>1. A</h2><h3>Deep-feature crops</h3>\n<h2>2. B</h2><p>x</p>")
    assert structure_problems(empty) == ["empty section: 'Deep-feature crops'"]
    placeholder = page("<h2>A</h2><p>at the offsets None mm</p><p>{{ offsets }}</p>")
    assert len(structure_problems(placeholder)) == 2
    no_scroll = "<html><body><h2>A</h2><table><tr><td>1</td></tr></table></body></html>"
    assert "scroll container" in structure_problems(no_scroll)[0]
    blank = page('<h2>A</h2><figure><svg><g id="axes"></g></svg><figcaption>ROC</figcaption>'
                 "</figure>")  # fmt: skip
    assert structure_problems(blank) == ["figure without data: 'ROC'"]
    drawn = page('<h2>A</h2><figure><svg><path d="M 0 0 L 1 1"/></svg></figure>')
    assert structure_problems(drawn) == []


def test_tripod_ai_items_are_numbered_as_the_2024_checklist() -> None:
    from fusion.config import Study
    from fusion.report.tripod import Present, tripod_rows

    study = Study.model_construct(name="s")
    present = Present(sample_size=True, table1=True, subgroups=False, institutions=False,
                      missing_features=False)  # fmt: skip
    rows = {item: (topic, where) for item, topic, where in tripod_rows(study, present)}
    numbers = set()
    for item in rows:
        number = item.split("-")[0].rstrip("abcdefg")
        numbers.add(int(number))
    assert numbers == set(range(1, 28))  # every one of the 27 items
    assert rows["4"][0].startswith("Objectives") and rows["14"][0] == "Fairness"
    assert rows["16"][0].startswith("Differences between development and evaluation")
    assert 'href="#sample-size"' in rows["10"][1] and 'href="#table1"' in rows["20c"][1]
    assert rows["14"][1].startswith("not reported: name the subgroups")  # none named here
    assert rows["5b"][1].startswith("not reported: fusion keeps no dates")
    with_subgroups = Present(sample_size=True, table1=True, subgroups=True,
                             institutions=True, missing_features=True)  # fmt: skip
    answers = {i: w for i, _, w in tripod_rows(study, with_subgroups)}
    assert 'href="#subgroups"' in answers["14"] and 'href="#subgroups"' in answers["23b"]


def test_delong_p_values_are_holm_adjusted_per_set_beside_the_raw_ones() -> None:
    from fusion.stats.evaluate import holm

    table = pd.DataFrame({"set": ["test"] * 3 + ["train"], "p_value": [0.01, 0.04, 0.03, 0.2],
                          "note": ""})  # fmt: skip
    out = holm(table)
    # R: p.adjust(c(0.01, 0.04, 0.03), "holm") = 0.03 0.06 0.06; one test: unchanged
    assert out.p_holm.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.2])
    assert list(out.columns) == ["set", "p_value", "p_holm", "note"]


def test_subgroup_performance_is_each_level_on_its_own_cases() -> None:
    from fusion.stats.evaluate import subgroup_table

    rng = np.random.default_rng(1)
    n = 80
    label = rng.integers(0, 2, n)
    score = label + rng.normal(0, 1, n)
    scores = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "set": "test",
                           "label": label, "model": "m", "score": score,
                           "prob": 1 / (1 + np.exp(-score))})  # fmt: skip
    sex = pd.Series(np.where(np.arange(n) % 3 == 0, "female", "male"), index=scores.case_id)
    table = subgroup_table(scores, sex.to_frame("sex"))
    row = table[table.level == "female"].iloc[0]
    female = scores[sex.to_numpy() == "female"]
    expected = roc_auc(female.label, female.score)
    assert row.cases == len(female) and row.events == int(female.label.sum())
    assert row.auc == pytest.approx(expected.auc) and row.auc_ci_low == pytest.approx(
        expected.ci_low
    )
    assert row.o_e_ratio == pytest.approx(female.label.mean() / female.prob.mean())


def test_surface_distances_average_only_scans_with_both_masks() -> None:
    """One tiny false positive takes the image diagonal (66 mm); the HD95 mean leaves it
    out and counts it, while Dice keeps every scan."""
    from fusion.stats.segmentation import summarise

    rows = pd.DataFrame({"group": "g", "dice": [0.8, 0.9, 0.0], "iou": 0.5, "precision": 0.5,
                         "recall": 0.5, "hd95": [2.0, 4.0, 66.0], "asd": [1.0, 1.0, 66.0],
                         "empty": ["", "", "reference"]})  # fmt: skip
    out = summarise(rows, ["group"], n_boot=0).set_index("metric")
    assert out.loc["hd95", "mean"] == 3.0 and out.loc["hd95", "n"] == 2
    assert out.loc["dice", "n"] == 3 and out.loc["dice", "mean"] == pytest.approx(1.7 / 3)
    assert (out.one_mask_empty == 1).all()


def test_segmentation_warns_at_the_epoch_limit_and_says_what_it_segments() -> None:
    from fusion.config import SegmentationSpec
    from fusion.report.segmentation import _lesion, warnings

    spec = SegmentationSpec.model_validate({"labels": {1: "tumour"}, "max_epochs": 3,
                                            "patch_size": [32, 32, 16]})  # fmt: skip
    curves = pd.DataFrame({"variant": "raw", "model": "final", "epoch": [1, 2, 3],
                           "best": [False, False, True]})  # fmt: skip
    tables = {"seg_summary": pd.DataFrame(columns=["set", "metric", "scans", "variant", "mean"]),
              "seg_training": curves, "seg_skipped": pd.DataFrame()}  # fmt: skip
    assert warnings(tables, spec) == [
        "The raw model reached its epoch limit (3 of 3; kept epoch 3) without early "
        "stopping: it may be under-trained (raise max_epochs)."
    ]
    tables["seg_training"] = curves.iloc[:2]  # stopped early: nothing to say
    assert warnings(tables, spec) == []
    assert _lesion(spec) == "tumour"


def test_froc_curves_at_full_sensitivity_stay_inside_the_frame() -> None:
    from fusion.report.segmentation import froc_figure

    points = pd.DataFrame({"variant": "raw", "iou_threshold": [0.1, 0.5],
                           "fp_per_scan": [0.0, 0.0], "sensitivity": [1.0, 1.0]})  # fmt: skip
    fig = froc_figure(points, "raw")
    ax = fig.axes[0]
    assert ax.get_ylim()[1] > 1.0 and ax.get_xlim()[0] < 0  # room around the frame
    widths = [line.get_linewidth() for line in ax.lines if line.get_label().startswith("IoU")]
    assert widths[0] > widths[1]  # coinciding curves: the later one drawn thinner on top


def test_classifier_energy_warning_says_below_chance_when_the_ci_is() -> None:
    from fusion.report.classifier import _energy_warning

    row = pd.Series({"model": "resnet50", "energy_in_mask": 0.054, "energy_ci_low": 0.03,
                     "energy_ci_high": 0.079, "chance_energy": 0.086,
                     "n_measured": 16})  # fmt: skip
    (text,) = _energy_warning(row)
    assert "is BELOW chance (0.086)" in text and "16 maps" in text
    near = row.copy()
    near["energy_ci_high"] = 0.1
    assert "not distinguishable from chance" in _energy_warning(near)[0]
    above = row.copy()
    above[["energy_in_mask", "energy_ci_low", "energy_ci_high"]] = [0.4, 0.3, 0.5]
    assert _energy_warning(above) == []


def test_crop_strip_outlines_the_roi_in_red() -> None:
    from fusion.features.crops import crop_strip

    crops = np.full((2, 3, 8, 8), 0.5, dtype=np.float32)
    inside = np.zeros((2, 8, 8), bool)
    inside[:, 2:6, 2:6] = True
    strip = crop_strip(crops, inside)
    assert strip.shape == (8, 8 * 2 + 4, 3)
    assert tuple(strip[2, 2]) == (255, 0, 0)  # the ROI's edge
    assert tuple(strip[3, 3]) == (128, 128, 128)  # inside, not on the edge
    assert tuple(strip[0, 0]) == (128, 128, 128)


def test_misclassified_held_out_cases_are_listed_with_each_models_probability() -> None:
    from fusion.report.html import _misclassified

    scores = pd.DataFrame({
        "case_id": ["a", "a", "b", "b", "c", "c"], "set": "test", "label": [1, 1, 0, 0, 0, 0],
        "model": ["m1", "m2"] * 3, "prob": [0.2, 0.7, 0.6, 0.1, 0.1, 0.2],
        "estimate": "held-out",
    })  # fmt: skip
    summary = pd.DataFrame({"model": ["m1", "m2"], "threshold": [0.5, 0.5]})
    out = _misclassified(scores, summary)
    assert out.to_dict("records") == [
        {"case_id": "a", "set": "test", "outcome": 1, "m1": "0.20 FN", "m2": "0.70"},
        {"case_id": "b", "set": "test", "outcome": 0, "m1": "0.60 FP", "m2": "0.10"},
    ]


@pytest.mark.parametrize(
    ("sets", "pooled"),
    [
        (["test"], []),
        (["external:D", "external:E"], ["all evaluated (test + external)"]),
        (["test", "external:D", "external:E"],
         ["all evaluated (test + external)", "all external"]),
    ],
)  # fmt: skip
def test_pooled_segmentation_rows_only_where_they_pool(sets: list[str], pooled: list[str]) -> None:
    """A pooled row equal to a set's own (one held-out set; or only external ones) is a
    duplicate a reader must compare cell by cell to see it adds nothing."""
    from types import SimpleNamespace

    from fusion.seg.evaluate import _summaries

    rows = [{"case_id": f"{s}{i}", "set": s, "model": "final", "variant": "v", "class": "c",
             "dice": 0.8, "iou": 0.7, "precision": 0.8, "recall": 0.8, "hd95": 3.0, "asd": 1.0,
             "empty": "", "reference_voxels": 10, "institution": "", "subgroup": ""}
            for s in [*sets, "tuning"] for i in range(3)]  # fmt: skip
    study = SimpleNamespace(seed=0, evaluation=SimpleNamespace(bootstrap=0, conf_level=0.95))
    summary = _summaries(pd.DataFrame(rows), study)["seg_summary"]
    assert sorted(set(summary.set) - {*sets, "tuning"}) == sorted(pooled)


def test_excluded_gallery_draws_a_bounded_sample_each_reason_first(monkeypatch) -> None:
    """A cohort with hundreds of excluded cases draws EXCLUDED_SHOWN slices (an image read
    and a figure each), every distinct reason among them, in manifest order."""
    import fusion.cohort
    from fusion.report import html

    reasons = (
        [f"QC: ROI has {i % 7} voxels" for i in range(300)]
        + ["deep failed: FusionError: /data/c300.nii.gz: cannot read image"]
        + [f"radiomics failed: ValueError: /data/c{i}.nrrd: label 2 absent" for i in range(5)]
    )
    cohort = pd.DataFrame({"case_id": [f"c{i}" for i in range(len(reasons) + 50)],
                           "included": [False] * len(reasons) + [True] * 50,
                           "reason": reasons + [""] * 50})  # fmt: skip
    drawn = []
    monkeypatch.setattr(fusion.cohort, "load_cohort", lambda study: [])
    monkeypatch.setattr(html, "_slice_png", lambda case, study: drawn.append(1) or "png")
    items = html._excluded_gallery(None, cohort)
    assert len(items) == len(drawn) == html.EXCLUDED_SHOWN
    ids = [int(it["case_id"][1:]) for it in items]  # one of each kind, then the first
    assert ids == [*range(10), 300, 301]
