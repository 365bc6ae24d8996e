"""The method at the centre of asml: the structure analyzer, the ASM losses and the adversarial step.

Imports torch only; every other part of the package depends on this one, never the reverse.
"""

from asml.core.analyzer import RELEASED_WIDTHS, AnalyzerOutput, StructureAnalyzer
from asml.core.losses import (
    adversarial_hinge_loss,
    cross_entropy_over_valid,
    layer_hinge_losses,
    layer_matching_distances,
    masked_mean,
    matching_loss,
    reconstruction_loss,
    structure_distance,
)
from asml.core.matching import AdversarialStructureMatching, PolyDecay
from asml.core.regression import REGRESSION_TASKS, RegressionStructureMatching, regression_encoding

__all__ = [
    "REGRESSION_TASKS",
    "RELEASED_WIDTHS",
    "AdversarialStructureMatching",
    "AnalyzerOutput",
    "PolyDecay",
    "RegressionStructureMatching",
    "StructureAnalyzer",
    "adversarial_hinge_loss",
    "cross_entropy_over_valid",
    "layer_hinge_losses",
    "layer_matching_distances",
    "masked_mean",
    "matching_loss",
    "reconstruction_loss",
    "regression_encoding",
    "structure_distance",
]
