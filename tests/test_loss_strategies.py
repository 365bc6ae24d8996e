"""The trainer's loss strategies: one interface, own state, no gradient leaks between players."""

from __future__ import annotations

import inspect
import io

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from asml import AdversarialStructureMatching
from asml.losses import ASM_DEFAULTS, LOSS_NAMES, RELEASED_ASM, asm_defaults, build_loss


def batch(classes: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    target = torch.randint(0, classes, (2, 64, 64), generator=generator)
    target[:, :4] = 255
    logits = torch.randn(2, classes, 64, 64, generator=generator)
    return images, target, logits


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_gives_a_finite_scalar_with_gradients_only_on_valid_pixels(name: str) -> None:
    images, target, logits = batch()
    loss_fn = build_loss(name, 3, total_steps=10)
    logits.requires_grad_(True)
    loss = loss_fn(logits, target, images)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    assert float(logits.grad.permute(0, 2, 3, 1)[target == 255].abs().sum()) == 0.0
    assert "loss" in loss_fn.latest_scalars()
    assert all(p.grad is None for p in loss_fn.parameters())  # a second network gets no gradient


def test_cross_entropy_variants_match_their_definitions() -> None:
    _, target, logits = batch()
    assert float(build_loss("ce", 3)(logits, target)) == pytest.approx(
        float(F.cross_entropy(logits, target, ignore_index=255)), rel=1e-6
    )
    lovasz = smp.losses.LovaszLoss("multiclass", ignore_index=255)(logits, target)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=255)(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert float(build_loss("lovasz", 3)(logits, target)) == pytest.approx(float(lovasz), rel=1e-6)
    assert float(build_loss("dice+ce", 3, ce_weight=0.5)(logits, target)) == pytest.approx(
        float(dice + 0.5 * ce), rel=1e-6
    )
    asm_ce = build_loss("asm+ce", 3)
    asm_ce.eval()
    total = asm_ce(logits, target)
    assert float(total) == pytest.approx(float(asm_ce.latest["matching"] + ce), rel=1e-5)


def test_gan_updates_its_discriminator_in_training_only_and_round_trips() -> None:
    images, target, logits = batch()
    gan = build_loss("gan", 3)
    before = [p.detach().clone() for p in gan.parameters()]
    gan.eval()
    gan(logits, target, images)
    assert all(torch.equal(p, q) for p, q in zip(gan.parameters(), before, strict=True))
    gan.train()
    loss = gan(logits.requires_grad_(True), target, images)
    assert any(not torch.equal(p, q) for p, q in zip(gan.parameters(), before, strict=True))
    parts = gan.latest_scalars()
    assert float(loss.detach()) == pytest.approx(parts["ce"] + 0.01 * parts["gan"], rel=1e-5)
    buffer = io.BytesIO()
    torch.save(gan.state_dict(), buffer)
    buffer.seek(0)
    restored = build_loss("gan", 3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    saved_state = gan.optimizer.state_dict()["state"]  # type: ignore[operator]
    restored_state = restored.optimizer.state_dict()["state"]  # type: ignore[operator]
    assert saved_state.keys() == restored_state.keys() and saved_state
    for index, moments in saved_state.items():
        for name, value in moments.items():
            assert torch.equal(restored_state[index][name], value), (index, name)
    assert all(torch.equal(p, q) for p, q in zip(restored.parameters(), gan.parameters(), strict=True))
    with pytest.raises(ValueError, match="needs the images"):
        gan(logits, target)


def test_unknown_loss_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown loss 'focal'; choose one of ce, asm, asm\\+ce, gan"):
        build_loss("focal", 3)


@pytest.mark.parametrize("name", ["asm", "asm+ce"])
def test_asm_losses_take_the_study_defaults_unless_the_caller_sets_them(name: str) -> None:
    default = build_loss(name, 3, total_steps=10).asm
    assert default.matched_layers == ("conv1", "conv2")  # the released layers, chosen by the real-data study
    assert default.adversarial_weight == pytest.approx(0.012)  # not changed by the studies
    assert default.analyzer_every == 2  # chosen by the cost study (docs/speed)
    assert default.ce_weight == (1.0 if name == "asm+ce" else 0.0)
    chosen = build_loss(name, 3, asm_options={"matched_layers": ["conv3"], "adversarial_weight": 0.5}).asm
    assert chosen.matched_layers == ("conv3",) and chosen.adversarial_weight == pytest.approx(0.5)
    assert default.analyzer_stride == 1  # full resolution for a segmenter of unknown family


def test_pspnet_alone_takes_the_analyzer_at_half_resolution_and_the_caller_still_decides() -> None:
    # PSPNet predicts at 1/8 and upsamples, so its default reads 2x2 cell means (issue 13's study).
    assert build_loss("asm+ce", 3, segmenter="pspnet").asm.analyzer_stride == 2
    for other in ("unet", "deeplabv3plus", "fcn", None):
        other_default = build_loss("asm+ce", 3, segmenter=other).asm
        assert other_default.analyzer_stride == 1 and other_default.analyzer_every == 2
    given = build_loss("asm+ce", 3, segmenter="pspnet", asm_options={"analyzer_stride": 1}).asm
    assert given.analyzer_stride == 1
    # The released setting stays the released one on PSPNet too: full resolution, every step.
    released = build_loss("asm+ce", 3, segmenter="pspnet", asm_options=RELEASED_ASM).asm
    assert (released.analyzer_stride, released.analyzer_every) == (1, 1)
    # Only the family's own option changes: the rest is ASM_DEFAULTS.
    assert asm_defaults("pspnet") == {**ASM_DEFAULTS, "analyzer_stride": 2}
    assert asm_defaults("unet") == asm_defaults(None) == ASM_DEFAULTS


def test_released_settings_are_the_class_defaults_and_reproduce_them_through_build_loss() -> None:
    signature = inspect.signature(AdversarialStructureMatching.__init__).parameters
    assert set(RELEASED_ASM) <= set(signature)
    assert {key: signature[key].default for key in RELEASED_ASM} == RELEASED_ASM
    # The paper's code: conv1-2, w_adv 0.012, the analyzer updated on every step.
    assert RELEASED_ASM == {
        "matched_layers": ("conv1", "conv2"),
        "adversarial_weight": 0.012,
        "analyzer_every": 1,
        "analyzer_stride": 1,
    }
    released = build_loss("asm+ce", 3, asm_options=RELEASED_ASM).asm
    plain = AdversarialStructureMatching(3, ce_weight=1.0)
    assert released.matched_layers == plain.matched_layers == ("conv1", "conv2")
    assert released.adversarial_weight == plain.adversarial_weight
    assert released.analyzer_every == plain.analyzer_every == 1
