"""The trainer's segmenter losses, chosen by name: ``build_loss("asm+ce", num_classes, ...)``.

Every loss is an ``nn.Module`` called once per training step as ``loss(logits, target, images)``.
Losses with a second network (``asm``'s analyzer, ``gan``'s discriminator) update it inside that call
in training mode and keep it, its optimizer and schedule in their ``state_dict``.
"""

from asml.losses.strategies import ASM_DEFAULTS, LOSS_NAMES, RELEASED_ASM, SegmentationLoss, build_loss

__all__ = ["ASM_DEFAULTS", "LOSS_NAMES", "RELEASED_ASM", "SegmentationLoss", "build_loss"]
