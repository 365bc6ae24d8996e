"""Metrics against the brute-force NumPy/SciPy reference in metrics_reference.py (loops over images and classes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from asml.metrics.functional import (
    boundary_iou,
    boundary_iou_dilation,
    boundary_iou_stats,
    boundary_prf,
    confusion_matrix,
    context_confusion,
    default_boundary_tolerance,
    iou_from_confusion,
    mean_class_accuracy,
    pixel_accuracy,
    trimap_confusion_matrices,
)
from metrics_reference import (
    IGNORE,
    ref_biou,
    ref_confusion,
    ref_context,
    ref_prf,
    ref_trimap,
)

# ---------------------------------------------------------------- test data


def blob_maps(seed: int, batch: int, size: tuple[int, int], classes: int, ignore_band: bool) -> tuple[np.ndarray, ...]:
    """Targets of a few rectangles and discs; predictions = targets shifted and partly relabelled."""
    rng = np.random.default_rng(seed)
    height, width = size
    target = np.zeros((batch, height, width), dtype=np.int64)
    yy, xx = np.mgrid[:height, :width]
    for b in range(batch):
        for _ in range(rng.integers(1, 5)):
            c = rng.integers(1, classes)
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, max(3, height / 3))
            target[b][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = c
    preds = np.roll(target, shift=(rng.integers(-2, 3), rng.integers(-2, 3)), axis=(1, 2)).copy()
    flip = rng.random(preds.shape) < 0.03
    preds[flip] = rng.integers(0, classes, int(flip.sum()))
    if ignore_band:
        # VOC-style void band along some object boundaries.
        inner = ndimage.binary_erosion(target > 0)
        band = (target > 0) & ~inner & (rng.random(target.shape) < 0.7)
        target[band] = IGNORE
    return preds, target


def to_torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays]


CASES = [(0, (20, 24), 4, False), (1, (31, 17), 3, True), (2, (16, 16), 2, True), (3, (40, 33), 6, True)]

# ---------------------------------------------------------------- tests


@pytest.mark.parametrize(("seed", "size", "classes", "ignore_band"), CASES)
def test_confusion_matrix_and_region_scores(seed: int, size: tuple[int, int], classes: int, ignore_band: bool) -> None:
    preds, target = blob_maps(seed, 3, size, classes, ignore_band)
    matrix = confusion_matrix(*to_torch(preds, target), classes)
    expected = ref_confusion(preds, target, classes)
    np.testing.assert_array_equal(matrix.numpy(), expected)
    tp = np.diag(expected).astype(float)
    denominator = expected.sum(0) + expected.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denominator > 0, tp / denominator, np.nan)
        class_accuracy = np.where(expected.sum(1) > 0, tp / expected.sum(1), np.nan)
    np.testing.assert_allclose(iou_from_confusion(matrix).numpy(), iou, atol=1e-12)
    assert float(pixel_accuracy(matrix)) == pytest.approx(tp.sum() / expected.sum(), abs=1e-12)
    assert float(mean_class_accuracy(matrix)) == pytest.approx(np.nanmean(class_accuracy), abs=1e-12)


@pytest.mark.parametrize(("seed", "size", "classes", "ignore_band"), CASES)
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 1.5, 2.9, 4.0])
def test_boundary_prf_matches_the_distance_transform_reference(
    seed: int, size: tuple[int, int], classes: int, ignore_band: bool, tolerance: float
) -> None:
    preds, target = blob_maps(seed, 3, size, classes, ignore_band)
    got = boundary_prf(*to_torch(preds, target), classes, tolerance)
    for ours, reference in zip(got, ref_prf(preds, target, classes, tolerance), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6)


@given(
    seed=st.integers(0, 2**31),
    height=st.integers(1, 14),
    width=st.integers(1, 14),
    classes=st.integers(1, 4),
    tolerance=st.floats(0, 5),
    ignore_fraction=st.floats(0, 0.5),
)
@settings(max_examples=60, deadline=None)
def test_boundary_scores_on_random_maps(
    seed: int, height: int, width: int, classes: int, tolerance: float, ignore_fraction: float
) -> None:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, (2, height, width))
    target[rng.random(target.shape) < ignore_fraction] = IGNORE
    preds = rng.integers(0, classes, (2, height, width))
    got = boundary_prf(*to_torch(preds, target), classes, tolerance)
    for ours, reference in zip(got, ref_prf(preds, target, classes, tolerance), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6)
    inter, union = boundary_iou_stats(*to_torch(preds, target), classes, dilation_ratio=0.1)
    ref_inter, ref_union = ref_biou(preds, target, classes, 0.1)
    np.testing.assert_array_equal(inter.numpy(), ref_inter)
    np.testing.assert_array_equal(union.numpy(), ref_union)
    np.testing.assert_array_equal(
        trimap_confusion_matrices(*to_torch(preds, target), classes, [0.5, 1.0, 2.5]).numpy(),
        ref_trimap(preds, target, classes, [0.5, 1.0, 2.5]),
    )
    np.testing.assert_array_equal(
        context_confusion(*to_torch(preds, target), classes).numpy(), ref_context(preds, target)
    )


def test_boundary_prf_edge_cases_by_hand() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    # Perfect prediction: P = R = F = 1 for both classes (the image border is not a boundary).
    p, r, f = boundary_prf(target.clone(), target, 3, 1.0)
    assert f[0, :2].tolist() == [1.0, 1.0] and math.isnan(f[0, 2])
    # Class 2 predicted but absent from the target: P = 0, R = NaN, F = 0.
    preds = target.clone()
    preds[0, 0:2, 0:2] = 2
    p, r, f = boundary_prf(preds, target, 3, 0.0)
    assert p[0, 2] == 0 and math.isnan(r[0, 2]) and f[0, 2] == 0
    # Class 1 never predicted: P = NaN, R = 0, F = 0.
    p, r, f = boundary_prf(torch.zeros_like(target), target, 3, 5.0)
    assert math.isnan(p[0, 1]) and r[0, 1] == 0 and f[0, 1] == 0
    # A mask filling the image has no boundary at all: both sets empty -> NaN.
    p, r, f = boundary_prf(torch.zeros_like(target), torch.zeros_like(target), 2, 1.0)
    assert math.isnan(f[0, 0])
    # A void band around the object: a predicted edge anywhere inside it matches the band's edge.
    voc = target.clone()
    voc[0, 1, 1:7] = voc[0, 6, 1:7] = voc[0, 1:7, 1] = voc[0, 1:7, 6] = IGNORE
    grown = torch.zeros_like(target)
    grown[0, 1:7, 1:7] = 1  # the prediction's edge lies in the void band
    _, _, f = boundary_prf(grown, voc, 2, 0.0)
    assert f[0, 1] == 1.0


def test_boundary_iou_dilation_rounds_half_to_even_and_is_at_least_one() -> None:
    # 0.02 * hypot(375, 500) = 12.5 -> 12 (half to even); tiny images still get d = 1.
    assert boundary_iou_dilation(375, 500, 0.02) == 12
    assert boundary_iou_dilation(5, 5, 0.02) == 1
    assert default_boundary_tolerance(300, 400) == pytest.approx(3.75)


@pytest.mark.parametrize(("seed", "size", "classes", "ignore_band"), CASES)
def test_boundary_iou_trimap_and_context_match_the_reference(
    seed: int, size: tuple[int, int], classes: int, ignore_band: bool
) -> None:
    preds, target = blob_maps(seed, 3, size, classes, ignore_band)
    inter, union = boundary_iou_stats(*to_torch(preds, target), classes, dilation_ratio=0.06)
    ref_inter, ref_union = ref_biou(preds, target, classes, 0.06)
    np.testing.assert_array_equal(inter.numpy(), ref_inter)
    np.testing.assert_array_equal(union.numpy(), ref_union)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(
            boundary_iou(inter, union).numpy(), ref_inter / np.where(ref_union > 0, ref_union, np.nan)
        )
    widths = [1.0, 2.0, 3.5, 8.0]
    np.testing.assert_array_equal(
        trimap_confusion_matrices(*to_torch(preds, target), classes, widths).numpy(),
        ref_trimap(preds, target, classes, widths),
    )
    np.testing.assert_array_equal(
        context_confusion(*to_torch(preds, target), classes).numpy(), ref_context(preds, target)
    )


def test_perfect_predictions_score_one_everywhere() -> None:
    _, target = blob_maps(5, 2, (30, 30), 4, ignore_band=True)
    preds = np.where(target == IGNORE, 0, target)
    _, _, f = boundary_prf(*to_torch(preds, target), 4, 0.0)
    assert np.all(np.isnan(f.numpy()) | (f.numpy() == 1.0))
    inter, union = boundary_iou_stats(*to_torch(preds, target), 4)
    assert torch.equal(inter, union)
    assert context_confusion(*to_torch(preds, target), 4).tolist() == [0, 0, 0]


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"both be \[B, H, W\] label maps, got \[2, 4, 4\] and \[2, 4, 5\]"):
        confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="integer class indices"):
        boundary_prf(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), 2, 1.0)
    with pytest.raises(ValueError, match=r"preds holds labels outside \[0, 2\)"):
        confusion_matrix(torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        boundary_prf(torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 4, 4, dtype=torch.long), 2, -1.0)
