"""Metrics against the brute-force NumPy/SciPy reference in metrics_reference.py (loops over images and classes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from asml.metrics.functional import (
    boundary_iou,
    boundary_iou_dilation,
    boundary_iou_stats,
    boundary_prf,
    boundary_scores,
    confusion_matrix,
    context_confusion,
    context_confusion_pairs,
    default_boundary_tolerance,
    iou_from_confusion,
    mean_class_accuracy,
    pixel_accuracy,
    trimap_confusion_matrices,
)
from asml.metrics.morphology import FULL_SET, or_disc, or_square
from metrics_reference import (
    IGNORE,
    ref_biou,
    ref_confusion,
    ref_context,
    ref_context_pairs,
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
# A tolerance a rounding error short of 2 px still matches at distance 2 (the metric's slack).
@example(seed=1, height=1, width=3, classes=2, tolerance=1.9999999999999991, ignore_fraction=0.5)
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
    np.testing.assert_array_equal(
        context_confusion_pairs(*to_torch(preds, target), classes).numpy(), ref_context_pairs(preds, target, classes)
    )


def test_context_pairs_by_hand() -> None:
    # Image 0 holds classes 0 and 1; image 1 holds 0 and 2 (and one ignored pixel).
    target = torch.tensor([[[0, 0, 1, 1]], [[0, 2, 2, 255]]])
    preds = torch.tensor([[[1, 2, 1, 0]], [[0, 1, 0, 1]]])
    pairs = context_confusion_pairs(preds, target, 3)
    co_occurring = {(0, 1): 1, (1, 0): 1, (2, 0): 1}  # 0->1 and 1->0 in image 0, 2->0 in image 1
    absent = {(0, 2): 1, (2, 1): 1}  # 0->2 in image 0, 2->1 in image 1; the ignored pixel counts nowhere
    for kind, expected in enumerate((co_occurring, absent)):
        assert {(t, p): int(n) for (t, p), n in np.ndenumerate(pairs[kind].numpy()) if n} == expected
    assert context_confusion(preds, target, 3).tolist() == [5, 3, 2]


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


# ---------------------------------------------------------------- the class-set implementation
# boundary_prf / boundary_iou_stats work on sets of the classes present in each image, packed as
# bits (asml.metrics.morphology): one byte for up to 8 labels per image (the ignored label counts),
# more words beyond; uint8 labels below 255 classes, int32 above; int16 counting keys while
# 8 * B * (C + 1) <= 2^15, int32 above. The cases below reach each of these and the clipping of
# discs and squares larger than the image, against the brute-force reference.


def scene(rng: np.random.Generator, height: int, width: int, classes: int, labels_used: int) -> np.ndarray:
    """A label map of rectangles, 1-pixel lines and single pixels (often touching the border) on a
    background, drawing from ``labels_used`` of the classes (spread over [0, classes))."""
    palette = rng.choice(classes, size=min(labels_used, classes), replace=False)
    out = np.full((height, width), palette[0], dtype=np.int64)
    for _ in range(rng.integers(0, 2 * len(palette) + 2)):
        label = rng.choice(palette)
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        kind = rng.integers(0, 4)
        if kind == 0:  # rectangle, possibly cut by the border
            out[y0 : y0 + rng.integers(1, height + 1), x0 : x0 + rng.integers(1, width + 1)] = label
        elif kind == 1:  # horizontal 1-pixel line
            out[y0, x0 : x0 + rng.integers(1, width + 1)] = label
        elif kind == 2:  # vertical 1-pixel line
            out[y0 : y0 + rng.integers(1, height + 1), x0] = label
        else:  # diagonal 1-pixel line
            for step in range(rng.integers(1, max(height, width) + 1)):
                if y0 + step < height and x0 + step < width:
                    out[y0 + step, x0 + step] = label
    return out


def scene_batch(
    seed: int, batch: int, size: tuple[int, int], classes: int, labels_used: int, ignore: str
) -> tuple[np.ndarray, np.ndarray]:
    """Targets from ``scene``; predictions shifted, partly redrawn and relabelled. ``ignore``:
    "none", "some" (random pixels and a band), or "image" (the first image entirely ignored)."""
    rng = np.random.default_rng(seed)
    height, width = size
    target = np.stack([scene(rng, height, width, classes, labels_used) for _ in range(batch)])
    preds = np.roll(target, tuple(rng.integers(-2, 3, 2)), axis=(1, 2)).copy()
    for b in range(batch):
        if rng.random() < 0.5:
            preds[b] = np.where(
                rng.random((height, width)) < 0.5, scene(rng, height, width, classes, labels_used), preds[b]
            )
        if rng.random() < 0.3:  # a class of the target never predicted, or a new one predicted
            preds[b][preds[b] == rng.choice(target[b].ravel())] = rng.integers(0, classes)
    if ignore == "some":
        target[rng.random(target.shape) < 0.15] = IGNORE
        target[:, :, rng.integers(0, width)] = IGNORE
    elif ignore == "image":
        target[0] = IGNORE
    return preds, target


def assert_matches_reference(
    preds: np.ndarray, target: np.ndarray, classes: int, tolerance: float, ratio: float
) -> None:
    got = boundary_prf(*to_torch(preds, target), classes, tolerance)
    for name, ours, reference in zip("PRF", got, ref_prf(preds, target, classes, tolerance), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-12, err_msg=name)
    inter, union = boundary_iou_stats(*to_torch(preds, target), classes, dilation_ratio=ratio)
    ref_inter, ref_union = ref_biou(preds, target, classes, ratio)
    np.testing.assert_array_equal(inter.numpy(), ref_inter)
    np.testing.assert_array_equal(union.numpy(), ref_union)
    (p, r, f), (i, u) = boundary_scores(*to_torch(preds, target), classes, tolerance, ratio)
    for a, b in zip((p, r, f, i, u), (*got, inter, union), strict=True):
        assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1))


@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    height=st.integers(1, 16),
    width=st.integers(1, 16),
    classes=st.integers(1, 24),
    labels_used=st.integers(1, 14),
    ignore=st.sampled_from(["none", "some", "image"]),
    tolerance=st.one_of(st.floats(0, 3), st.floats(3, 40), st.sampled_from([0.0, 1.0, 2**0.5, 2.0, 5**0.5])),
    ratio=st.one_of(st.floats(0, 0.3), st.floats(0.3, 3)),
)
@settings(max_examples=150, deadline=None)
def test_boundary_scores_on_scenes_with_many_labels_per_image(
    seed: int,
    batch: int,
    height: int,
    width: int,
    classes: int,
    labels_used: int,
    ignore: str,
    tolerance: float,
    ratio: float,
) -> None:
    # Up to 14 labels per image (two set words), lines and rectangles on the border, discs and
    # bands larger than the image.
    preds, target = scene_batch(seed, batch, (height, width), classes, labels_used, ignore)
    assert_matches_reference(preds, target, classes, tolerance, ratio)


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.0, 1.5, 3.0, 100.0])
@pytest.mark.parametrize("case", ["absent", "all_ignored", "border", "lines", "nine_labels"])
def test_boundary_scores_edge_cases_against_the_reference(case: str, tolerance: float) -> None:
    target = np.zeros((2, 12, 13), dtype=np.int64)
    target[:, 3:8, 2:9] = 1
    preds = target.copy()
    if case == "absent":  # class 2 only predicted, class 3 only in the target
        preds[0, 5:7, 4:6] = 2
        target[1, 0:2, 0:3] = 3
    elif case == "all_ignored":  # no valid pixel in image 0; image 1 partly ignored
        target[0] = IGNORE
        target[1, :, 10:] = IGNORE
        preds[1, 2:9, 1:10] = 1
    elif case == "border":  # objects cut by every side and corner of the image
        target[0, 0:4, :] = 2
        target[0, :, 11:] = 3
        target[1, 8:, 0:5] = 2
        preds[0, 0:5, 0:12] = 2
        preds[1, 9:, 0:6] = 2
    elif case == "lines":  # 1-pixel-wide structures: rows, columns, a diagonal, a lone pixel
        target[0, 10, :] = 2
        target[0, :, 11] = 3
        preds[0, 9, 1:] = 2
        for step in range(8):
            target[1, 2 + step, 1 + step] = 3
        preds[1, 0, 0] = 3
    else:  # nine labels in one image: the sets take two words
        for label in range(1, 9):
            target[0, label, 1 : 1 + label] = label
            preds[0, label - 1, 2 : 2 + label] = label
    assert_matches_reference(preds, target, 9, tolerance, 0.1)
    assert_matches_reference(preds, target, 9, tolerance, 2.0)


@pytest.mark.parametrize(("classes", "batch"), [(300, 2), (4100, 1)])
def test_boundary_scores_with_hundreds_of_classes(classes: int, batch: int) -> None:
    # 300 classes: int32 labels with int16 keys; 4100: int32 labels and keys (the copy that keeps
    # the labels intact matters there). Labels at the top of the range.
    rng = np.random.default_rng(classes)
    preds, target = scene_batch(classes, batch, (9, 10), classes, 5, "some")
    target = np.where(target == IGNORE, IGNORE, target % 7 + classes - 7)
    preds = np.where(rng.random(preds.shape) < 0.2, classes - 1, preds % 7 + classes - 7)
    # Class 255 is also the ignore index here: the reference would take the ignored pixels as its
    # target mask, so it is left out of the comparison.
    kept = np.arange(classes) != IGNORE
    got = boundary_prf(*to_torch(preds, target), classes, 1.5)
    for name, ours, reference in zip("PRF", got, ref_prf(preds, target, classes, 1.5), strict=True):
        np.testing.assert_allclose(ours.numpy()[:, kept], reference[:, kept], atol=1e-12, err_msg=name)
    assert torch.isnan(got[2][:, IGNORE]).all()
    inter, union = boundary_iou_stats(*to_torch(preds, target), classes, dilation_ratio=0.2)
    ref_inter, ref_union = ref_biou(preds, target, classes, 0.2)
    np.testing.assert_array_equal(inter.numpy()[kept], ref_inter[kept])
    np.testing.assert_array_equal(union.numpy()[kept], ref_union[kept])
    assert ref_union[kept].sum() > 0 and np.isfinite(got[2].numpy()[:, kept]).any()


def test_boundary_scores_on_an_empty_batch() -> None:
    empty = torch.zeros(0, 5, 6, dtype=torch.long)
    p, r, f = boundary_prf(empty, empty, 3, 1.0)
    assert p.shape == r.shape == f.shape == (0, 3)
    inter, union = boundary_iou_stats(empty, empty, 3)
    assert inter.tolist() == union.tolist() == [0, 0, 0]


@given(
    seed=st.integers(0, 2**31),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    words=st.integers(1, 2),
    radius=st.floats(0, 14),
    half=st.integers(0, 14),
)
@settings(max_examples=60, deadline=None)
def test_set_morphology_is_binary_dilation_of_each_bit(
    seed: int, height: int, width: int, words: int, radius: float, half: int
) -> None:
    # or_disc / or_square act on each bit plane as a binary dilation by the disc / the square
    # (beyond the image: empty for the disc, full for a FULL_SET fill).
    rng = np.random.default_rng(seed)
    sets = rng.integers(0, 256, (words, 2, height, width)).astype(np.uint8)
    sets[rng.random(sets.shape) < 0.7] = 0
    reach = math.floor(radius)
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    disc = dy**2 + dx**2 <= radius**2 + 1e-9
    square = np.ones((2 * half + 1, 2 * half + 1), dtype=bool)
    near = or_disc(torch.from_numpy(sets), radius).numpy()
    full = or_square(torch.from_numpy(sets), half, FULL_SET).numpy()
    empty = or_square(torch.from_numpy(sets), half, 0).numpy()
    for index in np.ndindex(sets.shape[:2]):
        for bit in range(8):
            plane = (sets[index] >> bit) & 1 == 1
            np.testing.assert_array_equal((near[index] >> bit) & 1, ndimage.binary_dilation(plane, disc))
            np.testing.assert_array_equal(
                (full[index] >> bit) & 1, ndimage.binary_dilation(plane, square, border_value=1)
            )
            np.testing.assert_array_equal((empty[index] >> bit) & 1, ndimage.binary_dilation(plane, square))
