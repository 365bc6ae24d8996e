"""Loss strategies: cross-entropy, ASM, the conditional-GAN baseline, Lovasz and Dice."""

from __future__ import annotations

import itertools
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asml.core import AdversarialStructureMatching, cross_entropy_over_valid
from asml.core.distributed import average_gradients, broadcast_parameters
from asml.core.label_maps import as_class_logits, class_probabilities, one_hot_target

__all__ = [
    "ALL_LAYERS_ASM",
    "ASM_DEFAULTS",
    "LOSS_NAMES",
    "RELEASED_ASM",
    "SEGMENTER_ASM_DEFAULTS",
    "ConditionalGANLoss",
    "SegmentationLoss",
    "asm_defaults",
    "build_loss",
]

LOSS_NAMES = ("ce", "asm", "asm+ce", "gan", "lovasz", "lovasz+ce", "dice", "dice+ce")

# What ``build_loss("asm+ce")`` and ``build_loss("asm")`` (and so ``asml train``, ``compare`` and
# ``demo``) give ASM unless the caller sets it: the released layers (conv1-2 matched, w_adv 0.012),
# with the analyzer updated on every second step. Chosen by the real-data study (docs/real/README.md;
# 128 px, 450 steps, paired seeds, each setting against CE at its best of 3-4 learning rates): on six
# settings (brain MRI with U-Net, PSPNet, DeepLabV3+, FCN from scratch and U-Net-MobileNetV2 from
# ImageNet; nuclei microscopy with U-Net) the released layers scored at or above matching all nine
# layers on every one (+2.0 to +25.5 mIoU, level on nuclei), while the nine layers, the 64 px
# ablation's choice (docs/ablation/README.md, where they won by +5.5 mIoU), lost the smallest classes
# on brain (insula, subcortical nuclei: IoU 0 on 2 of 3 seeds) and 30 mIoU from ImageNet weights: a
# matching loss over nine layers outweighs CE's per-pixel signal for rare classes.
# ``analyzer_every = 2`` halves the analyzer's update, most of what ASM adds to a step
# (docs/speed/README.md); on paired seeds it scored within the seed spread of updating on every
# step (released layers: brain U-Net -0.6 +- 0.6 mIoU, +0.2 +- 1.4 BF; PSPNet -0.2 +- 0.7, -0.0 +- 1.3;
# nine layers at 64 px: horses -0.3 +- 1.1, riders -0.3 +- 0.1). Every fourth step cost BF at 64 px.
# ``analyzer_stride`` stays 1 (full resolution) in general: at 2 it was level on brain and nuclei but
# lower on every seed on knights with U-Net (-1.5 +- 1.1 mIoU, -1.6 +- 0.6 BF, 3 seeds), where thin parts are.
# PSPNet is the exception (``SEGMENTER_ASM_DEFAULTS``).
# Against CE at its best lr the default is level at best on real data (docs/real/README.md).
# The class ``AdversarialStructureMatching`` keeps the released values as its own defaults:
# ``RELEASED_ASM`` (or the class alone) reproduces the released method, updates on every step included.
ASM_DEFAULTS: dict[str, Any] = {"matched_layers": ("conv1", "conv2"), "analyzer_every": 2}
# Changes to ``ASM_DEFAULTS`` for a segmenter family (``asml.models`` names), which ``asml train``,
# ``compare`` and ``demo`` apply by ``model.name``. PSPNet predicts at 1/8 of the input and upsamples 8x,
# so the analyzer reading 2x2 cell means loses little of its prediction, and it takes the step from
# 1.39-1.70x to 1.12-1.36x CE on this project's machine, and the fused softmax (``fused_softmax``) on
# to 1.13-1.21x (docs/speed/README.md). On paired seeds
# against the default at full resolution it was level on both sets it was trained on, 9 pairs:
# brain +0.1 +- 2.1 mIoU, +0.3 +- 1.8 BF;
# knights at CE's best lr -0.2 +- 0.2, +0.5 +- 0.6, at 0.03 -0.1 +- 2.1, -0.1 +- 0.8 (docs/real/README.md);
# its thin lance lost 2.7 IoU at CE's best lr (every seed), level at 0.03. U-Net keeps full resolution.
SEGMENTER_ASM_DEFAULTS: dict[str, dict[str, Any]] = {"pspnet": {"analyzer_stride": 2}}
# The 64 px ablation's choice, kept as a named setting: all nine layers matched, every second step.
ALL_LAYERS_ASM: dict[str, Any] = {"matched_layers": tuple(f"conv{i}" for i in range(1, 10)), "analyzer_every": 2}
# The released setting, written out in full, so that it stays the released one on every segmenter
# (``SEGMENTER_ASM_DEFAULTS`` changes nothing it sets): label maps at full resolution, every step.
RELEASED_ASM: dict[str, Any] = {
    "matched_layers": ("conv1", "conv2"),
    "adversarial_weight": 0.012,
    "analyzer_every": 1,
    "analyzer_stride": 1,
}


def asm_defaults(segmenter: str | None = None) -> dict[str, Any]:
    """The ASM options a loss takes unless its caller sets them: ``ASM_DEFAULTS`` with the changes
    of ``SEGMENTER_ASM_DEFAULTS`` for ``segmenter`` (an ``asml.models`` architecture, e.g.
    ``"pspnet"``; None or another family: ``ASM_DEFAULTS`` alone)."""
    return {**ASM_DEFAULTS, **SEGMENTER_ASM_DEFAULTS.get(segmenter or "", {})}


class SegmentationLoss(nn.Module):
    """A segmenter loss: ``forward(logits [B, C, H, W], target [B, H, W], images [B, 3, H, W])``.

    ``latest`` holds the detached parts of the last call for logging.
    """

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, Tensor] = {}

    def latest_scalars(self) -> dict[str, float]:
        """The parts of the last call as floats."""
        return {name: float(value) for name, value in self.latest.items()}


class CrossEntropyLoss(SegmentationLoss):
    """Per-pixel cross-entropy over non-ignored pixels (0 when all are ignored)."""

    def __init__(self, ignore_index: int | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
        loss = cross_entropy_over_valid(as_class_logits(logits), target, self.ignore_index)
        self.latest = {"loss": loss.detach(), "ce": loss.detach()}
        return loss


class ASMLoss(SegmentationLoss):
    """``AdversarialStructureMatching`` behind the trainer's interface (``asm`` or ``asm+ce``)."""

    def __init__(self, asm: AdversarialStructureMatching) -> None:
        super().__init__()
        self.asm = asm

    def forward(self, logits: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
        loss: Tensor = self.asm(logits, target)
        self.latest = dict(self.asm.latest)
        return loss


class SmpLoss(SegmentationLoss):
    """Lovasz-softmax or Dice from segmentation-models-pytorch, optionally plus cross-entropy."""

    def __init__(self, kind: str, ignore_index: int | None, ce_weight: float) -> None:
        super().__init__()
        factory = smp.losses.LovaszLoss if kind == "lovasz" else smp.losses.DiceLoss
        self.kind = kind
        self.structure = factory("multiclass", ignore_index=ignore_index)
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight

    def forward(self, logits: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
        logits = as_class_logits(logits).float()
        structure: Tensor = self.structure(logits, target)
        loss = structure
        self.latest = {self.kind: structure.detach()}
        if self.ce_weight > 0:
            cross_entropy = cross_entropy_over_valid(logits, target, self.ignore_index)
            loss = loss + self.ce_weight * cross_entropy
            self.latest["ce"] = cross_entropy.detach()
        self.latest["loss"] = loss.detach()
        return loss


class PatchDiscriminator(nn.Module):
    """The paper's baseline discriminator: 5 layers of 4x4 convolutions on concat(image, label map).

    Widths 64, 128, 256, 512, 1; strides 2, 2, 2, 1, 1; LeakyReLU(0.2) between layers, no
    normalisation (as in pix2pix's PatchGAN without batch norm). Output: patch logits ``[B, 1, h, w]``.
    """

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        widths = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for index, (cin, cout) in enumerate(itertools.pairwise(widths)):
            layers += [nn.Conv2d(cin, cout, 4, stride=2 if index < 3 else 1, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.network = nn.Sequential(*layers)

    def forward(self, images: Tensor, label_maps: Tensor) -> Tensor:
        logits: Tensor = self.network(torch.cat([images, label_maps], dim=1))
        return logits


class ConditionalGANLoss(SegmentationLoss):
    """The conditional-GAN baseline: CE + ``gan_weight`` x non-saturating GAN loss (paper: 0.01).

    In training mode each call first updates the discriminator on (image, one-hot ground truth) as
    real and (image, detached softmax) as fake, then returns the segmenter's loss with the updated
    discriminator's parameters detached. Ignored pixels are zero in both label maps.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None, image_channels: int, gan_weight: float, lr: float
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.gan_weight = gan_weight
        self.discriminator = PatchDiscriminator(image_channels + num_classes)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self._synced = False

    def _label_maps(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        ignored = target == self.ignore_index if self.ignore_index is not None else None
        real = one_hot_target(target, self.num_classes, ignored)
        fake = class_probabilities(logits)
        if ignored is not None:
            fake = fake * (~ignored).unsqueeze(1)
        return real, fake, ignored

    def _discriminator(self, images: Tensor, label_maps: Tensor, detach: bool) -> Tensor:
        if not detach:
            return self.discriminator(images, label_maps)  # type: ignore[no-any-return]
        detached = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        scores: Tensor = torch.func.functional_call(self.discriminator, detached, (images, label_maps))
        return scores

    def forward(self, logits: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
        if images is None:
            raise ValueError("the 'gan' loss needs the images: call loss(logits, target, images)")
        real, fake, _ = self._label_maps(logits, target)
        images = images.float()
        if self.training and torch.is_grad_enabled():
            if not self._synced:
                broadcast_parameters(self.discriminator)
                self._synced = True
            real_score = self._discriminator(images, real, detach=False)
            fake_score = self._discriminator(images, fake.detach(), detach=False)
            d_loss = F.binary_cross_entropy_with_logits(
                real_score, torch.ones_like(real_score)
            ) + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score))
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(d_loss)
            average_gradients(self.discriminator)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.latest = {"discriminator": d_loss.detach()}
        else:
            self.latest = {}
        score = self._discriminator(images, fake, detach=True)
        adversarial = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
        pixel_name, pixel_loss = self._pixel_term(logits, target)
        loss = pixel_loss + self.gan_weight * adversarial
        self.latest.update({pixel_name: pixel_loss.detach(), "gan": adversarial.detach(), "loss": loss.detach()})
        return loss

    def _pixel_term(self, logits: Tensor, target: Tensor) -> tuple[str, Tensor]:
        """The per-pixel loss the GAN term is added to, and its name in ``latest``: CE here."""
        return "ce", cross_entropy_over_valid(as_class_logits(logits), target, self.ignore_index)

    def get_extra_state(self) -> dict[str, Any]:
        """The discriminator's optimizer, saved next to its weights."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the discriminator's optimizer."""
        self.optimizer.load_state_dict(state["optimizer"])


def build_loss(
    name: str,
    num_classes: int,
    ignore_index: int | None = 255,
    total_steps: int | None = None,
    image_channels: int = 3,
    asm_options: dict[str, Any] | None = None,
    ce_weight: float = 1.0,
    gan_weight: float = 0.01,
    gan_lr: float = 2e-4,
    segmenter: str | None = None,
) -> SegmentationLoss:
    """A loss by name (``LOSS_NAMES``).

    Args:
        name: ``ce``, ``asm`` (matching loss only, as released), ``asm+ce``, ``gan`` (CE + 0.01 GAN),
            ``lovasz``, ``lovasz+ce``, ``dice``, ``dice+ce``.
        num_classes, ignore_index: of the labels.
        total_steps: training length, for ASM's schedules.
        image_channels: channels of the images (the GAN discriminator reads them).
        asm_options: keyword arguments of ``AdversarialStructureMatching``; those not given take
            ``asm_defaults(segmenter)``, then the class's (released) defaults.
        ce_weight: weight of the CE term in the ``+ce`` variants.
        gan_weight, gan_lr: the GAN baseline's weight and discriminator learning rate (Adam).
        segmenter: the segmenter's architecture (``asml.models.canonical_architecture``), for the
            defaults of its family; None: the defaults for any segmenter.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if name == "ce":
        return CrossEntropyLoss(ignore_index)
    if name in ("asm", "asm+ce"):
        options = {**asm_defaults(segmenter), **(asm_options or {})}
        options.setdefault("ce_weight", ce_weight if name == "asm+ce" else 0.0)
        return ASMLoss(
            AdversarialStructureMatching(num_classes, ignore_index=ignore_index, total_steps=total_steps, **options)
        )
    if name == "gan":
        return ConditionalGANLoss(num_classes, ignore_index, image_channels, gan_weight, gan_lr)
    kind, _, plus = name.partition("+")
    return SmpLoss(kind, ignore_index, ce_weight if plus == "ce" else 0.0)
