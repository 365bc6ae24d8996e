"""Morphology on label maps in plain torch, all classes at once, by sets of classes packed as bits.

A label map ``[..., H, W]`` becomes a map of one-element sets: each pixel holds the bit of its
label, bit ``r`` standing for the ``r``-th of the few labels present in its image (``rank_sets``;
eight to a byte, so usually one uint8 per pixel, whatever the number of classes). A window OR of
such a map gives, at every pixel, the set of labels within the window, and a pixel's class mask is
eroded there exactly when that set holds another label. So a 3x3 boundary, a (2d + 1)-square band
or a Euclidean disc match costs a few byte-wide ORs over the whole batch, on any device:

* a 1-D window of length L is the OR of two overlapping runs of the largest power of two <= L; the
  runs are built by doubling (van Herk style), log2(L) ORs shared by all window lengths;
* a square is a column window of row windows;
* a disc is the union of horizontal segments, one per row offset: each is the OR of two shifted
  runs of one doubling ladder along the rows;
* a bounded exact Euclidean distance transform (for bands around boundaries) takes one vertical and
  one horizontal pass of 2r + 1 shifted minimums.

Masks are 0/1 uint8 rather than bool, and tests are byte arithmetic (``clamp_max(1)`` for "not
empty") rather than comparisons: on CPU, torch's comparisons, bool masks and mixed-dtype
arithmetic are several times slower than same-dtype byte operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FULL_SET",
    "bounded_squared_distance",
    "disc_rows",
    "nonempty_",
    "or_disc",
    "or_square",
    "rank_sets",
]

FULL_SET = 0xFF
"""A uint8 word with every bit set: as a window's fill it differs from any one-element set."""


def rank_sets(present: Tensor) -> Tensor:
    """``[words, N, V]`` uint8: for each row ``n`` of ``present`` ``[N, V]`` bool, the one-element
    set of each present value ``v``, bit ``r % 8`` of word ``r // 8`` where ``r`` is the rank of ``v``
    among the row's present values; the empty set for absent values."""
    rank = present.long().cumsum(1) - 1
    words = max(1, -(-int(present.sum(1).max()) // 8)) if present.numel() else 1
    word = torch.arange(words, device=present.device)[:, None, None]
    bit = torch.ones_like(rank) << (rank % 8)
    # Small tables ([N, V]): clarity over speed here.
    return torch.where(present & (rank // 8 == word), bit, 0).to(torch.uint8)


def nonempty_(sets: Tensor) -> Tensor:
    """``sets.shape[1:]`` uint8: 1 where the set ``[words, ...]`` is not empty, else 0. In place:
    the result is ``sets[0]``, overwritten (pass a temporary).

    0/1 bytes rather than bool, and in place: on CPU, torch's comparisons and bool masks are several
    times slower than byte arithmetic, and fresh tensors cost page faults.
    """
    merged = sets[0]
    for word in sets[1:]:
        merged |= word
    return merged.clamp_max_(1)


def _doubling_runs(padded: Tensor, longest: int, dim: int) -> list[Tensor]:
    """``runs[k][p]`` = OR of ``padded[p .. p + 2^k - 1]`` along ``dim``, for ``2^k <= longest``:
    each level from the one below by doubling (van Herk style)."""
    runs = [padded]
    while 2 ** len(runs) <= longest:
        below, step = runs[-1], 2 ** (len(runs) - 1)
        length = below.shape[dim] - step
        runs.append(below.narrow(dim, 0, length) | below.narrow(dim, step, length))
    return runs


def _window_halves(runs: list[Tensor], half: int, reach: int, dim: int) -> tuple[Tensor, Tensor]:
    """Two views whose OR is the window ``[i - half, i + half]`` along ``dim`` of the tensor behind
    ``runs``, padded by ``reach >= half`` on both sides; each has the unpadded size along ``dim``."""
    size = runs[0].shape[dim] - 2 * reach
    # The window starts at padded index i + reach - half; two runs of the largest power of two
    # <= 2 half + 1 cover it, one from each end.
    length = 2 * half + 1
    level = length.bit_length() - 1
    start, run = reach - half, runs[level]
    return run.narrow(dim, start, size), run.narrow(dim, start + length - 2**level, size)


def or_square(sets: Tensor, half: int, fill: int) -> Tensor:
    """OR of ``sets`` ``[..., H, W]`` over the ``(2 half + 1)``-square around each pixel, pixels
    beyond the image holding ``fill`` (a square is a column window of row windows)."""
    across, down = min(half, sets.shape[-1]), min(half, sets.shape[-2])
    # One padding for both passes: the padded rows' row windows are all fill, as they should be.
    padded = F.pad(sets, [across, across, down, down], value=fill)
    rows = torch.bitwise_or(*_window_halves(_doubling_runs(padded, 2 * across + 1, -1), across, across, -1))
    return torch.bitwise_or(*_window_halves(_doubling_runs(rows, 2 * down + 1, -2), down, down, -2))


def disc_rows(radius: float) -> list[tuple[int, int]]:
    """``(dy, w)`` for each row of the disc of integer offsets ``dy^2 + dx^2 <= radius^2``: the
    row at ``dy`` holds ``|dx| <= w``. Rows in order of ``dy``."""
    if radius < 0:
        raise ValueError(f"a distance tolerance must be >= 0, got {radius}")
    # The same slack as a float comparison with 1e-9, then integer square roots (no rounding).
    limit = math.floor(radius * radius + 1e-9)
    reach = math.isqrt(limit)
    return [(dy, math.isqrt(limit - dy * dy)) for dy in range(-reach, reach + 1)]


def or_disc(sets: Tensor, radius: float) -> Tensor:
    """OR of ``sets`` ``[..., H, W]`` over the offsets of the Euclidean disc of ``radius`` around
    each pixel; pixels beyond the image hold the empty set. Same shape as ``sets``."""
    height, width = sets.shape[-2:]
    # Rows and widths beyond the image only add empty sets: clip them (large tolerances stay cheap).
    rows = [(dy, min(half, width)) for dy, half in disc_rows(radius) if abs(dy) < height]
    down, across = max(abs(dy) for dy, _ in rows), max(half for _, half in rows)
    runs = _doubling_runs(F.pad(sets, [across, across, down, down]), 2 * across + 1, -1)
    out: Tensor | None = None
    for dy, half in rows:
        # Row dy's segment, read straight from the runs into the result: no tensor per width.
        for part in _window_halves(runs, half, across, -1):
            segment = part.narrow(-2, down + dy, height)
            out = segment.clone() if out is None else out.bitwise_or_(segment)
    assert out is not None  # the disc always holds its centre row
    return out


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
