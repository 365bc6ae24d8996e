"""AdversarialStructureMatching: the behaviours the drop-in loss promises."""

from __future__ import annotations

import io

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from asml import AdversarialStructureMatching, StructureAnalyzer
from asml.data import blob_segmentation_batch, random_blob_masks


def confident_logits(labels: torch.Tensor, num_classes: int, scale: float = 100.0) -> torch.Tensor:
    """Logits whose softmax is the one-hot of ``labels`` up to float32 precision."""
    return scale * F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary erosion of a bool [B, H, W] mask by a (2p+1)x(2p+1) square (reference, not library code)."""
    if pixels == 0:
        return mask
    background = (~mask).float().unsqueeze(1)
    grown = F.max_pool2d(background, 2 * pixels + 1, stride=1, padding=pixels)
    return grown[:, 0] == 0


def tiny_segmenter(num_classes: int) -> nn.Module:
    return smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=num_classes
    )


def twin_losses(num_classes: int, **kwargs: float) -> tuple[AdversarialStructureMatching, AdversarialStructureMatching]:
    """Two ASM losses with identical analyzers (same seed)."""
    torch.manual_seed(42)
    first = AdversarialStructureMatching(num_classes, **kwargs)  # type: ignore[arg-type]
    torch.manual_seed(42)
    return first, AdversarialStructureMatching(num_classes, **kwargs)  # type: ignore[arg-type]


def test_matching_loss_is_zero_for_a_perfect_prediction() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(4, 64, num_classes=3, seed=1)
    masks[:, :4] = 255
    asm = AdversarialStructureMatching(3)
    loss = asm(confident_logits(masks, 3).requires_grad_(True), masks)
    assert float(loss.detach()) < 1e-6
    assert float(asm.latest["matching"]) < 1e-6


def test_matching_loss_grows_with_structural_error() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(4, 64, num_classes=2, seed=2)
    asm = AdversarialStructureMatching(2).eval()
    losses = []
    for pixels in range(4):
        predicted = erode(masks == 1, pixels).long()
        losses.append(float(asm(confident_logits(predicted, 2), masks)))
    assert losses[0] < 1e-6
    assert losses == sorted(losses) and len(set(losses)) == 4, losses


def test_logits_at_ignored_pixels_change_no_loss_and_no_analyzer_update() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(3, 64, num_classes=3, seed=3)
    masks[:, 20:30, :] = 255
    masks[0, :, 50:] = 255
    ignored = masks == 255
    logits = torch.randn(3, 3, 64, 64)
    other = logits.clone()
    other.permute(0, 2, 3, 1)[ignored] = torch.randn(int(ignored.sum()), 3) * 10
    first, second = twin_losses(num_classes=3, ce_weight=0.5)
    for step in range(3):
        a, b = logits.clone().requires_grad_(True), other.clone().requires_grad_(True)
        loss_a, loss_b = first(a, masks), second(b, masks)
        assert torch.equal(loss_a, loss_b), step
        assert first.latest_scalars() == second.latest_scalars()
        loss_a.backward()
        loss_b.backward()
        assert a.grad is not None and b.grad is not None
        assert torch.equal(a.grad, b.grad)
        assert float(a.grad.permute(0, 2, 3, 1)[ignored].abs().sum()) == 0.0
    for p, q in zip(first.analyzer.parameters(), second.analyzer.parameters(), strict=True):
        assert torch.equal(p, q)


def test_segmenter_loss_never_produces_gradients_on_the_analyzer() -> None:
    torch.manual_seed(0)
    images, masks = blob_segmentation_batch(2, 64, num_classes=3, seed=0)
    model = tiny_segmenter(3)
    asm = AdversarialStructureMatching(3, ce_weight=1.0)
    loss = asm(model(images), masks)
    before = [p.detach().clone() for p in asm.analyzer.parameters()]
    loss.backward()
    assert all(p.grad is None for p in asm.analyzer.parameters())
    assert all(p.grad is not None for p in model.segmentation_head.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(torch.equal(p, q) for p, q in zip(asm.analyzer.parameters(), before, strict=True))


def test_analyzer_update_never_changes_the_segmenter() -> None:
    torch.manual_seed(0)
    images, masks = blob_segmentation_batch(2, 64, num_classes=3, seed=0)
    model = tiny_segmenter(3)
    asm = AdversarialStructureMatching(3)
    analyzer_before = [p.detach().clone() for p in asm.analyzer.parameters()]
    logits = model(images)
    logits.retain_grad()
    # Snapshot after the forward pass (it updates BatchNorm statistics), before the ASM call.
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    asm(logits, masks)
    # The analyzer moved; the segmenter did not, and no gradient reached it or its logits.
    assert any(not torch.equal(p, q) for p, q in zip(asm.analyzer.parameters(), analyzer_before, strict=True))
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert logits.grad is None


def test_no_analyzer_update_in_eval_mode_or_without_gradients() -> None:
    masks = random_blob_masks(2, 64, seed=4)
    logits = torch.randn(2, 2, 64, 64)
    asm = AdversarialStructureMatching(2)
    before = [p.detach().clone() for p in asm.analyzer.parameters()]
    asm.eval()
    asm(logits, masks)
    asm.train()
    with torch.no_grad():
        asm(logits, masks)
    assert asm.step == 0
    assert all(torch.equal(p, q) for p, q in zip(asm.analyzer.parameters(), before, strict=True))
    asm(logits, masks)
    assert asm.step == 1


def test_reconstruction_loss_halves_within_a_few_dozen_steps_on_fixed_blob_masks() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(8, 64, num_classes=3, seed=0)
    logits = torch.randn(8, 3, 64, 64)
    asm = AdversarialStructureMatching(3)
    history = []
    for _ in range(30):
        asm(logits, masks)
        history.append(float(asm.latest["reconstruction"]))
    assert history[-1] < 0.5 * history[0], history


def test_schedules_follow_the_released_formulas() -> None:
    asm = AdversarialStructureMatching(2, total_steps=10)
    masks = random_blob_masks(1, 32, seed=0)
    for step in range(10):
        # The update at step t uses w_adv(t) = 0.012 * 10^(-t/T) and lr(t) = 0.01 * (1 - t/T)^0.9.
        assert asm.current_adversarial_weight() == pytest.approx(0.012 * 10 ** (-step / 10), rel=1e-9)
        assert asm.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - step / 10) ** 0.9, rel=1e-9)
        asm(torch.randn(1, 2, 32, 32), masks)
        assert float(asm.latest["adversarial_weight"]) == pytest.approx(0.012 * 10 ** (-step / 10), rel=1e-6)
    assert asm.current_adversarial_weight() == pytest.approx(0.0012, rel=1e-9)
    # Weight decay on convolution kernels only.
    decayed, plain = asm.optimizer.param_groups
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 4 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(asm.analyzer.parameters()))


def test_loss_is_matching_plus_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(2, 64, num_classes=3, seed=5)
    masks[:, :5] = 255
    logits = torch.randn(2, 3, 64, 64)
    asm = AdversarialStructureMatching(3, ce_weight=0.7, matching_weight=2.0).eval()
    loss = asm(logits, masks)
    expected_ce = F.cross_entropy(logits, masks, ignore_index=255)
    assert float(asm.latest["ce"]) == pytest.approx(float(expected_ce), rel=1e-6)
    expected = 2.0 * float(asm.latest["matching"]) + 0.7 * float(expected_ce)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    layers = float(asm.latest["matching/conv1"]) + float(asm.latest["matching/conv2"])
    assert float(asm.latest["matching"]) == pytest.approx(layers, rel=1e-6)


def test_binary_one_channel_logits_act_as_two_class_softmax() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(2, 64, num_classes=2, seed=6)
    masks[:, -3:] = 255
    z = torch.randn(2, 1, 64, 64)
    one_channel, two_channel = twin_losses(num_classes=2, ce_weight=1.0)
    for _ in range(2):
        a = z.clone().requires_grad_(True)
        b = torch.cat([torch.zeros_like(z), z], dim=1).requires_grad_(True)
        loss_a, loss_b = one_channel(a, masks), two_channel(b, masks)
        assert torch.equal(loss_a, loss_b)
        loss_a.backward()
        loss_b.backward()
        assert b.grad is not None
        torch.testing.assert_close(a.grad, b.grad[:, 1:])
    # The 1-channel CE term is binary cross-entropy with logits over valid pixels.
    valid = masks != 255
    bce = F.binary_cross_entropy_with_logits(z[:, 0][valid], masks[valid].float())
    assert float(one_channel.latest["ce"]) == pytest.approx(float(bce), rel=1e-5)


def test_works_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    images, masks = blob_segmentation_batch(2, 64, num_classes=3, seed=7)
    model = tiny_segmenter(3)
    asm = AdversarialStructureMatching(3, ce_weight=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        loss = asm(logits, masks)
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.dtype == torch.float32 for p in asm.analyzer.parameters())
    # Same analyzer, no update: bf16 convolutions change the matching loss by little.
    asm.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = asm(logits.detach(), masks)
    full = asm(logits.detach().float(), masks)
    assert float(low) == pytest.approx(float(full), rel=0.03)


def test_nan_and_inf_logits_at_ignored_pixels_change_nothing() -> None:
    torch.manual_seed(0)
    masks = random_blob_masks(2, 64, num_classes=3, seed=8)
    masks[:, :6] = 255
    first, second = twin_losses(num_classes=3, ce_weight=1.0)
    clean = torch.randn(2, 3, 64, 64)
    poisoned = clean.clone()
    poisoned[:, 0, :3] = float("nan")
    poisoned[:, 1, 3:6] = float("inf")
    a, b = clean.clone().requires_grad_(True), poisoned.requires_grad_(True)
    loss_a, loss_b = first(a, masks), second(b, masks)
    assert torch.equal(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    assert b.grad is not None and torch.isfinite(b.grad).all() and torch.equal(a.grad, b.grad)


def test_float64_logits_work_with_the_float32_analyzer() -> None:
    masks = random_blob_masks(1, 32, seed=9)
    loss = AdversarialStructureMatching(2)(torch.randn(1, 2, 32, 32, dtype=torch.float64), masks)
    assert torch.isfinite(loss)


def test_loading_a_state_keeps_this_modules_total_steps() -> None:
    saved = AdversarialStructureMatching(2, total_steps=10)
    masks = random_blob_masks(1, 32, seed=0)
    for _ in range(5):
        saved(torch.randn(1, 2, 32, 32), masks)
    longer = AdversarialStructureMatching(2, total_steps=100)
    longer.load_state_dict(saved.state_dict())
    longer(torch.randn(1, 2, 32, 32), masks)
    assert longer.step == 6
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 6 / 100) ** 0.9, rel=1e-9)
    assert longer.current_adversarial_weight() == pytest.approx(0.012 * 0.1 ** (6 / 100), rel=1e-9)


def test_gradcheck_of_the_matching_loss_through_the_analyzer() -> None:
    torch.manual_seed(0)
    analyzer = StructureAnalyzer(3, widths=(4, 6)).double()
    asm = AdversarialStructureMatching(3, analyzer=analyzer, matched_layers=("conv1", "conv2", "conv3")).eval()
    target = torch.randint(0, 3, (1, 8, 8))
    target[0, 0, :3] = 255
    logits = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: asm(x, target), (logits,))


def run_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, asm: AdversarialStructureMatching, steps: range
) -> list[torch.Tensor]:
    losses = []
    for step in steps:
        images, masks = blob_segmentation_batch(2, 64, num_classes=3, seed=step)
        loss = asm(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def test_state_dict_round_trip_continues_bit_identically() -> None:
    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, AdversarialStructureMatching]:
        torch.manual_seed(0)
        model = tiny_segmenter(3)
        return (
            model,
            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            AdversarialStructureMatching(3, total_steps=6, ce_weight=0.5),
        )

    straight_model, straight_optimizer, straight_asm = fresh()
    straight = run_steps(straight_model, straight_optimizer, straight_asm, range(6))

    model, optimizer, asm = fresh()
    run_steps(model, optimizer, asm, range(3))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "asm": asm.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    torch.manual_seed(123)  # different initialisation: everything must come from the checkpoint
    resumed_model = tiny_segmenter(3)
    resumed_optimizer = torch.optim.SGD(resumed_model.parameters(), lr=0.01, momentum=0.9)
    resumed_asm = AdversarialStructureMatching(3, total_steps=6, ce_weight=0.5)
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed_asm.load_state_dict(saved["asm"])
    assert resumed_asm.step == 3
    resumed = run_steps(resumed_model, resumed_optimizer, resumed_asm, range(3, 6))

    assert all(torch.equal(a, b) for a, b in zip(straight[3:], resumed, strict=True))
    for p, q in zip(straight_asm.analyzer.parameters(), resumed_asm.analyzer.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed_asm.optimizer.param_groups[0]["lr"] == straight_asm.optimizer.param_groups[0]["lr"]
    assert resumed_asm.step == straight_asm.step == 6


@pytest.mark.parametrize(
    ("logits_shape", "target_shape", "message"),
    [
        ((2, 3, 32, 32), (2, 16, 16), r"target must be \[B, H, W\] = \[2, 32, 32\].*got \[2, 16, 16\]"),
        ((2, 4, 32, 32), (2, 32, 32), "logits have 4 channels, expected 3"),
        ((2, 3, 32), (2, 32, 32), r"logits must be \[B, C, H, W\], got shape \[2, 3, 32\]"),
    ],
)
def test_wrong_shapes_are_named_in_the_error(
    logits_shape: tuple[int, ...], target_shape: tuple[int, ...], message: str
) -> None:
    asm = AdversarialStructureMatching(3)
    with pytest.raises(ValueError, match=message):
        asm(torch.randn(*logits_shape), torch.zeros(target_shape, dtype=torch.long))


def test_wrong_labels_and_settings_are_named_in_the_error() -> None:
    asm = AdversarialStructureMatching(3)
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 0, 0] = 7
    with pytest.raises(
        ValueError, match=r"target holds labels \[7\], expected values in \[0, 3\) or the ignore index 255"
    ):
        asm(torch.randn(1, 3, 32, 32), target)
    with pytest.raises(ValueError, match="integer class indices"):
        asm(torch.randn(1, 3, 32, 32), target.float())
    with pytest.raises(ValueError, match="binary segmentation has 2 classes"):
        AdversarialStructureMatching(1)
    with pytest.raises(ValueError, match="unknown analyzer layer 'conv12'"):
        AdversarialStructureMatching(3, matched_layers=("conv1", "conv12"))
    with pytest.raises(ValueError, match="logits have 1 channels, expected 3"):
        AdversarialStructureMatching(3)(torch.randn(1, 1, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(KeyError, match="missing"):
        AdversarialStructureMatching(3).set_extra_state({"step": 1})
    with pytest.raises(ValueError, match="total_steps must be a positive number of steps or None, got 0"):
        AdversarialStructureMatching(3, total_steps=0)
    with pytest.raises(ValueError, match="ce_weight must be >= 0, got -1"):
        AdversarialStructureMatching(3, ce_weight=-1)


def test_without_an_ignore_index_every_label_must_be_a_class() -> None:
    asm = AdversarialStructureMatching(3, ignore_index=None)
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    logits = torch.randn(1, 3, 32, 32, requires_grad=True)
    assert torch.isfinite(asm(logits, target))
    target[0, 5, 5] = 255
    with pytest.raises(ValueError, match=r"target holds labels \[255\], expected values in \[0, 3\)$"):
        asm(logits, target)


def test_analyzer_on_another_device_than_the_logits_is_named_in_the_error() -> None:
    asm = AdversarialStructureMatching(2).to("meta")
    with pytest.raises(ValueError, match=r"logits are on cpu but the structure analyzer is on meta.*asm.to\('cpu'\)"):
        asm(torch.randn(1, 2, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long))


def test_loss_maps_show_where_the_analyzer_sees_the_mistake() -> None:
    torch.manual_seed(0)
    masks = torch.zeros(1, 64, 64, dtype=torch.long)
    masks[0, 16:48, 16:48] = 1
    asm = AdversarialStructureMatching(2)
    before = [p.detach().clone() for p in asm.analyzer.parameters()]
    perfect = asm.loss_maps(confident_logits(masks, 2), masks)
    assert set(perfect) == {"conv1", "conv2"} and all(float(m.abs().max()) < 1e-5 for m in perfect.values())
    wrong = masks.clone()
    wrong[0, 40:48, 40:48] = 0  # a corner bitten off
    maps = asm.loss_maps(confident_logits(wrong, 2), masks)
    for loss_map in maps.values():
        assert tuple(loss_map.shape) == (1, 64, 64)
        inside = float(loss_map[0, 36:52, 36:52].sum())
        assert inside > 0.9 * float(loss_map.sum()) > 0  # the error is where the map lights up
    assert asm.step == 0 and all(torch.equal(p, q) for p, q in zip(asm.analyzer.parameters(), before, strict=True))


def receptive_window_reference(pixels: torch.Tensor, level: int) -> torch.Tensor:
    """Brute force: position i of level L sees input rows 2^k*i - (2^k - 1) .. 2^k*i + (2^k - 1), k = L + 1
    (k stride-2 3x3 convolutions with one pixel of padding), clipped to the image."""
    batch, height, width = pixels.shape
    k = 2 ** (level + 1)
    out_h, out_w = height, width
    for _ in range(level + 1):
        out_h, out_w = (out_h + 1) // 2, (out_w + 1) // 2
    result = torch.zeros(batch, out_h, out_w, dtype=torch.bool)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                rows = slice(max(0, k * i - (k - 1)), k * i + k)
                cols = slice(max(0, k * j - (k - 1)), k * j + k)
                result[b, i, j] = bool(pixels[b, rows, cols].any())
    return result


def test_window_masks_mark_exactly_the_features_that_see_a_marked_pixel() -> None:
    torch.manual_seed(3)
    analyzer = StructureAnalyzer(2)
    pixels = torch.rand(2, 37, 30) < 0.01  # odd sizes: the padding rules matter at the borders
    masks = analyzer.window_masks(pixels, ("conv1", "conv2", "conv3", "conv7", "conv9"))
    for name, level in [("conv1", 0), ("conv2", 1), ("conv3", 2), ("conv7", 3), ("conv9", 1)]:
        assert torch.equal(masks[name], receptive_window_reference(pixels, level)), name
    features = analyzer(torch.rand(2, 2, 37, 30), layers=("conv1", "conv2", "conv3", "conv7", "conv9")).features
    assert all(masks[name].shape == features[name].shape[:1] + features[name].shape[2:] for name in masks)


def direct_hinge(negative: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, m - |a/|a| - b/|b||^2) per position, written directly (reference)."""
    a = negative / negative.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = target / target.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.relu(margin - ((a - b) ** 2).sum(dim=1))


@pytest.mark.parametrize("hinge_pixels", ["all", "errors"])
def test_hinge_is_averaged_where_hinge_pixels_says_and_both_means_are_logged(hinge_pixels: str) -> None:
    torch.manual_seed(0)
    masks = torch.zeros(2, 48, 48, dtype=torch.long)
    masks[:, 10:38, 12:30] = 1
    masks[1, 30:40, 30:34] = 255  # ignored pixels must stay out of both means
    predicted = masks.clamp(max=1).clone()
    predicted[0, 10:14, 12:30] = 0  # the top of the shape missed
    predicted[1, 20:24, 30:40] = 1  # a spur
    asm = AdversarialStructureMatching(2, hinge_pixels=hinge_pixels)  # type: ignore[arg-type]
    with torch.no_grad():
        ignored = masks == 255
        truth = F.one_hot(masks.masked_fill(ignored, 0), 2).permute(0, 3, 1, 2).float()
        negative = F.one_hot(predicted, 2).permute(0, 3, 1, 2).float()
        before = asm.analyzer(truth, ignored, ("conv1", "conv2")), asm.analyzer(negative, ignored, ("conv1", "conv2"))
    wrong = (predicted != masks) & ~ignored
    asm(confident_logits(predicted, 2).requires_grad_(), masks)
    total_all, total_errors = 0.0, 0.0
    for level, name in enumerate(("conv1", "conv2")):
        hinge = direct_hinge(before[1].features[name], before[0].features[name], 0.8)
        valid = ~receptive_window_reference(ignored, level)
        errors = receptive_window_reference(wrong, level) & valid
        over_all = float(hinge[valid].mean())
        over_errors = float(hinge[errors].mean())
        assert over_errors < over_all  # the correct positions sit at the constant margin
        expected = over_errors if hinge_pixels == "errors" else over_all
        assert float(asm.latest[f"adversarial/{name}"]) == pytest.approx(expected, abs=2e-5)
        total_all, total_errors = total_all + over_all, total_errors + over_errors
    assert float(asm.latest["hinge_all"]) == pytest.approx(total_all, abs=4e-5)
    assert float(asm.latest["hinge_errors"]) == pytest.approx(total_errors, abs=4e-5)
    assert float(asm.latest["error_share"]) == pytest.approx(float(wrong.sum() / (~ignored).sum()), rel=1e-6)


def test_hinge_over_errors_without_errors_is_a_pure_reconstruction_update() -> None:
    torch.manual_seed(1)
    masks = random_blob_masks(2, 48, 3)
    errors_only, autoencoder = twin_losses(3, hinge_pixels="errors")  # type: ignore[arg-type]
    autoencoder.adversarial_weight = 0.0
    for asm in (errors_only, autoencoder):
        asm(confident_logits(masks, 3).requires_grad_(), masks)
    assert float(errors_only.latest["hinge_errors"]) == 0.0 and float(errors_only.latest["error_share"]) == 0.0
    for p, q in zip(errors_only.analyzer.parameters(), autoencoder.analyzer.parameters(), strict=True):
        assert torch.equal(p, q)


def test_unknown_hinge_pixels_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="hinge_pixels must be one of"):
        AdversarialStructureMatching(2, hinge_pixels="wrong")  # type: ignore[arg-type]
