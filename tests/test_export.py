"""``asml export``: the exported segmenter gives the PyTorch model's logits at any batch and size."""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest
import torch

from asml.cli import main
from asml.engine.config import RunConfig
from asml.engine.export import ExportError, export_segmenter
from asml.engine.trainer import load_model_from_checkpoint, train
from asml.models import build

SIZES = ((2, 64, 64), (3, 45, 70))  # the second needs padding to the encoder's multiple of 32


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real asml run, two ASM+CE steps on the built-in horses (3 classes would do as well)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    config = {
        "run_dir": str(run_dir),
        "model": {"name": "unet", "encoder": "resnet18"},
        "loss": {"name": "asm+ce"},
        "data": {"dataset": "builtin:horses", "size": 32, "crop_size": 32, "batch_size": 2, "workers": 0,
                 "val_images": 2},
        "train": {"steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1},
    }  # fmt: skip
    train(RunConfig.model_validate(config))
    return run_dir


def reference_logits(run_dir: Path, images: torch.Tensor) -> torch.Tensor:
    model, _, _ = load_model_from_checkpoint(run_dir)
    with torch.no_grad():
        return model(images)  # type: ignore[return-value]


def test_torchscript_export_equals_the_model_at_two_sizes(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "segmenter.pt"
    assert main(["export", str(trained_run), "--format", "torchscript", "--out", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    assert not any("analyzer" in name for name, _ in loaded.named_parameters())
    for batch, height, width in SIZES:
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
        expected = reference_logits(trained_run, images)
        with torch.no_grad():
            exported = loaded(images)
        assert exported.shape == (batch, 2, height, width)
        torch.testing.assert_close(exported, expected, rtol=0, atol=0)


def test_onnx_export_equals_the_model_at_two_sizes_in_onnxruntime(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "segmenter.onnx"
    assert main(["export", str(trained_run / "checkpoints" / "best.pt"), "--format", "onnx", "--out", str(out)]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["logits"]
    for batch, height, width in SIZES:
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(width))
        expected = reference_logits(trained_run, images)
        (exported,) = session.run(None, {"image": images.numpy()})
        assert exported.shape == (batch, 2, height, width)
        # Another runtime's kernels: equal up to float32 rounding of the sums, which scales with the
        # logits (a two-step model in eval mode has logits of order 1e9).
        scale = float(expected.abs().max())
        torch.testing.assert_close(torch.from_numpy(exported), expected, rtol=1e-4, atol=1e-5 * scale)


def test_fcn_and_deeplab_export_as_well(tmp_path: Path) -> None:
    for name in ("fcn", "deeplabv3plus"):
        torch.manual_seed(0)
        model = build(name, 3, "resnet18").eval()
        images = torch.randn(1, 3, 40, 56)
        with torch.no_grad():
            expected = model(images)
        path = export_segmenter(model, tmp_path / f"{name}.pt", "torchscript")
        torch.testing.assert_close(torch.jit.load(str(path))(images), expected, rtol=0, atol=0)


def test_export_refuses_what_it_cannot_do_with_clear_errors(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kept.onnx"
    out.write_text("a user's file")
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "a user's file"
    assert main(["export", str(tmp_path / "no-run"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "no-run" in capsys.readouterr().err
    with pytest.raises(ExportError, match="export it as torchscript"):
        export_segmenter(build("pspnet", 2, "resnet18").eval(), tmp_path / "psp.onnx", "onnx")
    assert list(tmp_path.glob("*psp*")) == []  # nothing half-written left behind
    previous = tmp_path / "previous.onnx"
    previous.write_text("an earlier export")
    with pytest.raises(ExportError):  # even with overwrite, a failed export keeps what was there
        export_segmenter(build("pspnet", 2, "resnet18").eval(), previous, "onnx", overwrite=True)
    assert previous.read_text() == "an earlier export"
    with pytest.raises(ExportError, match="is a directory"):
        export_segmenter(build("unet", 2, "resnet18").eval(), tmp_path, "torchscript", overwrite=True)
