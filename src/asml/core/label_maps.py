"""Turning a segmenter's logits and a target into the label maps the structure analyzer reads.

Conventions: logits ``[B, C, H, W]`` (``C == num_classes``, or 1 for a binary segmenter that emits
sigmoid logits), targets ``[B, H, W]`` integer class indices, ``ignore_index`` marks void pixels
(None: no pixel is void). Maps are float32 (float64 for float64 logits); one-hot maps are all-zero
at ignored pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CoarseGrid",
    "as_class_logits",
    "class_probabilities",
    "ignored_pixels",
    "loss_dtype",
    "one_hot_target",
    "validate_logits_and_target",
]


def validate_logits_and_target(logits: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Check shapes and label values; return the target as int64 ``[B, H, W]``.

    Accepts a target of shape ``[B, 1, H, W]`` too. Raises ``ValueError`` naming the offending shape
    or value and what was expected.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, C, H, W], got shape {list(logits.shape)}")
    if logits.shape[1] not in (num_classes, 1) or (logits.shape[1] == 1 and num_classes != 2):
        expected = f"{num_classes}" + (" or 1 (binary sigmoid logits)" if num_classes == 2 else "")
        raise ValueError(f"logits have {logits.shape[1]} channels, expected {expected} (num_classes={num_classes})")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    expected_shape = [logits.shape[0], *logits.shape[2:]]
    if list(target.shape) != expected_shape:
        raise ValueError(
            f"target must be [B, H, W] = {expected_shape} to match logits {list(logits.shape)}, got "
            f"{list(target.shape)}; resize the logits to the label size before the loss"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    target = target.long()
    out_of_range = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        out_of_range &= target != ignore_index
    if bool(out_of_range.any()):
        bad = torch.unique(target[out_of_range])[:5].tolist()
        allowed = f"[0, {num_classes})" + (f" or the ignore index {ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"target holds labels {bad}, expected values in {allowed}")
    return target


def ignored_pixels(target: Tensor, ignore_index: int | None) -> Tensor | None:
    """``[B, H, W]`` bool, True where ``target == ignore_index``; None if nothing is ignored."""
    if ignore_index is None:
        return None
    ignored = target == ignore_index
    return ignored if bool(ignored.any()) else None


def loss_dtype(tensor: Tensor) -> torch.dtype:
    """float64 for float64 input (gradcheck), float32 otherwise (half precision is upcast)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def one_hot_target(
    target: Tensor, num_classes: int, ignored: Tensor | None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One-hot ground truth ``[B, C, H, W]`` (float32 by default), all-zero at ignored pixels.

    Built by one scatter into a channels-last buffer (the analyzer's layout): ten times faster
    than ``F.one_hot``'s int64 map for 21 classes, and no layout copy before the analyzer.
    """
    batch, height, width = target.shape
    one_hot = torch.zeros(batch, height, width, num_classes, dtype=dtype, device=target.device)
    if ignored is None:
        one_hot.scatter_(-1, target.unsqueeze(-1), 1.0)
    else:
        keep = (~ignored).unsqueeze(-1).to(dtype)
        one_hot.scatter_(-1, target.masked_fill(ignored, 0).unsqueeze(-1), keep)
    return one_hot.permute(0, 3, 1, 2)


def class_probabilities(logits: Tensor) -> Tensor:
    """Per-class probabilities ``[B, C, H, W]`` float32 (softmax; ``[1 - p, p]`` for 1-channel logits).

    Computed in float32 even under autocast. Ignored pixels are not zeroed here: the analyzer
    zeroes its input there, which is what keeps an ignored pixel's logits out of every feature.
    """
    # Softmax in the logits' own layout, then one copy to the analyzer's channels-last layout:
    # for 2 classes this is 15x faster than a softmax over a permuted (strided) view.
    probabilities = torch.softmax(as_class_logits(logits).to(loss_dtype(logits)), dim=1)
    return probabilities.contiguous(memory_format=torch.channels_last)


def as_class_logits(logits: Tensor) -> Tensor:
    """C-channel logits; binary 1-channel logits z become ``[0, z]`` (softmax of it = [1-sigmoid(z), sigmoid(z)])."""
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


@dataclass(frozen=True)
class CoarseGrid:
    """Label maps averaged over ``stride x stride`` cells: the analyzer's input at a coarser size.

    Each cell holds the mean of its *valid* pixels' maps, so one-hot ground truth becomes the share
    of each class among the cell's valid pixels and probabilities stay on the simplex; ignored
    pixels contribute nothing (an ignored pixel's logits still change no loss), and a cell without a
    valid pixel is itself ignored. Cells at the right and bottom edge may be partial (ceil mode).

    Build it with :meth:`for_mask`; ``share`` is ``[B, 1, h, w]`` (the share of valid pixels per
    cell, None without an ignore mask), ``valid`` the full-size ``[B, 1, H, W]`` bool mask it came
    from, and ``ignored`` ``[B, h, w]`` bool, True at cells without a valid pixel (None if there are none).
    """

    stride: int
    valid: Tensor | None
    share: Tensor | None
    ignored: Tensor | None

    @classmethod
    def for_mask(cls, ignored: Tensor | None, stride: int, dtype: torch.dtype = torch.float32) -> CoarseGrid:
        """The grid of ``stride`` for the full-size ignore mask ``ignored`` ``[B, H, W]`` (or None)."""
        if ignored is None:
            return cls(stride, None, None, None)
        valid = (~ignored).unsqueeze(1)
        share = F.avg_pool2d(valid.to(dtype), stride, ceil_mode=True)
        coarse_ignored = share[:, 0] == 0
        return cls(stride, valid, share, coarse_ignored if bool(coarse_ignored.any()) else None)

    def average(self, maps: Tensor) -> Tensor:
        """``[B, C, H, W]`` maps -> ``[B, C, h, w]`` means over each cell's valid pixels (channels-last)."""
        if self.valid is None or self.share is None:
            pooled = F.avg_pool2d(maps, self.stride, ceil_mode=True)
        else:
            # where, not a product: NaN or inf at an ignored pixel must not reach the cell's mean.
            kept = torch.where(self.valid, maps, torch.zeros((), dtype=maps.dtype, device=maps.device))
            pooled = F.avg_pool2d(kept, self.stride, ceil_mode=True) / self.share.clamp_min(1e-12).to(maps.dtype)
        return pooled.contiguous(memory_format=torch.channels_last)

    def one_hot_shares(
        self, target: Tensor, num_classes: int, ignored: Tensor | None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Each cell's share of every class among its valid pixels, ``[B, C, h, w]`` channels-last.

        Equal, bit for bit, to ``self.average(one_hot_target(target, num_classes, ignored, dtype))``
        (tested), without the full-size one-hot map: the labels are counted per cell by one
        ``index_add_`` into a buffer a ``stride**2``-th of that size. On a CPU the full-size map
        (11 MB for 8 x 21 x 128 x 128) costs more in fresh pages than in arithmetic.

        Args:
            target: ``[B, H, W]`` int64 labels in [0, num_classes) (anything at ``ignored`` pixels);
            ignored: the ``[B, H, W]`` bool mask this grid was built for, or None.
        """
        batch, height, width = target.shape
        device = target.device
        rows = torch.arange(height, device=device) // self.stride
        columns = torch.arange(width, device=device) // self.stride
        cells_high, cells_wide = -(-height // self.stride), -(-width // self.stride)  # ceil mode
        cell = rows[:, None] * cells_wide + columns[None, :]  # [H, W], the cell of each pixel
        first_cell = torch.arange(batch, device=device).view(batch, 1, 1) * (cells_high * cells_wide)
        labels = target if ignored is None else target.masked_fill(ignored, 0)
        index = ((first_cell + cell) * num_classes + labels).reshape(-1)
        weights = (
            torch.ones((), dtype=dtype, device=device).expand(index.numel())
            if ignored is None
            else (~ignored).reshape(-1).to(dtype)
        )
        counts = torch.zeros(batch * cells_high * cells_wide * num_classes, dtype=dtype, device=device)
        counts.index_add_(0, index, weights)  # whole numbers: exact in any order of addition
        # avg_pool2d's divisor: the pixels a cell covers (fewer at the right and bottom edges).
        cell_rows = torch.bincount(rows, minlength=cells_high).to(dtype)
        cell_columns = torch.bincount(columns, minlength=cells_wide).to(dtype)
        pixels_per_cell = (cell_rows[:, None] * cell_columns[None, :]).view(1, cells_high, cells_wide, 1)
        # In place: a fresh buffer here costs more in page faults than the division itself.
        shares = counts.view(batch, cells_high, cells_wide, num_classes).div_(pixels_per_cell)
        if self.share is not None:
            shares.div_(self.share.clamp_min(1e-12).to(dtype).permute(0, 2, 3, 1))
        return shares.permute(0, 3, 1, 2)  # [B, C, h, w], channels-last in memory

    def any(self, pixels: Tensor) -> Tensor:
        """``[B, H, W]`` bool -> ``[B, h, w]`` bool, True where a cell holds a marked pixel."""
        return F.max_pool2d(pixels.unsqueeze(1).float(), self.stride, ceil_mode=True)[:, 0] > 0
