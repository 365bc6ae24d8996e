"""Two ASM modules trained side by side on the same calls, for tests that compare two code paths."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from asml import AdversarialStructureMatching
from asml.data import random_blob_masks


def paired_training_calls(
    first: AdversarialStructureMatching,
    second: AdversarialStructureMatching,
    size: int,
    with_ignored: bool,
    calls: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per call on 2 x C x size x size random logits and blob masks (the first three rows ignored if
    ``with_ignored``): both modules' losses, then, after both backward passes, both logits' gradients.
    The analyzers are updated by the calls themselves; compare their parameters after each yield."""
    classes = first.num_classes
    for call in range(calls):
        masks = random_blob_masks(2, size, num_classes=classes, seed=call)
        if with_ignored:
            masks[:, :3] = 255
        logits = torch.randn(2, classes, size, size, generator=torch.Generator().manual_seed(call))
        a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        loss_a, loss_b = first(a, masks), second(b, masks)
        loss_a.backward()
        loss_b.backward()
        assert a.grad is not None and b.grad is not None
        yield loss_a.detach(), loss_b.detach(), a.grad, b.grad
