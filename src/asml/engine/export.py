"""``asml export``: the trained segmenter alone, as TorchScript or ONNX, for use without asml.

Only the segmenter is exported: the analyzer (and the GAN's discriminator) exist for training only,
so an exported ASM-trained model is exactly the architecture it was built as. The exported graph
takes normalised images ``float32 [B, 3, H, W]`` (as ``asml.data.EvalTransform`` makes them) and
returns logits ``[B, C, H, W]``, for any batch size and image size: images are padded to the
multiple the encoder needs and the logits cropped back inside the graph, as ``SegmentationModel``
does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.jit._trace import TracerWarning

from asml.models import SegmentationModel
from asml.models.builder import split_outputs

__all__ = ["EXPORT_FORMATS", "ExportError", "PaddedSegmenter", "export_segmenter"]

EXPORT_FORMATS = ("torchscript", "onnx")


class ExportError(ValueError):
    """The segmenter cannot be exported as asked; the message says why and what to do."""


class PaddedSegmenter(nn.Module):
    """``SegmentationModel``'s forward without Python branches on the input's size, so a traced or
    exported graph keeps the padding for every size: pads by ``(-H) % m`` and ``(-W) % m`` (zero
    where nothing is needed), runs the network, crops the logits to ``[B, C, H, W]``."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.network = model.network
        self.size_multiple = model.size_multiple

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2], images.shape[-1]
        padded = F.pad(images, (0, (-width) % self.size_multiple, 0, (-height) % self.size_multiple))
        output = self.network(padded)
        logits, _ = split_outputs(output)
        return logits[:, :, :height, :width]


def export_segmenter(
    model: SegmentationModel,
    out: Path,
    export_format: Literal["torchscript", "onnx"],
    example_size: tuple[int, int] = (64, 64),
    overwrite: bool = False,
) -> Path:
    """Write ``model``'s segmenter to ``out`` in ``export_format``; return the path.

    Args:
        model: the segmenter (e.g. from ``asml.engine.trainer.load_model_from_checkpoint``).
        out: file to write; refused if it exists unless ``overwrite``.
        export_format: ``torchscript`` (``torch.jit.load``) or ``onnx`` (opset 17; batch, height and
            width are dynamic axes named ``batch``, ``height``, ``width``; input ``image``, output ``logits``;
            not for PSPNet, whose multi-bin adaptive pooling the exporter cannot write).
        example_size: ``(H, W)`` of the example image the graph is traced with.
    """
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name, e.g. {out / 'segmenter.onnx'}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --force")
    wrapped = PaddedSegmenter(model).eval()
    example = torch.zeros(1, _in_channels(model), *example_size, device=next(model.parameters()).device)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to ``out`` and moved over it only when complete: a failed export leaves ``out`` as it was.
    partial = out.with_name(f".{out.name}.partial")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The size arithmetic is traced as operations on the input's shape; the tracer's warning that
            # it might not be is checked by the tests at several sizes.
            warnings.simplefilter("ignore", TracerWarning)
            if export_format == "torchscript":
                traced = torch.jit.trace(wrapped, example, check_trace=False)  # type: ignore[no-untyped-call]
                traced.save(str(partial))
            else:
                _export_onnx(wrapped, example, partial)
        os.replace(partial, out)
    except torch.onnx.errors.SymbolicValueError as error:
        if "adaptive_avg_pool2d" not in str(error):
            raise
        raise ExportError(
            f"{model.architecture} pools its features to several fixed grids (adaptive average pooling "
            "to more than one bin), which PyTorch's ONNX exporter cannot write for these models; "
            "export it as torchscript instead (--format torchscript)"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return out


def _export_onnx(wrapped: nn.Module, example: Tensor, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before it fails deep inside)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'asml[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter, kept on purpose
        torch.onnx.export(
            wrapped,
            (example,),
            str(out),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=17,
            dynamo=False,
        )


def _in_channels(model: SegmentationModel) -> int:
    first = next(module for module in model.network.modules() if isinstance(module, nn.Conv2d))
    return int(first.in_channels)
