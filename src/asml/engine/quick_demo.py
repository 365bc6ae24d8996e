"""The quick demo: a small smp U-Net trained with ASM on generated blob scenes, losses printed.

A stand-in for ``asml demo``'s full CE-versus-ASM comparison; it shows the drop-in loss at work in
a plain loop and needs nothing but the install.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from asml.core import AdversarialStructureMatching
from asml.data import blob_segmentation_batch

__all__ = ["QuickDemoSettings", "intersection_over_union", "run_quick_demo", "small_unet"]

LOSSES = ("asm", "asm+ce", "ce")


@dataclass(frozen=True)
class QuickDemoSettings:
    """What the quick demo trains: loss name, steps, batch, image size, classes, seed, log interval."""

    loss: str = "asm"
    steps: int = 200
    batch_size: int = 8
    image_size: int = 64
    num_classes: int = 3
    seed: int = 0
    log_every: int = 25
    validation_images: int = 32

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("steps", "batch_size", "log_every", "validation_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 32 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 and >= 32, got {self.image_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")


def small_unet(num_classes: int) -> nn.Module:
    """smp U-Net on a 3-stage ResNet-18 encoder, random initialisation (no download)."""
    model: nn.Module = smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 16), classes=num_classes
    )
    return model


def intersection_over_union(predictions: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-class IoU ``[C]`` from ``[N, H, W]`` label maps (NaN for a class absent from both)."""
    ious = []
    for label in range(num_classes):
        predicted, actual = predictions == label, target == label
        union = (predicted | actual).sum()
        ious.append((predicted & actual).sum() / union if union > 0 else torch.tensor(float("nan")))
    return torch.stack(ious).float()


def run_quick_demo(settings: QuickDemoSettings, print_line: Callable[[str], None] = print) -> dict[str, float]:
    """Train, print the losses every ``log_every`` steps, return the final validation scores."""
    torch.manual_seed(settings.seed)
    model = small_unet(settings.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    uses_asm = settings.loss.startswith("asm")
    asm = AdversarialStructureMatching(
        settings.num_classes, total_steps=settings.steps, ce_weight=1.0 if settings.loss == "asm+ce" else 0.0
    )
    cross_entropy = nn.CrossEntropyLoss(ignore_index=255)
    print_line(
        f"training a small U-Net with loss {settings.loss!r} for {settings.steps} steps "
        f"(batch {settings.batch_size}, {settings.image_size}x{settings.image_size}, {settings.num_classes} classes)"
    )
    start = time.perf_counter()
    for step in range(settings.steps):
        images, masks = blob_segmentation_batch(
            settings.batch_size, settings.image_size, settings.num_classes, seed=settings.seed * 100_000 + step
        )
        logits = model(images)
        loss = asm(logits, masks) if uses_asm else cross_entropy(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % settings.log_every == 0 or step == settings.steps - 1:
            parts = asm.latest_scalars() if uses_asm else {"loss": float(loss.detach())}
            shown = ", ".join(f"{name} {value:.4f}" for name, value in parts.items() if "/" not in name)
            print_line(f"step {step + 1:>5}/{settings.steps}  {shown}")
    seconds_per_step = (time.perf_counter() - start) / settings.steps

    model.eval()
    images, masks = blob_segmentation_batch(
        settings.validation_images, settings.image_size, settings.num_classes, seed=-1 - settings.seed
    )
    with torch.no_grad():
        predictions = model(images).argmax(dim=1)
    iou = intersection_over_union(predictions, masks, settings.num_classes)
    scores = {
        "mIoU": float(iou.nanmean()),
        "pixel_accuracy": float((predictions == masks).float().mean()),
        "seconds_per_step": seconds_per_step,
    }
    print_line(
        f"validation on {settings.validation_images} held-out images: mIoU {scores['mIoU']:.4f}, "
        f"pixel accuracy {scores['pixel_accuracy']:.4f}; {seconds_per_step:.3f} s per training step"
    )
    return scores
