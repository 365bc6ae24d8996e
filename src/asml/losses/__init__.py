"""The trainer's losses, chosen by name: ``build_loss("asm+ce", num_classes, ...)`` for label maps,
``build_regression_loss("asm+iid", "normals", ...)`` for depth and surface normals.

Every loss is an ``nn.Module`` called once per training step as ``loss(logits, target, images)``.
Losses with a second network (``asm``'s analyzer, ``gan``'s discriminator) update it inside that call
in training mode and keep it, its optimizer and schedule in their ``state_dict``.
"""

from asml.losses.regression import REGRESSION_ASM_DEFAULTS, REGRESSION_LOSS_NAMES, build_regression_loss
from asml.losses.strategies import (
    ALL_LAYERS_ASM,
    ASM_DEFAULTS,
    LOSS_NAMES,
    RELEASED_ASM,
    SEGMENTER_ASM_DEFAULTS,
    SegmentationLoss,
    asm_defaults,
    build_loss,
)

__all__ = [
    "ALL_LAYERS_ASM",
    "ASM_DEFAULTS",
    "LOSS_NAMES",
    "REGRESSION_ASM_DEFAULTS",
    "REGRESSION_LOSS_NAMES",
    "RELEASED_ASM",
    "SEGMENTER_ASM_DEFAULTS",
    "SegmentationLoss",
    "asm_defaults",
    "build_loss",
    "build_regression_loss",
]
