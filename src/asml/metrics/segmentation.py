"""``SegmentationMetrics``: every score of ``asml.metrics.functional`` accumulated over a dataset.

All states are sums (``dist_reduce_fx="sum"``), so under ``torchrun`` torchmetrics reduces them
across processes and every process computes the same dataset-level result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from asml.metrics.functional import (
    boundary_iou,
    boundary_scores,
    confusion_matrix,
    context_confusion_pairs,
    default_boundary_tolerance,
    iou_from_confusion,
    mean_class_accuracy,
    pixel_accuracy,
    trimap_confusion_matrices,
)

__all__ = ["SegmentationMetrics", "format_table", "to_json"]


class SegmentationMetrics(Metric):
    """Region, boundary and context scores over a dataset.

    Args:
        num_classes: number of classes.
        ignore_index: void label of the targets (None: none).
        boundary_tolerance: BF tolerance in pixels; None: 0.75% of each batch's image diagonal.
        dilation_ratio: Boundary IoU band width as a fraction of the image diagonal (0.02).
        trimap_widths: band widths in pixels for the trimap mIoU curve.
        class_names: names for the per-class entries of the result (default ``"0"``, ``"1"``, ...).

    ``update(preds, target)`` takes ``[B, H, W]`` label maps, or logits ``[B, C, H, W]`` (argmax is
    taken). ``compute()`` returns a dict of tensors:

    * ``mIoU``, ``IoU`` [C], ``pixel_accuracy``, ``mean_class_accuracy`` (dataset confusion matrix);
    * ``BF``: mean over images of the image's mean F over classes with a defined F; ``BF_per_class``
      [C]: per class, the mean over images where its F is defined; ``boundary_precision`` and
      ``boundary_recall`` [C] likewise;
    * ``boundary_IoU`` [C] and ``mean_boundary_IoU`` (nanmean);
    * ``trimap_mIoU`` [len(widths)] and ``trimap_widths``;
    * ``context_share``: wrong pixels predicted as a class present elsewhere in the image's target,
      as a share of all wrong pixels, ``absent_share`` the rest, and ``wrong_pixels``;
    * ``co_occurring_confusion`` and ``absent_confusion`` [C, C]: the wrong pixels by (true, predicted)
      class, the predicted class present in the image's target or absent from it (they sum to the
      confusion matrix's off-diagonal);
    * ``confusion_matrix`` [C, C] (rows = target).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    # The sum states (registered with add_state), declared for type checkers.
    confusion: Tensor
    trimap: Tensor
    biou_intersection: Tensor
    biou_union: Tensor
    f_sum: Tensor
    f_count: Tensor
    precision_sum: Tensor
    precision_count: Tensor
    recall_sum: Tensor
    recall_count: Tensor
    image_f_sum: Tensor
    image_f_count: Tensor
    context_pairs: Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        boundary_tolerance: float | None = None,
        dilation_ratio: float = 0.02,
        trimap_widths: Sequence[float] = (1, 2, 4, 8, 16),
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_tolerance = boundary_tolerance
        self.dilation_ratio = dilation_ratio
        self.trimap_widths = tuple(float(w) for w in trimap_widths)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(num_classes))
        classes, widths = num_classes, len(self.trimap_widths)
        self.add_state("confusion", torch.zeros(classes, classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("trimap", torch.zeros(widths, classes, classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("biou_intersection", torch.zeros(classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("biou_union", torch.zeros(classes, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("f", "precision", "recall"):
            self.add_state(f"{name}_sum", torch.zeros(classes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{name}_count", torch.zeros(classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("image_f_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("image_f_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("context_pairs", torch.zeros(2, classes, classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` ``[B, H, W]`` labels or ``[B, C, H, W]`` logits, ``target`` ``[B, H, W]``."""
        if preds.dim() == 4:
            preds = preds.argmax(dim=1)
        args = (preds, target, self.num_classes)
        self.confusion += confusion_matrix(*args, ignore_index=self.ignore_index)
        self.trimap += trimap_confusion_matrices(*args, self.trimap_widths, ignore_index=self.ignore_index)
        tolerance = self.boundary_tolerance
        if tolerance is None:
            tolerance = default_boundary_tolerance(target.shape[-2], target.shape[-1])
        (precision, recall, f_score), (intersection, union) = boundary_scores(
            *args, tolerance, self.dilation_ratio, ignore_index=self.ignore_index
        )
        self.biou_intersection += intersection
        self.biou_union += union
        for name, values in (("f", f_score), ("precision", precision), ("recall", recall)):
            defined = ~values.isnan()
            getattr(self, f"{name}_sum").add_(values.nan_to_num(0.0).sum(0))
            getattr(self, f"{name}_count").add_(defined.sum(0))
        per_image = f_score.nanmean(dim=1)
        has_f = ~per_image.isnan()
        self.image_f_sum += per_image[has_f].sum()
        self.image_f_count += has_f.sum()
        self.context_pairs += context_confusion_pairs(*args, ignore_index=self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        """The dataset-level scores (see the class docstring); NaN where a score is undefined."""

        def mean_where_defined(total: Tensor, count: Tensor) -> Tensor:
            return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))

        iou = iou_from_confusion(self.confusion)
        biou = boundary_iou(self.biou_intersection, self.biou_union)
        trimap = torch.stack([iou_from_confusion(m).nanmean() for m in self.trimap])
        co_occurring, absent = self.context_pairs.sum((1, 2)).double()
        wrong = co_occurring + absent
        nan = torch.tensor(math.nan, dtype=torch.float64, device=self.context_pairs.device)
        return {
            "mIoU": iou.nanmean(),
            "IoU": iou,
            "pixel_accuracy": pixel_accuracy(self.confusion),
            "mean_class_accuracy": mean_class_accuracy(self.confusion),
            "BF": self.image_f_sum / self.image_f_count if self.image_f_count > 0 else nan,
            "BF_per_class": mean_where_defined(self.f_sum, self.f_count),
            "boundary_precision": mean_where_defined(self.precision_sum, self.precision_count),
            "boundary_recall": mean_where_defined(self.recall_sum, self.recall_count),
            "boundary_IoU": biou,
            "mean_boundary_IoU": biou.nanmean(),
            "trimap_mIoU": trimap,
            "trimap_widths": torch.tensor(self.trimap_widths, dtype=torch.float64),
            "context_share": co_occurring / wrong if wrong > 0 else nan,
            "absent_share": absent / wrong if wrong > 0 else nan,
            "wrong_pixels": self.context_pairs.sum(),
            "co_occurring_confusion": self.context_pairs[0].clone(),
            "absent_confusion": self.context_pairs[1].clone(),
            "confusion_matrix": self.confusion.clone(),
        }


def _plain(value: Tensor) -> Any:
    """Tensor -> float / int / nested lists, NaN -> None (strict JSON has no NaN)."""
    items = value.detach().cpu().tolist()

    def clean(item: Any) -> Any:
        if isinstance(item, list):
            return [clean(x) for x in item]
        if isinstance(item, float) and math.isnan(item):
            return None
        return item

    return clean(items)


def to_json(result: dict[str, Tensor], class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A JSON-serialisable copy of ``compute()``'s result (NaN becomes null), with the class names."""
    plain: dict[str, Any] = {name: _plain(value) for name, value in result.items()}
    if class_names is not None:
        plain["class_names"] = list(class_names)
    return plain


def format_table(result: dict[str, Tensor], class_names: Sequence[str]) -> str:
    """A per-class table and the summary scores, as monospaced text for the terminal."""

    def cell(value: float) -> str:
        return "     -" if math.isnan(value) else f"{100 * value:6.2f}"

    columns = [("IoU", "IoU"), ("BF", "BF_per_class"), ("B-IoU", "boundary_IoU"),
               ("B-prec", "boundary_precision"), ("B-rec", "boundary_recall")]  # fmt: skip
    width = max(8, *(len(name) for name in class_names))
    lines = [f"{'class':<{width}}" + "".join(f"{title:>8}" for title, _ in columns)]
    for index, name in enumerate(class_names):
        lines.append(f"{name:<{width}}" + "".join(f"  {cell(float(result[key][index]))}" for _, key in columns))
    summary = [("mIoU", "mIoU"), ("BF", "BF"), ("mean B-IoU", "mean_boundary_IoU"),
               ("pixel acc", "pixel_accuracy"), ("mean class acc", "mean_class_accuracy"),
               ("context share", "context_share")]  # fmt: skip
    lines.append("")
    lines.append("  ".join(f"{title} {cell(float(result[key])).strip()}" for title, key in summary))
    trimap = ", ".join(
        f"{w:g}px {cell(float(v)).strip()}" for w, v in zip(result["trimap_widths"], result["trimap_mIoU"], strict=True)
    )
    lines.append(f"trimap mIoU: {trimap}   (scores in %)")
    return "\n".join(lines)
