"""Built-in generated datasets: deterministic, disjoint splits, valid labels, the promised structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from asml.cli import main
from asml.data import SPLIT_SIZES, BuiltinSegmentation, TrainTransform


def dilate(mask: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    return F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)[0, 0] > 0


def erode(mask: torch.Tensor) -> torch.Tensor:
    return ~dilate(~mask)


@pytest.mark.parametrize("name", ["horses", "riders", "knights"])
def test_samples_are_deterministic_and_splits_never_share_an_image(name: str) -> None:
    first = BuiltinSegmentation(name, "train", size=48)
    again = BuiltinSegmentation(name, "train", size=48)
    for index in (0, 7):
        image_a, mask_a = first[index]
        image_b, mask_b = again[index]
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    other_seed = BuiltinSegmentation(name, "train", size=48, seed=1)
    assert not torch.equal(first[0][0], other_seed[0][0])
    hashes = {}
    for split in SPLIT_SIZES:
        dataset = BuiltinSegmentation(name, split, size=48)
        assert len(dataset) == SPLIT_SIZES[split]
        hashes[split] = {hash(dataset[i][0].numpy().tobytes()) for i in range(12)}
        assert len(hashes[split]) == 12
    assert not (hashes["train"] & hashes["val"]) and not (hashes["val"] & hashes["test"])


@pytest.mark.parametrize(("name", "classes"), [("horses", 2), ("riders", 4)])
def test_images_and_labels_have_the_documented_types_and_ranges(name: str, classes: int) -> None:
    dataset = BuiltinSegmentation(name, "val", size=64)
    assert dataset.num_classes == classes and len(dataset.class_names) == classes
    present = set()
    for index in range(16):
        image, mask = dataset[index]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 64, 64)
        assert mask.dtype == torch.int64 and tuple(mask.shape) == (64, 64)
        assert int(mask.min()) >= 0 and int(mask.max()) < classes
        assert image.float().std() > 10  # textured, not flat
        present.update(mask.unique().tolist())
    assert present == set(range(classes))


def test_horses_have_thin_parts_that_one_erosion_removes() -> None:
    dataset = BuiltinSegmentation("horses", "train", size=64)
    thin_fractions = []
    for index in range(16):
        horse = dataset[index][1] == 1
        area = int(horse.sum())
        assert area > 100
        # Pixels whose 3x3 neighbourhood leaves the horse: the boundary and the 1-2 px legs and tail.
        thin_fractions.append(1 - int(erode(horse).sum()) / area)
    assert min(thin_fractions) > 0.15


def test_riders_sit_on_horses_and_hold_their_lances() -> None:
    dataset = BuiltinSegmentation("riders", "train", size=64)
    checked = 0
    for index in range(24):
        mask = dataset[index][1]
        horse, rider, lance = mask == 1, mask == 2, mask == 3
        if int(rider.sum()) < 5:
            continue  # the rider may be outside the image or behind fence posts
        checked += 1
        assert bool((dilate(rider, 2) & horse).any()), index  # the rider touches a horse
        if int(lance.sum()) >= 5:
            assert bool((dilate(lance, 3) & rider).any()) or bool((dilate(lance, 3) & horse).any()), index
    assert checked >= 16


def test_transform_applies_and_bad_arguments_are_errors() -> None:
    dataset = BuiltinSegmentation("horses", "train", size=64, transform=TrainTransform(crop_size=48))
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 48, 48) and tuple(mask.shape) == (48, 48)
    with pytest.raises(ValueError, match="unknown built-in dataset 'zebras'; choose one of horses, riders"):
        BuiltinSegmentation("zebras")
    with pytest.raises(ValueError, match="unknown split 'dev' of 'horses'; choose one of train, val, test"):
        BuiltinSegmentation("horses", "dev")
    with pytest.raises(ValueError, match="size must be at least 32 pixels, got 16"):
        BuiltinSegmentation("horses", size=16)
    with pytest.raises(IndexError, match="index 128 out of range for the 128 images of horses/val"):
        BuiltinSegmentation("horses", "val")[128]


def test_preview_command_writes_a_picture_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "preview.png"
    assert main(["data", "preview", "riders", "--count", "3", "--size", "48", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as picture:
        assert picture.width > 3 * 48 and picture.height > 2 * 48
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "preview", "horses", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "exists; choose another --out or pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["data", "preview", "horses", "--count", "2", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != before


def test_some_horses_are_riderless_so_rider_classes_can_be_absent() -> None:
    dataset = BuiltinSegmentation("riders", "train", size=48)
    with_rider = [bool((dataset[i][1] == 2).any()) for i in range(40)]
    assert 0 < with_rider.count(False) < 20  # about a quarter riderless (or rider hidden)


def test_knights_hold_different_class_subsets_and_riders_only_ride_horses() -> None:
    dataset = BuiltinSegmentation("knights", "train", size=64)
    subsets = []
    for index in range(60):
        image, labels = dataset[index]
        present = tuple(int(c) for c in torch.unique(labels))
        subsets.append(present)
        if 2 in present:  # a rider sits on a horse: its pixels touch the horse's
            assert (dilate(labels == 2, 2) & (labels == 1)).any()
            assert 3 in present  # and holds a lance
        if present == (0,):  # no horse: clutter in the horse's texture, all of it background
            assert image.float().std() > 5
    counts = {subset: subsets.count(subset) for subset in set(subsets)}
    assert set(counts) == {(0,), (0, 1), (0, 1, 2, 3)}, counts
    assert 4 <= counts[(0,)] <= 20 and 8 <= counts[(0, 1)] <= 30  # about 20 % and 24 % of 60


def test_knights_lance_is_wider_and_their_rider_taller_than_the_riders_sets() -> None:
    def measures(name: str) -> tuple[float, float]:
        """The share of lance pixels that survive one erosion (0 for a 1-2 px line), and the mean
        height in rows of a rider that is there."""
        dataset = BuiltinSegmentation(name, "train", size=64)
        kept = total = 0
        heights = []
        for index in range(30):
            labels = dataset[index][1]
            lance = labels == 3
            kept += int(erode(lance).sum())
            total += int(lance.sum())
            rows = torch.nonzero((labels == 2).any(1))
            if len(rows):
                heights.append(int(rows.max() - rows.min()) + 1)
        return kept / max(total, 1), sum(heights) / len(heights)

    (riders_core, riders_height), (knights_core, knights_height) = measures("riders"), measures("knights")
    assert knights_core > 0.2 > 0.05 > riders_core
    # Its head stays in frame (the riders set's is cut off above the torso): about a third taller.
    assert knights_height > 1.2 * riders_height
