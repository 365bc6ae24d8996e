"""Binary morphology and bounded distances on stacks of masks ``[K, H, W]`` (bool), in plain torch.

Everything works on bool tensors with shifts and logical operations, so it runs on any device
and its cost does not grow with the square of a structuring element:

* square erosion is separable, and each 1-D erosion by a window of length L takes log2(L)
  AND operations (van Herk style doubling);
* "is a pixel of B within Euclidean distance r of a pixel of A" is answered only at the pixels of B
  (boundaries are sparse), by gathering A at the integer offsets of the disc of radius r;
* a bounded exact Euclidean distance transform (for bands around boundaries) takes one vertical and
  one horizontal pass of 2r + 1 shifted minimums.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "band_inside",
    "bounded_squared_distance",
    "count_true",
    "count_within",
    "disc_offsets",
    "erode_square",
    "inner_boundary",
]


def _shift_along(masks: Tensor, offset: int, dim: int, fill: bool | int) -> Tensor:
    """``out[..., i, ...] = masks[..., i + offset, ...]``, ``fill`` where ``i + offset`` is outside."""
    size = masks.shape[dim]
    out = torch.full_like(masks, fill)
    if abs(offset) >= size:
        return out
    if offset >= 0:
        out.narrow(dim, 0, size - offset).copy_(masks.narrow(dim, offset, size - offset))
    else:
        out.narrow(dim, -offset, size + offset).copy_(masks.narrow(dim, 0, size + offset))
    return out


def _erode_line(masks: Tensor, half: int, dim: int, outside: bool) -> Tensor:
    """AND of ``masks`` over the window ``[i - half, i + half]`` along ``dim``; pixels beyond the
    image count as ``outside``."""
    if half == 0:
        return masks
    length = 2 * half + 1
    pad = [0, 0] * (masks.dim() - 1 - dim % masks.dim()) + [half, half]
    padded = F.pad(masks.to(torch.uint8), pad, value=int(outside)).bool()
    # window[p] = AND of padded[p .. p + power - 1], doubling the power each time.
    window, power = padded, 1
    while power * 2 <= length:
        window = window & _shift_along(window, power, dim, outside)
        power *= 2
    # A window of any length is the AND of two overlapping windows of the largest power of two.
    combined = window & _shift_along(window, length - power, dim, outside)
    return combined.narrow(dim, 0, masks.shape[dim])


def erode_square(masks: Tensor, half: int, outside: bool) -> Tensor:
    """Erosion by the ``(2 half + 1)``-square, pixels beyond the image counting as ``outside``."""
    return _erode_line(_erode_line(masks, half, -1, outside), half, -2, outside)


def inner_boundary(masks: Tensor) -> Tensor:
    """M and not erode_3x3(M), pixels outside the image counting as inside M (the image border is
    not a boundary)."""
    return masks & ~erode_square(masks, 1, outside=True)


def band_inside(masks: Tensor, depth: int) -> Tensor:
    """M minus M eroded ``depth`` times by a 3x3 square after padding one pixel of zeros (Cheng et
    al.): the pixels of M within ``depth`` (Chebyshev) of its complement or of the image border."""
    # depth erosions by a 3x3 square = one erosion by the (2 depth + 1)-square; the zero frame makes
    # everything within depth of the border erode, which "outside = not M" reproduces.
    return masks & ~erode_square(masks, depth, outside=False)


def disc_offsets(radius: float, device: torch.device | None = None) -> Tensor:
    """``[M, 2]`` integer offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= radius^2``."""
    if radius < 0:
        raise ValueError(f"a distance tolerance must be >= 0, got {radius}")
    reach = math.floor(radius)
    steps = torch.arange(-reach, reach + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius + 1e-9
    return torch.stack([dy[inside], dx[inside]], dim=1)


def count_true(masks: Tensor) -> Tensor:
    """``[K]`` int64: True pixels per mask. For sparse masks (boundaries, bands) listing the True
    pixels and counting them per mask is about four times faster than a sum over bool."""
    return torch.bincount(torch.nonzero(masks)[:, 0], minlength=masks.shape[0])


def count_within(queries: Tensor, references: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """``([K], [K])`` int64: how many True pixels of ``queries[k]`` have a True pixel of
    ``references[k]`` within Euclidean distance ``radius``, and how many True pixels ``queries[k]``
    has (both ``[K, H, W]`` bool)."""
    offsets = disc_offsets(radius, queries.device)
    reach = math.floor(radius)
    image, row, column = torch.nonzero(queries, as_tuple=True)
    padded = F.pad(references.to(torch.uint8), [reach] * 4).bool()
    hit = torch.zeros_like(image, dtype=torch.bool)
    for dy, dx in offsets.tolist():
        hit |= padded[image, row + reach + dy, column + reach + dx]
    count = queries.shape[0]
    return torch.bincount(image[hit], minlength=count), torch.bincount(image, minlength=count)


def bounded_squared_distance(masks: Tensor, reach: int) -> Tensor:
    """``[K, H, W]`` int32: squared Euclidean distance to the nearest True pixel of each mask,
    exact where it is at most ``reach^2``; larger distances come out as some value above ``reach^2``."""
    far = (reach + 1) ** 2
    # Vertical pass: distance to the nearest True pixel in the same column, up to reach.
    column_distance = torch.full(masks.shape, reach + 1, dtype=torch.int32, device=masks.device)
    for distance in range(reach + 1):
        for offset in {distance, -distance}:
            found = _shift_along(masks, offset, -2, False) & (column_distance > distance)
            column_distance.masked_fill_(found, distance)
    squared = torch.where(column_distance <= reach, column_distance * column_distance, far)
    # Horizontal pass: min over |dx| <= reach of column distance^2 + dx^2 (exact up to reach^2).
    best = squared.clone()
    for dx in range(1, reach + 1):
        for offset in (dx, -dx):
            best = torch.minimum(best, _shift_along(squared, offset, -1, far) + dx * dx)
    return best.clamp_max(far)
