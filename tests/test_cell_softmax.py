"""``softmax_cell_means``: the cell means of the softmax and the CE term in one fused pass.

The reference is written op by op here: ``torch.softmax``, a brute-force loop over each cell's
valid pixels, and ``F.cross_entropy`` averaged over valid pixels; gradients come from autograd
through it. The fused pass rounds in a different order, so float32 agrees to rounding and float64
to 1e-12; gradcheck checks its hand-written backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from asml import AdversarialStructureMatching
from asml.core.cell_softmax import softmax_cell_means
from asml.core.label_maps import CoarseGrid
from asml.data import random_blob_masks
from paired_training import paired_training_calls

SIZES_AND_STRIDES = [(16, 16, 2), (17, 15, 2), (15, 18, 3), (16, 16, 4), (12, 12, 3)]


def reference_cell_means(probabilities: torch.Tensor, valid: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Mean over each cell's valid pixels by explicit loops; 0 for a cell without one."""
    batch, classes, height, width = probabilities.shape
    cells_high, cells_wide = -(-height // stride), -(-width // stride)
    out = torch.zeros(batch, classes, cells_high, cells_wide, dtype=probabilities.dtype)
    for row in range(cells_high):
        for column in range(cells_wide):
            window = (
                slice(None),
                slice(None),
                slice(row * stride, (row + 1) * stride),
                slice(column * stride, (column + 1) * stride),
            )
            cell = probabilities[window]
            keep = torch.ones_like(cell[:, :1]) if valid is None else valid[window].to(cell.dtype)
            count = keep.sum(dim=(1, 2, 3))
            total = (cell * keep).sum(dim=(2, 3))
            out[:, :, row, column] = torch.where(count[:, None] > 0, total / count.clamp_min(1)[:, None], 0.0)
    return out


def reference_cross_entropy(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    per_pixel = F.cross_entropy(logits, target.clamp(0, logits.shape[1] - 1), reduction="none")
    if valid is None:
        return per_pixel.mean()
    keep = valid[:, 0]
    return per_pixel[keep].sum() / keep.sum().clamp_min(1)


def case(height: int, width: int, stride: int, with_ignored: bool, dtype: torch.dtype, seed: int = 0):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 5, height, width, generator=generator, dtype=dtype)
    target = torch.randint(0, 5, (2, height, width), generator=generator)
    ignored = None
    if with_ignored:
        ignored = torch.rand(2, height, width, generator=generator) < 0.3
        ignored[0, :stride, :stride] = True  # one cell without a valid pixel
        target = target.masked_fill(ignored, 255)
        logits = logits.masked_fill(ignored[:, None], 0.0)  # as the module does before the call
    grid = CoarseGrid.for_mask(ignored, stride, dtype)
    return logits, target, grid


@pytest.mark.parametrize(("height", "width", "stride"), SIZES_AND_STRIDES)
@pytest.mark.parametrize("with_ignored", [False, True])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_values_and_gradient_equal_softmax_cell_means_and_cross_entropy_op_by_op(
    height: int, width: int, stride: int, with_ignored: bool, dtype: torch.dtype, tolerance: float
) -> None:
    logits, target, grid = case(height, width, stride, with_ignored, dtype)
    weights = torch.randn(
        2, 5, -(-height // stride), -(-width // stride), generator=torch.Generator().manual_seed(1), dtype=dtype
    )

    fused_input = logits.clone().requires_grad_(True)
    means, cross_entropy = softmax_cell_means(fused_input, target, grid.valid, grid.share, stride, with_ce=True)
    assert cross_entropy is not None
    ((means * weights).sum() + 2 * cross_entropy).backward()

    reference_input = logits.clone().requires_grad_(True)
    expected_means = reference_cell_means(torch.softmax(reference_input, dim=1), grid.valid, stride)
    expected_ce = reference_cross_entropy(reference_input, target, grid.valid)
    ((expected_means * weights).sum() + 2 * expected_ce).backward()

    assert means.is_contiguous(memory_format=torch.channels_last) and means.dtype == dtype
    torch.testing.assert_close(means, expected_means, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(cross_entropy, expected_ce, rtol=tolerance, atol=tolerance)
    assert fused_input.grad is not None and reference_input.grad is not None
    torch.testing.assert_close(fused_input.grad, reference_input.grad, rtol=tolerance, atol=tolerance)
    if grid.valid is not None:
        assert torch.all(fused_input.grad.masked_select(~grid.valid) == 0)


@pytest.mark.parametrize("stride", [2, 3])
def test_the_hand_written_backward_passes_gradcheck(stride: int) -> None:
    logits, target, grid = case(7, 8, stride, with_ignored=True, dtype=torch.float64)
    for with_ce in (True, False):

        def fused(x: torch.Tensor, with_ce: bool = with_ce) -> tuple[torch.Tensor, ...]:
            means, cross_entropy = softmax_cell_means(x, target, grid.valid, grid.share, stride, with_ce)
            return (means,) if cross_entropy is None else (means, cross_entropy)

        assert torch.autograd.gradcheck(fused, (logits.clone().requires_grad_(True),))


def test_without_the_ce_term_none_is_returned_and_only_the_means_carry_gradient() -> None:
    logits, target, grid = case(16, 16, 2, with_ignored=False, dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    means, cross_entropy = softmax_cell_means(x, target, grid.valid, grid.share, 2, with_ce=False)
    assert cross_entropy is None
    means[:, 1].sum().backward()
    y = logits.clone().requires_grad_(True)
    reference_cell_means(torch.softmax(y, 1), None, 2)[:, 1].sum().backward()
    assert x.grad is not None and y.grad is not None
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-12)


def test_every_pixel_ignored_gives_zero_means_zero_ce_and_zero_gradient() -> None:
    logits = torch.randn(1, 3, 8, 8).requires_grad_(True)
    ignored = torch.ones(1, 8, 8, dtype=torch.bool)
    grid = CoarseGrid.for_mask(ignored, 2)
    means, cross_entropy = softmax_cell_means(logits, torch.full((1, 8, 8), 255), grid.valid, grid.share, 2, True)
    assert cross_entropy is not None
    assert torch.equal(means, torch.zeros_like(means)) and float(cross_entropy) == 0.0
    (means.sum() + cross_entropy).backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_a_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[2, 3, 8, 8\].*\[2, 7, 8\]"):
        softmax_cell_means(torch.randn(2, 3, 8, 8), torch.zeros(2, 7, 8, dtype=torch.long), None, None, 2, True)


@pytest.mark.parametrize("with_ignored", [False, True])
def test_the_module_on_a_coarse_grid_trains_as_the_op_by_op_path_to_rounding(with_ignored: bool) -> None:
    """Four training calls (two analyzer updates) of the default PSPNet setting against
    ``fused_softmax=False`` (softmax, cell means, CE of the logits, op by op): loss, CE term,
    gradient and analyzer agree to float32 rounding. The hard negative (argmax of the logits
    against argmax of the probabilities) is the same on this data."""
    torch.manual_seed(0)
    fused = AdversarialStructureMatching(4, ce_weight=1.0, analyzer_every=2, analyzer_stride=2, total_steps=10)
    reference = copy.deepcopy(fused)
    reference.fused_softmax = False
    for loss, expected, grad, expected_grad in paired_training_calls(fused, reference, 34, with_ignored):
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.latest["ce"], reference.latest["ce"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-8)
        for p, q in zip(fused.analyzer.parameters(), reference.analyzer.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_the_op_by_op_path_is_the_cross_entropy_of_the_logits_bit_for_bit() -> None:
    """``fused_softmax=False`` keeps the CE term of the path before the fusion: F.cross_entropy."""
    asm = AdversarialStructureMatching(3, ce_weight=1.0, analyzer_stride=2, fused_softmax=False)
    logits, masks = torch.randn(2, 3, 16, 16), random_blob_masks(2, 16, num_classes=3, seed=0)
    asm(logits, masks)
    assert torch.equal(asm.latest["ce"], F.cross_entropy(logits, masks, reduction="none").mean())


@pytest.mark.parametrize("value", [1, "yes", None])
def test_a_non_boolean_fused_softmax_is_named_in_the_error(value: object) -> None:
    with pytest.raises(ValueError, match="fused_softmax must be true or false"):
        AdversarialStructureMatching(3, fused_softmax=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sigmoid", "bfloat16", "channels_last", "odd size"])
def test_the_module_agrees_with_the_op_by_op_path_on_every_kind_of_logits(kind: str) -> None:
    """1-channel sigmoid logits, bf16 logits (as under autocast), channels-last logits and a size the
    cells do not tile: one training call agrees with ``fused_softmax=False`` to rounding."""
    classes, size = (2, 24) if kind == "sigmoid" else (3, 25 if kind == "odd size" else 24)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1 if kind == "sigmoid" else classes, size, size, generator=generator)
    if kind == "bfloat16":
        logits = logits.bfloat16()
    if kind == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    masks = random_blob_masks(2, size, num_classes=classes, seed=3)
    masks[:, :2] = 255
    torch.manual_seed(0)
    fused = AdversarialStructureMatching(classes, ce_weight=1.0, analyzer_stride=2, total_steps=10)
    reference = copy.deepcopy(fused)
    reference.fused_softmax = False
    first, second = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss, expected = fused(first, masks), reference(second, masks)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    assert first.grad is not None and second.grad is not None
    assert first.grad.dtype == logits.dtype
    tolerance = 1e-2 if kind == "bfloat16" else 1e-6
    torch.testing.assert_close(first.grad.float(), second.grad.float(), rtol=tolerance, atol=tolerance)
    assert torch.all(first.grad.float()[:, :, :2] == 0)  # ignored rows: no gradient
