"""Bad data found up front: ``asml data check``, the trainer's header check, and a bad sample mid-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from asml.cli import main
from asml.data import BuiltinSegmentation, DatasetError, FolderSegmentation
from asml.data.check import check_dataset, header_problems
from asml.engine.config import RunConfig
from asml.engine.trainer import train

SIZE = 32
CLASSES = ("background", "horse", "rider", "lance")


def write_sample(root: Path, sample_id: str, labels: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*labels.shape, 3), dtype=np.uint8)).save(root / "images" / f"{sample_id}.png")
    Image.fromarray(labels.astype(np.uint8), mode="L").save(root / "masks" / f"{sample_id}.png")


def clean_labels(seed: int, classes: int = 3) -> np.ndarray:
    """Labels of the first ``classes`` classes only (``lance`` never occurs), a few ignored pixels."""
    labels = np.random.default_rng(100 + seed).integers(0, classes, (SIZE, SIZE))
    labels[0, :4] = 255
    return labels


def write_dataset(root: Path, train_ids: int = 6, val_ids: int = 2) -> dict[str, np.ndarray]:
    written = {}
    for index in range(train_ids + val_ids):
        written[f"s{index}"] = clean_labels(index)
        write_sample(root, f"s{index}", written[f"s{index}"], index)
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(f"s{i}" for i in range(train_ids)) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(f"s{i}" for i in range(train_ids, train_ids + val_ids)) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return written


def truncate(path: Path) -> None:
    """Cut a PNG after its header, as an interrupted copy does: the header still reads."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_the_full_check_names_every_bad_file_and_counts_the_good_ones(tmp_path: Path) -> None:
    written = write_dataset(tmp_path)
    truncate(tmp_path / "images" / "s1.png")
    bad_labels = clean_labels(2)
    bad_labels[5, 5] = 7
    write_sample(tmp_path, "s2", bad_labels, 2)
    Image.fromarray(np.zeros((SIZE, SIZE + 3), np.uint8), mode="L").save(tmp_path / "masks" / "s3.png")
    dataset = FolderSegmentation(tmp_path, "train")
    calls: list[int] = []
    report = check_dataset("train", dataset, 4, 255, lambda: calls.append(1))

    assert len(calls) == 6
    assert len(report.problems) == 3
    named = "\n".join(report.problems)
    assert str(tmp_path / "images" / "s1.png") in named
    assert str(tmp_path / "masks" / "s2.png") in named and "[7]" in named
    assert str(tmp_path / "masks" / "s3.png") in named and "35x32" in named
    # The histogram counts the three good samples, by an independent count of what was written.
    good = np.stack([written[f"s{i}"] for i in (0, 4, 5)])
    expected = [int((good == c).sum()) for c in range(4)]
    assert report.pixels.tolist() == expected
    assert report.images.tolist() == [3, 3, 3, 0]
    assert report.ignored == int((good == 255).sum())
    assert report.absent() == [3]


def test_the_header_check_finds_size_and_channel_problems_without_decoding(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    truncate(tmp_path / "images" / "s1.png")  # only the full read finds this one
    Image.fromarray(np.zeros((SIZE + 1, SIZE), np.uint8), mode="L").save(tmp_path / "masks" / "s3.png")
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "masks" / "s4.png")
    (tmp_path / "images" / "s5.png").write_bytes(b"not a picture")
    problems = header_problems(FolderSegmentation(tmp_path, "train"))

    assert len(problems) == 3
    assert "s3.png" in problems[0] and "32x33" in problems[0]
    assert "s4.png" in problems[1] and "mode RGB" in problems[1]
    assert "s5.png" in problems[2] and "cannot read" in problems[2]
    assert header_problems(BuiltinSegmentation("horses", "val", size=32)) == []


def test_listed_ids_without_files_are_named_together(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "masks" / "s0.png").unlink()
    (tmp_path / "images" / "s4.png").unlink()
    with pytest.raises(DatasetError, match="2 listed files do not exist") as raised:
        FolderSegmentation(tmp_path, "train")
    assert "s0.png" in str(raised.value) and "s4.png" in str(raised.value)


def config_file(tmp_path: Path, root: Path, run_dir: Path, **train: object) -> Path:
    tree = {
        "run_dir": str(run_dir),
        "model": {"name": "unet", "encoder": "resnet18"},
        "loss": {"name": "ce"},
        "data": {"dataset": "folder", "root": str(root), "crop_size": SIZE, "batch_size": 2, "workers": 0},
        "train": {"steps": 3, "eval_every": 3, "checkpoint_every": 1, "log_every": 1, "keep_last": 5, **train},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_data_check_command_reports_problems_histogram_and_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    write_dataset(root)
    config = config_file(tmp_path, root, tmp_path / "run")
    assert main(["data", "check", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "train: all 6 samples read" in printed and "val: all 2 samples read" in printed
    assert "train: classes that never occur: lance" in printed and "no problems found" in printed

    truncate(root / "images" / "s7.png")  # a val image
    assert main(["data", "check", str(config)]) == 1
    printed = capsys.readouterr().out
    assert "val: 1 bad sample(s) of 2" in printed and str(root / "images" / "s7.png") in printed
    assert "1 problem(s) found" in printed
    assert not (tmp_path / "run").exists()  # the check writes nothing


def test_train_refuses_bad_headers_before_writing_anything(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root)
    Image.fromarray(np.zeros((SIZE, SIZE + 2), np.uint8), mode="L").save(root / "masks" / "s6.png")
    config = config_file(tmp_path, root, tmp_path / "run")
    assert main(["train", str(config)]) == 2
    assert not (tmp_path / "run").exists()


def first_epoch_order(samples: int, seed: int = 0) -> list[int]:
    """The order the trainer's data docstring promises: ``randperm`` seeded by ``seed * 7919 + epoch``."""
    return torch.randperm(samples, generator=torch.Generator().manual_seed(seed * 7919)).tolist()


def test_a_bad_sample_mid_run_names_the_file_and_resume_continues_after_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset(root)
    last = first_epoch_order(6)[-1]  # in the third step's batch: two checkpoints exist by then
    good = clean_labels(last)
    bad = good.copy()
    bad[3, 3] = 9
    write_sample(root, f"s{last}", bad, last)
    config = config_file(tmp_path, root, tmp_path / "run")
    assert main(["train", str(config)]) == 2  # the header is fine: found when its batch comes up

    with pytest.raises(DatasetError) as raised:
        train(RunConfig.model_validate(yaml.safe_load(config.read_text())), resume=True)
    message = str(raised.value)
    assert str(root / "masks" / f"s{last}.png") in message and "[9]" in message
    assert "stopped at step 3" in message and "step_00000002.pt, is intact" in message and "--resume" in message
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert len(kept) == 2

    write_sample(root, f"s{last}", good, last)  # the fix
    scores = train(RunConfig.model_validate(yaml.safe_load(config.read_text())), resume=True)
    assert np.isfinite(scores["mIoU"])
    assert (tmp_path / "run" / "final_metrics.json").is_file()
