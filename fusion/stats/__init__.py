"""Statistics that agree with the references statisticians trust (pROC, dcurves, glm).

Public API: every function takes array-likes and returns a frozen dataclass (or a
DataFrame where stated); bad input raises ValueError saying what is wrong.
"""

from fusion.stats.calibration import (
    Calibration,
    CalibrationCurve,
    HosmerLemeshow,
    calibration,
    calibration_curve,
    hosmer_lemeshow,
    near_constant,
)
from fusion.stats.dca import net_benefit
from fusion.stats.metrics import ThresholdMetrics, threshold_metrics, youden_threshold
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
from fusion.stats.tables import baseline_table, logistic_or_table

__all__ = [
    "AUC",
    "BootstrapAUC",
    "Calibration",
    "CalibrationCurve",
    "DeLongTest",
    "DeLongUnpaired",
    "HosmerLemeshow",
    "ThresholdMetrics",
    "auc_value",
    "baseline_table",
    "bootstrap_auc_ci",
    "calibration",
    "calibration_curve",
    "delong_test",
    "delong_test_unpaired",
    "hosmer_lemeshow",
    "logistic_or_table",
    "near_constant",
    "net_benefit",
    "roc_auc",
    "roc_points",
    "threshold_metrics",
    "youden_threshold",
]
