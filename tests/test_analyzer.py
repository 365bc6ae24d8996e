"""StructureAnalyzer: architecture, early stopping, ignore handling, partial passes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import asml.core.analyzer as analyzer_module
from asml import StructureAnalyzer


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize(("height", "width"), [(64, 64), (37, 50), (32, 33)])
def test_feature_shapes_follow_the_released_unet(height: int, width: int) -> None:
    torch.manual_seed(0)
    analyzer = StructureAnalyzer(in_channels=4)
    out = analyzer(torch.rand(2, 4, height, width), layers=analyzer.layer_names, reconstruct=True)
    # Encoder level l has ceil(size / 2^l) positions (3x3 stride-2 convolutions padded by one pixel).
    expected_channels = [16, 64, 128, 128, 128, 128, 128, 64, 16]
    expected_levels = [1, 2, 3, 4, 5, 5, 4, 3, 2]
    assert list(out.features) == [f"conv{i}" for i in range(1, 10)]
    for name, channels, level in zip(out.features, expected_channels, expected_levels, strict=True):
        size = (math.ceil(height / 2**level), math.ceil(width / 2**level))
        assert tuple(out.features[name].shape) == (2, channels, *size), name
    assert out.reconstruction is not None
    assert tuple(out.reconstruction.shape) == (2, 4, height, width)
    assert out.valid is None


def test_parameter_count_matches_the_architecture() -> None:
    analyzer = StructureAnalyzer(in_channels=21)

    def conv(cin: int, cout: int, k: int = 3) -> int:
        return cin * cout * k * k + cout

    expected = (
        conv(21, 16)
        + conv(16, 64)
        + conv(64, 128)
        + conv(128, 128)
        + conv(128, 128)  # encoder
        + conv(128, 128)
        + conv(256, 128)
        + conv(256, 64)
        + conv(128, 16)  # decoder
        + conv(32, 21, 1)  # reconstruction head
    )
    assert sum(p.numel() for p in analyzer.parameters()) == expected


def test_one_first_convolution_per_input_modality() -> None:
    analyzer = StructureAnalyzer(in_channels=(3, 1), widths=(8, 16, 32))
    assert [conv.in_channels for conv in analyzer.first_convs] == [3, 1]
    x = torch.rand(2, 4, 32, 32)
    out = analyzer(x, layers=("conv1",), reconstruct=True)
    assert out.features["conv1"].shape[1] == 16  # 8 per modality
    assert out.reconstruction is not None and out.reconstruction.shape[1] == 4
    # The second modality's channel reaches conv1 only through its own convolution.
    changed = x.clone()
    changed[:, 3] += 1
    features = analyzer(changed, layers=("conv1",)).features["conv1"]
    assert torch.equal(features[:, :8], out.features["conv1"][:, :8])
    assert not torch.equal(features[:, 8:], out.features["conv1"][:, 8:])
    # A list of per-modality tensors is the same input as their concatenation.
    listed = analyzer([x[:, :3], x[:, 3:]], layers=("conv1",)).features["conv1"]
    assert torch.equal(listed, out.features["conv1"])


def test_requesting_encoder_layers_only_never_runs_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    analyzer = StructureAnalyzer(in_channels=3)
    used: list[int] = []
    original = analyzer_module._conv

    def counting(conv: torch.nn.Conv2d, x: torch.Tensor, detach: bool) -> torch.Tensor:
        used.append(id(conv))
        return original(conv, x, detach)

    monkeypatch.setattr(analyzer_module, "_conv", counting)
    analyzer(torch.rand(1, 3, 64, 64), layers=("conv1", "conv2"))
    assert used == [id(analyzer.first_convs[0]), id(analyzer.encoder_convs[0])]
    used.clear()
    analyzer(torch.rand(1, 3, 64, 64), layers=("conv6",))
    assert len(used) == 6


def brute_force_valid(ignored: torch.Tensor, level: int) -> torch.Tensor:
    """Position i of level l sees input rows/cols 2^l*i - (2^l - 1) ... 2^l*i + (2^l - 1)."""
    _, height, width = ignored.shape
    stride, reach = 2**level, 2**level - 1
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    valid = torch.ones(ignored.shape[0], out_h, out_w, dtype=torch.bool)
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(max(0, stride * i - reach), stride * i + reach + 1)
            cols = slice(max(0, stride * j - reach), stride * j + reach + 1)
            valid[:, i, j] = ~ignored[:, rows, cols].flatten(1).any(dim=1)
    return valid


def test_valid_masks_cover_exactly_the_windows_without_ignored_pixels() -> None:
    generator = torch.Generator().manual_seed(3)
    ignored = torch.rand(2, 45, 52, generator=generator) < 0.01
    ignored[1, 10:14, 20:40] = True
    analyzer = StructureAnalyzer(in_channels=2)
    out = analyzer(torch.rand(2, 2, 45, 52), ignore_mask=ignored, layers=analyzer.layer_names)
    assert out.valid is not None
    for name, level in zip(analyzer.layer_names, [1, 2, 3, 4, 5, 5, 4, 3, 2], strict=True):
        expected = brute_force_valid(ignored, level)
        assert torch.equal(out.valid[name], expected), name
        # Features are zero wherever the window holds an ignored pixel.
        assert torch.all(out.features[name].permute(1, 0, 2, 3)[:, ~expected] == 0)


def test_input_values_at_ignored_pixels_change_nothing() -> None:
    torch.manual_seed(1)
    analyzer = StructureAnalyzer(in_channels=3)
    labels = torch.randint(0, 3, (2, 40, 40))
    ignored = torch.zeros(2, 40, 40, dtype=torch.bool)
    ignored[:, 5:12, :] = True
    ignored[0, :, 30:] = True
    x = one_hot(labels, 3)
    y = x.clone()
    y[ignored.unsqueeze(1).expand_as(y)] = torch.rand(int(ignored.sum()) * 3) * 5
    a = analyzer(x, ignored, layers=analyzer.layer_names, reconstruct=True)
    b = analyzer(y, ignored, layers=analyzer.layer_names, reconstruct=True)
    for name in analyzer.layer_names:
        assert torch.equal(a.features[name], b.features[name]), name
    assert a.reconstruction is not None and b.reconstruction is not None
    assert torch.equal(a.reconstruction, b.reconstruction)


def test_detached_parameters_receive_no_gradient() -> None:
    analyzer = StructureAnalyzer(in_channels=3)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = analyzer(x, layers=("conv2",), detach_parameters=True)
    out.features["conv2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in analyzer.parameters())


def test_bad_input_is_named_in_the_error() -> None:
    analyzer = StructureAnalyzer(in_channels=3)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\], got \[2, 4, 32, 32\]"):
        analyzer(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"unknown analyzer layer 'conv10'.*conv1, conv2"):
        analyzer(torch.rand(2, 3, 32, 32), layers=("conv10",))
    with pytest.raises(ValueError, match=r"ignore_mask must be \[B, H, W\] = \[2, 32, 32\], got \[2, 1, 32, 32\]"):
        analyzer(torch.rand(2, 3, 32, 32), ignore_mask=torch.zeros(2, 1, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="widths"):
        StructureAnalyzer(in_channels=3, widths=(16,))
