"""Inference latency of an asml-trained, exported segmenter against the same architecture built from smp.

Nothing of ASM remains at inference: the exported file is the segmenter alone, so its latency should
equal that of ``smp.Unet`` (or any other architecture) built directly and given the same weights.
This script trains a real asml run (a few ASM+CE steps, or takes ``--run``), exports it as TorchScript
and ONNX, builds the smp model directly with the run's weights, exports that the same way, checks
that all of them give the same logits, and times them side by side in one run, alternating round by
round (median of ``--rounds``). Ratios are asml / smp for the same runtime: 1.00 expected.

    .venv/bin/python benchmarks/export_latency.py                 # U-Net-ResNet-18, 256 px, batch 1
    .venv/bin/python benchmarks/export_latency.py --size 512 --batch 4 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import segmentation_models_pytorch as smp
import torch

from asml.engine.config import RunConfig
from asml.engine.export import export_segmenter
from asml.engine.trainer import load_model_from_checkpoint, train


def trained_run(folder: Path, architecture: str) -> Path:
    """A real asml run: a few ASM+CE steps on the built-in horses."""
    run_dir = folder / "run"
    config = {
        "run_dir": str(run_dir),
        "model": {"name": architecture, "encoder": "resnet18"},
        "loss": {"name": "asm+ce"},
        "data": {"dataset": "builtin:horses", "size": 64, "crop_size": 64, "batch_size": 4, "workers": 0,
                 "val_images": 4},
        "train": {"steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 4},
    }  # fmt: skip
    train(RunConfig.model_validate(config))
    return run_dir


def smp_model(architecture: str, num_classes: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The same architecture built directly from smp, with the run's weights."""
    model = smp.create_model(architecture, encoder_name="resnet18", encoder_weights=None, classes=num_classes)
    model.load_state_dict({key.removeprefix("network."): value for key, value in state.items()})
    return model.eval()


def onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # onnxruntime's threads spin after a call by default, taking the cores from whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])


def median_seconds(
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor, rounds: int
) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for run in runners.values():  # warm-up
            run(images)
        names = list(runners)
        for round_index in range(rounds):
            shift = round_index % len(names)  # each runner goes first equally often
            for name in names[shift:] + names[:shift]:
                run = runners[name]
                start = time.perf_counter()
                run(images)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="an asml run or checkpoint (default: train one)")
    parser.add_argument("--architecture", default="unet", help="smp architecture of the run trained here")
    parser.add_argument("--size", type=int, default=256, help="image side")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the exporters' deprecation notices
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        run = args.run or trained_run(folder, args.architecture)
        asml_model, _, class_names = load_model_from_checkpoint(run)
        direct = smp_model(asml_model.architecture, len(class_names), asml_model.state_dict())
        images = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        example = images[:1]
        export_segmenter(asml_model, folder / "asml.pt", "torchscript", (args.size, args.size))
        export_segmenter(asml_model, folder / "asml.onnx", "onnx", (args.size, args.size))
        with torch.no_grad():
            torch.jit.trace(direct, example).save(str(folder / "smp.pt"))
            axes = {"image": {0: "batch", 2: "height", 3: "width"}}  # as asml's export: any batch and size
            torch.onnx.export(direct, (example,), str(folder / "smp.onnx"), dynamo=False, opset_version=17,
                              input_names=["image"], dynamic_axes=axes)  # fmt: skip
        runners = {
            "eager asml": asml_model,
            "eager smp": direct,
            "torchscript asml": torch.jit.load(str(folder / "asml.pt")),
            "torchscript smp": torch.jit.load(str(folder / "smp.pt")),
            "onnx asml": onnx_runner(folder / "asml.onnx"),
            "onnx smp": onnx_runner(folder / "smp.onnx"),
        }
        with torch.no_grad():
            reference = direct(images)
            for name, run_model in runners.items():
                difference = float((run_model(images) - reference).abs().max() / reference.abs().max())
                assert difference < 1e-4, f"{name} differs from smp by {difference:.2e} (relative)"
        seconds = median_seconds(runners, images, args.rounds)
    print(f"{asml_model.architecture}-resnet18, {args.batch} x 3 x {args.size} x {args.size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")  # fmt: skip
    for runtime in ("eager", "torchscript", "onnx"):
        ours, theirs = seconds[f"{runtime} asml"], seconds[f"{runtime} smp"]
        ratio = ours / theirs
        print(f"  {runtime:<12} asml {1000 * ours:7.1f} ms   smp {1000 * theirs:7.1f} ms   asml / smp {ratio:.2f}")


if __name__ == "__main__":
    main()
