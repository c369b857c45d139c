"""The study definition: one YAML file per study under ``pipelines/``, loaded into pydantic.

Every model forbids unknown keys, so a misspelt setting is an error rather than a
silently ignored default. Paths in the study file resolve against the study file's own
folder, so a study runs the same from any working directory. Validation errors are
rewritten to name the file, the key path, what is allowed and the closest spelling.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from fusion.errors import ConfigError, did_you_mean

FEATURE_BLOCKS = ("radiomics", "deep", "clinical")
SCORE_SUFFIX = "-score"


def _resolve_existing_file(value: Path, info: ValidationInfo) -> Path:
    """Resolve a path against the study file's folder and require that it exists."""
    base = (info.context or {}).get("base", Path.cwd())
    path = value if value.is_absolute() else (Path(base) / value)
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


ExistingFile = Annotated[Path, AfterValidator(_resolve_existing_file)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Strict):
    """Which manifest column holds what. Only case_id, image and label are required."""

    case_id: str = "case_id"
    image: str = "image"
    roi: str = "roi"
    label: str = "label"
    split: str | None = "split"
    institution: str | None = None
    patient: str | None = None
    series: str | None = None


class CohortSpec(_Strict):
    manifest: ExistingFile
    columns: Columns = Columns()
    label_map: dict[str, Literal[0, 1]] | None = Field(
        default=None, description="Maps manifest label values (as text) to 0/1."
    )
    roi_label: int = Field(default=1, ge=1)
    structures: list[str] | None = Field(
        default=None,
        description="RTSTRUCT/SEG/Slicer structure names or patterns (GTV*); the i-th "
        "becomes ROI label i.",
    )
    modality: Literal["CT", "MR", "other"] = "CT"
    external_institutions: list[str] = []


class Covariate(_Strict):
    name: str
    type: Literal["continuous", "categorical", "binary"]
    column: str | None = None
    reference: str | None = None

    @property
    def source_column(self) -> str:
        return self.column or self.name


class QCSpec(_Strict):
    """Thresholds of the per-case checks (see fusion.io.qc)."""

    min_roi_voxels: int = Field(default=10, ge=1)
    spacing_tolerance_mm: float = Field(default=1e-3, ge=0)
    origin_tolerance_mm: float = Field(default=1e-2, ge=0)
    direction_tolerance: float = Field(default=1e-4, ge=0)
    roi_at_border: Literal["warn", "fail", "ignore"] = "warn"
    ct_min_below_hu: float = -500.0
    ct_max_above_hu: float = 3000.0
    max_obliquity_deg: float = Field(default=25.0, ge=0, le=90)


class RadiomicsSpec(_Strict):
    params: ExistingFile
    labels: list[int] | None = None
    max_failures: int = Field(default=0, ge=0)


class DeepSpec(_Strict):
    backbone: Literal["resnet50"] = "resnet50"
    weights: str = "imagenet"
    allow_random_weights: bool = False
    layer: str = "avgpool"
    offsets_mm: list[float] = [-2.0, -1.0, 0.0, 1.0, 2.0]
    margin_mm: float = Field(default=10.0, ge=0)
    size: int = Field(default=224, ge=32)
    window: str | list[str] = "brain"
    aggregate: Literal["mean", "max", "concat"] = "mean"
    mask_outside_roi: bool = False
    mask_dilation_mm: float = Field(default=2.0, ge=0)
    device: str = "auto"
    batch_size: int = Field(default=20, ge=1)
    num_workers: int | None = Field(default=None, ge=0)
    max_failures: int = Field(default=0, ge=0)


class LassoSpec(_Strict):
    folds: int = Field(default=10, ge=2)
    rule: Literal["lambda.min", "lambda.1se"] = "lambda.1se"
    n_lambda: int = Field(default=100, ge=2)


class RoiSpec(_Strict):
    """A generated ROI: a generator from ``fusion.rois`` applied to each case's drawn ROI
    (label ``cohort.roi_label``). ``settings`` go to the generator unchanged; a habitat
    ROI in ``cohort`` mode is defined on the training cases only."""

    generator: str
    mode: Literal["per_case", "cohort"] = "per_case"
    supervoxels: int = Field(default=30, ge=2)  # cohort mode: step 1 per case
    k_candidates: list[int] = Field(
        default=[],
        description="cohort mode: choose k among these by the silhouette of the population "
        "clustering on the training cases (empty: settings.k)",
    )
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_generator(self) -> RoiSpec:
        from fusion.rois import make_generator

        try:  # an unknown generator or setting is named now, not at the first case
            make_generator(self.generator, **self.settings)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.mode == "cohort" and self.generator != "habitat":
            raise ValueError(f"mode 'cohort' is for the habitat generator, not {self.generator!r}")
        if self.k_candidates and (self.mode != "cohort" or min(self.k_candidates) < 2):
            raise ValueError("k_candidates (each >= 2) need mode: cohort")
        return self


class ModelSpec(_Strict):
    features: list[str] = Field(min_length=1)
    classifier: Literal["svm", "logistic"] = "svm"
    kernel: Literal["rbf", "linear"] = "rbf"
    lasso: bool = True
    correlation_threshold: float | None = Field(default=0.9, gt=0, le=1)


class EvaluationSpec(_Strict):
    conf_level: float = Field(default=0.95, gt=0, lt=1)
    test_size: float = Field(default=0.2, gt=0, lt=1)
    cv_folds: int = Field(default=5, ge=2)
    bootstrap: int = Field(default=2000, ge=0)
    lasso: LassoSpec = LassoSpec()
    dca_thresholds: tuple[float, float, float] = (0.01, 0.99, 0.01)
    nested_cv: bool = Field(
        default=True,
        description="Nest the CV of a model that uses another model's score, so its "
        "out-of-fold scores never see their own fold's labels (costs cv_folds refits of "
        "the upstream models).",
    )


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    cohort: CohortSpec
    clinical: list[Covariate] = []
    qc: QCSpec = QCSpec()
    radiomics: RadiomicsSpec | None = None
    deep: DeepSpec | None = None
    rois: dict[str, RoiSpec] = {}
    models: dict[str, ModelSpec] = {}
    evaluation: EvaluationSpec = EvaluationSpec()

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The study file this definition was loaded from."""
        return self._source

    @model_validator(mode="after")
    def _models_use_known_features(self) -> Study:
        """A model's features are blocks, or the score of a model declared before it."""
        declared: list[str] = []
        for model, spec in self.models.items():
            allowed = [*FEATURE_BLOCKS, *(f"{m}{SCORE_SUFFIX}" for m in declared)]
            for feature in spec.features:
                if feature.startswith("radiomics:"):  # one ROI's features: radiomics:<roi>
                    continue
                if feature not in allowed:
                    raise ValueError(
                        f"model {model!r} uses unknown features {feature!r}; allowed: "
                        f"{', '.join(allowed)}.{did_you_mean(feature, allowed)}"
                    )
            declared.append(model)
        return self


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at ``loc`` accepts, found by walking the model's fields."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            continue  # a list index or dict key: stay on the same model
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]`` or ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid study definition ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "<top level>"
        if e["type"] == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            allowed = _allowed_keys(Study, parent)
            lines.append(
                f"  - {where}: unknown key {key!r}; allowed keys here: "
                f"{', '.join(allowed)}.{did_you_mean(key, allowed)}"
            )
        elif e["type"] == "missing":
            lines.append(f"  - {where}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e.get('input')!r})" if loc else ""  # not the whole study
            lines.append(f"  - {where}: {msg}{got}")
    return "\n".join(lines)


def load_study(path: str | Path) -> Study:
    """Load and validate a study file; raise :class:`ConfigError` naming every problem."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a study file is a mapping of keys, got {type(data).__name__}")
    try:
        study = Study.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
    study._source = path
    return study


def study_hash(study: Study) -> str:
    """SHA-256 of the validated study, for provenance and cache keys."""
    payload = study.model_dump_json().encode()
    return hashlib.sha256(payload).hexdigest()
