"""The study definition: one YAML file per study under ``pipelines/``, loaded into pydantic.

Every model forbids unknown keys, so a misspelt setting is an error rather than a
silently ignored default. Paths in the study file resolve against the study file's own
folder, so a study runs the same from any working directory. Validation errors are
rewritten to name the file, the key path, what is allowed and the closest spelling.
"""

from __future__ import annotations

import hashlib
from itertools import combinations, pairwise
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
    field_validator,
    model_validator,
)

from fusion.errors import ConfigError, did_you_mean

FEATURE_BLOCKS = ("radiomics", "deep", "clinical")
SCORE_SUFFIX = "-score"
# ROI generators whose maps are about the drawn ROI (fusion.rois.perturb, .controls)
AUXILIARY_GENERATORS = ("perturb", "shuffle", "elsewhere")


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
    site: str | None = Field(
        default=None, description="the scanner or site of each case, for harmonisation "
        "(ComBat's batch); without it harmonisation uses the institution",
    )  # fmt: skip
    patient: str | None = None
    series: str | None = None
    reference: str | None = Field(
        default=None,
        description="segmentation studies: the reference label map of each case (may be "
        "blank for a case without one; such a case is predicted but not evaluated)",
    )


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
    min_image_px: int = Field(default=64, ge=1, description="2D images: the shorter side "
                              "must have at least this many pixels")  # fmt: skip


class RadiomicsSpec(_Strict):
    params: ExistingFile
    labels: list[int] | None = None
    max_failures: int = Field(default=0, ge=0)


class ImageAugmentSpec(_Strict):
    """Training-time augmentation of 2D images (never applied at evaluation): rotation
    up to ``rotate_deg``, horizontal flip, zoom by up to ``scale`` and a contrast change
    of up to ``contrast`` (a factor around the image mean)."""

    flip: bool = True
    rotate_deg: float = Field(default=10.0, ge=0, le=180)
    scale: float = Field(default=0.1, ge=0, lt=1)
    contrast: float = Field(default=0.1, ge=0, lt=1)


class FreezeSpec(_Strict):
    """Transfer learning in two phases: the new head alone for ``head_epochs``, then the
    last ``train_blocks`` blocks of the backbone as well (0: the head only throughout;
    5: the whole network, stem included)."""

    head_epochs: int = Field(default=1, ge=0)
    train_blocks: int = Field(default=2, ge=0, le=5)


class FinetuneSpec(_Strict):
    """``deep.weights: finetune``: the ResNet50 is first trained (fusion.learn.cnn) to
    predict the outcome from the training set's crops, each plane an image with its
    case's label; a share of the training cases (by case) stops it early. Test and
    external cases are never used."""

    start: Literal["imagenet", "random"] = Field(
        default="imagenet", description="initial weights (imagenet falls back to random "
        "with deep.allow_random_weights)",
    )  # fmt: skip
    max_epochs: int = Field(default=5, ge=1)
    patience: int = Field(default=2, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=32, ge=2)
    validation_size: float = Field(default=0.2, gt=0, lt=1)
    freeze: FreezeSpec = FreezeSpec()
    augment: ImageAugmentSpec = ImageAugmentSpec()


class DeepSpec(_Strict):
    backbone: Literal["resnet50"] = "resnet50"
    weights: str = Field(
        default="imagenet", description="'imagenet', 'random', 'finetune' (see finetune) "
        "or a checkpoint file (a ResNet50 state dict)",
    )  # fmt: skip
    finetune: FinetuneSpec = FinetuneSpec()
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
    roi: str | None = Field(
        default=None, description="crop around a generated ROI of the study (e.g. a "
        "U-Net's tumour) instead of the manifest's ROI",
    )  # fmt: skip
    roi_label: int = Field(default=1, ge=1, description="with roi: its label to crop around")


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
    def _cohort_mode(self) -> RoiSpec:
        """(The generator and its settings are checked by :func:`fusion.rois.check_rois`
        before the first case: the registry lives above the study definition.)"""
        if self.mode == "cohort" and self.generator != "habitat":
            raise ValueError(f"mode 'cohort' is for the habitat generator, not {self.generator!r}")
        if self.k_candidates and (self.mode != "cohort" or min(self.k_candidates) < 2):
            raise ValueError("k_candidates (each >= 2) need mode: cohort")
        return self


class UNetSpec(_Strict):
    """MONAI's ``UNet``: channels per level, the stride between levels, residual units."""

    dims: Literal[2, 3] = 3
    channels: list[int] = Field(default=[8, 16, 32], min_length=2)
    strides: list[int] = Field(default=[2, 2], min_length=1)
    res_units: int = Field(default=1, ge=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _levels(self) -> UNetSpec:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("network.strides needs one value fewer than network.channels")
        return self


class NormaliseSpec(_Strict):
    """CT windowing (clip to ``window`` HU, scale to 0..1) or per-image z-score."""

    mode: Literal["window", "zscore"] = "window"
    window: tuple[float, float] = (-160.0, 240.0)


class AugmentSpec(_Strict):
    """Training-time augmentation only; never applied at prediction."""

    flip: bool = True
    rotate_deg: float = Field(default=10.0, ge=0, le=180)
    scale: float = Field(default=0.1, ge=0, lt=1)
    intensity: float = Field(default=0.1, ge=0, lt=1)


class VariantSpec(_Strict):
    """An image preprocessing variant, applied before normalisation: ``none``,
    ``gradient`` (edge enhancement: image + gradient magnitude in HU/mm x ``strength``
    in mm, i.e. the HU step over that distance is added at edges) or ``denoise``
    (curvature-flow smoothing, ``strength`` iterations)."""

    filter: Literal["none", "gradient", "denoise"] = "none"
    strength: float = Field(default=1.0, ge=0)


class InvolvementSpec(_Strict):
    """Lung involvement (seed 003): pattern volume inside the lung / lung volume, per
    patient, lung and zone, from the final model's prediction and the reference."""

    lung_roi: str = Field(description="the study's ROI made by the lung generator")
    lung_reference: str | None = Field(
        default=None, description="manifest column of reference lung masks (to measure "
        "the outline's Dice)",
    )  # fmt: skip


class SegmentationSpec(_Strict):
    """Training, prediction and evaluation of a segmentation model (fusion.seg). Masks
    come from the manifest's ``reference`` column; ``labels`` names its classes."""

    labels: dict[int, str] = Field(min_length=1)
    network: UNetSpec = UNetSpec()
    patch_size: list[int] = Field(default=[48, 48, 32], min_length=2, max_length=3)
    spacing: list[float] | None = Field(
        default=None, description="training grid in mm (x, y, z); default: the median "
        "spacing of the training cases. Other images are resampled to it and back."
    )  # fmt: skip
    batch_size: int = Field(default=4, ge=1)
    patches_per_case: int = Field(default=2, ge=1)
    max_epochs: int = Field(default=30, ge=1)
    patience: int = Field(default=5, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    normalise: NormaliseSpec = NormaliseSpec()
    augment: AugmentSpec = AugmentSpec()
    cv_folds: int = Field(default=5, ge=0, description="0: no cross-validation")
    cv_variants: Literal["all", "first"] = Field(
        default="all", description="cross-validate every variant, or the first only (the "
        "others are still trained and tested on the same sets)",
    )  # fmt: skip
    tuning_fraction: float = Field(
        default=0.15, gt=0, lt=1,
        description="share of the training cases drawn (by patient) as the tuning set when "
        "the manifest has no 'tuning' split",
    )  # fmt: skip
    variants: dict[str, VariantSpec] = Field(default={"original": VariantSpec()}, min_length=1)
    threshold: float = Field(default=0.5, gt=0, lt=1)
    case_score: Literal["volume", "max_probability"] = "volume"
    case_threshold: Literal["any_lesion", "youden_tuning"] = Field(
        default="any_lesion", description="case-level call: positive when the segmentation "
        "predicts any lesion (its own operating point), or at the case score's Youden "
        "threshold on the tuning set",
    )  # fmt: skip
    iou_thresholds: list[float] = [0.1, 0.2, 0.3, 0.4, 0.5]
    subgroup: str | None = Field(
        default=None, description="manifest column of the subgroup table (e.g. severity); "
        "institutions are always tabulated when the cohort has them",
    )  # fmt: skip
    device: str = "auto"
    froc: bool = Field(default=True, description="lesion-wise FROC (off for diffuse "
                       "patterns, whose connected components are not lesions)")  # fmt: skip
    involvement: InvolvementSpec | None = None
    skip_empty_slices: bool = Field(
        default=False, description="2D: train on slices with a labelled voxel only "
        "(prediction still runs on every slice)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _shapes(self) -> SegmentationSpec:
        if len(self.patch_size) != self.network.dims:
            raise ValueError(
                f"patch_size {self.patch_size} has {len(self.patch_size)} values for a "
                f"{self.network.dims}D network"
            )
        factor = 1
        for s in self.network.strides:
            factor *= s
        if any(p % factor for p in self.patch_size):
            raise ValueError(f"every patch_size value must be a multiple of {factor} "
                             "(the product of network.strides)")  # fmt: skip
        if 0 in self.labels:
            raise ValueError("labels: 0 is the background; name the foreground labels")
        return self


class ClassifierSpec(_Strict):
    """Image classifiers on 2D radiographs (fusion.learn.cnn), seed 004's protocol:
    torchvision CNNs with a one-logit head, BCE, Adam, early stopping on the validation
    set, the threshold chosen on the validation set, Grad-CAM on the test set."""

    architectures: list[Literal["resnet50", "densenet121"]] = Field(
        default=["resnet50", "densenet121"], min_length=1)  # fmt: skip
    weights: str = Field(
        default="imagenet", description="'imagenet', 'random' or a checkpoint file (a "
        "state dict of the architecture, or a fusion classifier checkpoint)",
    )  # fmt: skip
    allow_random_weights: bool = False
    image_size: int = Field(default=224, ge=32)
    batch_size: int = Field(default=32, ge=2)
    max_epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=5, ge=1)
    monitor: Literal["auc", "loss"] = "auc"
    learning_rate: float = Field(default=1e-4, gt=0)
    class_weights: Literal["none", "balanced"] = Field(
        default="none", description="balanced: BCE's positive weight is negatives/positives "
        "of the training set",
    )  # fmt: skip
    freeze: FreezeSpec = FreezeSpec()
    augment: ImageAugmentSpec = ImageAugmentSpec()
    validation_size: float = Field(default=0.15, gt=0, lt=1)
    test_size: float = Field(default=0.15, gt=0, lt=1)
    ensemble: bool = Field(default=True, description="also evaluate the mean of the "
                           "architectures' recalibrated probabilities")  # fmt: skip
    gallery: int = Field(default=6, ge=0, description="Grad-CAM images per gallery")
    device: str = "auto"

    @model_validator(mode="after")
    def _sizes(self) -> ClassifierSpec:
        if self.validation_size + self.test_size >= 0.9:
            raise ValueError("validation_size + test_size leave under 10% for training")
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError("architectures: each at most once")
        return self


class ReproducibleSpec(_Strict):
    """The reproducible mode (:mod:`fusion.reproducible`): every network on this many
    intra-op threads, whatever the machine has, with ATen, MKL and oneDNN on their AVX2
    paths and deterministic algorithms. With ``kernels: portable`` the same inputs and
    seed give bit-identical torch numbers on any x86-64 CPU with AVX2; ``onednn`` is 2-4
    times faster in CPU training and bit-identical on CPUs of one model."""

    threads: int = Field(default=2, ge=1, description="intra-op threads of every network "
                         "(a different count gives different numbers)")  # fmt: skip
    kernels: Literal["portable", "onednn"] = Field(
        default="portable", description="portable: ATen's convolutions, the same on every "
        "CPU with AVX2; onednn: oneDNN's at AVX2, faster, the same on one CPU model",
    )  # fmt: skip


class ModelSpec(_Strict):
    features: list[str] = Field(min_length=1)
    classifier: Literal["svm", "logistic"] = "svm"
    kernel: Literal["rbf", "linear"] = "rbf"
    lasso: bool = True
    correlation_threshold: float | None = Field(default=0.9, gt=0, le=1)
    exclude: list[str] = Field(
        default=[], description="leave out the feature columns whose name contains one of "
        "these fragments (e.g. '_shape_': a texture-only model)",
    )  # fmt: skip
    robust: bool = Field(
        default=False, description="first step: keep the radiomics features robust to the "
        "study's ROI perturbations (ICC on the training cases only; needs perturbations)",
    )  # fmt: skip
    harmonise: bool = Field(
        default=False, description="ComBat across sites, fitted on the training rows of "
        "each fit (needs the harmonisation section)",
    )  # fmt: skip
    control_of: str | None = Field(
        default=None, description="this model is a negative control of that (earlier) "
        "model: the report sets their AUCs side by side, tests them by DeLong and warns "
        "when the control reaches the real model's CI",
    )  # fmt: skip
    permute_outcome: bool = Field(
        default=False, description="negative control: fit on the training outcome "
        "permuted (seeded); evaluated against the true outcome (needs control_of)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _permuted_is_a_control(self) -> ModelSpec:
        if self.permute_outcome and self.control_of is None:
            raise ValueError("permute_outcome makes a negative control: name its model "
                             "in control_of")  # fmt: skip
        return self


class PerturbationsSpec(_Strict):
    """ROI perturbations for the robustness of radiomics features (fusion.rois.perturb):
    each entry of ``variants`` becomes a generated ROI ``perturbed<i>-<kind>`` of the
    drawn ROI (its settings: ``kind``, ``distance_mm``, ``angle_deg``, ``noise_hu``,
    ``seed``), measured like any ROI; or names a ROI the study declares (``{roi:
    <name>}``): another threshold of the segmenter that made ``of``, a CV-fold model's
    mask, a second reader's contour. A feature's ICC across ``of`` and the variants, on
    the training cases, decides whether ``robust`` models keep it."""

    of: str = Field(
        default="whole", description="the ROI whose robustness is measured: the drawn ROI "
        "(whole) or a generated one (e.g. a unet's tumour; its variants then name ROIs)",
    )  # fmt: skip
    variants: list[dict[str, Any]] = Field(min_length=1)
    icc: Literal["ICC1", "ICC3"] = Field(
        default="ICC1", description="ICC(1,1), one-way random, absolute agreement "
        "(default: a perturbation is another draw of the contour, with no fixed 'rater' "
        "effect to forgive); ICC(3,1), two-way mixed, consistency (a perturbation's "
        "systematic shift, e.g. dilation's, is forgiven)",
    )  # fmt: skip
    min_ci_low: float = Field(default=0.75, ge=-1, le=1)
    min_icc: float = Field(default=0.9, ge=-1, le=1)

    def roi_names(self) -> list[str]:
        """The variants' ROI names: a declared ROI's own, ``perturbed<i>-<kind>`` else."""
        return [v["roi"] if "roi" in v else f"perturbed{i}-{v.get('kind', 'erode')}"
                for i, v in enumerate(self.variants, start=1)]  # fmt: skip


class HarmonisationSpec(_Strict):
    """ComBat (fusion.learn.harmonise) for models with ``harmonise: true``: the batch is
    the manifest's ``cohort.columns.site`` (else its institution)."""

    blocks: list[Literal["radiomics", "deep"]] = ["radiomics", "deep"]
    covariates: list[str] = Field(
        default=[], description="clinical covariates whose effects ComBat preserves "
        "(categorical ones enter as 0/1 columns against their reference level)",
    )  # fmt: skip
    unseen: Literal["error", "own"] = Field(
        default="error", description="a site with no training case: an error naming it, "
        "or its location and scale estimated from its own cases' features",
    )  # fmt: skip


class SampleSizeSpec(_Strict):
    """The anticipated performance behind Riley et al.'s minimum sample size
    (fusion.stats.sample_size): at most one of a Cox-Snell R2, a C statistic or a
    Nagelkerke R2; none set means Nagelkerke 0.15, their conservative default."""

    nagelkerke_r2: float | None = Field(default=None, gt=0, lt=1)
    cox_snell_r2: float | None = Field(default=None, gt=0, lt=1)
    c_statistic: float | None = Field(default=None, gt=0.5, lt=1)
    shrinkage: float = Field(default=0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_anticipation(self) -> SampleSizeSpec:
        given = [k for k in ("nagelkerke_r2", "cox_snell_r2", "c_statistic") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set at most one of {', '.join(given)}")
        return self


class EvaluationSpec(_Strict):
    conf_level: float = Field(default=0.95, gt=0, lt=1)
    test_size: float = Field(default=0.2, gt=0, lt=1)
    cv_folds: int = Field(default=5, ge=2)
    bootstrap: int = Field(default=2000, ge=0)
    lasso: LassoSpec = LassoSpec()
    dca_thresholds: tuple[float, float, float] = Field(
        default=(0.01, 0.99, 0.01), description="first, last and step of the decision "
        "curves' threshold probabilities; first and last strictly inside (0, 1)",
    )  # fmt: skip
    risk_thresholds: list[float] = Field(
        default=[], description="bounds of the risk categories of the categorical NRI, "
        "increasing, strictly inside (0, 1) (empty: continuous NRI only)",
    )  # fmt: skip
    sample_size: SampleSizeSpec = SampleSizeSpec()
    tuning_score: Literal["log_loss", "brier"] = Field(
        default="log_loss", description="the proper scoring rule, on Platt-calibrated "
        "out-of-fold probabilities, that picks each classifier's hyper-parameters",
    )  # fmt: skip
    min_score_sd: float = Field(
        default=0.01, ge=0, description="a hyper-parameter candidate whose out-of-fold "
        "raw scores (SVM margin or logit units) have a smaller SD is degenerate and is not "
        "chosen",
    )  # fmt: skip
    subgroups: list[str] = Field(
        default=[], description="performance within the levels of these variables "
        "(categorical clinical covariates, or 'institution'): TRIPOD+AI's fairness and "
        "heterogeneity items",
    )  # fmt: skip
    svm_max_rows: int = Field(
        default=5000, ge=100, description="an SVM fitted on more rows than this is a linear "
        "SVM (liblinear), on a Nystroem approximation of the RBF kernel (500 components) "
        "for kernel: rbf: libsvm's time grows with the square of the rows. The report's "
        "methods say which models were fitted so",
    )  # fmt: skip
    comparisons: list[tuple[str, str]] = Field(
        default=[], description="the model pairs to compare (DeLong, NRI/IDI, net-benefit "
        "differences; Holm adjusts over them): the planned comparisons. Default: every "
        "pair of models that are not negative controls; a control is always compared "
        "with its own model",
    )  # fmt: skip
    nested_cv: bool = Field(
        default=True,
        description="Nest the CV of a model that uses another model's score, so its "
        "out-of-fold scores never see their own fold's labels (costs cv_folds refits of "
        "the upstream models).",
    )

    @field_validator("dca_thresholds")
    @classmethod
    def _dca_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        first, last, step = value
        if not (0 < first <= last < 1):
            raise ValueError(
                "first and last threshold must satisfy 0 < first <= last < 1 (at a threshold "
                "probability of 0 or 1 everyone or no one is treated whatever the model says, "
                f"and 1 divides by zero); got first {first:g}, last {last:g}"
            )
        if step <= 0:
            raise ValueError(f"the step must be positive; got {step:g}")
        return value

    @field_validator("risk_thresholds")
    @classmethod
    def _risk_categories(cls, value: list[float]) -> list[float]:
        if any(not 0 < v < 1 for v in value) or any(b <= a for a, b in pairwise(value)):
            raise ValueError(f"risk thresholds must increase strictly inside (0, 1); got {value}")
        return value


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    cohort: CohortSpec
    clinical: list[Covariate] = []
    qc: QCSpec = QCSpec()
    radiomics: RadiomicsSpec | None = None
    deep: DeepSpec | None = None
    segmentation: SegmentationSpec | None = None
    classifier: ClassifierSpec | None = None
    rois: dict[str, RoiSpec] = {}
    models: dict[str, ModelSpec] = {}
    perturbations: PerturbationsSpec | None = None
    harmonisation: HarmonisationSpec | None = None
    evaluation: EvaluationSpec = EvaluationSpec()
    reproducible: ReproducibleSpec | None = Field(
        default=None, description="bit-identical torch numbers across machines, at a "
        "cost in speed (off: torch picks threads and kernels for this machine)",
    )  # fmt: skip

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The study file this definition was loaded from."""
        return self._source

    @model_validator(mode="after")
    def _classifier_stands_alone(self) -> Study:
        """An image-classifier study reads 2D images; the CT stages cannot run on them."""
        if self.classifier is not None:
            clash = [name for name in ("radiomics", "deep", "segmentation", "rois", "models")
                     if getattr(self, name)]  # fmt: skip
            if clash:
                raise ValueError(f"a classifier study (2D images) cannot also have "
                                 f"{', '.join(clash)}: those stages read CT volumes")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _deep_roi_is_generated(self) -> Study:
        if self.deep is not None and self.deep.roi is not None and self.deep.roi not in self.rois:
            raise ValueError(f"deep.roi {self.deep.roi!r} is not one of the study's rois "
                             f"({', '.join(self.rois) or 'none'})")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _involvement_names_a_lung_roi(self) -> Study:
        spec = self.segmentation.involvement if self.segmentation else None
        if spec is not None:
            roi = self.rois.get(spec.lung_roi)
            if roi is None or roi.generator != "lung":
                raise ValueError(f"segmentation.involvement.lung_roi {spec.lung_roi!r} must "
                                 "name a ROI of this study made by the lung generator")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _subgroups_are_categorical(self) -> Study:
        categorical = [c.name for c in self.clinical if c.type != "continuous"]
        allowed = [*categorical, *(["institution"] if self.cohort.columns.institution else [])]
        for name in self.evaluation.subgroups:
            if name not in allowed:
                raise ValueError(
                    f"evaluation.subgroups: {name!r} is not a categorical clinical covariate "
                    f"or 'institution' (with cohort.columns.institution); allowed: "
                    f"{', '.join(allowed) or 'none'}.{did_you_mean(name, allowed)}"
                )
        return self

    @model_validator(mode="after")
    def _perturbations_become_rois(self) -> Study:
        """Each perturbation is a generated ROI of the drawn one (fusion.rois.perturb), or
        names a ROI the study declares."""
        if self.perturbations is None:
            return self
        spec = self.perturbations  # ``of`` is checked against the radiomics table's ROIs
        for name, variant in zip(spec.roi_names(), spec.variants, strict=True):
            if "roi" in variant:
                if set(variant) != {"roi"} or name not in self.rois:
                    raise ValueError(f"perturbations.variants: {variant} must be {{roi: "
                                     "<name>}} naming one of the study's rois")  # fmt: skip
                continue
            if spec.of != "whole":
                raise ValueError(f"perturbations.variants: {variant} perturbs the drawn "
                                 f"ROI, but perturbations.of is {spec.of!r}: name ROIs made "
                                 "from it instead ({roi: <name>})")  # fmt: skip
            if name in self.rois and self.rois[name].generator != "perturb":
                raise ValueError(f"rois.{name} clashes with a perturbation's ROI name")
            settings = {"label": self.cohort.roi_label, **variant, "name": name}
            self.rois[name] = RoiSpec(generator="perturb", settings=settings)
        return self

    @model_validator(mode="after")
    def _robust_and_harmonised_models_have_their_sections(self) -> Study:
        for model, spec in self.models.items():
            if spec.robust and self.perturbations is None:
                raise ValueError(f"model {model!r} has robust: true but the study has no "
                                 "perturbations section")  # fmt: skip
            if spec.harmonise:
                if self.harmonisation is None:
                    raise ValueError(f"model {model!r} has harmonise: true but the study has "
                                     "no harmonisation section")  # fmt: skip
                if not (self.cohort.columns.site or self.cohort.columns.institution):
                    raise ValueError(f"model {model!r} has harmonise: true: name the site "
                                     "column (cohort.columns.site or .institution)")  # fmt: skip
        if self.harmonisation is not None:
            known = [c.name for c in self.clinical]
            for name in self.harmonisation.covariates:
                if name not in known:
                    raise ValueError(f"harmonisation.covariates: {name!r} is not a clinical "
                                     f"covariate ({', '.join(known) or 'none'})"
                                     f"{did_you_mean(name, known)}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _controls_name_earlier_models(self) -> Study:
        declared: list[str] = []
        for model, spec in self.models.items():
            if spec.control_of is not None:
                if spec.control_of not in declared:
                    earlier = ", ".join(declared) or "none"
                    raise ValueError(f"model {model!r}: control_of {spec.control_of!r} must "
                                     f"name a model declared before it ({earlier})")  # fmt: skip
                if spec.permute_outcome and any(f.endswith(SCORE_SUFFIX) for f in spec.features):
                    raise ValueError(f"model {model!r}: a permuted-outcome control cannot "
                                     "use another model's score (fitted on the true "
                                     "outcome)")  # fmt: skip
                if self.models[spec.control_of].control_of is not None:
                    raise ValueError(f"model {model!r}: {spec.control_of!r} is itself a control")
            declared.append(model)
        return self

    @model_validator(mode="after")
    def _comparisons_name_models(self) -> Study:
        for a, b in self.evaluation.comparisons:
            for name in (a, b):
                if name not in self.models:
                    raise ValueError(f"evaluation.comparisons: {name!r} is not a model "
                                     f"({', '.join(self.models) or 'none'})"
                                     f"{did_you_mean(name, list(self.models))}")  # fmt: skip
            if a == b:
                raise ValueError(f"evaluation.comparisons: [{a}, {b}] compares a model "
                                 "with itself")  # fmt: skip
        return self

    def compared_pairs(self) -> frozenset[tuple[str, str]] | None:
        """The model pairs the comparison tables hold (either order), or None: every
        pair. ``evaluation.comparisons`` when given, else every pair of models that are
        not negative controls; and each control with its own model."""
        controls = {m: s.control_of for m, s in self.models.items() if s.control_of}
        if not controls and not self.evaluation.comparisons:
            return None
        real = [m for m in self.models if m not in controls]
        pairs = set(self.evaluation.comparisons) or set(combinations(real, 2))
        pairs |= {(model, control) for control, model in controls.items()}
        return frozenset(pairs | {(b, a) for a, b in pairs})

    def auxiliary_rois(self) -> frozenset[str]:
        """Generated ROIs that are measurements about the drawn ROI, not features of the
        ``radiomics`` block: perturbations and negative-control ROIs (a model takes one
        only by name, ``radiomics:<roi>``)."""
        variants = set(self.perturbations.roi_names()) if self.perturbations else set()
        return frozenset(name for name, spec in self.rois.items()
                         if spec.generator in AUXILIARY_GENERATORS or name in variants)  # fmt: skip

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
