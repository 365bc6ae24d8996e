"""docs/lightning.md: the LightningModule example runs as written, and ASM behaves inside Lightning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "lightning.md").read_text()


def lightning_example() -> str:
    section = DOC.split("## PyTorch Lightning\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def test_the_lightning_example_trains_the_analyzer_and_checkpoints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's default_root_dir is relative
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(lightning_example(), "docs/lightning.md", "exec"), namespace)
    trainer, module = namespace["trainer"], namespace["module"]
    steps = namespace["STEPS"]
    asm = module.asm  # type: ignore[attr-defined]

    assert trainer.global_step == steps  # type: ignore[attr-defined]
    assert asm.step == steps  # one analyzer step per optimizer step; validation added none
    (optimizer,) = trainer.optimizers  # type: ignore[attr-defined]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}  # type: ignore[attr-defined]
    assert not optimised & {id(p) for p in asm.parameters()}
    assert asm.optimizer.state, "the analyzer's own optimizer has stepped"
    assert "val/mIoU" in trainer.callback_metrics  # type: ignore[attr-defined]

    # Lightning's checkpoint holds the analyzer with its step; a fresh module restores both.
    (checkpoint_file,) = (tmp_path / "lightning-runs").rglob("*.ckpt")
    state = torch.load(checkpoint_file, weights_only=False)["state_dict"]
    restored = namespace["ASMSegmenter"](num_classes=2, total_steps=steps)  # type: ignore[operator]
    restored.load_state_dict(state)
    assert restored.asm.step == steps
    for name, value in asm.analyzer.state_dict().items():
        assert torch.equal(restored.asm.analyzer.state_dict()[name], value), name
