"""The cost levers of AdversarialStructureMatching: fewer analyzer updates, bf16 analyzer passes.

Each is checked against an independent reference built in the test from the released path
(``analyzer_every=1``, float32), not against the lever's own output.
"""

from __future__ import annotations

import io

import pytest
import torch

from asml import AdversarialStructureMatching
from asml.data import random_blob_masks


def batches(count: int, num_classes: int = 3, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` (logits [2, C, size, size], masks [2, size, size]) pairs, some pixels ignored."""
    generator = torch.Generator().manual_seed(7)
    out = []
    for index in range(count):
        masks = random_blob_masks(2, size, num_classes=num_classes, seed=index)
        masks[:, :2] = 255
        out.append((torch.randn(2, num_classes, size, size, generator=generator), masks))
    return out


def twins(**kwargs: object) -> tuple[AdversarialStructureMatching, AdversarialStructureMatching]:
    torch.manual_seed(3)
    first = AdversarialStructureMatching(3, ce_weight=1.0, **kwargs)  # type: ignore[arg-type]
    torch.manual_seed(3)
    return first, AdversarialStructureMatching(3, ce_weight=1.0)


def analyzer_weights(asm: AdversarialStructureMatching) -> list[torch.Tensor]:
    return [p.detach().clone() for p in asm.analyzer.parameters()]


def test_every_kth_call_updates_and_the_others_are_the_released_loss_of_a_frozen_analyzer() -> None:
    """k = 3 on six batches equals the released module updated on batches 0 and 3 only, with its
    eval-mode (no update) loss on the others; constant schedules so that only the updates count."""
    every_third, reference = twins(analyzer_every=3)
    for call, (logits, masks) in enumerate(batches(6)):
        logits_a = logits.clone().requires_grad_(True)
        logits_b = logits.clone().requires_grad_(True)
        loss = every_third(logits_a, masks)
        reference.train(call % 3 == 0)
        expected = reference(logits_b, masks)
        assert torch.equal(loss, expected), call
        loss.backward()
        expected.backward()
        assert logits_a.grad is not None and logits_b.grad is not None
        assert torch.equal(logits_a.grad, logits_b.grad), call
        for p, q in zip(every_third.analyzer.parameters(), reference.analyzer.parameters(), strict=True):
            assert torch.equal(p, q), call
    assert every_third.step == 6


def test_every_kth_call_keeps_the_schedules_in_segmenter_steps() -> None:
    """lr(t) and w_adv(t) follow the call count t, not the number of updates."""
    total = 8
    asm = AdversarialStructureMatching(3, total_steps=total, analyzer_every=4)
    updated = []
    for call, (logits, masks) in enumerate(batches(total)):
        assert asm.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - call / total) ** 0.9, rel=1e-9)
        assert asm.current_adversarial_weight() == pytest.approx(0.012 * 10 ** (-call / total), rel=1e-9)
        before = analyzer_weights(asm)
        asm(logits, masks)
        updated.append(any(not torch.equal(a, b) for a, b in zip(before, asm.analyzer.parameters(), strict=True)))
        # The last update's scalars stay in the log until the next update.
        last_update = call - call % 4
        assert float(asm.latest["adversarial_weight"]) == pytest.approx(0.012 * 10 ** (-last_update / total))
    assert updated == [True, False, False, False, True, False, False, False]


def test_a_resumed_run_with_sparse_updates_continues_bit_identically() -> None:
    data = batches(7)

    def run(asm: AdversarialStructureMatching, calls: range) -> list[torch.Tensor]:
        return [asm(*data[call]).detach() for call in calls]

    torch.manual_seed(0)
    straight = AdversarialStructureMatching(3, total_steps=7, analyzer_every=2)
    losses = run(straight, range(7))
    torch.manual_seed(0)
    first = AdversarialStructureMatching(3, total_steps=7, analyzer_every=2)
    run(first, range(3))  # stops after an update step, before a frozen one
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(99)
    resumed = AdversarialStructureMatching(3, total_steps=7, analyzer_every=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(losses[3:], run(resumed, range(3, 7)), strict=True))
    for p, q in zip(straight.analyzer.parameters(), resumed.analyzer.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bfloat16_analyzer_passes_stay_close_to_float32_and_return_float32() -> None:
    low, full = twins(analyzer_precision="bfloat16")
    logits, masks = batches(1)[0]
    loss_low, loss_full = low(logits, masks), full(logits, masks)
    assert loss_low.dtype == torch.float32
    assert float(loss_low) == pytest.approx(float(loss_full), rel=0.03)
    assert all(p.dtype == torch.float32 for p in low.analyzer.parameters())
    # The update ran in bf16: close to the float32 update, but not the same arithmetic.
    pairs = zip(low.analyzer.parameters(), full.analyzer.parameters(), strict=True)
    differences = [float((p - q).detach().abs().max()) for p, q in pairs]
    assert max(differences) > 0
    assert max(differences) < 1e-3  # one SGD step of lr 0.01 on bounded losses
    for name in ("reconstruction", "adversarial", "matching"):
        assert low.latest[name].dtype == torch.float32
        assert float(low.latest[name]) == pytest.approx(float(full.latest[name]), rel=0.05, abs=1e-3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"analyzer_every": 0}, "analyzer_every must be a whole number of steps >= 1, got 0"),
        ({"analyzer_every": 2.5}, "analyzer_every must be a whole number of steps >= 1, got 2.5"),
        ({"analyzer_every": True}, "analyzer_every must be a whole number of steps >= 1, got True"),
        ({"analyzer_precision": "float16"}, r"analyzer_precision must be one of \('float32', 'bfloat16'\)"),
    ],
)
def test_bad_cost_settings_are_named_in_the_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdversarialStructureMatching(3, **options)  # type: ignore[arg-type]
