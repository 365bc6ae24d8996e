"""asml: Adversarial Structure Matching for PyTorch segmentation models.

The drop-in loss::

    asm = asml.AdversarialStructureMatching(num_classes, total_steps=steps)
    loss = asm(model(images), masks)   # updates the analyzer, returns the segmenter's loss
    loss.backward()

and for depth or surface normals, ``asml.RegressionStructureMatching("normals", total_steps=steps)``
with the same call shape plus an optional valid mask: ``asm(model(images), normals, valid_mask)``.
"""

from asml.core import (
    RELEASED_WIDTHS,
    AdversarialStructureMatching,
    AnalyzerOutput,
    RegressionStructureMatching,
    StructureAnalyzer,
    adversarial_hinge_loss,
    cross_entropy_over_valid,
    matching_loss,
    reconstruction_loss,
    structure_distance,
)

__version__ = "0.1.0"

__all__ = [
    "RELEASED_WIDTHS",
    "AdversarialStructureMatching",
    "AnalyzerOutput",
    "RegressionStructureMatching",
    "StructureAnalyzer",
    "__version__",
    "adversarial_hinge_loss",
    "cross_entropy_over_valid",
    "matching_loss",
    "reconstruction_loss",
    "structure_distance",
]
