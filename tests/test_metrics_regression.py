"""NormalMetrics / DepthMetrics: numpy brute force, known values, invalid pixels, accumulation, reduction."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric

from asml.metrics.regression import (
    DepthMetrics,
    NormalMetrics,
    format_depth_table,
    format_normals_table,
    regression_to_json,
)

THRESHOLDS = (2.8125, 5.625, 11.25, 22.5, 30.0)
DELTAS = (1.25, 1.25**2, 1.25**3)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------- data


def normal_batch(rng: np.random.Generator, batch: int = 2, size: int = 16) -> Batch:
    """Unit target normals with invalid pixels (zero / NaN vectors, a False mask), noisy predictions.

    Predictions have random lengths, some are zero (90 degrees) or reversed (180 degrees), and the invalid
    pixels get NaN / inf predictions that must never be read.
    """
    target = rng.normal(size=(batch, 3, size, size))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    scale = rng.uniform(0.0, 1.5, size=(batch, 1, size, size))  # angles from ~0 to beyond 90 degrees
    preds = (target + scale * rng.normal(size=target.shape)) * rng.uniform(0.1, 5.0, size=(batch, 1, size, size))
    pixels = (batch, size, size)
    preds = np.where((rng.random(pixels) < 0.03)[:, None], 0.0, preds)
    preds = np.where((rng.random(pixels) < 0.03)[:, None], -2.0 * target, preds)
    zero_target = rng.random(pixels) < 0.1
    target[np.broadcast_to(zero_target[:, None], target.shape)] = 0.0
    nan_target = rng.random(pixels) < 0.03
    target[:, 0][nan_target] = np.nan  # one non-finite component suffices
    valid = rng.random(pixels) > 0.15
    invalid = zero_target | nan_target | ~valid
    garbage = np.where(rng.random(pixels) < 0.5, np.nan, np.inf)
    preds[:, 1][invalid] = garbage[invalid]
    return torch.from_numpy(preds).float(), torch.from_numpy(target).float(), torch.from_numpy(valid)


def depth_batch(rng: np.random.Generator, batch: int = 2, size: int = 16) -> Batch:
    """Depth targets in [0.5, 12] m with zero / negative / NaN / inf invalid pixels, log-normal predictions.

    Some predictions fall below 0 or above 10 m (clamped), invalid pixels get NaN / inf predictions.
    """
    shape = (batch, 1, size, size)
    target = rng.uniform(0.5, 12.0, size=shape)
    preds = target * np.exp(rng.normal(0.0, 0.3, size=shape))
    preds[rng.random(shape) < 0.05] = -1.0
    preds[rng.random(shape) < 0.05] = 30.0
    kind = rng.random(shape)
    target[kind < 0.05] = 0.0
    target[(kind >= 0.05) & (kind < 0.08)] = -2.0
    target[(kind >= 0.08) & (kind < 0.10)] = np.nan
    target[(kind >= 0.10) & (kind < 0.12)] = np.inf
    valid = rng.random((batch, size, size)) > 0.15
    invalid = ~(np.isfinite(target) & (target > 0)) | ~valid[:, None]
    preds[invalid & (rng.random(shape) < 0.5)] = np.nan
    return torch.from_numpy(preds).float(), torch.from_numpy(target).float(), torch.from_numpy(valid)


def batches(kind: str, count: int, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    make = normal_batch if kind == "normal" else depth_batch
    return [make(rng) for _ in range(count)]


# ---------------------------------------------------------------- numpy references


def reference_angles(data: list[Batch]) -> np.ndarray:
    """Degrees at every valid pixel, the release's way, in float64 numpy."""
    angles = []
    for preds, target, valid in data:
        p = preds.numpy().astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
        g = target.numpy().astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
        keep = np.isfinite(g).all(axis=1) & (g != 0).any(axis=1) & valid.numpy().reshape(-1)
        p, g = p[keep], g[keep]
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        angles.append(np.degrees(np.arccos(np.clip(np.sum(p * g, axis=1), -1.0, 1.0))))
    return np.concatenate(angles)


def reference_depth(data: list[Batch], min_depth: float, max_depth: float | None) -> dict[str, float]:
    """The release's depth scores over every valid pixel, in float64 numpy (delta counts unnormalised)."""
    preds, targets = [], []
    for pred, target, valid in data:
        p = pred.numpy().astype(np.float64).reshape(-1)
        g = target.numpy().astype(np.float64).reshape(-1)
        with np.errstate(invalid="ignore"):
            keep = np.isfinite(g) & (g > 0) & valid.numpy().reshape(-1)
            if max_depth is not None:
                keep &= g <= max_depth
        preds.append(np.clip(p[keep], min_depth, max_depth))
        targets.append(g[keep])
    p, g = np.concatenate(preds), np.concatenate(targets)
    ratio = np.maximum(p / g, g / p)
    out = {
        "pixels": float(g.size),
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
    }
    for k, limit in enumerate(DELTAS, start=1):
        out[f"count{k}"] = float(np.sum(ratio < limit))
    return out


def assert_same_states(a: Metric, b: Metric, float_rtol: float = 0.0) -> None:
    """Integer states bitwise equal; float64 sums equal up to ``float_rtol`` (0: bitwise)."""
    for name, value in a.metric_state.items():
        other = b.metric_state[name]
        assert isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor)
        if value.is_floating_point() and float_rtol > 0:
            torch.testing.assert_close(value, other, rtol=float_rtol, atol=0.0, msg=name)
        else:
            assert value.dtype == other.dtype and torch.equal(value, other), name


def rotated_normals(degrees: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit targets ``[2, 3, 16, 16]`` and predictions (random lengths) at exactly ``degrees`` from them.

    Both lie in a plane through the origin, the prediction rotated in it by +-``degrees``; a random
    rotation of space then moves the plane anywhere without changing the angles.
    """
    rng = np.random.default_rng(seed)
    shape = (2, 16, 16)
    phi = rng.uniform(0, 2 * np.pi, size=shape)
    turn = np.radians(degrees) * rng.choice([-1.0, 1.0], size=shape)
    zeros = np.zeros(shape)
    target = np.stack([np.cos(phi), np.sin(phi), zeros], axis=-1)
    preds = np.stack([np.cos(phi + turn), np.sin(phi + turn), zeros], axis=-1) * rng.uniform(0.2, 3.0, shape)[..., None]
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))

    def to_tensor(vectors: np.ndarray) -> torch.Tensor:  # [B, H, W, 3] -> rotated [B, 3, H, W]
        return torch.from_numpy((vectors @ rotation.T).transpose(0, 3, 1, 2).copy())

    return to_tensor(preds), to_tensor(target)


# ---------------------------------------------------------------- normals


@pytest.mark.parametrize("bin_width", [1e-3, 0.5])
def test_normals_equal_the_numpy_brute_force_over_all_valid_pixels(bin_width: float) -> None:
    data = batches("normal", 3, seed=0)
    metric = NormalMetrics(bin_width=bin_width)
    for preds, target, valid in data:
        metric.update(preds, target, valid)
    result = metric.compute()
    angles = reference_angles(data)
    assert 500 < angles.size < 3 * 2 * 16 * 16  # invalid pixels were dropped, most pixels kept
    assert angles.max() > 179.0 and np.any(np.isclose(angles, 90.0))  # reversed and zero predictions scored
    assert int(result["pixels"]) == angles.size
    assert float(result["mean_angle"]) == pytest.approx(np.mean(angles), rel=1e-9)
    for index, t in enumerate(THRESHOLDS):
        assert int(metric.within[index]) == int(np.sum(angles <= t)), t
        assert float(result[f"within_{t:g}"]) == pytest.approx(np.mean(angles <= t), rel=1e-12)
    # The documented bound: bin centres are within half a bin (rounding aside) of the angles they stand for.
    assert abs(float(result["median_angle"]) - np.median(angles)) <= bin_width / 2 + 1e-9
    assert int(metric.histogram.sum()) == angles.size
    torch.testing.assert_close(result["thresholds"], torch.tensor(THRESHOLDS, dtype=torch.float64))


@pytest.mark.parametrize(("angles", "median"), [((10.0, 20.0), 15.0), ((10.0, 20.0, 40.0), 20.0)])
def test_the_median_averages_the_two_middle_angles_like_np_median(angles: tuple[float, ...], median: float) -> None:
    radians = np.radians(angles)
    target = torch.tensor([1.0, 0.0, 0.0]).repeat(len(angles), 1)
    preds = torch.from_numpy(np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1))
    metric = NormalMetrics()
    metric.update(preds.T[None, :, None, :], target.T[None, :, None, :])  # [1, 3, 1, N]
    assert abs(float(metric.compute()["median_angle"]) - median) <= 1e-3
    assert median == np.median(angles)


def test_a_prediction_equal_to_the_target_scores_zero_degrees() -> None:
    preds, target = rotated_normals(0.0)
    metric = NormalMetrics()
    metric.update(preds, target)
    result = metric.compute()
    assert int(result["pixels"]) == 2 * 16 * 16
    assert float(result["mean_angle"]) < 1e-5  # arccos near 1 turns rounding into ~1e-6 degrees
    assert float(result["median_angle"]) <= 1e-3
    assert all(float(result[f"within_{t:g}"]) == 1.0 for t in THRESHOLDS)


def test_a_prediction_rotated_by_ten_degrees_scores_exactly_ten() -> None:
    preds, target = rotated_normals(10.0, seed=1)
    metric = NormalMetrics()
    metric.update(preds, target)
    result = metric.compute()
    assert float(result["mean_angle"]) == pytest.approx(10.0, abs=1e-6)
    assert abs(float(result["median_angle"]) - 10.0) <= 1e-3
    expected = {2.8125: 0.0, 5.625: 0.0, 11.25: 1.0, 22.5: 1.0, 30.0: 1.0}
    assert {t: float(result[f"within_{t:g}"]) for t in THRESHOLDS} == expected


def test_thresholds_count_angles_equal_to_them() -> None:
    # Along the axes the angles are exactly 0, 90 and 180 degrees; the release counts angle <= t.
    target = torch.tensor([[1.0, 0.0, 0.0]] * 4).T.reshape(1, 3, 1, 4)
    preds = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 4)
    metric = NormalMetrics(thresholds=(0.0, 90.0, 180.0))
    metric.update(preds, target)
    result = metric.compute()
    assert [float(result[key]) for key in ("within_0", "within_90", "within_180")] == [0.25, 0.75, 1.0]
    assert float(result["mean_angle"]) == 90.0 and float(result["median_angle"]) == pytest.approx(90.0, abs=1e-3)


def test_zero_predictions_score_ninety_degrees_and_targets_are_renormalised() -> None:
    preds, target = rotated_normals(10.0, seed=2)
    zero = NormalMetrics()
    zero.update(torch.zeros_like(preds), target)
    assert float(zero.compute()["mean_angle"]) == pytest.approx(90.0, abs=1e-12)
    unit, long = NormalMetrics(), NormalMetrics()
    unit.update(preds, target)
    long.update(preds, 3.0 * target)
    assert float(long.compute()["mean_angle"]) == pytest.approx(float(unit.compute()["mean_angle"]), rel=1e-12)


def test_normal_predictions_at_invalid_pixels_change_nothing() -> None:
    preds, target, valid = batches("normal", 1, seed=3)[0]
    invalid = ~valid | (target == 0).all(dim=1) | ~target.isfinite().all(dim=1)
    assert invalid.any()
    first, second = NormalMetrics(), NormalMetrics()
    first.update(preds, target, valid)
    other = preds.clone()
    noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(0))
    other = torch.where(invalid[:, None], noise, other)
    count = int(invalid.sum())
    other[:, 2][invalid] = torch.tensor([math.nan, math.inf, -math.inf]).repeat(count)[:count]
    second.update(other, target, valid)
    assert_same_states(first, second)


def test_a_non_finite_normal_prediction_at_a_valid_pixel_is_an_error() -> None:
    preds, target = rotated_normals(10.0)
    preds[0, 1, 3, 4] = math.nan
    with pytest.raises(ValueError, match="1 valid pixels have a non-finite predicted normal"):
        NormalMetrics().update(preds, target)


def test_normal_halves_accumulate_to_the_whole_batch() -> None:
    rng = np.random.default_rng(4)
    preds, target, valid = normal_batch(rng, batch=4)
    whole, halves = NormalMetrics(), NormalMetrics()
    whole.update(preds, target, valid)
    halves.update(preds[:2], target[:2], valid[:2])
    halves.update(preds[2:], target[2:], valid[2:])
    # Counts and histogram bitwise; the float64 angle sum up to the order of its additions.
    assert_same_states(whole, halves, float_rtol=1e-12)


def test_normal_shards_merged_equal_one_metric_over_everything() -> None:
    data = batches("normal", 4, seed=5)
    single, shards = NormalMetrics(), [NormalMetrics(), NormalMetrics()]
    for index, batch in enumerate(data):
        single.update(*batch)
        shards[index % 2].update(*batch)
    forward, backward = copy.deepcopy(shards[0]), copy.deepcopy(shards[1])
    forward.merge_state(shards[1])
    backward.merge_state(shards[0])
    assert_same_states(forward, backward)  # every process reduces to the same bits, whatever the order
    assert_same_states(forward, single, float_rtol=1e-12)
    for key, value in single.compute().items():
        torch.testing.assert_close(forward.compute()[key], value, rtol=1e-12, atol=0.0, msg=key)


def test_normals_with_no_valid_pixel_are_nan_and_serialise_to_strict_json() -> None:
    preds, target = rotated_normals(10.0)
    metric = NormalMetrics()
    metric.update(preds, target, torch.zeros(2, 16, 16, dtype=torch.bool))
    result = metric.compute()
    assert int(result["pixels"]) == 0
    assert all(math.isnan(float(result[key])) for key in result if key not in ("pixels", "thresholds"))
    loaded = json.loads(json.dumps(regression_to_json(result), allow_nan=False))
    assert loaded["mean_angle"] is None and loaded["within_30"] is None
    assert loaded["pixels"] == 0 and loaded["thresholds"] == list(THRESHOLDS)
    assert "mean -" in format_normals_table(result)


def test_normals_table_and_json_of_known_values() -> None:
    preds, target = rotated_normals(10.0)
    metric = NormalMetrics()
    metric.update(preds, target)
    result = metric.compute()
    line = format_normals_table(result)
    assert "\n" not in line
    assert "mean 10.0000" in line and "<=5.625 0.00%" in line and "<=11.25 100.00%" in line
    assert "<=30 100.00%" in line and "(512 pixels)" in line
    plain = regression_to_json(result)
    assert set(plain) == {"mean_angle", "median_angle", "pixels", "thresholds", *(f"within_{t:g}" for t in THRESHOLDS)}
    assert plain["within_11.25"] == 1.0 and plain["pixels"] == 512


@pytest.mark.parametrize(
    ("preds", "target", "valid", "message"),
    [
        ((2, 4, 8, 8), (2, 4, 8, 8), None, r"\[B, 3, H, W\], got preds \[2, 4, 8, 8\] and target \[2, 4, 8, 8\]"),
        ((2, 3, 8, 8), (2, 3, 8, 7), None, r"got preds \[2, 3, 8, 8\] and target \[2, 3, 8, 7\]"),
        ((3, 8, 8), (3, 8, 8), None, r"got preds \[3, 8, 8\]"),
        ((2, 3, 8, 8), (2, 3, 8, 8), (2, 8, 7), r"valid must have shape \[2, 8, 8\] \(\[B, H, W\]\), got \[2, 8, 7\]"),
    ],
)
def test_normal_shapes_are_checked(
    preds: tuple[int, ...], target: tuple[int, ...], valid: tuple[int, ...] | None, message: str
) -> None:
    mask = None if valid is None else torch.ones(valid, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        NormalMetrics().update(torch.ones(preds), torch.ones(target), mask)


def test_settings_and_mask_dtype_are_checked() -> None:
    assert NormalMetrics().histogram.numel() == 180_001  # ceil(180 / 1e-3) + 1
    with pytest.raises(ValueError, match="bin_width"):
        NormalMetrics(bin_width=0.0)
    with pytest.raises(ValueError, match=r"thresholds must lie in \[0, 180\]"):
        NormalMetrics(thresholds=(5.0, 200.0))
    with pytest.raises(ValueError, match="duplicate names"):
        NormalMetrics(thresholds=(5.0, 5.0))
    with pytest.raises(ValueError, match="min_depth must be > 0"):
        DepthMetrics(min_depth=0.0)
    with pytest.raises(ValueError, match="max_depth must exceed min_depth"):
        DepthMetrics(min_depth=1.0, max_depth=0.5)
    with pytest.raises(ValueError, match=r"valid must be a bool tensor, got torch\.float32"):
        NormalMetrics().update(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"valid must be a bool tensor, got torch\.uint8"):
        DepthMetrics().update(torch.ones(1, 4, 4), torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- depth


@pytest.mark.parametrize(("min_depth", "max_depth"), [(1e-3, 10.0), (0.1, None)])
def test_depth_equals_the_numpy_brute_force_over_all_valid_pixels(min_depth: float, max_depth: float | None) -> None:
    data = batches("depth", 3, seed=6)
    metric = DepthMetrics(min_depth=min_depth, max_depth=max_depth)
    for preds, target, valid in data:
        metric.update(preds, target, valid)
    result = metric.compute()
    expected = reference_depth(data, min_depth, max_depth)
    assert int(result["pixels"]) == expected["pixels"] > 500
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert float(result[key]) == pytest.approx(expected[key], rel=1e-9), key
    for k in (1, 2, 3):
        assert int(metric.delta_counts[k - 1]) == expected[f"count{k}"], k
        assert float(result[f"delta{k}"]) == pytest.approx(expected[f"count{k}"] / expected["pixels"], rel=1e-12)
    assert 0.0 < float(result["delta1"]) < float(result["delta2"]) < float(result["delta3"]) < 1.0


def test_depth_predicted_at_twice_the_target() -> None:
    target = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 + 1
    metric = DepthMetrics()
    metric.update(2 * target, target)
    result = metric.compute()
    assert float(result["abs_rel"]) == 1.0
    assert float(result["sq_rel"]) == pytest.approx(float(target.mean()), rel=1e-12)
    assert float(result["rmse"]) == pytest.approx(float(target.square().mean().sqrt()), rel=1e-12)
    assert float(result["rmse_log"]) == pytest.approx(math.log(2.0), rel=1e-12)
    assert [float(result[f"delta{k}"]) for k in (1, 2, 3)] == [0.0, 0.0, 0.0]  # 1.25^3 = 1.953125 < 2


@pytest.mark.parametrize(("factor", "deltas"), [(1.2, [1.0, 1.0, 1.0]), (1 / 1.3, [0.0, 1.0, 1.0]), (1.9, [0, 0, 1])])
def test_delta_thresholds_of_known_ratios(factor: float, deltas: list[float]) -> None:
    target = torch.full((1, 4, 4), 2.0)
    metric = DepthMetrics()
    metric.update(target * factor, target)
    assert [float(metric.compute()[f"delta{k}"]) for k in (1, 2, 3)] == deltas


def test_delta_thresholds_are_strict() -> None:
    target = torch.ones(1, 1, 2, dtype=torch.float64)
    metric = DepthMetrics()
    metric.update(torch.tensor([[[1.25, 1.25**2]]], dtype=torch.float64), target)
    assert [float(metric.compute()[f"delta{k}"]) for k in (1, 2, 3)] == [0.0, 0.5, 1.0]


def test_depth_predictions_are_clamped_and_deep_targets_dropped() -> None:
    preds = torch.tensor([[[0.0, -3.0, 100.0, 1.0]]])  # [1, 1, 4]
    target = torch.tensor([[[1.0, 1.0, 2.0, 5.0]]])  # 5 m > max_depth: invalid
    metric = DepthMetrics(min_depth=0.5, max_depth=4.0)
    metric.update(preds, target)
    result = metric.compute()
    assert int(result["pixels"]) == 3
    # Clamped to 0.5, 0.5 and 4.0: relative errors 0.5, 0.5 and 1.
    assert float(result["abs_rel"]) == pytest.approx(2.0 / 3.0, rel=1e-12)


def test_depth_accepts_both_layouts() -> None:
    preds, target, valid = batches("depth", 1, seed=7)[0]
    four, three, mixed = DepthMetrics(), DepthMetrics(), DepthMetrics()
    four.update(preds, target, valid)
    three.update(preds[:, 0], target[:, 0], valid)
    mixed.update(preds[:, 0], target, valid)
    assert_same_states(four, three)
    assert_same_states(four, mixed)


def test_depth_predictions_at_invalid_pixels_change_nothing() -> None:
    preds, target, valid = batches("depth", 1, seed=8)[0]
    invalid = ~valid[:, None] | ~(target.isfinite() & (target > 0)) | (target > 10)
    assert invalid.any()
    first, second = DepthMetrics(max_depth=10.0), DepthMetrics(max_depth=10.0)
    first.update(preds, target, valid)
    garbage = torch.tensor([math.nan, math.inf, -math.inf, -5.0, 0.0, 1e6]).repeat(invalid.numel())
    second.update(torch.where(invalid, garbage[: invalid.numel()].view_as(preds), preds), target, valid)
    assert_same_states(first, second)


def test_a_non_finite_depth_prediction_at_a_valid_pixel_is_an_error() -> None:
    target = torch.ones(1, 4, 4)
    preds = torch.ones(1, 4, 4)
    preds[0, 1, 1] = math.inf
    with pytest.raises(ValueError, match="1 valid pixels have a non-finite predicted depth"):
        DepthMetrics(max_depth=10.0).update(preds, target)


def test_depth_halves_accumulate_to_the_whole_batch_and_shards_merge() -> None:
    rng = np.random.default_rng(9)
    preds, target, valid = depth_batch(rng, batch=4)
    whole, halves = DepthMetrics(max_depth=10.0), DepthMetrics(max_depth=10.0)
    whole.update(preds, target, valid)
    halves.update(preds[:2], target[:2], valid[:2])
    halves.update(preds[2:], target[2:], valid[2:])
    assert_same_states(whole, halves, float_rtol=1e-12)
    shards = [DepthMetrics(max_depth=10.0), DepthMetrics(max_depth=10.0)]
    shards[0].update(preds[::2], target[::2], valid[::2])
    shards[1].update(preds[1::2], target[1::2], valid[1::2])
    shards[0].merge_state(shards[1])
    assert_same_states(shards[0], whole, float_rtol=1e-12)


def test_depth_with_no_valid_pixel_is_nan_and_tables_print() -> None:
    metric = DepthMetrics()
    metric.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    result = metric.compute()
    assert int(result["pixels"]) == 0
    assert all(math.isnan(float(value)) for key, value in result.items() if key != "pixels")
    loaded = json.loads(json.dumps(regression_to_json(result), allow_nan=False))
    assert loaded["rmse"] is None and loaded["delta1"] is None and loaded["pixels"] == 0
    assert format_depth_table(result).startswith("abs_rel -  sq_rel -")
    target = torch.full((1, 4, 4), 2.0)
    known = DepthMetrics()
    known.update(2 * target, target)
    line = format_depth_table(known.compute())
    assert "abs_rel 1.0000" in line and "rmse 2.0000" in line and "d<1.25^3 0.00%" in line and "(16 pixels)" in line


@pytest.mark.parametrize(
    ("preds", "target", "valid", "message"),
    [
        ((2, 2, 8, 8), (2, 2, 8, 8), None, r"\[B, 1, H, W\] or \[B, H, W\], got preds \[2, 2, 8, 8\]"),
        ((2, 8, 8), (2, 8, 7), None, r"got preds \[2, 8, 8\] and target \[2, 8, 7\]"),
        ((8, 8), (8, 8), None, r"got preds \[8, 8\]"),
        ((2, 1, 8, 8), (2, 1, 8, 8), (2, 1, 8, 8), r"valid must have shape \[2, 8, 8\]"),
    ],
)
def test_depth_shapes_are_checked(
    preds: tuple[int, ...], target: tuple[int, ...], valid: tuple[int, ...] | None, message: str
) -> None:
    mask = None if valid is None else torch.ones(valid, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        DepthMetrics().update(torch.ones(preds), torch.ones(target), mask)


# ---------------------------------------------------------------- torch.distributed


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        normals, depth = NormalMetrics(), DepthMetrics(max_depth=10.0)
        for index, (n_batch, d_batch) in enumerate(zip(batches("normal", 4, 10), batches("depth", 4, 11), strict=True)):
            if index % world == rank:
                normals.update(*n_batch)
                depth.update(*d_batch)
        # torchmetrics gathers and sums the states across processes here.
        result = {f"normal/{k}": v for k, v in normals.compute().items()}
        result.update({f"depth/{k}": v for k, v in depth.compute().items()})
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_reduce_to_the_single_process_result(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    normals, depth = NormalMetrics(), DepthMetrics(max_depth=10.0)
    for n_batch, d_batch in zip(batches("normal", 4, 10), batches("depth", 4, 11), strict=True):
        normals.update(*n_batch)
        depth.update(*d_batch)
    expected = {f"normal/{k}": v for k, v in normals.compute().items()}
    expected.update({f"depth/{k}": v for k, v in depth.compute().items()})
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for key, value in expected.items():
        assert torch.equal(results[0][key], results[1][key]), key  # bitwise the same on every process
        if value.is_floating_point():
            torch.testing.assert_close(results[0][key], value, rtol=1e-12, atol=0.0, msg=key)
        else:
            assert torch.equal(results[0][key], value), key
