"""Generated blob scenes: label maps with round bodies and thin parts, and images that show them.

Small, seeded and identical on every machine; used by the quick demo, the README example, the
tests and the benchmarks. (The built-in horse and multi-class sets are a separate, richer module.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["blob_segmentation_batch", "random_blob_masks", "render_blob_images"]


def _ellipse(yy: Tensor, xx: Tensor, generator: torch.Generator, size: int) -> Tensor:
    """Bool ``[H, W]`` filled ellipse at a random place, radii 8-25% of the size, random angle."""
    cy, cx = (torch.rand(2, generator=generator) * 0.6 + 0.2) * size
    ry, rx = (torch.rand(2, generator=generator) * 0.17 + 0.08) * size
    angle = float(torch.rand(1, generator=generator)) * math.pi
    cos, sin = math.cos(angle), math.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    inside: Tensor = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    return inside


def _thin_bar(yy: Tensor, xx: Tensor, generator: torch.Generator, size: int, y0: float, x0: float) -> Tensor:
    """Bool ``[H, W]`` bar from (y0, x0), 1.5-3.5 px wide, 25-60% of the size long (a "leg" or "tail")."""
    angle = float(torch.rand(1, generator=generator)) * 2 * math.pi
    length = (float(torch.rand(1, generator=generator)) * 0.35 + 0.25) * size
    half_width = float(torch.rand(1, generator=generator)) + 0.75
    dy, dx = math.sin(angle), math.cos(angle)
    along = (yy - y0) * dy + (xx - x0) * dx
    across = -(yy - y0) * dx + (xx - x0) * dy
    return (along >= 0) & (along <= length) & (across.abs() <= half_width)


def random_blob_masks(count: int, size: int, num_classes: int = 2, seed: int = 0) -> Tensor:
    """``[count, size, size]`` int64 label maps: 1-3 objects of classes 1..C-1 on background 0.

    Each object is an ellipse body with 1-3 thin bars attached, so that boundaries and thin parts
    decide how well a prediction matches. Deterministic given ``seed``.
    """
    if count < 1 or size < 8 or num_classes < 2:
        raise ValueError(f"need count >= 1, size >= 8 and num_classes >= 2, got {count}, {size}, {num_classes}")
    generator = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for index in range(count):
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            label = int(torch.randint(1, num_classes, (1,), generator=generator))
            body = _ellipse(yy, xx, generator, size)
            ys, xs = torch.nonzero(body, as_tuple=True)
            shape = body
            for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
                # The bar starts at a pixel of the body, as a limb does.
                pick = int(torch.randint(0, max(1, len(ys)), (1,), generator=generator))
                start = (float(ys[pick]), float(xs[pick])) if len(ys) else (size / 2, size / 2)
                shape = shape | _thin_bar(yy, xx, generator, size, *start)
            masks[index][shape] = label
    return masks


def render_blob_images(masks: Tensor, num_classes: int, seed: int = 0, noise: float = 0.5) -> Tensor:
    """``[N, 3, H, W]`` float32 images for ``masks [N, H, W]``: a colour per class, smooth
    low-frequency texture and pixel noise, roughly zero-mean and unit-variance."""
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    # Evenly spaced hues keep every class visible; the texture and noise make it a learning task.
    hues = torch.arange(num_classes, dtype=torch.float32) / num_classes
    phases = torch.tensor([0.0, 1.0 / 3, 2.0 / 3])
    palette = torch.cos(2 * math.pi * (hues[:, None] + phases[None, :]))
    count, height, width = masks.shape
    images = palette[masks.clamp(0, num_classes - 1)].permute(0, 3, 1, 2)
    texture = torch.randn(count, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    texture = F.interpolate(texture, size=(height, width), mode="bilinear", align_corners=False)
    grain = torch.randn(count, 3, height, width, generator=generator)
    return (images + 0.5 * texture + noise * grain).float()


def blob_segmentation_batch(batch_size: int, size: int, num_classes: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(images [B, 3, S, S] float32, masks [B, S, S] int64)`` of blob scenes, deterministic in ``seed``."""
    masks = random_blob_masks(batch_size, size, num_classes, seed)
    return render_blob_images(masks, num_classes, seed), masks
