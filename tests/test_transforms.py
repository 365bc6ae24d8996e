"""Joint transforms keep image and mask aligned, pad with the ignore label, normalise exactly."""

from __future__ import annotations

import pytest
import torch

from asml.data.transforms import EvalTransform, TrainTransform, normalize


def coded_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose red channel equals the mask label * 50, so alignment can be checked after transforms."""
    mask = torch.randint(0, 5, (height, width))
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0] = (mask * 50).to(torch.uint8)
    return image, mask


def test_normalize_matches_the_formula() -> None:
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    expected = (image.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(normalize(image, mean, std), expected)
    with pytest.raises(ValueError, match="mean/std have 3/3 entries for an image with 1 channels"):
        normalize(torch.zeros(1, 2, 2), mean, std)


def test_train_transform_without_scaling_crops_and_flips_image_and_mask_together() -> None:
    image, mask = coded_pair(40, 50)
    transform = TrainTransform(crop_size=(24, 32), scale_range=(1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
    generator = torch.Generator().manual_seed(0)
    flipped = 0
    for _ in range(20):
        out_image, out_mask = transform(image, mask, generator)
        assert out_image.shape == (3, 24, 32) and out_mask.shape == (24, 32)
        torch.testing.assert_close(out_image[0], out_mask.float() * 50 / 255)
        # The crop is a window of the mask, possibly mirrored.
        windows = mask.unfold(0, 24, 1).unfold(1, 32, 1)
        direct = (windows == out_mask).flatten(2).all(-1).any()
        mirrored = (windows == out_mask.flip(-1)).flatten(2).all(-1).any()
        assert bool(direct or mirrored)
        flipped += int(not direct)
    assert 0 < flipped < 20


def test_small_images_are_padded_with_the_ignore_label_and_the_mean_colour() -> None:
    image, mask = coded_pair(10, 12)
    transform = TrainTransform(crop_size=32, scale_range=(1.0, 1.0), flip=False, ignore_index=255)
    out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(1))
    assert out_mask.shape == (32, 32)
    assert int((out_mask != 255).sum()) == 10 * 12
    torch.testing.assert_close(out_image[:, out_mask == 255], torch.zeros(3, 32 * 32 - 120))


def test_random_scale_stays_within_its_range() -> None:
    image, mask = coded_pair(40, 40)
    transform = TrainTransform(crop_size=200, scale_range=(0.5, 2.0), flip=False)
    generator = torch.Generator().manual_seed(2)
    sizes = set()
    for _ in range(30):
        _, out_mask = transform(image, mask, generator)
        side = int((out_mask[0] != 255).sum())
        sizes.add(side)
        assert 20 <= side <= 80
        assert set(out_mask[out_mask != 255].unique().tolist()) <= set(range(5))  # nearest keeps labels
    assert max(sizes) - min(sizes) > 30


def test_eval_transform_keeps_the_whole_image_or_resizes_it() -> None:
    image, mask = coded_pair(30, 20)
    out_image, out_mask = EvalTransform()(image, mask)
    assert out_image.shape == (3, 30, 20) and torch.equal(out_mask, mask)
    out_image, out_mask = EvalTransform(size=(15, 10))(image, mask)
    assert out_image.shape == (3, 15, 10) and torch.equal(out_mask, mask[::2, ::2])


def test_bad_settings_are_errors() -> None:
    with pytest.raises(ValueError, match="scale_range must satisfy 0 < low <= high"):
        TrainTransform(crop_size=32, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="crop_size must be positive"):
        TrainTransform(crop_size=0)
