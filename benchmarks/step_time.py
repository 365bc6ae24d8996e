"""Time a CE training step and an ASM training step side by side; print the ratio ASM / CE.

A training step is forward, loss, backward and SGD step of the segmenter; the ASM step also holds
the analyzer's update on the same batch. Steps alternate (CE, ASM, naive ASM, CE, ...) so that
machine noise hits all alike; the medians are compared.

"naive" is the straightforward implementation, kept here as the reference the library is measured
against: three separate full analyzer passes (ground truth, hard negative, prediction), all through
the decoder, with the analyzer's gradients computed and thrown away in the segmenter's pass.

    .venv/bin/python benchmarks/step_time.py                 # PSPNet-resnet18 and U-Net-resnet18, 128 px, batch 8
    .venv/bin/python benchmarks/step_time.py --rounds 20 --classes 2
    .venv/bin/python benchmarks/step_time.py --variants --models unet --size 64 --classes 2   # the ablation's settings

``--variants`` times the ablation study's ASM+CE settings instead (released, hinge over error
positions, conv1-4 and all nine layers matched), each against CE.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asml import AdversarialStructureMatching, adversarial_hinge_loss, matching_loss, reconstruction_loss
from asml.data import blob_segmentation_batch

ARCHITECTURES = {"pspnet": smp.PSPNet, "unet": smp.Unet}
VARIANTS: dict[str, dict[str, object]] = {
    "asm+ce": {},
    "asm+ce hinge@errors": {"hinge_pixels": "errors"},
    "asm+ce conv1-4": {"matched_layers": ("conv1", "conv2", "conv3", "conv4")},
    "asm+ce conv1-9": {"matched_layers": tuple(f"conv{i}" for i in range(1, 10))},
}


class NaiveASM:
    """The same losses computed the obvious way: full analyzer passes, nothing shared or skipped."""

    def __init__(self, asm: AdversarialStructureMatching) -> None:
        self.asm = asm

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        asm, analyzer, layers = self.asm, self.asm.analyzer, self.asm.matched_layers
        everything = analyzer.layer_names
        ground_truth = F.one_hot(target, asm.num_classes).permute(0, 3, 1, 2).float()
        negative = F.one_hot(logits.detach().argmax(1), asm.num_classes).permute(0, 3, 1, 2).float()
        gt_out = analyzer(ground_truth, layers=everything, reconstruct=True)
        neg_out = analyzer(negative, layers=everything, reconstruct=True)
        assert gt_out.reconstruction is not None
        analyzer_loss = asm.current_adversarial_weight() * adversarial_hinge_loss(
            {n: neg_out.features[n] for n in layers}, {n: gt_out.features[n] for n in layers}, margin=asm.margin
        ) + reconstruction_loss(gt_out.reconstruction, target)
        asm.optimizer.zero_grad()
        analyzer_loss.backward()
        asm.optimizer.step()
        gt_out = analyzer(ground_truth, layers=everything, reconstruct=True)
        pred_out = analyzer(torch.softmax(logits, 1), layers=everything, reconstruct=True)
        return matching_loss({n: pred_out.features[n] for n in layers}, {n: gt_out.features[n] for n in layers})


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    masks: Tensor,
) -> float:
    start = time.perf_counter()
    loss = loss_fn(model(images), masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def benchmark(
    architecture: str, size: int, batch: int, classes: int, rounds: int, warmup: int, variants: bool = False
) -> dict[str, float]:
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture]("resnet18", encoder_weights=None, classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    losses: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "ce": lambda logits, masks: F.cross_entropy(logits, masks, ignore_index=255),
    }
    if variants:
        for name, options in VARIANTS.items():
            losses[name] = AdversarialStructureMatching(classes, total_steps=1000, ce_weight=1.0, **options)  # type: ignore[arg-type]
    else:
        losses["asm"] = AdversarialStructureMatching(classes, total_steps=1000)
        losses["naive"] = NaiveASM(AdversarialStructureMatching(classes, total_steps=1000))
    images, masks = blob_segmentation_batch(batch, size, num_classes=classes, seed=0)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for round_index in range(warmup + rounds):
        for name, loss_fn in losses.items():
            seconds = training_step(model, optimizer, loss_fn, images, masks)
            if round_index >= warmup:
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    # The fastest round is the least disturbed by other work on a shared machine.
    return medians | {f"{name} min": min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHITECTURES), default=["pspnet", "unet"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", action="store_true", help="time the ablation's ASM+CE settings against CE")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.size}x{args.size}, "
        f"batch {args.batch}, {args.classes} classes; median of {args.rounds} alternating rounds"
    )
    if args.variants:
        for architecture in args.models:
            result = benchmark(architecture, args.size, args.batch, args.classes, args.rounds, args.warmup, True)
            print(f"{architecture}-resnet18: CE {result['ce']:.3f} s/step")
            for name in VARIANTS:
                print(f"  {name:<22}{result[name]:>8.3f} s/step   / CE {result[name] / result['ce']:.2f}")
        return
    print(
        f"{'model':<18}{'CE s/step':>11}{'ASM s/step':>12}{'naive s/step':>14}{'ASM/CE':>9}{'naive/CE':>10}"
        f"{'ASM/CE (fastest rounds)':>25}"
    )
    for architecture in args.models:
        result = benchmark(architecture, args.size, args.batch, args.classes, args.rounds, args.warmup)
        print(
            f"{architecture + '-resnet18':<18}{result['ce']:>11.3f}{result['asm']:>12.3f}{result['naive']:>14.3f}"
            f"{result['asm'] / result['ce']:>9.2f}{result['naive'] / result['ce']:>10.2f}"
            f"{result['asm min'] / result['ce min']:>25.2f}"
        )


if __name__ == "__main__":
    main()
