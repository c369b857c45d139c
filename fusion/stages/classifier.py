"""Image classifiers (ResNet-50 / DenseNet-121) with Grad-CAM: train on the training
set, stop and threshold on the validation set, score and explain the held-out sets
(the statistics stage then reads ``scores.csv`` as for outcome models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion.atomic import write_csv_atomic
from fusion.config import Study
from fusion.learn.cnn.stage import CLASSIFIER_KEY_EXCLUDES, classifier_settings, model_path
from fusion.stages.base import Defaults, register
from fusion.stages.context import RunContext


@register
class ClassifierStage(Defaults):
    name = "classifier"
    section = "classifier"
    writes = ("tables/cnn_*.csv", "tables/gradcam*.csv", "tables/cohort.csv",
              "tables/scores.csv", "tables/.classifier.key", "figures/gradcam")  # fmt: skip
    key_sections = CLASSIFIER_KEY_EXCLUDES
    torch = True
    keyed = True

    def applies(self, study: Study) -> bool:
        return study.classifier is not None

    def settings(self, study: Study, device: str) -> dict[str, Any]:
        return classifier_settings(study, device)

    def products(self, ctx: RunContext) -> list[Path]:
        models = [model_path(ctx.folder, a) for a in ctx.study.classifier.architectures]
        return [ctx.tables / "cnn_models.csv", *models]

    def run(self, ctx: RunContext) -> None:
        from fusion.learn.cnn.stage import run_classifier

        checked = ctx.checked
        tables = run_classifier(
            ctx.study, checked.passed, checked.digests, ctx.folder, ctx.device("classifier"),
            ctx.set_of(), checked.excluded,
        )  # fmt: skip
        for name, frame in tables.items():
            write_csv_atomic(frame, ctx.tables / f"{name}.csv")
