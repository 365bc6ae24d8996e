"""The three ASM losses as pure functions.

Notation (``docs/method.md``): ``n(f)`` is channel-wise L2 normalisation of a feature map at every
pixel, ``d_l(u, v) = ||n(F_l(u)) - n(F_l(v))||^2`` per pixel (in [0, 4]) for analyzer layer ``l``.
Features are dicts ``layer name -> [B, K_l, h_l, w_l]``; ``valid`` masks are dicts
``layer name -> [B, h_l, w_l]`` bool (None: every position is valid). Means are over valid positions
only (the released code averages over all positions, which is the same when nothing is ignored).
Normalisation, distances and the hinge run in float32 whatever the input dtype (autocast-safe).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "adversarial_hinge_loss",
    "cross_entropy_over_valid",
    "hinge_maps",
    "layer_hinge_losses",
    "layer_matching_distances",
    "masked_mean",
    "matching_loss",
    "reconstruction_loss",
    "soft_reconstruction_loss",
    "structure_distance",
]

Features = Mapping[str, Tensor]
ValidMasks = Mapping[str, Tensor] | None

# TensorFlow's l2_normalize divides by sqrt(max(sum x^2, 1e-12)), i.e. a norm floor of 1e-6.
_NORM_EPS = 1e-6


def _upcast(tensor: Tensor) -> Tensor:
    """Half precision -> float32; float32 and float64 stay (float64 keeps gradcheck exact)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class _NormalisedDistance(torch.autograd.Function):
    """``||a / max(|a|, eps) - b / max(|b|, eps)||^2`` over dim 1, from the per-pixel products.

    Forward: ``a.a``, ``b.b``, ``a.b`` as fused channel dot products (no full-size temporaries);
    backward: ``grad_a = g * (alpha_a * a + beta * b)`` with per-pixel scalars, derived below.
    Three to four times faster than normalising both maps (the step's costliest elementwise work).
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        squared_a: Tensor = torch.linalg.vecdot(a, a, dim=1)
        squared_b: Tensor = torch.linalg.vecdot(b, b, dim=1)
        dot: Tensor = torch.linalg.vecdot(a, b, dim=1)
        # q = max(|x|^2, eps^2) = max(|x|, eps)^2, the squared norm that l2_normalize divides by.
        clamped_a, clamped_b = squared_a.clamp_min(_NORM_EPS**2), squared_b.clamp_min(_NORM_EPS**2)
        inverse_norms = clamped_a.rsqrt() * clamped_b.rsqrt()
        distance = squared_a / clamped_a + squared_b / clamped_b - 2 * dot * inverse_norms
        ctx.save_for_backward(a, b, squared_a, squared_b, dot, clamped_a, clamped_b, inverse_norms)
        return distance.clamp_min(0.0)  # rounding can leave -1e-7 where a and b point the same way

    @staticmethod
    @once_differentiable  # the backward below is not itself differentiable: refuse double backward
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b, squared_a, squared_b, dot, clamped_a, clamped_b, inverse_norms = ctx.saved_tensors
        # d = a.a/q_a + b.b/q_b - 2 a.b r, r = (q_a q_b)^-1/2. Where |a| > eps, a.a/q_a = 1 and
        # dq_a/da = 2a, so dd/da = 2 (a.b) r / q_a * a - 2 r b; where |a| <= eps, q_a is constant and
        # dd/da = 2 a / eps^2 - 2 r b. Symmetric in b.
        beta = (-2 * inverse_norms * grad).unsqueeze(1)
        floor = _NORM_EPS**2
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            alpha_a = torch.where(squared_a > floor, 2 * dot * inverse_norms / clamped_a, 2 / floor) * grad
            grad_a = alpha_a.unsqueeze(1) * a + beta * b
        if ctx.needs_input_grad[1]:
            alpha_b = torch.where(squared_b > floor, 2 * dot * inverse_norms / clamped_b, 2 / floor) * grad
            grad_b = alpha_b.unsqueeze(1) * b + beta * a
        return grad_a, grad_b


def structure_distance(features_a: Tensor, features_b: Tensor) -> Tensor:
    """Squared distance of channel-normalised features, ``[B, K, h, w]`` x2 -> ``[B, h, w]`` float32.

    ``||a / max(|a|, eps) - b / max(|b|, eps)||^2`` with eps = 1e-6 (TensorFlow's ``l2_normalize``),
    in [0, 4]. Equal to normalising both maps and subtracting, up to float rounding (about 1e-6
    absolute), computed without normalised copies (see ``_NormalisedDistance``). An all-zero
    feature vector counts as the zero vector, so ignored positions contribute 0.
    """
    if features_a.shape != features_b.shape:
        raise ValueError(f"feature shapes differ: {list(features_a.shape)} vs {list(features_b.shape)}")
    # Autocast would run the dot products in half precision again; the cancellation in
    # 2 - 2 cos needs float32 (or the float64 of gradcheck).
    with torch.autocast(device_type=features_a.device.type, enabled=False):
        distance: Tensor = _NormalisedDistance.apply(_upcast(features_a), _upcast(features_b))
    return distance


def masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of ``values [B, h, w]`` over positions where ``valid`` is True (all when None).

    With no valid position the result is 0 (still connected to the graph), never NaN.
    """
    if valid is None:
        return values.mean()
    # where, not a product: a NaN or inf at an invalid position must not reach the mean.
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp_min(1).to(values.dtype)


def _check_layers(features_a: Features, features_b: Features, valid: ValidMasks) -> None:
    if set(features_a) != set(features_b):
        raise ValueError(f"feature layers differ: {sorted(features_a)} vs {sorted(features_b)}")
    if valid is not None and not set(features_a) <= set(valid):
        raise ValueError(f"valid masks missing for layers {sorted(set(features_a) - set(valid))}")


def layer_matching_distances(
    prediction_features: Features, target_features: Features, valid: ValidMasks = None
) -> dict[str, Tensor]:
    """Per layer, the mean of ``d_l(y, S(x))`` over valid positions: scalars keyed by layer name."""
    _check_layers(prediction_features, target_features, valid)
    return {
        name: masked_mean(
            structure_distance(prediction_features[name], target_features[name]),
            valid[name] if valid is not None else None,
        )
        for name in prediction_features
    }


def matching_loss(prediction_features: Features, target_features: Features, valid: ValidMasks = None) -> Tensor:
    """The segmenter's loss ``L_S = sum_l mean d_l(y, softmax(logits))``, a float32 scalar.

    Args:
        prediction_features: analyzer features of the segmenter's probabilities, layer -> ``[B, K, h, w]``.
        target_features: analyzer features of the one-hot ground truth, same layers and shapes.
        valid: layer -> ``[B, h, w]`` bool, or None.

    Example:
        >>> f = {"conv1": torch.randn(2, 16, 8, 8)}
        >>> float(matching_loss(f, f)) < 1e-6
        True
    """
    return torch.stack(list(layer_matching_distances(prediction_features, target_features, valid).values())).sum()


def hinge_maps(negative_features: Features, target_features: Features, margin: float = 0.8) -> dict[str, Tensor]:
    """Per layer, the hinge ``max(0, margin - d_l(y, neg))`` at every position, ``[B, h, w]``."""
    _check_layers(negative_features, target_features, None)
    return {
        name: torch.relu(margin - structure_distance(negative_features[name], target_features[name]))
        for name in negative_features
    }


def layer_hinge_losses(
    negative_features: Features,
    target_features: Features,
    valid: ValidMasks = None,
    margin: float = 0.8,
) -> dict[str, Tensor]:
    """Per layer, the mean of ``max(0, margin - d_l(y, neg))`` over valid positions."""
    _check_layers(negative_features, target_features, valid)
    maps = hinge_maps(negative_features, target_features, margin)
    return {name: masked_mean(value, valid[name] if valid is not None else None) for name, value in maps.items()}


def adversarial_hinge_loss(
    negative_features: Features,
    target_features: Features,
    valid: ValidMasks = None,
    margin: float = 0.8,
) -> Tensor:
    """The analyzer's adversarial loss ``sum_l mean max(0, m - d_l(y, neg))`` (unweighted), float32 scalar.

    The analyzer *minimises* it, i.e. pushes the distance between the ground truth and the hard
    negative ``one_hot(argmax(logits))`` up to the margin: a bounded version of "maximise the
    matching loss". Where the negative equals the ground truth the distance is 0 and the hinge is
    the constant ``margin`` with no gradient. The caller multiplies by the adversarial weight.

    Args:
        negative_features: analyzer features of the hard negative, layer -> ``[B, K, h, w]``.
        target_features: analyzer features of the ground truth, same layers and shapes.
        valid: layer -> ``[B, h, w]`` bool, or None.
        margin: hinge margin ``m`` (released: 0.8; distances lie in [0, 4]).
    """
    return torch.stack(list(layer_hinge_losses(negative_features, target_features, valid, margin).values())).sum()


def cross_entropy_over_valid(logits: Tensor, target: Tensor, ignore_index: int | None = 255) -> Tensor:
    """Cross-entropy ``[B, C, H, W]`` logits vs ``[B, H, W]`` labels, mean over non-ignored pixels.

    Float32 whatever the input dtype (float64 stays); 0 (not NaN) when every pixel is ignored.
    """
    logits = _upcast(logits)
    ignored = target == ignore_index if ignore_index is not None else None
    safe_target = target.masked_fill(ignored, 0) if ignored is not None else target
    if logits.is_contiguous(memory_format=torch.channels_last):
        # Channels-last logits (the analyzer's) as a [pixels, classes] view: no layout copy, and
        # the softmax runs over contiguous memory (about 40% faster for 21 classes).
        classes = logits.shape[1]
        flat = logits.permute(0, 2, 3, 1).reshape(-1, classes)
        per_pixel = F.cross_entropy(flat, safe_target.reshape(-1), reduction="none").view_as(target)
    else:
        per_pixel = F.cross_entropy(logits, safe_target, reduction="none")
    return masked_mean(per_pixel, ~ignored if ignored is not None else None)


def soft_reconstruction_loss(reconstruction_logits: Tensor, soft_target: Tensor, ignored: Tensor | None) -> Tensor:
    """Cross-entropy of R(A(y)) against soft labels ``soft_target`` (class shares per position, as
    ``CoarseGrid.average`` makes them), mean over positions not ``ignored``; float32 scalar.

    For one-hot ``soft_target`` it equals :func:`reconstruction_loss`.

    Args:
        reconstruction_logits: ``[B, C, h, w]`` logits; soft_target: ``[B, C, h, w]``, summing to 1
            (or 0) per position; ignored: ``[B, h, w]`` bool or None.
    """
    log_probabilities = torch.log_softmax(_upcast(reconstruction_logits), dim=1)
    per_position = -(soft_target.to(log_probabilities.dtype) * log_probabilities).sum(dim=1)
    return masked_mean(per_position, ~ignored if ignored is not None else None)


def reconstruction_loss(reconstruction_logits: Tensor, target: Tensor, ignore_index: int | None = 255) -> Tensor:
    """Structure regularisation: cross-entropy of R(A(y)) against y over valid pixels, float32 scalar.

    Args:
        reconstruction_logits: ``[B, C, H, W]`` logits of the analyzer's reconstruction R(A(y)).
        target: ``[B, H, W]`` int64 class indices.
        ignore_index: label of void pixels, or None. With no valid pixel the loss is 0.
    """
    return cross_entropy_over_valid(reconstruction_logits, target, ignore_index)
