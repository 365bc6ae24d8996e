"""The ``asml`` command: the quick demo and its bad-input errors."""

from __future__ import annotations

import math
import re

import pytest

from asml.cli import main


def test_demo_trains_and_prints_losses_and_scores(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "4", "--log-every", "2", "--batch-size", "2", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    step_lines = [line for line in out.splitlines() if line.startswith("step")]
    assert [line.split()[1] for line in step_lines] == ["1/4", "3/4", "4/4"]
    for line in step_lines:
        values = {name: float(value) for name, value in re.findall(r"(\w+) (-?\d+\.\d+)", line)}
        assert {"matching", "adversarial", "reconstruction", "adversarial_weight", "loss"} <= set(values)
        assert all(math.isfinite(v) for v in values.values())
    assert "validation on 32 held-out images: mIoU" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps must be >= 1, got 0"),
        (["--image-size", "30"], "image_size must be a multiple of 8 and >= 32, got 30"),
        (["--loss", "dice"], "invalid choice: 'dice'"),
    ],
)
def test_demo_rejects_bad_options_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
