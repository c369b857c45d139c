"""The TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378), item by item: where
this report answers it, or that it does not and who must.

Numbers and topics follow the 2024 checklist's 27 items and their parts (4 is the
objectives, 14 fairness, 16 training versus evaluation data). An item the report cannot
answer, because it is about the paper (title, funding, interpretation) or about facts
fusion never holds (accrual dates, which it strips for privacy), says so instead of
pointing at a section that does not answer it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusion.config import Study

MANUSCRIPT = "not reported: the manuscript's"


@dataclass(frozen=True, slots=True)
class Present:
    """Which of the report's optional parts exist (they decide some answers)."""

    sample_size: bool
    table1: bool
    subgroups: bool
    institutions: bool
    missing_features: bool


def _link(anchor: str, text: str) -> str:
    return f'<a href="#{anchor}">{text}</a>'


def tripod_rows(study: Study, present: Present) -> list[tuple[str, str, str]]:
    """(item, topic, where: HTML with links to the sections, or why not reported)."""
    methods, cohort, features = _link("methods", "1. Methods"), _link("cohort", "2. Cohort"), \
        _link("features", "3. Features")  # fmt: skip
    performance, figures = _link("performance", "4. Performance"), _link("figures", "5. Figures")
    provenance, warnings = _link("provenance", "8. Provenance"), _link("warnings", "Warnings")
    table1 = _link("table1", "Table 1 (train and test, by outcome)") if present.table1 else None
    subgroups = _link("subgroups", "performance by subgroup") if present.subgroups else None
    no_subgroups = ("not reported: name the subgroups (sex, institution...) in "
                    "evaluation.subgroups")  # fmt: skip
    return [
        ("1", "Title", MANUSCRIPT),
        ("2", "Abstract", MANUSCRIPT),
        ("3a-c", "Background: healthcare context, target population, health inequalities",
         MANUSCRIPT),
        ("4", "Objectives (development and/or evaluation)", f"{methods} (study description)"),
        ("5a", "Data sources", f"{methods}; {cohort} (manifest, sets)"),
        ("5b", "Dates of accrual and follow-up",
         "not reported: fusion keeps no dates (patient privacy); the manuscript's"),
        ("6a", "Setting and centres",
         f"{cohort} (institutions)" if present.institutions else MANUSCRIPT),
        ("6b", "Eligibility criteria", f"{cohort}: QC rules, flow and excluded cases"),
        ("6c", "Treatments received", MANUSCRIPT),
        ("7", "Data preparation and quality checks", f"{methods}; {cohort} (QC)"),
        ("8a-c", "Outcome: definition, assessment, blinding",
         f"{methods} (outcome column); assessment and blinding: the manuscript's"),
        ("9a-c", "Predictors: choice, definition, measurement", f"{methods}; {features}"),
        ("10", "Sample size",
         _link("sample-size", "sample size (Riley et al.)") if present.sample_size
         else "not reported (no model)"),
        ("11", "Missing data", f"{methods} (imputation inside each model)"
         + ("; " + _link("missing", "features with missing values")
            if present.missing_features else "")),
        ("12a", "Data use: development and evaluation sets", f"{methods}; {cohort} (flow)"),
        ("12b", "Predictor handling (scaling, selection)", f"{methods}; {features}"),
        ("12c", "Model type, building, tuning, internal validation", f"{methods}; {features}"),
        ("12d", "Heterogeneity across clusters or centres", subgroups or no_subgroups),
        ("12e", "Performance measures", performance),
        ("12f", "Model updating or recalibration", f"{methods} (Platt recalibration)"),
        ("13", "Class imbalance", f"{cohort} (prevalence per set); {methods} (threshold)"),
        ("14", "Fairness", subgroups or no_subgroups),
        ("15", "Model output and decision threshold", f"{performance} (probability, threshold)"),
        ("16", "Differences between development and evaluation data",
         table1 or "not reported (no Table 1: no clinical covariates)"),
        ("17", "Ethical approval", MANUSCRIPT),
        ("18a-d", "Funding, conflicts of interest, protocol, registration", MANUSCRIPT),
        ("18e-f", "Data and code availability",
         f"{provenance} (code version, data hashes, settings to replay the run)"),
        ("19", "Patient and public involvement", MANUSCRIPT),
        ("20a", "Participant flow", f"{cohort} (flow)"),
        ("20b", "Participant characteristics", table1 or MANUSCRIPT),
        ("20c", "Development versus evaluation data", table1 or MANUSCRIPT),
        ("21", "Participants and events in each analysis",
         f"{features} (cases and features per model); {performance} (n per set)"),
        ("22", "Full model specification", f"{features} (selected features, coefficients); "
         "tables/model_summary.csv"),
        ("23a", "Performance with confidence intervals", f"{performance}; {figures}"),
        ("23b", "Performance in subgroups", subgroups or no_subgroups),
        ("24", "Model updating results", "not applicable (the models are not updated)"),
        ("25", "Interpretation", MANUSCRIPT),
        ("26", "Limitations", f"{warnings} (the data's limits found here); the rest: the "
         "manuscript's"),
        ("27a-c", "Usability: care pathway, users, further work", MANUSCRIPT),
    ]  # fmt: skip
