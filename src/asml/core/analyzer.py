"""The structure analyzer A of ASM: a small U-Net that looks at label maps, never at images.

Architecture as in the authors' released code (see ``docs/method.md`` of the project):

* encoder: ``depth`` 3x3 convolutions of stride 2 with bias and no normalisation. The first level has
  one convolution per input modality (``widths[0]`` channels each, concatenated); the released
  widths are 16, 64, 128, 128, 128. The released code pads one pixel before each stride-2
  convolution, which is ``padding=1`` here, so every input size works.
* decoder: ``depth - 1`` levels, each a 3x3 stride-1 convolution whose width is that of the next
  shallower encoder level, ReLU, bilinear upsampling to that level and concatenation of its skip.
* regulariser R: a 1x1 convolution back to the input channels, resized to the input size.

Layers are named ``conv1`` ... ``conv{2*depth-1}`` in the order they run (encoder, then decoder);
their *features* are the pre-activation outputs. Ignored pixels are zeroed in the input, and the
ignore mask is max-pooled (3x3, stride 2, one pixel of padding, like the convolutions) to every
level, so that a feature counts as valid only where no ignored pixel lies in its encoder window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RELEASED_WIDTHS", "AnalyzerOutput", "StructureAnalyzer"]

RELEASED_WIDTHS: tuple[int, ...] = (16, 64, 128, 128, 128)


@dataclass
class AnalyzerOutput:
    """What one analyzer pass returns.

    Attributes:
        features: layer name -> pre-activation features ``[B, K_l, h_l, w_l]``, multiplied by the
            layer's valid mask (zero where an ignored pixel is in view), as in the released code.
        valid: layer name -> ``[B, h_l, w_l]`` bool, True where the feature sees no ignored pixel;
            ``None`` when no ignore mask was given (everything is valid).
        reconstruction: R(A(y)) as logits ``[B, sum(in_channels), H, W]`` at the input size, or
            ``None`` when not requested.
    """

    features: dict[str, Tensor]
    valid: dict[str, Tensor] | None
    reconstruction: Tensor | None


def _conv(conv: nn.Module, x: Tensor, detach_parameters: bool) -> Tensor:
    """Apply ``conv``; with ``detach_parameters`` no gradient can reach its weight or bias."""
    assert isinstance(conv, nn.Conv2d)
    weight, bias = conv.weight, conv.bias
    if detach_parameters:
        weight = weight.detach()
        bias = bias.detach() if bias is not None else None
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


def _pool_ignore_mask(ignored: Tensor) -> Tensor:
    """Ignore mask ``[B, 1, h, w]`` (float 0/1) at the next encoder level: 3x3 max, stride 2.

    Max-pooling pads with -inf, which for a 0/1 mask equals the released code's zero padding.
    """
    return F.max_pool2d(ignored, kernel_size=3, stride=2, padding=1)


class StructureAnalyzer(nn.Module):
    """U-Net autoencoder of label maps whose multi-layer features define the ASM losses.

    Args:
        in_channels: channels of each input modality, e.g. ``num_classes`` for a segmentation label
            map, or ``(num_classes, 1)`` for segmentation plus log-depth. An int means one modality.
        widths: encoder widths per level; ``widths[0]`` is the width *per modality* of the first
            level. Its length is the depth (number of stride-2 levels, at least 2). Default: the
            released ``(16, 64, 128, 128, 128)``.

    Example:
        >>> analyzer = StructureAnalyzer(in_channels=3)
        >>> y = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 64, 64)), 3)
        >>> out = analyzer(y.permute(0, 3, 1, 2).float(), layers=("conv1", "conv2"))
        >>> tuple(out.features["conv2"].shape)
        (2, 64, 16, 16)
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        widths: Sequence[int] = RELEASED_WIDTHS,
    ) -> None:
        super().__init__()
        modalities = (in_channels,) if isinstance(in_channels, int) else tuple(in_channels)
        if not modalities or any(int(c) < 1 for c in modalities):
            raise ValueError(f"in_channels must be positive channel counts, got {in_channels!r}")
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths needs at least 2 positive entries (one per level), got {widths!r}")
        self.in_channels: tuple[int, ...] = modalities
        self.depth = len(widths)
        level_channels = [widths[0] * len(modalities), *widths[1:]]
        self.level_channels: tuple[int, ...] = tuple(level_channels)

        self.first_convs = nn.ModuleList(
            nn.Conv2d(c, widths[0], kernel_size=3, stride=2, padding=1) for c in modalities
        )
        self.encoder_convs = nn.ModuleList(
            nn.Conv2d(level_channels[i - 1], level_channels[i], kernel_size=3, stride=2, padding=1)
            for i in range(1, self.depth)
        )
        # Decoder level L-1 reads the deepest activation; shallower ones read [upsampled, skip].
        decoder_convs = []
        for level in range(self.depth - 1, 0, -1):
            in_ch = level_channels[level] if level == self.depth - 1 else 2 * level_channels[level]
            decoder_convs.append(nn.Conv2d(in_ch, level_channels[level - 1], kernel_size=3, padding=1))
        self.decoder_convs = nn.ModuleList(decoder_convs)
        self.reconstruction_head = nn.Conv2d(2 * level_channels[0], sum(modalities), kernel_size=1)
        self.layer_names: tuple[str, ...] = tuple(f"conv{i}" for i in range(1, 2 * self.depth))
        self.reset_parameters()
        # Channels-last (NHWC) kernels and activations: oneDNN runs these thin convolutions faster
        # on the CPU (about 15% for the analyzer's update), and cuDNN is at home with them too.
        self.to(memory_format=torch.channels_last)

    def reset_parameters(self) -> None:
        """Glorot-uniform kernels (TensorFlow's default, as in the released code) and zero biases.

        The released code leaves its biases at TensorFlow's default initialiser too (Glorot-uniform
        of a 1-D variable, up to +-sqrt(3 / channels)); we start them at zero, the usual choice.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def conv_kernels(self) -> list[Tensor]:
        """The convolution kernels (the parameters that weight decay applies to; biases are not)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]

    def layer_index(self, name: str) -> int:
        """1-based position of layer ``name`` (``"conv3"`` -> 3); a clear error for unknown names."""
        if name not in self.layer_names:
            raise ValueError(
                f"unknown analyzer layer {name!r}; this analyzer (depth {self.depth}) has {', '.join(self.layer_names)}"
            )
        return self.layer_names.index(name) + 1

    def layer_level(self, name: str) -> int:
        """Resolution level (0 = half the input size) at which layer ``name`` works.

        Encoder layer ``conv{i}`` is at level ``i - 1``; the decoder climbs back, ``conv{depth+1}``
        at the deepest level ``depth - 1`` and ``conv{2*depth-1}`` at level 1.
        """
        index = self.layer_index(name)
        return index - 1 if index <= self.depth else 2 * self.depth - index

    def window_masks(self, pixels: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Per layer, True where a marked pixel lies in the feature's encoder window.

        The mask is max-pooled level by level exactly as the ignore mask is (3x3, stride 2, one
        pixel of padding), so at an encoder layer a position is True iff its features can depend on
        a marked pixel. Decoder layers take the window of their level (their receptive field is larger).

        Args:
            pixels: ``[B, H, W]`` bool, e.g. where a hard negative differs from the ground truth.
            layers: layer names.

        Returns:
            layer name -> ``[B, h_l, w_l]`` bool, the shapes of that layer's features.
        """
        levels = {name: self.layer_level(name) for name in layers}
        pooled = pixels.unsqueeze(1).float()
        by_level: list[Tensor] = []
        for _ in range(max(levels.values(), default=-1) + 1):
            pooled = _pool_ignore_mask(pooled)
            by_level.append(pooled[:, 0] > 0)
        return {name: by_level[level] for name, level in levels.items()}

    def _split_modalities(self, label_map: Tensor | Sequence[Tensor]) -> list[Tensor]:
        inputs = [label_map] if isinstance(label_map, Tensor) else list(label_map)
        if len(inputs) == 1 and len(self.in_channels) > 1:
            inputs = list(torch.split(inputs[0], list(self.in_channels), dim=1))
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} input modalities, got {len(inputs)}")
        for index, (x, channels) in enumerate(zip(inputs, self.in_channels, strict=True)):
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f"analyzer input {index} must be [B, {channels}, H, W], got {list(x.shape)}")
            if x.shape[0] != inputs[0].shape[0] or x.shape[2:] != inputs[0].shape[2:]:
                raise ValueError(
                    f"analyzer inputs must share batch and spatial size: input {index} is "
                    f"{list(x.shape)}, input 0 is {list(inputs[0].shape)}"
                )
        return inputs

    def forward(
        self,
        label_map: Tensor | Sequence[Tensor],
        ignore_mask: Tensor | None = None,
        layers: Sequence[str] = ("conv1", "conv2"),
        reconstruct: bool = False,
        detach_parameters: bool = False,
    ) -> AnalyzerOutput:
        """Run the analyzer as far as the request needs.

        Args:
            label_map: ``[B, sum(in_channels), H, W]`` float (one-hot ground truth or class
                probabilities), or one ``[B, C_m, H, W]`` tensor per modality.
            ignore_mask: ``[B, H, W]`` bool, True at ignored pixels (zeroed in the input), or None.
            layers: names of the layers whose features to return.
            reconstruct: also return R(A(y)). When False the pass stops at the deepest requested
                layer (only encoder layers requested -> the decoder never runs).
            detach_parameters: use detached weights, so that no gradient reaches the analyzer
                (the segmenter's matching pass).
        """
        if not layers and not reconstruct:
            raise ValueError("request at least one layer or reconstruct=True")
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in self._split_modalities(label_map)]
        batch, _, height, width = inputs[0].shape
        wanted = {self.layer_index(name) for name in layers}
        last_needed = len(self.layer_names) if reconstruct else max(wanted, default=0)
        ignored = None
        if ignore_mask is not None:
            if ignore_mask.shape != (batch, height, width):
                raise ValueError(
                    f"ignore_mask must be [B, H, W] = {[batch, height, width]}, got {list(ignore_mask.shape)}"
                )
            drop = ignore_mask.bool().unsqueeze(1)
            inputs = [x.masked_fill(drop, 0.0) for x in inputs]  # masked_fill: NaN there becomes 0 too
            ignored = ignore_mask.unsqueeze(1).to(inputs[0].dtype)

        features: dict[str, Tensor] = {}
        valid: dict[str, Tensor] | None = {} if ignored is not None else None
        skips: list[Tensor] = []
        level_ignored: list[Tensor | None] = []

        def collect(index: int, pre_activation: Tensor, level: int) -> None:
            if index not in wanted:
                return
            name = self.layer_names[index - 1]
            mask = level_ignored[level]
            if mask is None or valid is None:
                features[name] = pre_activation
                return
            features[name] = pre_activation * (1 - mask).to(pre_activation.dtype)
            valid[name] = mask[:, 0] == 0

        x: Tensor = inputs[0]
        for level in range(self.depth):
            if level == 0:
                per_modality = [_conv(c, m, detach_parameters) for c, m in zip(self.first_convs, inputs, strict=True)]
                pre = per_modality[0] if len(per_modality) == 1 else torch.cat(per_modality, dim=1)
            else:
                pre = _conv(self.encoder_convs[level - 1], x, detach_parameters)
            ignored = _pool_ignore_mask(ignored) if ignored is not None else None
            level_ignored.append(ignored)
            collect(level + 1, pre, level)
            if level + 1 == last_needed:
                return AnalyzerOutput(features, valid, None)
            x = F.relu(pre)
            skips.append(x)

        for step, conv in enumerate(self.decoder_convs):
            level = self.depth - 1 - step
            index = self.depth + 1 + step
            pre = _conv(conv, x, detach_parameters)
            collect(index, pre, level)
            if index == last_needed and not reconstruct:
                return AnalyzerOutput(features, valid, None)
            x = F.relu(pre)
            skip = skips[level - 1]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)

        logits = _conv(self.reconstruction_head, x, detach_parameters)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return AnalyzerOutput(features, valid, logits)
