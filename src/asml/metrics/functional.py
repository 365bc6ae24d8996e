"""Region, boundary and context metrics on integer label maps, in batched torch (CPU or CUDA).

All functions take ``preds, target`` of shape ``[B, H, W]`` (integer class indices), ``num_classes``
and ``ignore_index`` (default 255; None: nothing ignored). Pixels whose *target* is ignored never
count. Definitions, stated so that a reviewer can check them against ``tests/test_metrics.py``:

* ``confusion_matrix``: ``[C, C]`` int64, rows = target class, columns = predicted class.
  IoU_c = TP / (TP + FP + FN), NaN when that is 0; mIoU = nanmean over classes (dataset-level:
  accumulate the matrix over all images first). Pixel accuracy = trace / total. Mean class
  accuracy = nanmean over classes of TP / (TP + FN).
* ``boundary_prf`` (boundary F-score, Csurka et al. 2013): per image and class, boundary(M) =
  M and not erode(M) with a 3x3 square, pixels outside the image counting as inside M (the border
  is not a boundary). Ignored target pixels are removed from both masks first. A boundary pixel is
  matched if a boundary pixel of the other mask lies within Euclidean distance ``tolerance_px``.
  P = matched predicted / predicted, R = matched target / target; both empty: P = R = F = NaN; only
  the target's empty: P = 0, R = NaN, F = 0; only the prediction's empty: P = NaN, R = 0, F = 0;
  F = 2PR / (P + R), 0 when P + R = 0.
* ``boundary_iou_stats`` (Cheng et al. 2021): band(M) = M minus M eroded d times by a 3x3 square,
  the mask padded with one pixel of zeros first (the border *is* a boundary),
  d = max(1, round(dilation_ratio * diagonal)) with Python's round (half to even).
* ``trimap_confusion_matrices``: the confusion matrix restricted to valid pixels within Euclidean
  distance ``width`` of the target's boundary (union over classes of boundary(target == c)).
* ``context_confusion``: of the wrongly labelled valid pixels, how many took a class that is present
  elsewhere in the same image's target (confusion with a co-occurring class) and how many a class
  absent from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from asml.metrics.morphology import band_inside, bounded_squared_distance, count_true, count_within, inner_boundary

__all__ = [
    "boundary_iou",
    "boundary_iou_dilation",
    "boundary_iou_stats",
    "boundary_prf",
    "boundary_scores",
    "class_presence",
    "confusion_matrix",
    "context_confusion",
    "default_boundary_tolerance",
    "iou_from_confusion",
    "mean_class_accuracy",
    "pixel_accuracy",
    "trimap_confusion_matrices",
]


def _checked_valid(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Check shapes, dtypes and labels; return the ``[B, H, W]`` mask of non-ignored pixels."""
    if preds.shape != target.shape or preds.dim() != 3:
        raise ValueError(
            f"preds and target must both be [B, H, W] label maps, got {list(preds.shape)} and {list(target.shape)}"
        )
    if preds.is_floating_point() or target.is_floating_point():
        raise ValueError("preds and target must hold integer class indices (take argmax of logits first)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    for name, labels in (("target", target), ("preds", preds)):
        outside = ((labels < 0) | (labels >= num_classes)) & valid
        if bool(outside.any()):
            allowed = f"[0, {num_classes})" + (f" (or {ignore_index} in target)" if ignore_index is not None else "")
            raise ValueError(f"{name} holds labels outside {allowed} at non-ignored pixels")
    return valid


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``[C, C]`` int64 counts, rows = target class, columns = predicted class; ignored pixels left out.

    A valid pixel predicted outside [0, C) is an error: ``ValueError``.
    """
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    # Ignored pixels go to one extra bin (cheaper than selecting the valid pixels first).
    index = (target.long() * num_classes + preds.long()).masked_fill(~valid, num_classes * num_classes)
    counts = torch.bincount(index.flatten(), minlength=num_classes * num_classes + 1)[:-1]
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class IoU ``[C]`` float64: TP / (TP + FP + FN), NaN where that is 0."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    denominator = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(
        denominator > 0, true_positive / denominator.clamp_min(1), torch.full_like(denominator, math.nan)
    )


def pixel_accuracy(confusion: Tensor) -> Tensor:
    """Correct valid pixels / valid pixels (NaN with no valid pixel), float64 scalar."""
    total = confusion.sum().double()
    return confusion.diagonal().sum().double() / total if total > 0 else torch.tensor(math.nan, dtype=torch.float64)


def mean_class_accuracy(confusion: Tensor) -> Tensor:
    """nanmean over classes of TP / (TP + FN) (classes absent from the target are NaN), float64."""
    confusion = confusion.double()
    support = confusion.sum(1)
    recall = torch.where(support > 0, confusion.diagonal() / support.clamp_min(1), torch.full_like(support, math.nan))
    return recall.nanmean()


def class_presence(labels: Tensor, num_classes: int, valid: Tensor) -> Tensor:
    """``[B, C]`` bool: class c occurs at some valid pixel of image b."""
    batch = labels.shape[0]
    index = torch.arange(batch, device=labels.device)[:, None, None] * num_classes + labels.clamp(0, num_classes - 1)
    # Invalid pixels go to one extra bin (cheaper than selecting the valid ones first).
    index = index.masked_fill(~valid, batch * num_classes)
    counts = torch.bincount(index.flatten(), minlength=batch * num_classes + 1)[:-1]
    return counts.reshape(batch, num_classes) > 0


def default_boundary_tolerance(height: int, width: int) -> float:
    """The usual BF tolerance: 0.75% of the image diagonal, in pixels (not rounded)."""
    return 0.0075 * math.hypot(height, width)


def _pair_masks(
    preds: Tensor, target: Tensor, num_classes: int, valid: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Masks for the (image, class) pairs present in target or prediction: (image ids, class ids,
    target masks [K, H, W], prediction masks [K, H, W]). Other pairs have both sets empty."""
    present = class_presence(target, num_classes, valid) | class_presence(preds, num_classes, valid)
    images, classes = torch.nonzero(present, as_tuple=True)
    # Compare in int16 (a quarter of int64's memory traffic); ignored pixels of both maps become
    # -1, which no class has, so the masks need no separate validity pass.
    small = torch.int16 if num_classes < 2**15 else torch.int32
    wanted = classes.to(small)[:, None, None]
    target_small = target.masked_fill(~valid, -1).to(small)
    pred_small = preds.masked_fill(~valid, -1).to(small)
    return images, classes, target_small[images] == wanted, pred_small[images] == wanted


def boundary_prf(
    preds: Tensor, target: Tensor, num_classes: int, tolerance_px: float, ignore_index: int | None = 255
) -> tuple[Tensor, Tensor, Tensor]:
    """Boundary precision, recall and F-score per image and class: three ``[B, C]`` float64 tensors.

    See the module docstring for the definition and the empty-set conventions.
    """
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    return _prf_of_pairs(_pair_masks(preds, target, num_classes, valid), target.shape[0], num_classes, tolerance_px)


def _prf_of_pairs(
    pairs: tuple[Tensor, Tensor, Tensor, Tensor], batch: int, num_classes: int, tolerance_px: float
) -> tuple[Tensor, Tensor, Tensor]:
    images, classes, target_masks, pred_masks = pairs
    precision = torch.full((batch, num_classes), math.nan, dtype=torch.float64, device=images.device)
    recall, f_score = precision.clone(), precision.clone()
    if images.numel() == 0:
        return precision, recall, f_score
    target_edges, pred_edges = inner_boundary(target_masks), inner_boundary(pred_masks)
    matched_pred, pred_count = (c.double() for c in count_within(pred_edges, target_edges, tolerance_px))
    matched_target, target_count = (c.double() for c in count_within(target_edges, pred_edges, tolerance_px))
    nan = torch.full_like(pred_count, math.nan)
    p = torch.where(pred_count > 0, matched_pred / pred_count.clamp_min(1), nan)
    r = torch.where(target_count > 0, matched_target / target_count.clamp_min(1), nan)
    p = torch.where((target_count == 0) & (pred_count > 0), torch.zeros_like(p), p)
    r = torch.where((pred_count == 0) & (target_count > 0), torch.zeros_like(r), r)
    both = (pred_count > 0) & (target_count > 0)
    f = torch.where(both, 2 * p * r / (p + r).clamp_min(1e-300), torch.zeros_like(p))
    f = torch.where(both & (p + r == 0), torch.zeros_like(f), f)
    f = torch.where((pred_count == 0) & (target_count == 0), nan, f)
    precision[images, classes], recall[images, classes], f_score[images, classes] = p, r, f
    return precision, recall, f_score


def boundary_iou_dilation(height: int, width: int, dilation_ratio: float) -> int:
    """Band width d = max(1, round(dilation_ratio * diagonal)), Python's round (half to even)."""
    return max(1, round(dilation_ratio * math.hypot(height, width)))


def boundary_iou_stats(
    preds: Tensor, target: Tensor, num_classes: int, dilation_ratio: float = 0.02, ignore_index: int | None = 255
) -> tuple[Tensor, Tensor]:
    """Boundary IoU counts ``(intersection [C], union [C])`` int64, summed over the batch."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    dilation = boundary_iou_dilation(target.shape[1], target.shape[2], dilation_ratio)
    return _biou_of_pairs(_pair_masks(preds, target, num_classes, valid), num_classes, dilation)


def _biou_of_pairs(
    pairs: tuple[Tensor, Tensor, Tensor, Tensor], num_classes: int, dilation: int
) -> tuple[Tensor, Tensor]:
    _, classes, target_masks, pred_masks = pairs
    intersection = torch.zeros(num_classes, dtype=torch.long, device=classes.device)
    union = torch.zeros_like(intersection)
    if classes.numel() == 0:
        return intersection, union
    target_band, pred_band = band_inside(target_masks, dilation), band_inside(pred_masks, dilation)
    intersection.index_add_(0, classes, count_true(target_band & pred_band))
    union.index_add_(0, classes, count_true(target_band | pred_band))
    return intersection, union


def boundary_scores(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    tolerance_px: float,
    dilation_ratio: float = 0.02,
    ignore_index: int | None = 255,
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(boundary_prf(...), boundary_iou_stats(...))`` from one set of per-class masks (the check
    and the mask construction, the costly part of both, run once)."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    pairs = _pair_masks(preds, target, num_classes, valid)
    dilation = boundary_iou_dilation(target.shape[1], target.shape[2], dilation_ratio)
    return _prf_of_pairs(pairs, target.shape[0], num_classes, tolerance_px), _biou_of_pairs(
        pairs, num_classes, dilation
    )


def boundary_iou(intersection: Tensor, union: Tensor) -> Tensor:
    """Per-class Boundary IoU ``[C]`` float64 from summed counts, NaN where the union is 0."""
    union_f = union.double()
    return torch.where(union_f > 0, intersection.double() / union_f.clamp_min(1), torch.full_like(union_f, math.nan))


def _target_edges(target: Tensor, valid: Tensor) -> Tensor:
    """Union over classes of boundary(target == c): valid pixels with a differently labelled 3x3
    neighbour inside the image (an ignored neighbour counts as different). ``[B, H, W]`` bool."""
    labels = target.unsqueeze(1).double()
    highest = F.max_pool2d(labels, 3, 1, 1)
    lowest = -F.max_pool2d(-labels, 3, 1, 1)
    differs = (highest[:, 0] != labels[:, 0]) | (lowest[:, 0] != labels[:, 0])
    return differs & valid


def trimap_confusion_matrices(
    preds: Tensor, target: Tensor, num_classes: int, widths: Sequence[float], ignore_index: int | None = 255
) -> Tensor:
    """``[len(widths), C, C]`` int64: the confusion matrix of the valid pixels within Euclidean
    distance ``width`` of the target's boundary, for each width."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    edges = _target_edges(target, valid)
    for width in widths:
        if width < 0:
            raise ValueError(f"trimap widths must be >= 0, got {width}")
    squared = bounded_squared_distance(edges, math.floor(max(widths, default=0)))
    matrices = []
    for width in widths:
        band = (squared <= width * width + 1e-9) & valid
        outside_band = -1  # a label no class has: confusion_matrix leaves these pixels out
        matrices.append(confusion_matrix(preds, target.masked_fill(~band, outside_band), num_classes, outside_band))
    return torch.stack(matrices)


def context_confusion(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``[3]`` int64: (wrong valid pixels, of them predicted as a class present in the image's
    target, of them predicted as a class absent from it)."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    present = class_presence(target, num_classes, valid)  # [B, C]
    wrong = valid & (preds != target)
    batch_index = torch.arange(target.shape[0], device=target.device)[:, None, None].expand_as(target)
    co_occurring = present[batch_index[wrong], preds[wrong].long().clamp(0, num_classes - 1)]
    total = int(wrong.sum())
    with_present = int(co_occurring.sum())
    return torch.tensor([total, with_present, total - with_present], dtype=torch.long, device=target.device)
