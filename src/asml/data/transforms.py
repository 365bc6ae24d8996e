"""Joint image + mask transforms for training and evaluation.

Images enter as ``uint8 [3, H, W]`` tensors (or float in [0, 1]), masks as ``int64 [H, W]``. Training:
random scale (bilinear image, nearest mask), random crop padded with zeros in the normalised image
(the mean colour) and with the ignore label in the mask, horizontal flip, normalisation.
Evaluation: the whole image (optionally resized), normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "TrainTransform", "normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def normalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``uint8`` or ``[0, 1]`` float image ``[C, H, W]`` -> float32 ``(image - mean) / std`` per channel."""
    image = image.float().div(255) if image.dtype == torch.uint8 else image.float()
    channels = image.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for an image with {channels} channels")
    mean_t = torch.tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image - mean_t) / std_t


def _resize(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    image = F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, crop (padded with the ignore label), flip and normalisation.

    Args:
        crop_size: output size (int or (height, width)).
        scale_range: the image side is multiplied by a factor drawn uniformly from this range.
        flip: flip horizontally with probability 1/2.
        ignore_index: mask value of the padding.
        mean, std: normalisation per channel (ImageNet's by default).
    """

    crop_size: int | tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    ignore_index: int = 255
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if min(_pair(self.crop_size)) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``image [C, H, W]``, ``mask [H, W]`` -> ``(float32 [C, h, w], int64 [h, w])`` at ``crop_size``."""
        image = normalize(image, self.mean, self.std)
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(1, generator=generator))
        height, width = mask.shape
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        if scaled != (height, width):
            image, mask = _resize(image, mask, scaled)
        crop_h, crop_w = _pair(self.crop_size)
        pad_h, pad_w = max(0, crop_h - scaled[0]), max(0, crop_w - scaled[1])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, image.shape[1] - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.shape[2] - crop_w + 1, (1,), generator=generator))
        image = image[:, top : top + crop_h, left : left + crop_w]
        mask = mask[top : top + crop_h, left : left + crop_w]
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


@dataclass(frozen=True)
class EvalTransform:
    """Whole-image evaluation: optional resize (bilinear image, nearest mask) and normalisation."""

    size: int | tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``image [C, H, W]``, ``mask [H, W]`` -> ``(float32 [C, h, w], int64 [h, w])``."""
        image = normalize(image, self.mean, self.std)
        if self.size is not None:
            image, mask = _resize(image, mask, _pair(self.size))
        return image, mask
