"""Dense joint transforms: flips mirror normals, scaling divides depth, invalid zeros stay zero."""

from __future__ import annotations

import pytest
import torch

from asml.data.dense_transforms import DenseEvalTransform, DenseTrainTransform
from asml.data.scenes import render_scene

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def depth_with_holes(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Depth ``[1, H, W]`` in [1, 5] m with about a fifth of the pixels invalid (0)."""
    generator = torch.Generator().manual_seed(seed)
    depth = 1 + 4 * torch.rand(1, height, width, generator=generator)
    return depth * (torch.rand(1, height, width, generator=generator) > 0.2)


def random_image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_flip_mirrors_the_map_and_negates_the_normals_x() -> None:
    rendered = render_scene(2, 32)
    image, normals = rendered.image, rendered.normals
    transform = DenseTrainTransform(crop_size=32, task="normals", **IDENTITY)
    mirrored = torch.flip(normals, dims=[2]) * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        out_image, out_normals = transform(image, normals, generator)
        flipped = torch.equal(out_image, torch.flip(image.float() / 255, dims=[2]))
        assert flipped or torch.equal(out_image, image.float() / 255)
        assert torch.equal(out_normals, mirrored if flipped else normals)
        invalid = ~rendered.valid.flip(-1) if flipped else ~rendered.valid
        assert bool((out_normals[:, invalid] == 0).all()) and not bool(out_normals[:, invalid].signbit().any())
        seen.add(flipped)
    assert seen == {True, False}


def test_flipped_depth_is_only_mirrored() -> None:
    depth, image = depth_with_holes(20, 24), random_image(20, 24)
    transform = DenseTrainTransform(crop_size=(20, 24), task="depth", **IDENTITY)
    seen = set()
    for seed in range(10):
        out = transform(image, depth, torch.Generator().manual_seed(seed))[1]
        flipped = torch.equal(out, torch.flip(depth, dims=[2]))
        assert flipped or torch.equal(out, depth)
        seen.add(flipped)
    assert seen == {True, False}


def test_scaling_by_two_repeats_nearest_values_and_divides_depth() -> None:
    depth = depth_with_holes(12, 10)
    normals = torch.nn.functional.normalize(torch.randn(3, 12, 10), dim=0) * (depth > 0)
    image = random_image(12, 10)
    for task, target in (("depth", depth), ("normals", normals)):
        transform = DenseTrainTransform(crop_size=(24, 20), task=task, scale_range=(2.0, 2.0), flip=False, **IDENTITY)
        out_image, out = transform(image, target)
        assert out_image.shape == (3, 24, 20) and out.shape == (target.shape[0], 24, 20)
        # Reference: each pixel becomes a 2 x 2 block; depth halves (zooming in = moving closer).
        blocks = target.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        torch.testing.assert_close(out, blocks / 2 if task == "depth" else blocks, rtol=0, atol=0)


def test_downscaled_targets_take_the_centre_pixel_of_each_block() -> None:
    # At scale 1/3 the bilinear image's output pixel i covers input pixels 3i..3i+2, centred on 3i+1:
    # the target must sample that centre (not 3i), or target and image drift apart by a pixel.
    depth = depth_with_holes(30, 30)
    transform = DenseTrainTransform(crop_size=10, task="depth", scale_range=(1 / 3, 1 / 3), flip=False, **IDENTITY)
    _, out = transform(random_image(30, 30), depth)
    torch.testing.assert_close(out, depth[:, 1::3, 1::3] * 3, rtol=1e-6, atol=0)


def test_random_scales_and_padding_never_blend_invalid_pixels() -> None:
    depth = depth_with_holes(30, 30, seed=3)
    image = random_image(30, 30)
    transform = DenseTrainTransform(crop_size=40, task="depth", scale_range=(0.6, 1.3), flip=False, **IDENTITY)
    inputs = set(depth[depth > 0].tolist())
    for seed in range(6):
        scale = 0.6 + 0.7 * float(torch.rand(1, generator=torch.Generator().manual_seed(seed)))  # first draw
        out_image, out = transform(image, depth, torch.Generator().manual_seed(seed))
        assert out.shape == (1, 40, 40) and out_image.shape == (3, 40, 40)
        side = round(30 * scale)
        assert side < 40  # so the crop is padded at the bottom and right (offsets 0)
        assert bool((out[:, side:] == 0).all() and (out[:, :, side:] == 0).all())
        assert bool((out_image[:, side:] == 0).all() and (out_image[:, :, side:] == 0).all())
        # Every valid output is one input depth divided by the scale: nothing blended with a 0.
        valid = out[out > 0] * scale
        assert all(min(abs(v - i) for i in inputs) < 1e-5 for v in valid.tolist())
        zeros = float((out[:, :side, :side] == 0).float().mean())
        assert 0.1 < zeros < 0.3  # the holes' share survives nearest scaling


def test_same_generator_state_gives_the_same_sample() -> None:
    rendered = render_scene(4, 32)
    transform = DenseTrainTransform(crop_size=24, task="normals", scale_range=(0.75, 1.5))
    first = transform(rendered.image, rendered.normals, torch.Generator().manual_seed(9))
    second = transform(rendered.image, rendered.normals, torch.Generator().manual_seed(9))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].dtype == torch.float32 and first[1].dtype == torch.float32


def test_eval_transform_resizes_without_changing_depth_values_and_normalises() -> None:
    depth = depth_with_holes(16, 16)
    image = random_image(16, 16)
    out_image, out = DenseEvalTransform(size=32, task="depth")(image, depth)
    assert out_image.shape == (3, 32, 32) and out.shape == (1, 32, 32)
    torch.testing.assert_close(out, depth.repeat_interleave(2, 1).repeat_interleave(2, 2), rtol=0, atol=0)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    same_image, same = DenseEvalTransform(task="depth")(image, depth)
    torch.testing.assert_close(same_image, (image.float() / 255 - mean) / std)
    assert torch.equal(same, depth)


def test_wrong_tasks_and_shapes_raise_clear_errors() -> None:
    image = random_image(8, 8)
    with pytest.raises(ValueError, match=r"depth targets must be \[1, H, W\], got shape \(3, 8, 8\)"):
        DenseTrainTransform(crop_size=8, task="depth")(image, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"normals targets must be \[3, H, W\], got shape \(8, 8\)"):
        DenseEvalTransform(task="normals")(image, torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"image \(3, 8, 8\) and target \(1, 6, 8\) differ in size"):
        DenseEvalTransform(task="depth")(image, torch.zeros(1, 6, 8))
    with pytest.raises(ValueError, match=r"unknown dense task 'segmentation'; choose one of depth, normals"):
        DenseTrainTransform(crop_size=8, task="segmentation")
    with pytest.raises(ValueError, match="scale_range"):
        DenseTrainTransform(crop_size=8, task="depth", scale_range=(2.0, 1.0))
