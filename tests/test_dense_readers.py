"""Readers of Stanford 2D-3D-S and NYU Depth v2 folder exports, on small files written in the layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asml.data import DatasetError
from asml.data.check import header_problems
from asml.data.dense_readers import NYUDepthV2, Stanford2D3DS
from asml.engine.config import load_config
from asml.engine.trainer import train

SIZE = (12, 16)  # height, width


def random_normals_rgb(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB normal map (127.5 n + 127.5, uint8) with a missing (128, 128, 128) block, and the unit
    vectors the reader must return (from the stored bytes, normalised; zero where missing)."""
    vectors = rng.normal(size=(*SIZE, 3))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    stored = np.clip(np.rint(127.5 * vectors + 127.5), 0, 255).astype(np.uint8)
    stored[:3, :4] = 128
    decoded = stored.astype(np.float64) - 127.5
    expected = decoded / np.linalg.norm(decoded, axis=-1, keepdims=True)
    expected[:3, :4] = 0.0
    return stored, expected


def write_sample(
    data: Path, stem: str, rng: np.random.Generator, normal_suffix: str = "normals"
) -> dict[str, np.ndarray]:
    for folder in ("rgb", "depth", "normal"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)
    Image.fromarray(image).save(data / "rgb" / f"{stem}_rgb.png")
    raw = rng.integers(300, 5000, size=SIZE).astype(np.uint16)
    raw[-2:, -3:] = 65535  # missing depth
    Image.fromarray(raw).save(data / "depth" / f"{stem}_depth.png")
    stored, normals = random_normals_rgb(rng)
    Image.fromarray(stored).save(data / "normal" / f"{stem}_{normal_suffix}.png")
    depth = raw.astype(np.float64) / 512
    depth[raw == 65535] = 0.0
    return {"image": image, "depth": depth, "normals": normals}


def stanford_root(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A 2D-3D-S tree with two images per area of fold 1 (area 6 naming its normals ``_normal``)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "2d3ds"
    written = {}
    for area in ("area_1", "area_2", "area_3", "area_4", "area_5a", "area_5b", "area_6"):
        for index in range(2):
            stem = f"camera_{index}_office_{index}_frame_0_domain"
            suffix = "normal" if area == "area_6" and index == 1 else "normals"
            written[f"{area}/{stem}"] = write_sample(root / area / "data", stem, rng, suffix)
    return root, written


def test_stanford_reads_depth_in_metres_and_unit_normals_by_fold(tmp_path: Path) -> None:
    root, written = stanford_root(tmp_path)
    train_set = Stanford2D3DS(root, "train", fold=1, task="depth")
    val_set = Stanford2D3DS(root, "val", fold=1, task="normals")
    assert len(train_set) == 10 and len(val_set) == 4  # areas 1-4 and 6; areas 5a and 5b
    assert all(s.sample_id.startswith("area_5") for s in val_set.samples)
    for dataset, key in ((train_set, "depth"), (val_set, "normals")):
        for index, sample in enumerate(dataset.samples):
            image, target = dataset[index]
            expected = written[sample.sample_id]
            assert image.dtype == torch.uint8 and np.array_equal(image.permute(1, 2, 0).numpy(), expected["image"])
            want = expected[key][None] if key == "depth" else expected[key].transpose(2, 0, 1)
            assert target.dtype == torch.float32
            np.testing.assert_allclose(target.numpy(), want, rtol=1e-6, atol=1e-6)
    area6 = Stanford2D3DS(root, "val", fold=3, task="normals")  # area 6 is in fold 3's val
    assert any(s.target.name.endswith("_normal.png") for s in area6.samples)


def test_stanford_bad_layouts_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no Stanford 2D-3D-S dataset at .*expected this layout"):
        Stanford2D3DS(tmp_path / "nothing", "train")
    root, _ = stanford_root(tmp_path)
    (root / "area_4" / "data" / "rgb").rename(root / "area_4" / "data" / "rgb_moved")
    with pytest.raises(DatasetError, match=r"fold 1 train needs areas .*area_4 missing"):
        Stanford2D3DS(root, "train", task="depth")
    missing = sorted((root / "area_5a" / "data" / "depth").glob("*.png"))
    for path in missing:
        path.unlink()
    with pytest.raises(DatasetError, match="2 files of the dataset do not exist") as error:
        Stanford2D3DS(root, "val", task="depth")
    assert all(str(path) in str(error.value) for path in missing)
    with pytest.raises(DatasetError, match="fold must be 1, 2 or 3"):
        Stanford2D3DS(root, "val", fold=4)
    with pytest.raises(DatasetError, match="split must be 'train' or 'val'"):
        Stanford2D3DS(root, "test")


def test_wrong_file_kinds_and_sizes_are_found_by_the_header_check_and_the_reader(tmp_path: Path) -> None:
    root, _ = stanford_root(tmp_path)
    dataset = Stanford2D3DS(root, "val", task="depth")
    eight_bit, small = dataset.samples[0].target, dataset.samples[1].target
    Image.fromarray(np.zeros(SIZE, dtype=np.uint8)).save(eight_bit)
    Image.fromarray(np.ones((6, 8), dtype=np.uint16)).save(small)
    problems = header_problems(dataset)
    assert len(problems) == 2
    assert f"depth map {eight_bit} is mode L; expected a 16-bit single-channel PNG" in problems[0]
    assert f"depth map {small} is 8x6 but image" in problems[1]
    with pytest.raises(DatasetError, match="expected a 16-bit single-channel PNG"):
        dataset[0]
    with pytest.raises(DatasetError, match="they must be the same size"):
        dataset[1]


def test_nyu_export_reads_millimetres_with_zero_as_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "nyu"
    for folder in ("images", "depths", "normals", "splits"):
        (root / folder).mkdir(parents=True)
    expected = {}
    for index in range(3):
        image = rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(
            root / "images" / f"{index:04d}.jpg" if index == 2 else root / "images" / f"{index:04d}.png"
        )
        raw = rng.integers(500, 9000, size=SIZE).astype(np.uint16)
        raw[0, :5] = 0
        Image.fromarray(raw).save(root / "depths" / f"{index:04d}.png")
        stored, normals = random_normals_rgb(rng)
        Image.fromarray(stored).save(root / "normals" / f"{index:04d}.png")
        expected[f"{index:04d}"] = (raw.astype(np.float64) / 1000, normals)
    (root / "splits" / "train.txt").write_text("0000\n0001\n")
    (root / "splits" / "test.txt").write_text("0002\n")
    depth = NYUDepthV2(root, "train", task="depth")
    assert [s.sample_id for s in depth.samples] == ["0000", "0001"]
    _, target = depth[1]
    np.testing.assert_allclose(target[0].numpy(), expected["0001"][0], rtol=1e-6)
    assert float(target[0, 0, :5].abs().max()) == 0.0
    normals = NYUDepthV2(root, "test", task="normals")
    image, target = normals[0]  # the .jpg image
    assert image.shape == (3, *SIZE)
    np.testing.assert_allclose(target.numpy(), expected["0002"][1].transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(DatasetError, match=r"split file .*val\.txt does not exist"):
        NYUDepthV2(root, "val")
    (root / "splits" / "broken.txt").write_text("0000\n0042\n")
    with pytest.raises(DatasetError, match=r"sample '0042': its image .*0042\.png\|\.jpg\|\.jpeg does not exist"):
        NYUDepthV2(root, "broken")
    with pytest.raises(DatasetError, match="no NYU Depth v2 export at"):
        NYUDepthV2(tmp_path, "train")


def test_training_on_a_stanford_tree_runs_end_to_end(tmp_path: Path) -> None:
    root, _ = stanford_root(tmp_path)
    config = load_config(
        None,
        [f"run_dir={tmp_path / 'run'}", "task=normals", "data.dataset=stanford2d3ds", f"data.root={root}",
         "data.crop_size=16", "data.batch_size=2", "data.workers=0", "train.steps=2", "train.eval_every=2",
         "model.name=unet", "model.encoder=resnet18"],
    )  # fmt: skip
    summary = train(config)
    assert summary["mean_angle"] == summary["mean_angle"]  # finite, not NaN
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_data_check_reads_every_sample_and_names_the_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asml.cli import main

    root, written = stanford_root(tmp_path)
    broken = sorted((root / "area_5b" / "data" / "depth").glob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:60])  # truncated: the header reads, the pixels do not
    config = tmp_path / "check.yaml"
    config.write_text(f"task: depth\ndata: {{dataset: stanford2d3ds, root: {root}}}\n")
    assert main(["data", "check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "val: 1 bad sample(s) of 4" in out and str(broken) in out
    assert "train: all 10 samples read" in out
    train_depths = [v["depth"] for k, v in written.items() if not k.startswith("area_5")]
    valid = sum(int((d > 0).sum()) for d in train_depths)
    share = 100 * valid / sum(d.size for d in train_depths)
    low, high = min(float(d[d > 0].min()) for d in train_depths), max(float(d.max()) for d in train_depths)
    assert f"train: {share:.2f}% of {sum(d.size for d in train_depths)} target pixels hold a depth value" in out
    assert f"depth {low:.3f} to {high:.3f} m" in out
