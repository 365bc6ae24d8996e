"""Readers for the dataset layouts users have on disk, read as they are distributed.

* ``VOCSegmentation``: PASCAL VOC 2012 (``JPEGImages``, palette PNGs in ``SegmentationClass``,
  ``ImageSets/Segmentation/<split>.txt``), optionally with the SBD augmented set (``cls/*.mat``).
* ``CityscapesSegmentation``: ``leftImg8bit`` and ``gtFine/*_labelIds.png`` mapped to the 19 train ids.
* ``WeizmannHorse``: an image folder and a figure-ground mask folder.
* ``FolderSegmentation``: ``images/<id>.<png|jpg|jpeg>``, ``masks/<id>.png``, optional
  ``splits/<split>.txt`` and ``classes.txt``.

Every reader returns ``(image, mask)`` pairs: ``uint8 [3, H, W]`` and ``int64 [H, W]`` without a
transform, whatever the transform makes of them otherwise. Problems in the files raise
``DatasetError`` naming the file and what was expected; a missing root shows the expected layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CITYSCAPES_CLASSES",
    "IMAGE_MODES",
    "MASK_MODES",
    "VOC_CLASSES",
    "CityscapesSegmentation",
    "DatasetError",
    "FolderSegmentation",
    "SegmentationFiles",
    "VOCSegmentation",
    "WeizmannHorse",
    "open_picture",
    "read_image",
    "read_label_png",
]

Transform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Cityscapes label id -> train id (the official table); every other id -> 255.
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_MODES = ("P", "L", "I", "I;16", "1")  # PIL modes whose pixel values are class indices
IMAGE_MODES = {3: "RGB", 1: "L"}  # image channels -> the PIL mode they must be read in


class DatasetError(ValueError):
    """A problem with a dataset on disk; the message names the file and what was expected."""


def open_picture(path: Path, kind: str, decode: bool = True) -> Image.Image:
    """Open ``path``, decoding it fully unless ``decode`` is False (then only its header is read:
    mode and size); a missing or unreadable file is a ``DatasetError`` naming it."""
    try:
        with Image.open(path) as opened:
            if decode:
                opened.load()
            return opened
    except FileNotFoundError:
        raise DatasetError(f"{kind} {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"cannot read {kind} {path}: {error}") from None


def read_image(path: Path, channels: int = 3) -> Tensor:
    """``uint8 [channels, H, W]`` from an image file; 3 channels means RGB, 1 means grayscale."""
    image = open_picture(path, "image")
    expected_mode = IMAGE_MODES.get(channels)
    if image.mode != expected_mode:
        found = len(image.getbands())
        raise DatasetError(
            f"image {path} has {found} channel(s) (mode {image.mode}), expected {channels} ({expected_mode})"
        )
    array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_label_png(path: Path) -> np.ndarray:
    """Class indices ``[H, W]`` from a palette (``P``) or single-channel PNG; RGB masks are refused."""
    mask = open_picture(path, "mask")
    if mask.mode not in MASK_MODES:
        raise DatasetError(
            f"mask {path} is {mask.mode} with {len(mask.getbands())} channels; expected a palette or "
            "single-channel PNG whose pixel values are class indices"
        )
    return np.asarray(mask).astype(np.int64)


def read_sbd_mat(path: Path) -> np.ndarray:
    """Class indices from an SBD ``cls/<id>.mat`` file (``GTcls.Segmentation``)."""
    from scipy.io import loadmat  # scipy is slow to import; only SBD users pay for it

    try:
        return np.asarray(loadmat(str(path))["GTcls"]["Segmentation"][0][0], dtype=np.int64)
    except FileNotFoundError:
        raise DatasetError(f"SBD mask {path} does not exist") from None
    except (KeyError, IndexError, ValueError, OSError) as error:
        raise DatasetError(f"cannot read SBD mask {path} (expected GTcls.Segmentation): {error}") from None


@dataclass(frozen=True)
class Sample:
    """One image and the file its mask comes from."""

    sample_id: str
    image: Path
    mask: Path


class SegmentationFiles(Dataset[tuple[Tensor, Tensor]]):
    """Pairs of image and mask files with the checks every reader shares.

    Args:
        samples: the pairs, in order.
        num_classes: labels must lie in [0, num_classes) or equal ``ignore_index``.
        class_names: one name per class.
        transform: ``(image, mask) -> (image, mask)``, e.g. ``TrainTransform``; None returns raw tensors.
        ignore_index: the void label.
        read_mask: file -> ``int64 [H, W]`` raw labels.
        label_table: optional lookup applied to raw labels (e.g. Cityscapes ids -> train ids).
        image_channels: channels each image must have.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        class_names: Sequence[str],
        transform: Transform | None = None,
        ignore_index: int = 255,
        read_mask: Callable[[Path], np.ndarray] = read_label_png,
        label_table: np.ndarray | None = None,
        image_channels: int = 3,
    ) -> None:
        if not samples:
            raise DatasetError("the dataset has no samples")
        if len(class_names) != num_classes:
            raise DatasetError(f"{len(class_names)} class names for {num_classes} classes")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.transform = transform
        self.ignore_index = ignore_index
        self.read_mask = read_mask
        self.label_table = label_table
        self.image_channels = image_channels

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """The checked raw pair: ``uint8 [C, H, W]`` image and ``int64 [H, W]`` mask."""
        sample = self.samples[index]
        image = read_image(sample.image, self.image_channels)
        labels = self.read_mask(sample.mask)
        if self.label_table is not None:
            labels = self.label_table[np.clip(labels, 0, len(self.label_table) - 1)]
        if labels.shape != tuple(image.shape[1:]):
            raise DatasetError(
                f"mask {sample.mask} is {labels.shape[1]}x{labels.shape[0]} but image {sample.image} is "
                f"{image.shape[2]}x{image.shape[1]} (width x height); they must be the same size"
            )
        bad = (labels < 0) | ((labels >= self.num_classes) & (labels != self.ignore_index))
        if bad.any():
            values = sorted({int(v) for v in np.unique(labels[bad])})[:5]
            raise DatasetError(
                f"mask {sample.mask} holds labels {values}; expected class indices in [0, {self.num_classes}) "
                f"or the ignore label {self.ignore_index}"
            )
        return image, torch.from_numpy(labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.load(index)
        return self.transform(image, mask) if self.transform is not None else (image, mask)


def _read_split(split_file: Path) -> list[str]:
    if not split_file.is_file():
        raise DatasetError(f"split file {split_file} does not exist")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split file {split_file} lists no ids")
    return ids


def _require_files(samples: list[Sample]) -> list[Sample]:
    """The samples, if every listed image and mask exists; else one error naming the missing files."""
    missing = [
        f"id {sample.sample_id!r} is listed but its {kind} {path} does not exist"
        for sample in samples
        for kind, path in (("image", sample.image), ("mask", sample.mask))
        if not path.is_file()
    ]
    if len(missing) == 1:
        raise DatasetError(missing[0])
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(f"{len(missing)} listed files do not exist:\n  {shown}{more}")
    return samples


def _missing_root(name: str, root: Path, layout: str) -> DatasetError:
    return DatasetError(f"no {name} dataset at {root}; expected this layout:\n{layout}")


class VOCSegmentation(SegmentationFiles):
    """PASCAL VOC 2012 segmentation, optionally with the SBD augmented training set.

    Args:
        root: the ``VOC2012`` folder (or a folder holding ``VOCdevkit/VOC2012``).
        split: ``train``, ``val``, ``trainval`` (the official lists) or ``train_aug``.
        sbd_root: the SBD ``dataset`` folder (with ``cls/`` and ``train.txt``/``val.txt``), needed for
            ``train_aug``: VOC train plus SBD train and val, minus VOC val (10,582 images), unless
            ``ImageSets/Segmentation/train_aug.txt`` exists, which is then used as it is. Masks come
            from ``SegmentationClass`` where VOC has them, else from SBD's ``cls/<id>.mat``.
        transform: joint transform (see ``asml.data.transforms``).
    """

    LAYOUT = (
        "  <root>/JPEGImages/<id>.jpg\n"
        "  <root>/SegmentationClass/<id>.png        (palette PNG, 255 = void)\n"
        "  <root>/ImageSets/Segmentation/<split>.txt (one id per line)"
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sbd_root: str | Path | None = None,
        transform: Transform | None = None,
    ) -> None:
        root = Path(root)
        if (root / "VOCdevkit" / "VOC2012").is_dir():
            root = root / "VOCdevkit" / "VOC2012"
        if not (root / "JPEGImages").is_dir():
            raise _missing_root("PASCAL VOC 2012", root, self.LAYOUT)
        lists = root / "ImageSets" / "Segmentation"
        sbd = Path(sbd_root) if sbd_root is not None else None
        if split == "train_aug" and not (lists / "train_aug.txt").is_file():
            if sbd is None or not (sbd / "cls").is_dir():
                raise DatasetError(
                    f"split 'train_aug' needs the SBD set: pass sbd_root=<SBD dataset folder with cls/, train.txt, "
                    f"val.txt> (got {sbd}), or put a train_aug.txt in {lists}"
                )
            val = set(_read_split(lists / "val.txt"))
            union = dict.fromkeys(_read_split(sbd / "train.txt") + _read_split(sbd / "val.txt"))
            union.update(dict.fromkeys(_read_split(lists / "train.txt")))
            ids = sorted(i for i in union if i not in val)
        else:
            ids = _read_split(lists / f"{split}.txt")
        samples = []
        for sample_id in ids:
            voc_mask = root / "SegmentationClass" / f"{sample_id}.png"
            if not voc_mask.is_file() and sbd is not None:
                voc_mask = sbd / "cls" / f"{sample_id}.mat"
            samples.append(Sample(sample_id, root / "JPEGImages" / f"{sample_id}.jpg", voc_mask))
        super().__init__(_require_files(samples), 21, VOC_CLASSES, transform, read_mask=_read_voc_or_sbd_mask)


def _read_voc_or_sbd_mask(path: Path) -> np.ndarray:
    return read_sbd_mat(path) if path.suffix == ".mat" else read_label_png(path)


class CityscapesSegmentation(SegmentationFiles):
    """Cityscapes fine annotations, label ids mapped to the 19 train ids (others -> 255).

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``train``, ``val`` or ``test``.
    """

    LAYOUT = (
        "  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        "  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
    )

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        root = Path(root)
        images_dir = root / "leftImg8bit" / split
        if not images_dir.is_dir():
            raise _missing_root("Cityscapes", root, self.LAYOUT)
        samples = []
        for image in sorted(images_dir.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            mask = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
            samples.append(Sample(stem, image, mask))
        if not samples:
            raise DatasetError(
                f"split {split!r} of Cityscapes at {root} is empty: no *_leftImg8bit.png in {images_dir}"
            )
        table = np.full(256, 255, dtype=np.int64)
        for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
            table[label_id] = train_id
        super().__init__(_require_files(samples), 19, CITYSCAPES_CLASSES, transform, label_table=table)


class WeizmannHorse(SegmentationFiles):
    """Weizmann Horse figure-ground: images and masks with the same file names (0 = background).

    Any mask value above 0 counts as horse (the set ships masks as 0/1 or 0/255). There is no
    official split: ``train`` is the first ``train_size`` ids in sorted order (200 by default, as
    in the literature's 200/128 split), ``test`` the rest, ``all`` everything.

    Args:
        root: folder holding the image folder and the mask folder.
        image_dir, mask_dir: their names; by default the first present of ``horse``/``rgb``/``images``
            and ``mask``/``figure_ground``/``masks``.
    """

    IMAGE_DIRS = ("horse", "rgb", "images")
    MASK_DIRS = ("mask", "figure_ground", "masks")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        train_size: int = 200,
    ) -> None:
        root = Path(root)
        images = self._pick(root, image_dir, self.IMAGE_DIRS)
        masks = self._pick(root, mask_dir, self.MASK_DIRS)
        if images is None or masks is None:
            layout = (
                f"  <root>/{'|'.join(self.IMAGE_DIRS)}/<name>.png|jpg\n"
                f"  <root>/{'|'.join(self.MASK_DIRS)}/<name>.png   (0 = background, >0 = horse)"
            )
            raise _missing_root("Weizmann Horse", root, layout)
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if split not in ("train", "test", "all"):
            raise DatasetError(f"Weizmann Horse split must be train, test or all, got {split!r}")
        chosen = {"train": files[:train_size], "test": files[train_size:], "all": files}[split]
        if not chosen:
            raise DatasetError(
                f"split {split!r} of Weizmann Horse at {root} is empty ({len(files)} images in {images})"
            )
        samples = [Sample(p.stem, p, masks / f"{p.stem}.png") for p in chosen]
        table = np.ones(256, dtype=np.int64)
        table[0] = 0
        super().__init__(_require_files(samples), 2, ("background", "horse"), transform, label_table=table)

    @staticmethod
    def _pick(root: Path, given: str | None, candidates: Sequence[str]) -> Path | None:
        for name in [given] if given is not None else candidates:
            if (root / name).is_dir():
                return root / name
        return None


class FolderSegmentation(SegmentationFiles):
    """The generic layout: ``images/<id>.<png|jpg|jpeg>`` and ``masks/<id>.png`` of class indices.

    Args:
        root: folder holding ``images/`` and ``masks/`` (and optionally ``splits/``, ``classes.txt``).
        split: read ids from ``splits/<split>.txt``; None takes every image in ``images/``.
        num_classes: number of classes; default: the lines of ``classes.txt``.
        ignore_index: void label in the masks.
    """

    LAYOUT = (
        "  <root>/images/<id>.png|jpg|jpeg\n"
        "  <root>/masks/<id>.png          (single-channel class indices)\n"
        "  <root>/splits/<split>.txt      (optional: ids, one per line)\n"
        "  <root>/classes.txt             (optional: class names, one per line)"
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        num_classes: int | None = None,
        transform: Transform | None = None,
        ignore_index: int = 255,
        image_channels: int = 3,
    ) -> None:
        root = Path(root)
        if not (root / "images").is_dir() or not (root / "masks").is_dir():
            raise _missing_root("image-folder", root, self.LAYOUT)
        names = self._class_names(root, num_classes)
        if split is None:
            images = {p.stem: p for p in sorted((root / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
            if not images:
                raise DatasetError(f"no images (.png, .jpg, .jpeg) in {root / 'images'}")
            ids = list(images)
        else:
            ids = _read_split(root / "splits" / f"{split}.txt")
            images = {i: self._find_image(root, i) for i in ids}
        samples = [Sample(i, images[i], root / "masks" / f"{i}.png") for i in ids]
        super().__init__(
            _require_files(samples), len(names), names, transform, ignore_index, image_channels=image_channels
        )

    @staticmethod
    def _class_names(root: Path, num_classes: int | None) -> tuple[str, ...]:
        listed = root / "classes.txt"
        if listed.is_file():
            names = tuple(line.strip() for line in listed.read_text().splitlines() if line.strip())
            if num_classes is not None and num_classes != len(names):
                raise DatasetError(f"{listed} names {len(names)} classes but num_classes={num_classes} was given")
            return names
        if num_classes is None:
            raise DatasetError(f"give num_classes or write the class names, one per line, to {listed}")
        return tuple(f"class {index}" for index in range(num_classes))

    @staticmethod
    def _find_image(root: Path, sample_id: str) -> Path:
        """The image of ``sample_id`` in whichever suffix exists; if none does, a path that does not exist
        and reads as the alternatives (``<id>.png|.jpg|.jpeg``), so missing files are named together."""
        for suffix in IMAGE_SUFFIXES:
            path = root / "images" / f"{sample_id}{suffix}"
            if path.is_file():
                return path
        return root / "images" / (sample_id + "|".join(IMAGE_SUFFIXES))
