"""The README's promises: the training-loop example runs as written, the quick start matches CI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_block_under(heading: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, f"expected one python block under {heading!r}"
    return blocks[0]


def test_training_loop_example_runs_and_trains_the_segmenter(capsys) -> None:  # type: ignore[no-untyped-def]
    code = python_block_under("ASM in your training loop")
    assert len(code.strip().splitlines()) <= 30
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    asm = namespace["asm"]
    assert asm.step == namespace["steps"] == 20  # type: ignore[attr-defined]
    assert not asm.training  # type: ignore[attr-defined]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4
    first, last = (ast.literal_eval(line.split(" ", 1)[1]) for line in (printed[0], printed[-1]))
    assert last["loss"] < first["loss"]
    checkpoint = namespace["checkpoint"]
    assert set(checkpoint) == {"model", "optimizer", "asm"}  # type: ignore[arg-type]


def test_quick_start_has_two_commands_and_ci_runs_the_test_command() -> None:
    quick_start = README.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick_start, flags=re.DOTALL)[0].strip().splitlines()
    assert [line.split()[0:2] for line in commands] == [["make", "demo"], ["make", "test"]]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
