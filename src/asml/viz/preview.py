"""A picture of a dataset's samples: image, labels in colour, and the two overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["label_colormap", "save_dataset_preview"]


def label_colormap(count: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``[count, 3]`` uint8, class k's colour from the bits of k."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for label in range(count):
        value, red, green, blue = label, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[label] = (red, green, blue)
    return colours


def _as_rgb(image: Tensor) -> np.ndarray:
    array = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    if image.dtype.is_floating_point:  # normalised: stretch for display
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-6)
    else:
        array = array / 255.0
    return np.clip(array, 0, 1)


def save_dataset_preview(
    dataset: Dataset[tuple[Tensor, Tensor]],
    path: str | Path,
    count: int = 8,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG grid of the first ``count`` samples (rows: image, labels, overlay); return its path.

    Raises ``FileExistsError`` rather than replace an existing file unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another --out or pass --force to replace it")
    count = min(count, len(dataset))  # type: ignore[arg-type]
    if count < 1:
        raise ValueError("the dataset is empty: nothing to preview")
    colours = label_colormap()
    # A bare Figure (no pyplot): no global backend state, no display needed.
    figure = Figure(figsize=(2 * count, 6))
    axes = figure.subplots(3, count, squeeze=False)
    seen: set[int] = set()
    for column in range(count):
        image, mask = dataset[column]
        rgb = _as_rgb(image)
        labels = mask.numpy()
        seen.update(int(v) for v in np.unique(labels))
        coloured = colours[labels].astype(np.float64) / 255.0
        for row, picture in enumerate([rgb, coloured, 0.5 * rgb + 0.5 * coloured]):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].axis("off")
    if class_names is not None:
        legend = ", ".join(f"{label}: {class_names[label]}" for label in sorted(seen) if label < len(class_names))
        figure.suptitle(legend + ("; 255: ignored" if 255 in seen else ""), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path
