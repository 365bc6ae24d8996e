"""Dataset readers: tiny trees in each real layout are written here and read back pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from asml.data.readers import (
    CityscapesSegmentation,
    DatasetError,
    FolderSegmentation,
    VOCSegmentation,
    WeizmannHorse,
)

RNG = np.random.default_rng(0)


def random_rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = RNG.integers(0, 256, 768, dtype=np.uint8).tolist()  # colours must not matter
    image.putpalette(palette)
    image.save(path)


def save_rgb(path: Path, array: np.ndarray) -> np.ndarray:
    """Write an image; return what an independent PIL read gives back (JPEG is lossy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def write_voc(root: Path, ids: dict[str, tuple[int, int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    written = {}
    for sample_id, (height, width) in ids.items():
        labels = RNG.integers(0, 21, (height, width))
        labels[0, :] = 255  # void border, as VOC has
        save_palette_png(root / "SegmentationClass" / f"{sample_id}.png", labels)
        image = save_rgb(root / "JPEGImages" / f"{sample_id}.jpg", random_rgb(height, width))
        written[sample_id] = (image, labels)
    return written


def assert_pair(dataset: object, index: int, image: np.ndarray, labels: np.ndarray) -> None:
    got_image, got_mask = dataset[index]  # type: ignore[index]
    assert got_image.dtype == torch.uint8 and got_mask.dtype == torch.int64
    np.testing.assert_array_equal(got_image.permute(1, 2, 0).numpy(), image)
    np.testing.assert_array_equal(got_mask.numpy(), labels)


def test_voc_reads_palette_indices_and_the_split_order(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    written = write_voc(root, {"2007_000032": (20, 30), "2007_000039": (25, 17)})
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n2007_000032\n")
    dataset = VOCSegmentation(tmp_path, split="val")  # the folder holding VOCdevkit works too
    assert len(dataset) == 2 and dataset.num_classes == 21 and dataset.class_names[15] == "person"
    assert_pair(dataset, 0, *written["2007_000039"])
    assert_pair(dataset, 1, *written["2007_000032"])


def test_voc_train_aug_merges_sbd_and_leaves_out_voc_val(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    written = write_voc(root, {"a": (10, 12), "b": (10, 12), "c": (8, 9), "d": (6, 7)})
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("a\n")
    (lists / "val.txt").write_text("b\n")
    sbd = tmp_path / "SBD" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("c\nb\n")
    (sbd / "val.txt").write_text("d\n")
    sbd_labels = RNG.integers(0, 21, (6, 7))
    scipy.io.savemat(sbd / "cls" / "d.mat", {"GTcls": {"Segmentation": sbd_labels.astype(np.uint8)}})
    (root / "SegmentationClass" / "d.png").unlink()  # d exists in SBD only
    dataset = VOCSegmentation(root, split="train_aug", sbd_root=sbd)
    assert [s.sample_id for s in dataset.samples] == ["a", "c", "d"]
    assert_pair(dataset, 0, *written["a"])
    assert_pair(dataset, 2, written["d"][0], sbd_labels)
    with pytest.raises(DatasetError, match="split 'train_aug' needs the SBD set"):
        VOCSegmentation(root, split="train_aug")


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    ids = np.array([[7, 8, 0, 26], [33, 24, 5, 11]], dtype=np.uint8)
    expected = np.array([[0, 1, 255, 13], [18, 11, 255, 2]])
    image = save_rgb(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000019_leftImg8bit.png", random_rgb(2, 4))
    mask = tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelIds.png"
    mask.parent.mkdir(parents=True)
    Image.fromarray(ids, mode="L").save(mask)
    dataset = CityscapesSegmentation(tmp_path, split="val")
    assert dataset.num_classes == 19 and len(dataset) == 1
    assert_pair(dataset, 0, image, expected)


def test_weizmann_horse_binarises_masks_and_splits_in_sorted_order(tmp_path: Path) -> None:
    images, labels = {}, {}
    (tmp_path / "mask").mkdir()
    for index in range(5):
        name = f"horse{index:03d}"
        images[name] = save_rgb(tmp_path / "horse" / f"{name}.png", random_rgb(9, 11))
        labels[name] = (RNG.random((9, 11)) > 0.5).astype(np.int64)
        Image.fromarray((labels[name] * 255).astype(np.uint8), mode="L").save(tmp_path / "mask" / f"{name}.png")
    train = WeizmannHorse(tmp_path, split="train", train_size=3)
    test = WeizmannHorse(tmp_path, split="test", train_size=3)
    assert [s.sample_id for s in train.samples] == ["horse000", "horse001", "horse002"]
    assert [s.sample_id for s in test.samples] == ["horse003", "horse004"]
    assert_pair(test, 1, images["horse004"], labels["horse004"])


def write_folder(root: Path, ids: list[str], num_classes: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    written = {}
    for index, sample_id in enumerate(ids):
        labels = RNG.integers(0, num_classes, (12, 10))
        labels[5, 5] = 255
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint8), mode="L").save(root / "masks" / f"{sample_id}.png")
        suffix = ".png" if index % 2 == 0 else ".jpg"
        written[sample_id] = (save_rgb(root / "images" / f"{sample_id}{suffix}", random_rgb(12, 10)), labels)
    return written


def test_folder_layout_with_splits_and_class_names(tmp_path: Path) -> None:
    written = write_folder(tmp_path, ["x1", "x2", "x3"])
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\nperson\n")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("x3\nx2\n")
    dataset = FolderSegmentation(tmp_path, split="val")
    assert dataset.class_names == ("background", "road", "car", "person") and len(dataset) == 2
    assert_pair(dataset, 0, *written["x3"])
    assert_pair(dataset, 1, *written["x2"])
    everything = FolderSegmentation(tmp_path)
    assert [s.sample_id for s in everything.samples] == ["x1", "x2", "x3"]


# --- bad input: every error names the file and says what was expected ---


def test_missing_roots_show_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"(?s)no PASCAL VOC 2012 dataset at .*JPEGImages/<id>.jpg"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"(?s)no Cityscapes dataset at .*gtFine_labelIds.png"):
        CityscapesSegmentation(tmp_path)
    with pytest.raises(DatasetError, match=r"(?s)no Weizmann Horse dataset at .*figure_ground"):
        WeizmannHorse(tmp_path)
    with pytest.raises(DatasetError, match=r"(?s)no image-folder dataset at .*masks/<id>.png"):
        FolderSegmentation(tmp_path, num_classes=2)


def test_split_problems_are_named(tmp_path: Path) -> None:
    write_folder(tmp_path, ["a"])
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "empty.txt").write_text("\n\n")
    (tmp_path / "splits" / "ghost.txt").write_text("a\nghost\n")
    with pytest.raises(DatasetError, match=r"split file .*empty.txt lists no ids"):
        FolderSegmentation(tmp_path, split="empty", num_classes=4)
    with pytest.raises(DatasetError, match=r"split file .*nosuch.txt does not exist"):
        FolderSegmentation(tmp_path, split="nosuch", num_classes=4)
    with pytest.raises(DatasetError, match=r"id 'ghost' is listed but its image .*ghost.png\|.jpg\|.jpeg does not"):
        FolderSegmentation(tmp_path, split="ghost", num_classes=4)
    (tmp_path / "images" / "b.png").write_bytes((tmp_path / "images" / "a.png").read_bytes())
    (tmp_path / "splits" / "nomask.txt").write_text("b\n")
    with pytest.raises(DatasetError, match=r"id 'b' is listed but its mask .*masks/b.png does not exist"):
        FolderSegmentation(tmp_path, split="nomask", num_classes=4)
    with pytest.raises(DatasetError, match="give num_classes or write the class names"):
        FolderSegmentation(tmp_path)


def test_file_problems_are_named_when_read(tmp_path: Path) -> None:
    write_folder(tmp_path, ["ok", "big", "labels", "broken", "rgba", "rgbmask"])
    Image.fromarray(random_rgb(13, 10)).save(tmp_path / "images" / "big.png")
    Image.fromarray(np.full((12, 10), 9, dtype=np.uint8), mode="L").save(tmp_path / "masks" / "labels.png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    Image.fromarray(RNG.integers(0, 256, (12, 10, 4), dtype=np.uint8), mode="RGBA").save(
        tmp_path / "images" / "rgba.png"
    )
    Image.fromarray(random_rgb(12, 10)).save(tmp_path / "masks" / "rgbmask.png")
    dataset = FolderSegmentation(tmp_path, num_classes=4)
    by_id = {s.sample_id: index for index, s in enumerate(dataset.samples)}
    dataset[by_id["ok"]]
    with pytest.raises(DatasetError, match=r"masks/big.png is 10x12 but image .*images/big.png is 10x13"):
        dataset[by_id["big"]]
    with pytest.raises(DatasetError, match=r"masks/labels.png holds labels \[9\]; expected class indices in \[0, 4\)"):
        dataset[by_id["labels"]]
    with pytest.raises(DatasetError, match=r"cannot read image .*images/broken.jpg"):
        dataset[by_id["broken"]]
    with pytest.raises(DatasetError, match=r"images/rgba.png has 4 channel\(s\) \(mode RGBA\), expected 3 \(RGB\)"):
        dataset[by_id["rgba"]]
    with pytest.raises(DatasetError, match=r"masks/rgbmask.png is RGB with 3 channels; expected a palette"):
        dataset[by_id["rgbmask"]]
