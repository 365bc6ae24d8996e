"""``analyzer_stride``: the analyzer reads the label maps averaged over s x s cells of valid pixels.

References are independent of the lever: a brute-force loop for the cell averages, and the
full-resolution module (stride 1) on maps subsampled by hand, which the coarse path must equal
wherever the maps are constant on every cell.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from asml import AdversarialStructureMatching
from asml.core.label_maps import CoarseGrid
from asml.core.losses import reconstruction_loss, soft_reconstruction_loss
from asml.data import random_blob_masks
from paired_training import paired_training_calls


def blocky(size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[2, C, size, size]`` and masks ``[2, size, size]`` constant on every 2x2 cell,
    the first cell row ignored; and their subsampled halves."""
    generator = torch.Generator().manual_seed(seed)
    coarse_masks = random_blob_masks(2, size // 2, num_classes=num_classes, seed=seed)
    coarse_masks[:, :1] = 255
    coarse_logits = torch.randn(2, num_classes, size // 2, size // 2, generator=generator)
    return coarse_logits, coarse_masks


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


@pytest.mark.parametrize("hinge_pixels", ["all", "errors"])
def test_stride_two_on_cell_constant_maps_equals_the_full_module_on_the_subsampled_maps(hinge_pixels: str) -> None:
    """Loss, logits' gradient (spread over each cell's four pixels) and the analyzer after its
    update, over three training calls: the coarse path is the full path on a quarter of the pixels."""
    torch.manual_seed(0)
    reference = AdversarialStructureMatching(
        4, ce_weight=1.0, hinge_pixels=hinge_pixels, matched_layers=[f"conv{i}" for i in range(1, 10)]
    )
    strided = copy.deepcopy(reference)
    strided.analyzer_stride = 2
    for call in range(3):
        coarse_logits, coarse_masks = blocky(32, 4, seed=call)
        fine_logits = upsample2(coarse_logits).requires_grad_(True)
        coarse_logits.requires_grad_(True)
        loss = strided(fine_logits, upsample2(coarse_masks))
        expected = reference(coarse_logits, coarse_masks)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        loss.backward()
        expected.backward()
        assert fine_logits.grad is not None and coarse_logits.grad is not None
        torch.testing.assert_close(fine_logits.grad, upsample2(coarse_logits.grad) / 4, rtol=1e-4, atol=1e-8)
        for p, q in zip(strided.analyzer.parameters(), reference.analyzer.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
        for name in ("reconstruction", "adversarial", "hinge_errors", "error_share"):
            torch.testing.assert_close(strided.latest[name], reference.latest[name], rtol=1e-4, atol=1e-6)


def brute_force_cell_means(maps: torch.Tensor, ignored: torch.Tensor, stride: int) -> torch.Tensor:
    batch, channels, height, width = maps.shape
    out = torch.zeros(batch, channels, math.ceil(height / stride), math.ceil(width / stride), dtype=torch.float64)
    for b in range(batch):
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                rows, cols = slice(i * stride, (i + 1) * stride), slice(j * stride, (j + 1) * stride)
                keep = ~ignored[b, rows, cols]
                if keep.any():
                    out[b, :, i, j] = maps[b, :, rows, cols][:, keep].double().mean(dim=1)
    return out


@pytest.mark.parametrize(("size", "stride"), [(17, 2), (16, 4), (10, 3)])
def test_cell_means_count_only_valid_pixels_and_cells_without_one_are_ignored(size: int, stride: int) -> None:
    generator = torch.Generator().manual_seed(size)
    maps = torch.rand(2, 3, size, size, generator=generator)
    ignored = torch.rand(2, size, size, generator=generator) < 0.3
    ignored[0, :stride, :stride] = True  # one whole cell ignored
    maps[ignored.unsqueeze(1).expand_as(maps)] = float("nan")  # must not reach any cell
    grid = CoarseGrid.for_mask(ignored, stride)
    expected = brute_force_cell_means(maps, ignored, stride)
    torch.testing.assert_close(grid.average(maps).double(), expected, rtol=1e-6, atol=1e-7)
    assert grid.ignored is not None
    expected_ignored = torch.stack(
        [brute_force_cell_means((~ignored[b : b + 1, None]).double(), ignored[b : b + 1], stride)[0, 0] == 0
         for b in range(2)]
    )  # fmt: skip
    assert torch.equal(grid.ignored, expected_ignored)
    assert bool(grid.ignored[0, 0, 0])
    wrong = torch.zeros(2, size, size, dtype=torch.bool)
    wrong[1, size - 1, 0] = True
    marked = grid.any(wrong)
    assert marked.sum() == 1 and bool(marked[1, -1, 0])


def test_without_an_ignore_mask_partial_edge_cells_average_their_own_pixels() -> None:
    maps = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(1, 2, 5, 5)
    grid = CoarseGrid.for_mask(None, 2)
    expected = brute_force_cell_means(maps, torch.zeros(1, 5, 5, dtype=torch.bool), 2)
    torch.testing.assert_close(grid.average(maps).double(), expected)
    assert grid.ignored is None


def test_ignored_pixels_change_no_loss_and_get_zero_gradient_at_stride_two() -> None:
    """An odd size and an ignored band that cuts cells in half: NaN logits there change nothing."""
    masks = random_blob_masks(2, 33, num_classes=3, seed=5)
    masks[:, :3] = 255
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 33, 33, generator=generator)
    poisoned = logits.clone()
    poisoned[:, :, :3] = float("nan")
    torch.manual_seed(2)
    first = AdversarialStructureMatching(3, ce_weight=1.0, analyzer_stride=2, matched_layers=["conv1", "conv5"])
    second = copy.deepcopy(first)
    clean_logits, nan_logits = logits.requires_grad_(True), poisoned.requires_grad_(True)
    clean, dirty = first(clean_logits, masks), second(nan_logits, masks)
    assert torch.isfinite(clean)
    assert torch.equal(clean, dirty)
    dirty.backward()
    assert nan_logits.grad is not None
    assert torch.all(nan_logits.grad[:, :, :3] == 0)
    assert torch.isfinite(nan_logits.grad).all()


def test_a_perfect_prediction_matches_at_stride_two() -> None:
    masks = random_blob_masks(2, 32, num_classes=3, seed=3)
    logits = 40.0 * torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    asm = AdversarialStructureMatching(3, analyzer_stride=2, matched_layers=[f"conv{i}" for i in range(1, 10)])
    asm.eval()
    assert float(asm(logits, masks)) < 1e-6
    maps = asm.loss_maps(logits, masks)
    assert maps["conv1"].shape == (2, 32, 32)
    assert float(maps["conv9"].max()) < 1e-6


def test_soft_reconstruction_of_one_hot_shares_is_the_hard_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 8, 8, generator=generator)
    target = torch.randint(0, 5, (2, 8, 8), generator=generator)
    target[0, 0] = 255
    ignored = target == 255
    shares = torch.nn.functional.one_hot(target.masked_fill(ignored, 0), 5).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(
        soft_reconstruction_loss(logits, shares, ignored), reconstruction_loss(logits, target, 255)
    )


@pytest.mark.parametrize("stride", [0, -2, 1.5, True, "2"])
def test_a_bad_stride_is_named_in_the_error(stride: object) -> None:
    with pytest.raises(ValueError, match="analyzer_stride"):
        AdversarialStructureMatching(3, analyzer_stride=stride)  # type: ignore[arg-type]


def full_size_one_hot(labels: torch.Tensor, num_classes: int, ignored: torch.Tensor | None) -> torch.Tensor:
    """The one-hot map at full size, zero at ignored pixels, built with ``F.one_hot``."""
    safe = labels if ignored is None else labels.masked_fill(ignored, 0)
    maps = torch.nn.functional.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return maps if ignored is None else maps * (~ignored).unsqueeze(1)


@pytest.mark.parametrize(("size", "stride"), [(16, 2), (17, 2), (15, 3), (18, 4)])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_one_hot_shares_equal_the_cell_means_of_the_full_size_one_hot_map_bit_for_bit(
    size: int, stride: int, with_ignored: bool
) -> None:
    generator = torch.Generator().manual_seed(size * stride)
    labels = torch.randint(0, 5, (2, size, size + 1), generator=generator)
    ignored = torch.rand(2, size, size + 1, generator=generator) < 0.3 if with_ignored else None
    if ignored is not None:
        ignored[1, :stride, :stride] = True  # a whole cell without a valid pixel
        labels[ignored] = 255
    grid = CoarseGrid.for_mask(ignored, stride)
    shares = grid.one_hot_shares(labels, 5, ignored)
    full = full_size_one_hot(labels, 5, ignored)
    assert torch.equal(shares, grid.average(full))  # the path it replaces, bit for bit
    assert shares.is_contiguous(memory_format=torch.channels_last)
    no_mask = torch.zeros_like(labels, dtype=torch.bool) if ignored is None else ignored
    torch.testing.assert_close(shares.double(), brute_force_cell_means(full, no_mask, stride), rtol=0, atol=1e-7)


@pytest.mark.parametrize("with_ignored", [False, True])
def test_counting_the_shares_per_cell_trains_exactly_as_averaging_the_full_size_maps(with_ignored: bool) -> None:
    """Four training calls (two analyzer updates) of the default PSPNet setting: loss, logits'
    gradient and analyzer equal to the old path (full-size one-hot maps, then their cell means)."""

    def old_path(self, labels, ignored, grid, dtype):  # type: ignore[no-untyped-def]
        maps = full_size_one_hot(labels, self.num_classes, ignored).to(dtype)
        return (maps, ignored) if grid is None else (grid.average(maps), grid.ignored)

    torch.manual_seed(0)
    counted = AdversarialStructureMatching(4, ce_weight=1.0, analyzer_every=2, analyzer_stride=2, total_steps=10)
    averaged = copy.deepcopy(counted)
    averaged._one_hot_at_analyzer_size = old_path.__get__(averaged)  # type: ignore[method-assign]
    for loss, expected, grad, expected_grad in paired_training_calls(counted, averaged, 33, with_ignored):
        assert torch.equal(loss, expected)
        assert torch.equal(grad, expected_grad)
        for p, q in zip(counted.analyzer.parameters(), averaged.analyzer.parameters(), strict=True):
            assert torch.equal(p, q)
