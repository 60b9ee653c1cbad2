"""Pure metrics: numbers from arrays of labels and scores, no models and no files.

- ``classification``   every figure a labelled set allows at each taxonomy level; the paper's binary tasks
- ``isic_metrics``     the ISIC challenges' definitions (balanced accuracy, partial AUC)
- ``calibration``      reliability, ECE, temperature scaling
- ``bootstrap``        percentile bootstrap CIs, by image or by group
- ``operating_point``  thresholds for a target sensitivity/specificity, and the model's referral threshold
- ``readers``          dermatologists' operating points and how many lie below a ROC curve
"""
from dermlens.evaluate.operating_point import (
    sensitivity_specificity,
    threshold_for_sensitivity,
    threshold_for_specificity,
)

__all__ = ["sensitivity_specificity", "threshold_for_sensitivity", "threshold_for_specificity"]
