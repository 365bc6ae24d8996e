"""The real-data sets cut from one large real image: tiles, split by region of the image.

**roads** (figure-ground, 128 px): a 1300 x 1300 aerial image and its road raster (PyPI solaris).
**nuclei** (figure-ground, 128 px): a 512 x 512 fluorescence microscopy image of cell nuclei with its
hand-drawn instance masks (PyPI stardist; the 2018 Data Science Bowl). Nuclei are 20 % of the pixels,
round, often touching: their boundaries are what BF measures.

Both are built by ``benchmarks/real_data.py`` (which see).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from real_sources import BuildError, Samples, Source, _fetch_wheel, _sha256, locate, write_folder

IGNORE = 255  # the void label of the folder layout


def windowed_grey(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` of any range -> ``uint8 [H, W]``, windowed to its 0.5-99.5 percentiles."""
    image = image.astype(np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    return (np.clip((image - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------ roads

SOLARIS = Source(
    package="PyPI solaris 0.4.0 (wheel, unpacked, not installed)",
    fetch=_fetch_wheel("solaris==0.4.0", "solaris/data"),
    files={
        "road_mask_input.tif": "7c561b4a96190dfacc324a03667301935e8868bddacf0496dd7d369224f0ea87",
        "sample_road_raster_mask.tif": "d545452e2d92a9b46f38375eeadc600345da16a021739a58bf8f5425b5371a09",
    },
    licence="Apache-2.0 (solaris); imagery: SpaceNet, CC BY-SA 4.0",
)

ROAD_TILE = 128
ROAD_TRAIN_COLUMNS, ROAD_VAL_COLUMNS = range(0, 7), range(8, 10)  # column 7: a gap between the splits


def road_samples(folder: Path) -> Samples:
    """128 px tiles of the aerial image (11-bit, windowed to its 0.5-99.5 percentiles) and its road mask."""
    image = np.asarray(Image.open(folder / "road_mask_input.tif"), dtype=np.float64)
    roads = np.asarray(Image.open(folder / "sample_road_raster_mask.tif")) > 0
    if image.shape != roads.shape:
        raise BuildError(f"{folder}: image {image.shape} and road mask {roads.shape} differ in size")
    grey = windowed_grey(image)
    samples: Samples = {"train": [], "val": []}
    rows, columns = image.shape[0] // ROAD_TILE, image.shape[1] // ROAD_TILE
    for row in range(rows):
        for column in range(columns):
            split = "train" if column in ROAD_TRAIN_COLUMNS else "val" if column in ROAD_VAL_COLUMNS else None
            if split is None:
                continue
            window = np.s_[row * ROAD_TILE : (row + 1) * ROAD_TILE, column * ROAD_TILE : (column + 1) * ROAD_TILE]
            samples[split].append((f"tile-r{row}-c{column}", grey[window], roads[window].astype(np.uint8)))
    return samples


ROADS_MD = """# roads: road masks on a real aerial image

Built by `benchmarks/real_data.py roads` from the PyPI wheel `solaris==0.4.0` (`solaris/data`):
`road_mask_input.tif` (1300 x 1300, panchromatic, 11-bit) and `sample_road_raster_mask.tif`.
128 px tiles; train: tile columns 0-6, val: columns 8-9, column 7 left out.
Licence: {licence}.
"""


def build_roads(out: Path, source: Path | None, cache: Path, size: int) -> dict[str, object]:
    if size != ROAD_TILE:
        raise BuildError(f"roads are cut into {ROAD_TILE} px tiles at the image's own resolution; got --size {size}")
    folder = locate(SOLARIS, source, cache)
    inputs = {name: _sha256(folder / name) for name in SOLARIS.files}
    return write_folder(out, road_samples(folder), ["background", "road"], ROADS_MD.format(licence=SOLARIS.licence),
                        inputs)  # fmt: skip


# ----------------------------------------------------------------------------------------------- nuclei

STARDIST = Source(
    package="PyPI stardist 0.9.2 (wheel, unpacked, not installed)",
    fetch=_fetch_wheel("stardist==0.9.2", "stardist/data/images"),
    files={
        "img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
    },
    licence="BSD-3-Clause (stardist); image and masks: 2018 Data Science Bowl (BBBC038), CC0 (from memory)",
)
NUCLEUS_TILE = 128
NUCLEUS_TRAIN_ROWS = 2  # tile rows 0-1 (the image's top half) train, the rows below validate


def nucleus_samples(folder: Path) -> Samples:
    """128 px tiles of the microscopy image and its nucleus-or-not mask, the top half for training and
    the bottom half for validation. A nucleus cut by the line between the halves is in both: it is
    marked void (255) on both sides, so no labelled nucleus is seen in training and scored in val."""
    image = np.asarray(Image.open(folder / "img2d.tif"))
    instances = np.asarray(Image.open(folder / "mask2d.tif")).astype(np.int64)
    if image.shape != instances.shape or image.ndim != 2:
        raise BuildError(f"{folder}: expected one 2-D image and mask of the same size, got {image.shape} and "
                         f"{instances.shape}")  # fmt: skip
    line = NUCLEUS_TRAIN_ROWS * NUCLEUS_TILE
    if image.shape[0] < 2 * line or image.shape[1] < NUCLEUS_TILE:
        raise BuildError(f"{folder}: the image is {image.shape}, expected at least {2 * line} x {NUCLEUS_TILE}")
    cut = np.intersect1d(instances[line - 1], instances[line])
    mask = (instances > 0).astype(np.uint8)
    mask[np.isin(instances, cut[cut > 0])] = IGNORE
    grey = windowed_grey(image)
    samples: Samples = {"train": [], "val": []}
    for row in range(image.shape[0] // NUCLEUS_TILE):
        for column in range(image.shape[1] // NUCLEUS_TILE):
            window = np.s_[
                row * NUCLEUS_TILE : (row + 1) * NUCLEUS_TILE, column * NUCLEUS_TILE : (column + 1) * NUCLEUS_TILE
            ]
            split = "train" if row < NUCLEUS_TRAIN_ROWS else "val"
            samples[split].append((f"tile-r{row}-c{column}", grey[window], mask[window]))
    return samples


NUCLEI_MD = """# nuclei: cell nuclei on a real fluorescence microscopy image

Built by `benchmarks/real_data.py nuclei` from the PyPI wheel `stardist==0.9.2`
(`stardist/data/images`): `img2d.tif` (512 x 512, a crop of one 2018 Data Science Bowl image) and
`mask2d.tif` (its hand-drawn nucleus instances, merged here into nucleus / background).
128 px tiles; train: the top two tile rows, val: the bottom two. Nuclei cut by the line between
them are void (255) in both. Licence: {licence}.
"""


def build_nuclei(out: Path, source: Path | None, cache: Path, size: int) -> dict[str, object]:
    if size != NUCLEUS_TILE:
        raise BuildError(
            f"nuclei are cut into {NUCLEUS_TILE} px tiles at the image's own resolution; got --size {size}"
        )
    folder = locate(STARDIST, source, cache)
    inputs = {name: _sha256(folder / name) for name in STARDIST.files}
    return write_folder(out, nucleus_samples(folder), ["background", "nucleus"],
                        NUCLEI_MD.format(licence=STARDIST.licence), inputs)  # fmt: skip
