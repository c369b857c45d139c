"""Statistics that agree with the references statisticians trust (pROC, dcurves, glm,
rms::val.prob, Hmisc::improveProb, pmsampsize).

Public API: every function takes array-likes and returns a frozen dataclass (or a
DataFrame where stated); bad input raises ValueError saying what is wrong.
"""

from fusion.stats.calibration import (
    Calibration,
    CalibrationCurve,
    CalibrationErrors,
    HosmerLemeshow,
    calibration,
    calibration_curve,
    calibration_errors,
    hosmer_lemeshow,
    near_constant,
    spiegelhalter,
)
from fusion.stats.dca import net_benefit, net_benefit_difference
from fusion.stats.metrics import (
    ThresholdMetrics,
    metric_cis,
    threshold_metrics,
    wilson_ci,
    youden_threshold,
)
from fusion.stats.reclassification import Reclassification, categorical_nri, improve_prob
from fusion.stats.roc import (
    AUC,
    BootstrapAUC,
    DeLongTest,
    DeLongUnpaired,
    auc_value,
    bootstrap_auc_ci,
    delong_test,
    delong_test_unpaired,
    roc_auc,
    roc_points,
)
from fusion.stats.sample_size import SampleSize, riley_binary
from fusion.stats.tables import baseline_table, logistic_or_table

__all__ = [
    "AUC",
    "BootstrapAUC",
    "Calibration",
    "CalibrationCurve",
    "CalibrationErrors",
    "DeLongTest",
    "DeLongUnpaired",
    "HosmerLemeshow",
    "Reclassification",
    "SampleSize",
    "ThresholdMetrics",
    "auc_value",
    "baseline_table",
    "bootstrap_auc_ci",
    "calibration",
    "calibration_curve",
    "calibration_errors",
    "categorical_nri",
    "delong_test",
    "delong_test_unpaired",
    "hosmer_lemeshow",
    "improve_prob",
    "logistic_or_table",
    "metric_cis",
    "near_constant",
    "net_benefit",
    "net_benefit_difference",
    "riley_binary",
    "roc_auc",
    "roc_points",
    "spiegelhalter",
    "threshold_metrics",
    "wilson_ci",
    "youden_threshold",
]
