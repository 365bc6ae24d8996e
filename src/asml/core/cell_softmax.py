"""Softmax, its cell means and the cross-entropy of the same logits, in one pass and one backward.

With the analyzer at a coarser size (``analyzer_stride`` > 1) the segmenter's ASM+CE loss needs, of
its full-size logits, only the cell means of their softmax and the cross-entropy. Done op by op
(softmax, layout copy, masked average; log-softmax and NLL for the CE term), each step writes a
fresh full-size buffer forwards and another backwards, and the two gradients are added in a third:
on a CPU that memory traffic, not the arithmetic, is most of what the loss adds to a PSPNet step.
:func:`softmax_cell_means` computes the same quantities from one full-size buffer in the forward
pass (the probabilities, kept for the backward) and two in the backward.

It is the same mathematics in a different order of rounding, not the same bits: the probabilities
are ``exp(x - max) / sum`` rather than PyTorch's softmax kernel, the CE term is
``log(sum) + max - x[target]`` rather than log-softmax and NLL, and the gradient is written out
(``p * (g - <g, p>)`` plus ``(p - onehot(y)) * dCE``). ``tests/test_cell_softmax.py`` checks it
against the op-by-op path to float32 rounding and by gradcheck in float64; what the change does to
training was checked on paired seeds (docs/speed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["softmax_cell_means"]


def softmax_cell_means(
    logits: Tensor, target: Tensor, valid: Tensor | None, share: Tensor | None, stride: int, with_ce: bool
) -> tuple[Tensor, Tensor | None]:
    """Cell means of ``softmax(logits)`` over each ``stride x stride`` cell's valid pixels, and the CE.

    Args:
        logits: ``[B, C, H, W]`` class logits, float32 or float64 (NCHW or any layout), finite:
            set ignored pixels to a finite value first (their value changes nothing).
        target: ``[B, H, W]`` int64 labels in [0, C) at valid pixels (anything elsewhere).
        valid: ``[B, 1, H, W]`` bool, True at valid pixels, or None (all valid).
        share: ``[B, 1, h, w]`` the share of valid pixels per cell (``CoarseGrid.share``), or None.
        stride: the cell size (ceil mode: partial cells at the right and bottom edge).
        with_ce: also return the mean cross-entropy over valid pixels (0 if there are none).

    Returns:
        ``[B, C, h, w]`` cell means (channels-last, as ``CoarseGrid.average`` returns them), and the
        CE scalar or None; both differentiable in ``logits``.
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits must be [B, C, H, W] and target [B, H, W]; got {list(logits.shape)}, {list(target.shape)}"
        )
    means, cross_entropy = _SoftmaxCellMeans.apply(logits, target, valid, share, stride, with_ce)
    return means, (cross_entropy if with_ce else None)


class _SoftmaxCellMeans(torch.autograd.Function):
    """``logits -> (cell means of softmax, CE)``; saves only the probabilities (one full-size buffer)."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        valid: Tensor | None,
        share: Tensor | None,
        stride: int,
        with_ce: bool,
    ) -> tuple[Tensor, Tensor]:
        logits = logits.contiguous()
        peak = logits.amax(dim=1, keepdim=True)  # [B, 1, H, W]
        probabilities = torch.sub(logits, peak).exp_()  # the one full-size buffer of the forward pass
        total = probabilities.sum(dim=1, keepdim=True)
        probabilities.div_(total)
        if valid is not None:
            # Zero at ignored pixels: they leave the cell means, and the backward's products give
            # them a zero gradient without a mask of their own.
            probabilities.masked_fill_(~valid, 0.0)
        pooled = _cell_means(probabilities, stride)
        if share is not None:
            pooled = pooled / share.clamp_min(1e-12).to(pooled.dtype)
        means = pooled.contiguous(memory_format=torch.channels_last)

        labels = target.unsqueeze(1)
        if valid is not None:
            labels = labels.masked_fill(~valid, 0)
        valid_pixels = (
            valid.sum().clamp_min(1).to(logits.dtype)
            if valid is not None
            else torch.tensor(float(target.numel()), dtype=logits.dtype, device=logits.device)
        )
        cross_entropy = torch.zeros((), dtype=logits.dtype, device=logits.device)
        if with_ce:
            per_pixel = total.log_().add_(peak).sub_(logits.gather(1, labels))  # log-sum-exp - x[y]
            if valid is not None:
                per_pixel = torch.where(
                    valid, per_pixel, torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device)
                )
            cross_entropy = per_pixel.sum() / valid_pixels
        ctx.stride = stride
        ctx.with_ce = with_ce
        ctx.save_for_backward(probabilities, labels, valid, share, valid_pixels)
        ctx.mark_non_differentiable(*([] if with_ce else [cross_entropy]))
        return means, cross_entropy

    @staticmethod
    def backward(
        ctx: Any, grad_means: Tensor | None, grad_cross_entropy: Tensor | None
    ) -> tuple[Tensor | None, None, None, None, None, None]:
        probabilities, labels, valid, share, valid_pixels = ctx.saved_tensors
        if grad_means is None:
            grad = torch.zeros_like(probabilities)
        else:
            if share is not None:
                grad_means = grad_means / share.clamp_min(1e-12).to(grad_means.dtype)
            grad = _spread_over_cells(grad_means, probabilities, ctx.stride)
            # Softmax backward in place: p * (g - <g, p>) (p is 0 at ignored pixels: so is this).
            inner = (grad * probabilities).sum(dim=1, keepdim=True)
            grad.sub_(inner).mul_(probabilities)
        if ctx.with_ce and grad_cross_entropy is not None:
            # d CE / d x = (p - onehot(y)) / valid pixels, at valid pixels only.
            scale = (grad_cross_entropy / valid_pixels).to(grad.dtype)
            grad.addcmul_(probabilities, scale)
            at_label = -scale.expand(labels.shape)
            if valid is not None:
                at_label = at_label.masked_fill(~valid, 0.0)
            grad.scatter_add_(1, labels, at_label)
        return grad, None, None, None, None, None


def _cell_means(maps: Tensor, stride: int) -> Tensor:
    """``[B, C, H, W]`` NCHW -> ``[B, C, h, w]`` means over ``stride x stride`` cells (ceil mode).

    When the cells tile the map, as sums of strided slices: on a CPU avg_pool2d over NCHW maps is
    about 6x slower than this (and 1.6x slower over channels-last maps).
    """
    height, width = maps.shape[-2:]
    if height % stride or width % stride:
        return F.avg_pool2d(maps, stride, ceil_mode=True)
    rows = maps[..., 0::stride].clone()
    for offset in range(1, stride):
        rows.add_(maps[..., offset::stride])
    cells = rows[:, :, 0::stride].clone()
    for offset in range(1, stride):
        cells.add_(rows[:, :, offset::stride])
    return cells.div_(stride * stride)


def _spread_over_cells(grad_means: Tensor, maps: Tensor, stride: int) -> Tensor:
    """The backward of :func:`_cell_means`: ``[B, C, h, w]`` -> ``[B, C, H, W]`` (a fresh NCHW buffer),
    each pixel's share ``1 / pixels in its cell`` of its cell's gradient."""
    height, width = maps.shape[-2:]
    if height % stride or width % stride:
        spread: Tensor = torch.ops.aten.avg_pool2d_backward(
            grad_means.contiguous(), maps, [stride, stride], [stride, stride], [0, 0], True, True, None
        )
        return spread
    per_pixel = (grad_means / (stride * stride)).contiguous()
    return per_pixel.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3)
