"""Joint transforms for (image, dense regression target) pairs: depth maps and surface normals.

Images enter as ``uint8 [3, H, W]`` tensors (or float in [0, 1]); targets as ``float32 [1, H, W]``
depth (metres) or ``float32 [3, H, W]`` unit normals, with 0 marking invalid pixels. Training:
random scale (bilinear image, *nearest* target, so that an invalid 0 is never blended into a valid
value; depth divided by the scale: zooming in by s looks like moving s times closer), random crop
padded with 0 (invalid) in the target and 0 (the mean colour) in the normalised image, horizontal
flip (for normals the x component changes sign too: a mirrored surface's normal is mirrored),
normalisation. Evaluation: optional resize (depth values unchanged: the camera did not move) and
normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from asml.data.transforms import IMAGENET_MEAN, IMAGENET_STD, _pair, normalize

__all__ = ["DENSE_TASKS", "DenseEvalTransform", "DenseTrainTransform"]

DENSE_TASKS = {"depth": 1, "normals": 3}  # task -> target channels


def _check_task(task: str) -> None:
    if task not in DENSE_TASKS:
        raise ValueError(f"unknown dense task {task!r}; choose one of {', '.join(DENSE_TASKS)}")


def _check_pair(image: Tensor, target: Tensor, task: str) -> Tensor:
    """Validate shapes; the target as float32."""
    channels = DENSE_TASKS[task]
    if image.dim() != 3:
        raise ValueError(f"the image must be [C, H, W], got shape {tuple(image.shape)}")
    if target.dim() != 3 or target.shape[0] != channels:
        raise ValueError(f"{task} targets must be [{channels}, H, W], got shape {tuple(target.shape)}")
    if image.shape[1:] != target.shape[1:]:
        raise ValueError(f"image {tuple(image.shape)} and target {tuple(target.shape)} differ in size")
    return target.float()


def _resize(image: Tensor, target: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bilinear image; nearest target (``nearest-exact``: pixel centres aligned with the bilinear image),
    so each output value is one input value and zeros (invalid) stay exactly zero."""
    image = F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    target = F.interpolate(target.unsqueeze(0), size=size, mode="nearest-exact")[0]
    return image, target


def _mirror_normals(normals: Tensor) -> Tensor:
    """Normals ``[3, H, W]`` of the horizontally flipped image: the map flipped and x negated (``0 - x``
    rather than ``-x`` so that invalid zeros stay +0)."""
    normals = normals.flip(-1)
    return torch.cat([0.0 - normals[:1], normals[1:]])


@dataclass(frozen=True)
class DenseTrainTransform:
    """Random scale, crop (padded with invalid 0), flip and normalisation of (image, depth or normals).

    Args:
        crop_size: output size (int or (height, width)).
        task: ``depth`` (target ``[1, H, W]``) or ``normals`` (target ``[3, H, W]``).
        scale_range: the image side is multiplied by a factor drawn uniformly from this range; depth
            values are divided by it.
        flip: flip horizontally with probability 1/2 (negating the normals' x component).
        mean, std: normalisation per channel (ImageNet's by default).
    """

    crop_size: int | tuple[int, int]
    task: str
    scale_range: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_task(self.task)
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if min(_pair(self.crop_size)) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")

    def __call__(
        self, image: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``image [3, H, W]``, ``target [K, H, W]`` -> ``(float32 [3, h, w], float32 [K, h, w])`` at
        ``crop_size``. Draws from ``generator`` in the order scale, crop top, crop left, flip."""
        target = _check_pair(image, target, self.task)
        image = normalize(image, self.mean, self.std)
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(1, generator=generator))
        height, width = target.shape[1:]
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        if scaled != (height, width):
            image, target = _resize(image, target, scaled)
        if self.task == "depth" and scale != 1.0:
            target = target / scale  # zero (invalid) stays zero
        crop_h, crop_w = _pair(self.crop_size)
        pad_h, pad_w = max(0, crop_h - scaled[0]), max(0, crop_w - scaled[1])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            target = F.pad(target, (0, pad_w, 0, pad_h), value=0.0)
        top = int(torch.randint(0, image.shape[1] - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.shape[2] - crop_w + 1, (1,), generator=generator))
        image = image[:, top : top + crop_h, left : left + crop_w]
        target = target[:, top : top + crop_h, left : left + crop_w]
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            image = image.flip(-1)
            target = _mirror_normals(target) if self.task == "normals" else target.flip(-1)
        return image.contiguous(), target.contiguous()


@dataclass(frozen=True)
class DenseEvalTransform:
    """Whole-image evaluation: optional resize (bilinear image, nearest target, depth values kept: a
    resized image is the same view) and normalisation."""

    size: int | tuple[int, int] | None = None
    task: str = "normals"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_task(self.task)
        if self.size is not None and min(_pair(self.size)) < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    def __call__(
        self, image: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``image [3, H, W]``, ``target [K, H, W]`` -> ``(float32 [3, h, w], float32 [K, h, w])``."""
        target = _check_pair(image, target, self.task)
        image = normalize(image, self.mean, self.std)
        if self.size is not None:
            image, target = _resize(image, target, _pair(self.size))
        return image, target
