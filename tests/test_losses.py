"""The pure loss functions, against NumPy references written here, and gradcheck in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asml import adversarial_hinge_loss, matching_loss, reconstruction_loss, structure_distance
from asml.core import cross_entropy_over_valid, masked_mean


def numpy_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a/|a| - b/|b|||^2 per position of [B, K, h, w] arrays; zero vectors stay zero."""

    def normalise(x: np.ndarray) -> np.ndarray:
        norm = np.sqrt((x**2).sum(axis=1, keepdims=True))
        return x / np.maximum(norm, 1e-6)

    return ((normalise(a) - normalise(b)) ** 2).sum(axis=1)


def features(
    seed: int, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=generator, dtype=dtype) for name, shape in shapes.items()}


SHAPES = {"conv1": (2, 5, 6, 7), "conv2": (2, 8, 3, 4)}


@given(seed=st.integers(0, 10_000), zero_fraction=st.floats(0, 0.5))
@settings(max_examples=30, deadline=None)
def test_structure_distance_matches_numpy(seed: int, zero_fraction: float) -> None:
    a, b = features(seed, {"a": (2, 4, 5, 5)})["a"], features(seed + 1, {"a": (2, 4, 5, 5)})["a"]
    zero = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(seed)) < zero_fraction
    a = a.masked_fill(zero, 0.0)
    got = structure_distance(a, b)
    np.testing.assert_allclose(got.numpy(), numpy_distance(a.numpy(), b.numpy()), rtol=1e-5, atol=1e-6)
    assert float(got.min()) >= 0 and float(got.max()) <= 4 + 1e-5
    # Zero feature vectors normalise to zero: the distance is |b/|b||^2 = 1 there.
    assert torch.allclose(got[zero[:, 0]], torch.ones(int(zero.sum())), atol=1e-6)


def test_matching_loss_is_the_sum_over_layers_of_valid_means() -> None:
    pred, target = features(0, SHAPES), features(1, SHAPES)
    valid = {
        name: torch.rand(shape[0], *shape[2:], generator=torch.Generator().manual_seed(7)) > 0.3
        for name, shape in SHAPES.items()
    }
    expected = 0.0
    for name in SHAPES:
        d = numpy_distance(pred[name].numpy(), target[name].numpy())
        expected += d[valid[name].numpy()].mean()
    assert float(matching_loss(pred, target, valid)) == pytest.approx(expected, rel=1e-5)
    # Without masks every position counts.
    expected_all = sum(numpy_distance(pred[n].numpy(), target[n].numpy()).mean() for n in SHAPES)
    assert float(matching_loss(pred, target)) == pytest.approx(expected_all, rel=1e-5)
    # Identical features: zero up to the float32 rounding of the product form (see structure_distance).
    assert 0.0 <= float(matching_loss(pred, pred)) < 1e-6


def test_hinge_is_the_margin_where_negative_equals_target_and_zero_beyond_it() -> None:
    target = features(0, SHAPES)
    same = {name: value.clone().requires_grad_(True) for name, value in target.items()}
    loss = adversarial_hinge_loss(same, target, margin=0.8)
    assert float(loss.detach()) == pytest.approx(0.8 * len(SHAPES), rel=1e-6)
    loss.backward()
    # No gradient where the negative equals the target (up to float32 rounding).
    assert all(float(v.grad.abs().max()) < 1e-5 for v in same.values())  # type: ignore[union-attr]
    # Opposite features are at distance 4 > margin: no hinge at all.
    opposite = {name: -value for name, value in target.items()}
    assert float(adversarial_hinge_loss(opposite, target, margin=0.8)) == 0.0


def test_hinge_matches_numpy_with_valid_masks() -> None:
    negative, target = features(3, SHAPES), features(4, SHAPES)
    valid = {
        name: torch.rand(shape[0], *shape[2:], generator=torch.Generator().manual_seed(9)) > 0.5
        for name, shape in SHAPES.items()
    }
    expected = 0.0
    for name in SHAPES:
        d = numpy_distance(negative[name].numpy(), target[name].numpy())
        expected += np.maximum(0.0, 1.5 - d)[valid[name].numpy()].mean()
    assert float(adversarial_hinge_loss(negative, target, valid, margin=1.5)) == pytest.approx(expected, rel=1e-5)


def test_reconstruction_loss_is_cross_entropy_over_valid_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=generator)
    target = torch.randint(0, 3, (2, 5, 6), generator=generator)
    target[0, 0, :4] = 255
    logp = logits.log_softmax(dim=1).numpy()
    t = target.numpy()
    picked = [-logp[b, t[b, i, j], i, j] for b in range(2) for i in range(5) for j in range(6) if t[b, i, j] != 255]
    assert float(reconstruction_loss(logits, target, ignore_index=255)) == pytest.approx(np.mean(picked), rel=1e-5)
    # Everything ignored: 0, not NaN.
    assert float(reconstruction_loss(logits, torch.full_like(target, 255))) == 0.0
    assert float(cross_entropy_over_valid(logits, target.clamp(max=2), ignore_index=None)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target.clamp(max=2))), rel=1e-6
    )


def test_masked_mean_without_valid_positions_is_zero() -> None:
    values = torch.rand(2, 3, 3, requires_grad=True)
    result = masked_mean(values, torch.zeros(2, 3, 3, dtype=torch.bool))
    assert float(result.detach()) == 0.0
    result.backward()
    assert values.grad is not None and float(values.grad.abs().sum()) == 0.0


def test_gradcheck_matching_loss() -> None:
    pred = {n: v.requires_grad_(True) for n, v in features(0, SHAPES, torch.float64).items()}
    target = features(1, SHAPES, torch.float64)
    valid = {
        name: torch.rand(shape[0], *shape[2:], generator=torch.Generator().manual_seed(2)) > 0.2
        for name, shape in SHAPES.items()
    }

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return matching_loss({"conv1": a, "conv2": b}, target, valid)

    assert torch.autograd.gradcheck(loss, (pred["conv1"], pred["conv2"]))


def test_gradcheck_hinge_loss_on_both_inputs() -> None:
    negative = features(5, SHAPES, torch.float64)
    target = features(6, SHAPES, torch.float64)
    # Pull half of the negatives close to the target so that some positions are inside the margin.
    negative = {
        name: torch.where(torch.rand_like(v[:, :1]) < 0.5, target[name] + 0.3 * v, v) for name, v in negative.items()
    }
    inputs = (*[v.requires_grad_(True) for v in negative.values()], *[v.requires_grad_(True) for v in target.values()])

    def loss(n1: torch.Tensor, n2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return adversarial_hinge_loss({"conv1": n1, "conv2": n2}, {"conv1": t1, "conv2": t2}, margin=0.8)

    assert 0 < float(loss(*inputs).detach()) < 1.6
    assert torch.autograd.gradcheck(loss, inputs)


def test_gradcheck_reconstruction_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4), generator=generator)
    target[1, :2] = 255
    assert torch.autograd.gradcheck(lambda x: reconstruction_loss(x, target, 255), (logits,))


def test_mismatched_layers_are_an_error() -> None:
    with pytest.raises(ValueError, match="feature layers differ"):
        matching_loss(features(0, {"conv1": (1, 2, 3, 3)}), features(0, {"conv2": (1, 2, 3, 3)}))
    with pytest.raises(ValueError, match=r"feature shapes differ: \[1, 2, 3, 3\] vs \[1, 2, 4, 4\]"):
        structure_distance(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 4, 4))


def test_distance_backward_matches_the_direct_form_below_and_at_the_norm_floor() -> None:
    generator = torch.Generator().manual_seed(11)
    a = torch.randn(2, 5, 4, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(2, 5, 4, 4, generator=generator, dtype=torch.float64)
    a[0, :, 0, 0] = 0.0  # exactly zero
    a[0, :, 1, 1] *= 1e-8  # below the 1e-6 norm floor
    b[1, :, 2, 2] *= 1e-8
    b[1, :, 3, 3] = 0.0
    weights = torch.rand(2, 4, 4, generator=generator, dtype=torch.float64)

    def direct(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nx = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
        ny = y / y.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return (nx - ny).pow(2).sum(1)

    grads = []
    for function in (structure_distance, direct):
        x, y = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        (function(x, y) * weights).sum().backward()
        grads.append((x.grad, y.grad))
    for ours, reference in zip(grads[0], grads[1], strict=True):
        assert ours is not None and reference is not None
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)


def test_distance_refuses_double_backward_and_stays_float32_under_autocast() -> None:
    a = torch.randn(1, 4, 3, 3, requires_grad=True)
    b = torch.randn(1, 4, 3, 3)
    (grad,) = torch.autograd.grad(structure_distance(a, b).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()
    close = b + 1e-3 * torch.randn_like(b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = structure_distance(close, b)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, structure_distance(close, b), rtol=1e-5, atol=1e-7)
