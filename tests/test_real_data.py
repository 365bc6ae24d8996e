"""The real-data builder (benchmarks/real_data.py) on small volumes and images written here: NIfTI
reading, AAL regions grouped into lobes, the hemisphere split, area-resized masks, road and nucleus
tiles and their splits, the folder it writes (which ``asml train`` reads), and its refusals (wrong
checksum, a folder it did not write, another tile size)."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from asml.data.readers import FolderSegmentation
from benchmark_scripts import load_benchmark

SHAPE = (181, 12, 10)  # the scan's 181 sagittal slices, each small


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("real_data", monkeypatch)


def write_nifti(path: Path, volume: np.ndarray) -> None:
    """A minimal gzipped NIfTI-1 file of a uint8 volume (Fortran order, data at byte 352)."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<2f", header, 112, 1.0, 0.0)
    header[344:348] = b"n+1\0"
    path.write_bytes(gzip.compress(bytes(header) + b"\0" * 4 + volume.astype(np.uint8).tobytes(order="F")))


def small_scan(folder: Path) -> dict[str, np.ndarray]:
    """A scan whose brain fills x 20-160; AAL regions: 1 (frontal, code 2001) on the left (x < 90),
    2 (frontal, right), 3 (temporal, 8111) in a corner, 4 (cerebellum, 9001) in another; one brain
    voxel block carries no region (white matter)."""
    folder.mkdir(parents=True, exist_ok=True)
    t1 = np.zeros(SHAPE, dtype=np.uint8)
    regions = np.zeros(SHAPE, dtype=np.uint8)
    t1[20:161, 2:10, 2:9] = 100
    t1[20:161, 2:4, 2:4] = 200  # bright corner: the window maps it to white
    regions[20:90, 2:10, 2:9] = 1
    regions[90:161, 2:10, 2:9] = 2
    regions[20:161, 2:4, 2:4] = 3  # temporal
    regions[20:161, 8:10, 7:9] = 4  # cerebellum
    brain = (t1 > 0).astype(np.uint8)
    regions[20:161, 5, 5] = 0  # inside the brain, no region: "white matter and other"
    for name, volume in (("ch2", t1), ("aal", regions), ("ch2bet", brain)):
        write_nifti(folder / f"{name}.nii.gz", volume)
    codes = ["1 Frontal_Sup_L 2101", "2 Frontal_Sup_R 2102", "3 Temporal_Sup_L 8111", "4 Cerebelum_Crus1_L 9001"]
    (folder / "aal.nii.txt").write_text("\n".join(codes) + "\n")
    return {"t1": t1, "regions": regions}


def test_nifti_volumes_are_read_voxel_for_voxel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_data = load_script(monkeypatch)
    volume = np.arange(np.prod(SHAPE), dtype=np.int64).reshape(SHAPE) % 251
    write_nifti(tmp_path / "v.nii.gz", volume)
    np.testing.assert_array_equal(real_data.read_nifti(tmp_path / "v.nii.gz"), volume)
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"\0" * 400))
    with pytest.raises(real_data.BuildError, match=r"bad.nii.gz is not a little-endian NIfTI-1 file"):
        real_data.read_nifti(tmp_path / "bad.nii.gz")


def test_regions_are_grouped_into_lobes_and_brain_without_a_region_is_white_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    small_scan(tmp_path)
    _, labels = real_data.brain_label_volume(tmp_path)
    names = real_data.BRAIN_CLASSES
    assert names[labels[30, 5, 4]] == "frontal" and names[labels[120, 5, 4]] == "frontal"
    assert names[labels[30, 2, 2]] == "temporal" and names[labels[30, 9, 8]] == "cerebellum"
    assert names[labels[30, 5, 5]] == "white matter and other"
    assert names[labels[10, 5, 5]] == "outside brain" and names[labels[30, 0, 0]] == "outside brain"


def test_the_hemispheres_are_the_splits_and_the_midline_is_in_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    small_scan(tmp_path / "source")
    samples = real_data.brain_samples(tmp_path / "source", 32)
    slices = {split: [int(sample_id[-3:]) for sample_id, _, _ in items] for split, items in samples.items()}
    assert slices["train"] == list(range(20, 84)) and slices["val"] == list(range(99, 161))
    _, image, mask = samples["train"][0]
    assert image.shape == mask.shape == (32, 32) and image.dtype == mask.dtype == np.uint8
    assert image.max() == 255 and set(np.unique(mask)) <= set(range(len(real_data.BRAIN_CLASSES)))


def test_area_resize_keeps_the_class_that_covers_most_of_each_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    real_data = load_script(monkeypatch)
    mask = np.zeros((8, 8), dtype=np.int64)
    mask[:, 0] = 1  # a one-pixel line: a quarter of each 4x4 cell of the left column
    mask[0:4, 4:8] = 2
    mask[0:4, 4] = 3  # a quarter of the top-right cell, the rest class 2
    out = real_data.area_resize_labels(mask, (2, 2), 4)
    np.testing.assert_array_equal(out, [[0, 2], [0, 0]])
    mask[0:4, 0:3] = 1  # now three quarters of the top-left cell
    np.testing.assert_array_equal(real_data.area_resize_labels(mask, (2, 2), 4), [[1, 2], [0, 0]])


def test_the_built_folder_reads_as_a_segmentation_set_and_is_rebuilt_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    small_scan(tmp_path / "source")
    unchecked = replace(real_data.MRICRON, files=dict.fromkeys(real_data.MRICRON.files, ""))  # no checksums here
    monkeypatch.setattr(real_data, "MRICRON", unchecked)
    out = tmp_path / "brain"
    manifest = real_data.build_brain(out, tmp_path / "source", tmp_path / "cache", 32)
    train = FolderSegmentation(out, split="train")
    assert len(train) == 64 and train.num_classes == 10 and train.class_names[2] == "frontal"
    image, mask = train.load(0)
    assert tuple(image.shape) == (3, 32, 32) and tuple(mask.shape) == (32, 32)
    assert manifest["splits"]["val"]["images"] == 62  # type: ignore[index]
    digest = manifest["outputs_sha256"]
    again = real_data.build_brain(out, tmp_path / "source", tmp_path / "cache", 32)  # replaces its own folder
    assert again["outputs_sha256"] == digest


def test_wrong_sources_and_foreign_folders_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_data = load_script(monkeypatch)
    small_scan(tmp_path / "source")
    found = hashlib.sha256((tmp_path / "source" / "ch2.nii.gz").read_bytes()).hexdigest()
    with pytest.raises(real_data.BuildError, match=rf"ch2.nii.gz has sha256 {found}, expected a0090511"):
        real_data.locate(real_data.MRICRON, tmp_path / "source", tmp_path / "cache")
    with pytest.raises(real_data.BuildError, match=r"nowhere/ch2.nii.gz does not exist: --source must hold"):
        real_data.locate(real_data.MRICRON, tmp_path / "nowhere", tmp_path / "cache")
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mine / "keep.png")
    with pytest.raises(real_data.BuildError, match=r"mine holds files that this script did not write"):
        real_data.write_folder(mine, {"train": []}, ["a", "b"], "", {})
    assert (mine / "keep.png").is_file()


@pytest.mark.slow
def test_the_study_trains_each_cell_once_on_a_built_set_and_reports_pairs_and_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    small_scan(tmp_path / "source")
    unchecked = replace(real_data.MRICRON, files=dict.fromkeys(real_data.MRICRON.files, ""))
    monkeypatch.setattr(real_data, "MRICRON", unchecked)
    real_data.build_brain(tmp_path / "data" / "brain", tmp_path / "source", tmp_path / "cache", 32)
    study = load_benchmark("real_study", monkeypatch)
    out, docs = tmp_path / "runs", tmp_path / "docs"
    arguments = ["--only", "brain/unet-r18", "--seeds", "0", "--steps", "2", "--out", str(out), "--docs", str(docs),
                 "--data", str(tmp_path / "data")]  # fmt: skip
    assert study.main(arguments) == 0
    cells = [cell for cell in study.REAL_CELLS if cell.base == "brain/unet-r18"]
    assert f"{len(cells)} runs to train" in capsys.readouterr().out
    assert study.main(arguments) == 0
    assert "0 runs to train" in capsys.readouterr().out
    results = json.loads((docs / "results.json").read_text())
    finals = {
        name: json.loads((out / "runs" / "brain_unet-r18" / f"{name}-seed0" / "final_metrics.json").read_text())
        for name in ("asm_ce_default", "ce")
    }
    pair = results["brain/unet-r18::asm+ce default"]["paired"]["ce"]
    assert pair["mIoU"]["values"] == pytest.approx([100 * (finals["asm_ce_default"]["mIoU"] - finals["ce"]["mIoU"])])
    ce = finals["ce"]
    valid = sum(map(sum, ce["confusion_matrix"]))
    co_occurring = sum(map(sum, ce["co_occurring_confusion"]))
    assert results["brain/unet-r18::ce"]["co_occurring_errors"]["mean"] == pytest.approx(100 * co_occurring / valid)
    page = (docs / "README.md").read_text()
    assert "## brain/unet-r18" in page and "### Context" in page and "### Per class" in page


def test_road_tiles_are_split_by_column_with_a_gap_and_keep_the_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    tiles = load_benchmark("real_tiles", monkeypatch)
    generator = np.random.default_rng(0)
    image = generator.integers(1, 2048, (1300, 1300)).astype(np.uint16)
    roads = np.zeros((1300, 1300), dtype=np.uint8)
    roads[600:610, :] = 255  # a horizontal road through every column
    Image.fromarray(image).save(tmp_path / "road_mask_input.tif")
    Image.fromarray(roads).save(tmp_path / "sample_road_raster_mask.tif")
    samples = tiles.road_samples(tmp_path)
    columns = {split: sorted({int(i.split("-c")[1]) for i, _, _ in items}) for split, items in samples.items()}
    assert columns == {"train": list(range(7)), "val": [8, 9]}
    assert len(samples["train"]) == 70 and len(samples["val"]) == 20
    tiles = {sample_id: mask for sample_id, _, mask in samples["val"]}
    expected = (roads[512:640, 1024:1152] > 0).astype(np.uint8)  # row 4, column 8
    np.testing.assert_array_equal(tiles["tile-r4-c8"], expected)
    with pytest.raises(real_data.BuildError, match="roads are cut into 128 px tiles"):
        real_data.build_roads(tmp_path / "out", tmp_path, tmp_path / "cache", 64)


def disk(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def test_nucleus_tiles_split_top_from_bottom_and_void_the_nuclei_cut_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_data = load_script(monkeypatch)
    tiles = load_benchmark("real_tiles", monkeypatch)
    image = np.random.default_rng(0).integers(0, 236, (512, 512)).astype(np.uint16)
    instances = np.zeros((512, 512), dtype=np.uint16)
    instances[disk(instances.shape, (100, 100), 10)] = 1  # in the top half: train
    instances[disk(instances.shape, (256, 300), 12)] = 7  # cut by the line at y = 256: void on both sides
    instances[disk(instances.shape, (400, 50), 10)] = 3  # bottom half: val
    source = tmp_path / "source"
    source.mkdir()
    Image.fromarray(image).save(source / "img2d.tif")
    Image.fromarray(instances).save(source / "mask2d.tif")
    samples = tiles.nucleus_samples(source)
    assert [len(samples[split]) for split in ("train", "val")] == [8, 8]
    assert {int(i.split("-r")[1][0]) for i, _, _ in samples["train"]} == {0, 1}
    masks = {sample_id: mask for split in samples.values() for sample_id, _, mask in split}
    expected = np.where(instances == 7, 255, (instances > 0).astype(np.uint8)).astype(np.uint8)
    for sample_id, mask in masks.items():
        row, column = int(sample_id[6]), int(sample_id[9])
        np.testing.assert_array_equal(mask, expected[row * 128 : (row + 1) * 128, column * 128 : (column + 1) * 128])
    assert (masks["tile-r1-c2"] == 255).any() and (masks["tile-r2-c2"] == 255).any()
    assert masks["tile-r0-c0"].sum() == disk(instances.shape, (100, 100), 10).sum()

    unchecked = replace(tiles.STARDIST, files=dict.fromkeys(tiles.STARDIST.files, ""))  # no checksums here
    monkeypatch.setattr(tiles, "STARDIST", unchecked)
    manifest = tiles.build_nuclei(tmp_path / "nuclei", source, tmp_path / "cache", 128)
    val = FolderSegmentation(tmp_path / "nuclei", split="val")
    assert len(val) == 8 and tuple(val.class_names) == ("background", "nucleus")
    assert (tmp_path / "nuclei" / "splits" / "val.txt").read_text().split()[2] == "tile-r2-c2"
    _, mask = val.load(2)
    assert int((mask == 255).sum()) == int((expected[256:384, 256:384] == 255).sum())
    share = 100 * (expected[256:] == 1).sum() / (expected[256:] != 255).sum()
    assert manifest["splits"]["val"]["class_share_percent"]["nucleus"] == pytest.approx(share, abs=1e-3)  # type: ignore[index]
    with pytest.raises(real_data.BuildError, match="nuclei are cut into 128 px tiles"):
        tiles.build_nuclei(tmp_path / "out", source, tmp_path / "cache", 64)
