"""Progress: live bars on a terminal (rendered into a string here), one line per report elsewhere."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from asml.engine import progress
from asml.engine.config import RunConfig
from asml.engine.progress import ProgressBar, format_values
from asml.engine.trainer import train


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=160, color_system=None), buffer


def test_a_terminal_gets_a_bar_with_count_rate_eta_and_the_latest_values() -> None:
    console, buffer = terminal()
    with ProgressBar("train", 10, unit="step", console=console) as bar:
        for _ in range(3):
            bar.advance()
        bar.report(format_values({"loss": 0.5, "asm/conv1": 9.0, "lr": 0.01}))
    drawn = buffer.getvalue()
    last = drawn.split("\r")[-1]  # the final frame of the live display
    assert "train" in last and "3/10" in last
    assert "loss 0.5000  lr 0.0100" in last and "conv1" not in last
    assert re.search(r"[\d.]+ (step/s|s/step)", last) and "ETA" in last


def test_nested_bars_share_one_display_and_the_inner_one_makes_room() -> None:
    console, buffer = terminal()
    with ProgressBar("compare", 2, unit="run", console=console) as outer:
        for run in range(2):
            with ProgressBar("train", 4, console=console) as inner:
                assert progress._Display.progress is not None and progress._Display.open_bars == 2
                inner.advance(4)
            assert len(progress._Display.progress.tasks) == 1  # the finished inner bar is gone
            outer.advance()
            outer.show(f"run {run} done")
    assert progress._Display.progress is None and progress._Display.open_bars == 0
    assert "2/2" in buffer.getvalue().split("\r")[-1]


def test_off_a_terminal_each_report_is_one_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressBar("eval", 8, unit="img", console=console) as bar:
        bar.advance(4)
        bar.show("shown on a terminal only")
        bar.report("mIoU 0.5")
    with ProgressBar("quiet", 8, enabled=False, console=console) as bar:
        bar.report("never printed")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"eval 4/8  mIoU 0\.5  [\d.]+ (img/s|s/img)  ETA \d+ s", lines[0])


def test_training_off_a_terminal_prints_one_line_per_log_step_and_each_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = RunConfig.model_validate(
        {
            "run_dir": str(tmp_path / "run"),
            "model": {"name": "unet", "encoder": "resnet18"},
            "loss": {"name": "asm+ce"},
            "data": {"dataset": "builtin:horses", "size": 32, "crop_size": 32, "batch_size": 2, "workers": 0,
                     "val_images": 2},
            "train": {"steps": 4, "eval_every": 2, "checkpoint_every": 4, "log_every": 1},
        }
    )  # fmt: skip
    train(config)
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("train ")]
    assert [line.split()[1] for line in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("loss " in line and "img/s" in line and "ETA" in line for line in steps)
    assert [line.split(":")[0] for line in lines if line.startswith("eval ")] == ["eval at step 2", "eval at step 4"]
