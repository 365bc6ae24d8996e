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
