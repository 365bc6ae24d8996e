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
  absent from it; ``context_confusion_pairs`` the same per (true class, predicted class) pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from asml.metrics.morphology import FULL_SET, bounded_squared_distance, nonempty_, or_disc, or_square, rank_sets

__all__ = [
    "boundary_iou",
    "boundary_iou_dilation",
    "boundary_iou_stats",
    "boundary_prf",
    "boundary_scores",
    "class_presence",
    "confusion_matrix",
    "context_confusion",
    "context_confusion_pairs",
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
        if _outside_at(labels, num_classes, valid):
            allowed = f"[0, {num_classes})" + (f" (or {ignore_index} in target)" if ignore_index is not None else "")
            raise ValueError(f"{name} holds labels outside {allowed} at non-ignored pixels")
    return valid


def _outside_at(labels: Tensor, num_classes: int, valid: Tensor) -> bool:
    """Whether a pixel where ``valid`` ``[B, H, W]`` holds has a label outside [0, C). One min/max
    pass settles the usual case; only then are the pixels compared."""
    if labels.numel() == 0:
        return False
    low, high = (int(v) for v in labels.aminmax())
    if low >= 0 and high < num_classes:
        return False
    outside = labels >= num_classes if low >= 0 else (labels < 0) | (labels >= num_classes)
    return bool(outside.logical_and_(valid).any())


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


class _ClassSets(NamedTuple):
    """What the boundary metrics share, per map (index 0: the target, 1: the prediction)."""

    labels: Tensor  # [2, B, H, W]: the class, num_classes at ignored target pixels; uint8 when it fits
    keys: Tensor  # [2, B, H, W], int16 when it fits: 4 * ((map * B + image) * (C + 1) + label)
    sets: Tensor  # [words, 2, B, H, W] uint8: one-element set of each pixel's label (see morphology)
    valid: Tensor  # [B, H, W] uint8: 1 where the target is not ignored
    num_classes: int


def _class_sets(preds: Tensor, target: Tensor, num_classes: int, valid: Tensor) -> _ClassSets:
    """Compact labels, counting keys and class sets of ``target`` and ``preds`` ``[B, H, W]``."""
    valid01 = valid.view(torch.uint8)
    labels = _compact_labels(preds, target, num_classes, valid01)
    keys = _counting_keys(labels, num_classes)
    return _ClassSets(labels, keys, _sets_by_key(keys, num_classes), valid01, num_classes)


def _compact_labels(preds: Tensor, target: Tensor, num_classes: int, valid01: Tensor) -> Tensor:
    """``[2, B, H, W]`` target and prediction labels, ``num_classes`` where the target is ignored
    (``valid01`` ``[B, H, W]`` uint8 is 0); uint8 below 255 classes, else int32."""
    small = torch.uint8 if num_classes < 255 else torch.int32
    labels = torch.empty((2, *target.shape), dtype=small, device=target.device)
    labels[0], labels[1] = target, preds  # valid labels lie in [0, C) (checked): exact where it counts
    # Ignored pixels of both maps become C, one more "class", so that boundaries need no separate
    # validity pass. (Products rather than a masked fill: bool masks are several times slower on CPU.)
    return labels.mul_(valid01).add_((1 - valid01).to(small).mul_(num_classes))


def _counting_keys(labels: Tensor, num_classes: int) -> Tensor:
    """``[2, B, H, W]``: ``4 * ((map * B + image) * (C + 1) + label)`` for ``labels`` ``[2, B, H, W]``,
    int16 when it fits (the fastest arithmetic here), leaving room for a 2-bit flag (``_count_flags``)."""
    batch, width = labels.shape[1], num_classes + 1
    bins = 2 * batch * width * 4
    key_type = torch.int16 if bins <= 2**15 else torch.int32 if bins <= 2**31 else torch.int64
    offsets = torch.arange(2 * batch, dtype=key_type, device=labels.device).view(2, batch, 1, 1) * (4 * width)
    # copy=True: with int32 labels and keys, .to would hand back the labels themselves to mul_ in place.
    return labels.to(key_type, copy=True).mul_(4).add_(offsets)


def _sets_by_key(keys: Tensor, num_classes: int) -> Tensor:
    """``[words, 2, B, H, W]`` uint8 one-element sets of the labels behind ``keys`` ``[2, B, H, W]``:
    bit r stands for the r-th label present in the image (either map)."""
    batch, width = keys.shape[1], num_classes + 1
    bins = 2 * batch * width * 4
    counts = torch.bincount(keys.flatten(), minlength=bins)
    # Few labels per image, so the sets usually fit one byte whatever the number of classes.
    table = rank_sets((counts.view(2, batch, width, 4)[..., 0] > 0).any(0))  # [words, B, C + 1]
    spread = torch.zeros((table.shape[0], 2, batch, width, 4), dtype=torch.uint8, device=keys.device)
    spread[..., 0] = table[:, None]  # entry 4 * ((map * B + image) * (C + 1) + label), as the keys
    spread = spread.view(table.shape[0], bins)
    sets = torch.empty((table.shape[0], *keys.shape), dtype=torch.uint8, device=keys.device)
    # index_select takes int32 or int64 indices: widen int16 keys one map at a time, into one buffer.
    lookup = torch.empty(keys[0].numel(), dtype=torch.int32, device=keys.device) if keys.dtype == torch.int16 else None
    for index in (0, 1):
        indices = keys[index].flatten() if lookup is None else lookup.copy_(keys[index].flatten())
        for word in range(table.shape[0]):
            torch.index_select(spread[word], 0, indices, out=sets[word, index].view(-1))
    return sets


def _count_flags(data: _ClassSets, flags: Tensor) -> Tensor:
    """``[2, B, C, 4]`` int64: pixels per map, image, class and value (0-3) of ``flags``
    ``[2, B, H, W]`` uint8, over the valid pixels."""
    batch, width = data.labels.shape[1], data.num_classes + 1
    # The flags fill the keys' two free low bits. (Widen the flags, then add in place: torch would
    # otherwise make a widened copy of its own for a mixed-type sum.)
    codes = flags.to(data.keys.dtype).add_(data.keys)
    counts = torch.bincount(codes.flatten(), minlength=2 * batch * width * 4)
    return counts.view(2, batch, width, 4)[:, :, : data.num_classes]  # the ignored label C dropped


def _check_tolerance(tolerance_px: float) -> None:
    """``ValueError`` for a negative BF tolerance, before any work (and whatever the input)."""
    if tolerance_px < 0:
        raise ValueError(f"a distance tolerance must be >= 0, got {tolerance_px}")


def boundary_prf(
    preds: Tensor, target: Tensor, num_classes: int, tolerance_px: float, ignore_index: int | None = 255
) -> tuple[Tensor, Tensor, Tensor]:
    """Boundary precision, recall and F-score per image and class: three ``[B, C]`` float64 tensors.

    See the module docstring for the definition and the empty-set conventions.
    """
    _check_tolerance(tolerance_px)
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    return _prf_of_sets(_class_sets(preds, target, num_classes, valid), tolerance_px)


def _prf_of_sets(data: _ClassSets, tolerance_px: float) -> tuple[Tensor, Tensor, Tensor]:
    """P, R, F ``[B, C]`` float64 from the class sets of target and prediction."""
    batch, num_classes = data.labels.shape[1], data.num_classes
    if data.labels.numel() == 0:
        nan = torch.full((batch, num_classes), math.nan, dtype=torch.float64, device=data.labels.device)
        return nan, nan.clone(), nan.clone()
    sets = data.sets
    # Boundary pixels (0/1, [2, B, H, W]): a 3x3 neighbour of another label; the border is not a
    # boundary, so beyond the image the window adds the empty set.
    # (xor: a window holds its centre, so it differs from the centre's set in the other labels only.)
    edges = nonempty_(or_square(sets, 1, fill=0).bitwise_xor_(sets)).bitwise_and_(data.valid)
    # Each map's edge sets go in the other map's slot, so that the disc OR lines up with the sets
    # it is matched against: near[:, m] holds the labels with an edge pixel of the other map in reach.
    swapped = torch.empty_like(sets)
    torch.mul(sets[:, 1], edges[1], out=swapped[:, 0])
    torch.mul(sets[:, 0], edges[0], out=swapped[:, 1])
    # matched[0]: target edge pixels near a predicted edge pixel of their class; [1]: the other way.
    matched = nonempty_(or_disc(swapped, tolerance_px).bitwise_and_(sets)).bitwise_and_(edges)
    counts = _count_flags(data, matched.bitwise_left_shift_(1).bitwise_or_(edges)).double()
    edge_count, matched_count = counts[..., 1] + counts[..., 3], counts[..., 3]
    return _prf_of_counts(matched_count[1], edge_count[1], matched_count[0], edge_count[0])


def _prf_of_counts(
    matched_pred: Tensor, pred_count: Tensor, matched_target: Tensor, target_count: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """P, R, F (float64, the shape of the counts) with the empty-set conventions of the module docstring."""
    nan = torch.full_like(pred_count, math.nan)
    p = torch.where(pred_count > 0, matched_pred / pred_count.clamp_min(1), nan)
    r = torch.where(target_count > 0, matched_target / target_count.clamp_min(1), nan)
    p = torch.where((target_count == 0) & (pred_count > 0), torch.zeros_like(p), p)
    r = torch.where((pred_count == 0) & (target_count > 0), torch.zeros_like(r), r)
    both = (pred_count > 0) & (target_count > 0)
    f = torch.where(both, 2 * p * r / (p + r).clamp_min(1e-300), torch.zeros_like(p))
    f = torch.where(both & (p + r == 0), torch.zeros_like(f), f)
    f = torch.where((pred_count == 0) & (target_count == 0), nan, f)
    return p, r, f


def boundary_iou_dilation(height: int, width: int, dilation_ratio: float) -> int:
    """Band width d = max(1, round(dilation_ratio * diagonal)), Python's round (half to even)."""
    return max(1, round(dilation_ratio * math.hypot(height, width)))


def boundary_iou_stats(
    preds: Tensor, target: Tensor, num_classes: int, dilation_ratio: float = 0.02, ignore_index: int | None = 255
) -> tuple[Tensor, Tensor]:
    """Boundary IoU counts ``(intersection [C], union [C])`` int64, summed over the batch."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    dilation = boundary_iou_dilation(target.shape[1], target.shape[2], dilation_ratio)
    return _biou_of_sets(_class_sets(preds, target, num_classes, valid), dilation)


def _biou_of_sets(data: _ClassSets, dilation: int) -> tuple[Tensor, Tensor]:
    """``(intersection [C], union [C])`` int64 from the class sets of target and prediction."""
    if data.labels.numel() == 0:
        zeros = torch.zeros(data.num_classes, dtype=torch.long, device=data.labels.device)
        return zeros, zeros.clone()
    # Band pixels (0/1, [2, B, H, W]): another label within d; the border is a boundary, so beyond
    # the image the window holds a set unlike any pixel's own.
    bands = nonempty_(or_square(data.sets, dilation, fill=FULL_SET).bitwise_xor_(data.sets)).bitwise_and_(data.valid)
    # Flag 2 on the target's side: in both bands with the same label, i.e. in the intersection.
    both = (data.labels[0] ^ data.labels[1]).clamp_max_(1).bitwise_xor_(1).to(torch.uint8)
    bands[0] |= both.bitwise_and_(bands[0]).bitwise_and_(bands[1]).bitwise_left_shift_(1)
    counts = _count_flags(data, bands)
    in_band = (counts[..., 1] + counts[..., 3]).sum(1)  # [2, C]
    intersection = counts[0, :, :, 3].sum(0)
    return intersection, in_band[0] + in_band[1] - intersection


def boundary_scores(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    tolerance_px: float,
    dilation_ratio: float = 0.02,
    ignore_index: int | None = 255,
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(boundary_prf(...), boundary_iou_stats(...))`` from one set of class sets (the check and
    the set construction, a good part of both, run once)."""
    _check_tolerance(tolerance_px)
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    data = _class_sets(preds, target, num_classes, valid)
    dilation = boundary_iou_dilation(target.shape[1], target.shape[2], dilation_ratio)
    return _prf_of_sets(data, tolerance_px), _biou_of_sets(data, dilation)


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


def context_confusion_pairs(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``[2, C, C]`` int64: wrong valid pixels counted by (true class, predicted class), split by
    whether the predicted class occurs in the same image's target (``[0]``: a co-occurring class) or
    not (``[1]``: a class absent from the image). The diagonals are zero."""
    valid = _checked_valid(preds, target, num_classes, ignore_index)
    present = class_presence(target, num_classes, valid)  # [B, C]
    wrong = valid & (preds != target)
    batch_index = torch.arange(target.shape[0], device=target.device)[:, None, None].expand_as(target)
    predicted = preds[wrong].long().clamp(0, num_classes - 1)
    absent = (~present[batch_index[wrong], predicted]).long()
    index = (absent * num_classes + target[wrong].long()) * num_classes + predicted
    counts = torch.bincount(index, minlength=2 * num_classes * num_classes)
    return counts.reshape(2, num_classes, num_classes)


def context_confusion(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``[3]`` int64: (wrong valid pixels, of them predicted as a class present in the image's
    target, of them predicted as a class absent from it)."""
    co_occurring, absent = context_confusion_pairs(preds, target, num_classes, ignore_index).sum((1, 2))
    return torch.stack([co_occurring + absent, co_occurring, absent])
