"""Build the real-data benchmark sets from files that install from the package registries.

Nothing is downloaded at run time: each source is a package (Debian or PyPI) fetched by its own package
manager, checked against the sha256 recorded here, and turned deterministically into the generic folder
layout that ``asml train`` reads (``data.dataset: folder``): ``images/``, ``masks/``, ``splits/``,
``classes.txt``, plus ``SOURCE.md`` (where it came from, its licence) and ``manifest.json`` (the
inputs' and outputs' sha256, class shares, class presence per image).

    .venv/bin/python benchmarks/real_data.py brain --out data/brain     # Debian mricron-data
    .venv/bin/python benchmarks/real_data.py roads --out data/roads     # PyPI solaris (wheel, not installed)

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

Sources: ``--source`` names a folder that holds the package's files as installed (``/usr/share/mricron/
templates`` for brain, the wheel's ``solaris/data`` for roads); without it the package is fetched into
``--cache`` with ``apt-get download`` or ``pip download`` and unpacked there.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "asml" / "sources"


class BuildError(RuntimeError):
    """A source is missing or is not the file this script was written for."""


# --------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A package's files this script reads, with their sha256 and how to fetch the package."""

    package: str
    fetch: Callable[[Path], Path]  # cache folder -> folder holding ``files``
    files: dict[str, str]  # file name -> sha256
    licence: str
    installed: Path | None = None  # where the package puts them when installed


def _fetch_deb(package: str, inner: str) -> Callable[[Path], Path]:
    def fetch(cache: Path) -> Path:
        target = cache / package
        if not (target / inner).is_dir():
            target.mkdir(parents=True, exist_ok=True)
            _run(["apt-get", "download", package], cwd=target)
            debs = sorted(target.glob(f"{package}_*.deb"))
            if not debs:
                raise BuildError(f"apt-get download {package} left no .deb in {target}")
            _run(["dpkg-deb", "-x", str(debs[-1]), str(target)])
        return target / inner

    return fetch


def _fetch_wheel(requirement: str, inner: str) -> Callable[[Path], Path]:
    def fetch(cache: Path) -> Path:
        target = cache / requirement.replace("==", "-")
        if not (target / inner).is_dir():
            target.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(target), requirement])
            wheels = sorted(target.glob("*.whl"))
            if not wheels:
                raise BuildError(f"pip download {requirement} left no wheel in {target}")
            with zipfile.ZipFile(wheels[-1]) as wheel:
                wheel.extractall(target, [n for n in wheel.namelist() if n.startswith(inner + "/")])
        return target / inner

    return fetch


def _run(command: list[str], cwd: Path | None = None) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise BuildError(f"{' '.join(command)} failed ({error}); give --source to a folder with the files") from None


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
SOLARIS = Source(
    package="PyPI solaris 0.4.0 (wheel, unpacked, not installed)",
    fetch=_fetch_wheel("solaris==0.4.0", "solaris/data"),
    files={
        "road_mask_input.tif": "7c561b4a96190dfacc324a03667301935e8868bddacf0496dd7d369224f0ea87",
        "sample_road_raster_mask.tif": "d545452e2d92a9b46f38375eeadc600345da16a021739a58bf8f5425b5371a09",
    },
    licence="Apache-2.0 (solaris); imagery: SpaceNet, CC BY-SA 4.0",
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locate(source: Source, given: Path | None, cache: Path) -> Path:
    """The folder holding ``source.files``, each checked against its sha256."""
    if given is not None:
        folder = given
    elif source.installed is not None and all((source.installed / f).is_file() for f in source.files):
        folder = source.installed
    else:
        folder = source.fetch(cache)
    for name, expected in source.files.items():
        path = folder / name
        if not path.is_file():
            raise BuildError(f"{path} does not exist: --source must hold {', '.join(source.files)} of {source.package}")
        found = _sha256(path)
        if expected and found != expected:
            raise BuildError(f"{path} has sha256 {found}, expected {expected} ({source.package})")
    return folder


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


def write_folder(
    out: Path,
    samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]],
    classes: list[str],
    source_md: str,
    inputs: dict[str, str],
) -> dict[str, object]:
    """Write ``samples`` (split -> [(id, uint8 [H, W] grey image, uint8 [H, W] mask)]) in the generic
    layout; return the manifest (also written). Refuses to write into a folder that holds other files."""
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise BuildError(f"{out} holds files that this script did not write; give an empty or new --out")
    if out.exists():
        shutil.rmtree(out)
    for folder in ("images", "masks", "splits"):
        (out / folder).mkdir(parents=True)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    (out / "SOURCE.md").write_text(source_md)
    num_classes = len(classes)
    manifest: dict[str, object] = {"classes": classes, "inputs": inputs, "splits": {}}
    outputs = {}
    for split, items in samples.items():
        (out / "splits" / f"{split}.txt").write_text("".join(f"{sample_id}\n" for sample_id, _, _ in items))
        pixels = np.zeros(num_classes, dtype=np.int64)
        presence = np.zeros(num_classes, dtype=np.int64)
        for sample_id, image, mask in items:
            Image.fromarray(np.repeat(image[:, :, None], 3, axis=2), "RGB").save(out / "images" / f"{sample_id}.png")
            Image.fromarray(mask, "L").save(out / "masks" / f"{sample_id}.png")
            counts = np.bincount(mask.ravel(), minlength=num_classes)
            pixels += counts
            presence += counts > 0
            for kind in ("images", "masks"):
                outputs[f"{kind}/{sample_id}.png"] = _sha256(out / kind / f"{sample_id}.png")
        shares = 100 * pixels / max(1, int(pixels.sum()))
        manifest["splits"][split] = {  # type: ignore[index]
            "images": len(items),
            "class_share_percent": {c: round(float(p), 3) for c, p in zip(classes, shares, strict=True)},
            "images_holding_class": {c: int(n) for c, n in zip(classes, presence, strict=True)},
        }
    manifest["outputs_sha256"] = hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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


def brain_samples(folder: Path, size: int) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Sagittal slices, superior up and anterior right, padded to a square field of view and resized to
    ``size``; train from the left hemisphere (x < 84), val from the right (x > 98)."""
    t1, labels = brain_label_volume(folder)
    low, high = np.percentile(t1[labels > 0], [0.5, 99.5])  # one window for the whole scan
    samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {"train": [], "val": []}
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


# ------------------------------------------------------------------------------------------------ roads

ROAD_TILE = 128
ROAD_TRAIN_COLUMNS, ROAD_VAL_COLUMNS = range(0, 7), range(8, 10)  # column 7: a gap between the splits


def road_samples(folder: Path) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """128 px tiles of the aerial image (11-bit, windowed to its 0.5-99.5 percentiles) and its road mask."""
    image = np.asarray(Image.open(folder / "road_mask_input.tif"), dtype=np.float64)
    roads = np.asarray(Image.open(folder / "sample_road_raster_mask.tif")) > 0
    if image.shape != roads.shape:
        raise BuildError(f"{folder}: image {image.shape} and road mask {roads.shape} differ in size")
    low, high = np.percentile(image, [0.5, 99.5])
    grey = (np.clip((image - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
    samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {"train": [], "val": []}
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


BUILDERS = {"brain": build_brain, "roads": build_roads}


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
