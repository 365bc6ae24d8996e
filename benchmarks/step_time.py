"""What ASM costs: a CE training step, the default ASM+CE step and the released ASM+CE step, side by side.

A training step is forward, loss, backward and SGD step of the segmenter; an ASM step also holds
the analyzer's update on the same batch (or, with ``analyzer_every = k``, on every k-th step). For
each (segmenter, size, classes) cell the losses alternate round by round (CE, default, released,
...) so that machine noise hits all alike. Printed per loss: the mean step (what training pays:
with k > 1 one step in k holds an update, so the rounds must be a multiple of k), and the median of
the steps without an analyzer update (every step for CE; for k = 1 every ASM step has one, and the
median is of those), each also as a ratio to CE's. Peak memory is measured after one warm-up step
(so optimizer state and first-call caches are in the baseline): the peak resident set over three
more steps above what the process held before them on the CPU (Linux's VmHWM, "n/a" where it
cannot be reset), ``torch.cuda.max_memory_allocated`` on CUDA, again as a ratio to CE's.

    .venv/bin/python benchmarks/step_time.py          # U-Net and PSPNet-ResNet-18, 128 and 256 px, 2 and 21 classes
    .venv/bin/python benchmarks/step_time.py --models pspnet --sizes 128 --classes 21 --rounds 8
    .venv/bin/python benchmarks/step_time.py --variants             # also the cost levers (docs/speed)
    .venv/bin/python benchmarks/step_time.py --only-variants "nine layers every2" --sizes 128

Runs unchanged on CUDA (``--device cuda``, the default when a GPU is there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asml import AdversarialStructureMatching
from asml.data import blob_segmentation_batch
from asml.losses import ALL_LAYERS_ASM, ASM_DEFAULTS, RELEASED_ASM, asm_defaults

ARCHITECTURES = {"pspnet": smp.PSPNet, "unet": smp.Unet}
HALF_WIDTHS = (16, 32, 64, 64, 64)
# name -> ASM keyword arguments (on top of ce_weight=1); "ce" is plain cross-entropy. "default" is what
# ``asml train`` gives the segmenter: ``asm_defaults(architecture)`` (PSPNet: the analyzer at half resolution).
LOSSES: dict[str, dict[str, Any]] = {"default": dict(ASM_DEFAULTS), "released": dict(RELEASED_ASM)}
# The cost study's settings (docs/speed); "every k" = analyzer_every, "nine layers" = conv1-9 matched
# (the default before the real-data study).
NINE = {"matched_layers": ALL_LAYERS_ASM["matched_layers"]}
VARIANTS: dict[str, dict[str, Any]] = {
    "nine layers every2": dict(ALL_LAYERS_ASM),  # the default before the real-data study
    "nine layers every step": {**NINE, "analyzer_every": 1},  # the default before the cost study
    "every4": {**ASM_DEFAULTS, "analyzer_every": 4},
    "half widths": {**ASM_DEFAULTS, "analyzer_widths": HALF_WIDTHS},
    "every4 half widths": {**ASM_DEFAULTS, "analyzer_every": 4, "analyzer_widths": HALF_WIDTHS},
    "default + bf16": {**ASM_DEFAULTS, "analyzer_precision": "bfloat16"},  # opt-in
    "default stride2": {**ASM_DEFAULTS, "analyzer_stride": 2},  # the analyzer at half resolution
    "default full resolution": {**ASM_DEFAULTS, "analyzer_stride": 1},  # PSPNet's default before issue 13
    # PSPNet's default before the fused softmax: softmax, cell means and CE of the logits op by op.
    "default stride2 op by op": {**ASM_DEFAULTS, "analyzer_stride": 2, "fused_softmax": False},
    "nine layers stride2": {**ALL_LAYERS_ASM, "analyzer_stride": 2},
}


def loss_options(name: str, architecture: str) -> dict[str, Any]:
    """The ASM keyword arguments of ``name`` (a key of ``LOSSES`` or ``VARIANTS``) on ``architecture``."""
    return asm_defaults(architecture) if name == "default" else {**LOSSES, **VARIANTS}[name]


def make_loss(name: str, classes: int, device: torch.device, architecture: str) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "ce":
        return lambda logits, masks: F.cross_entropy(logits, masks, ignore_index=255)
    options = loss_options(name, architecture)
    return AdversarialStructureMatching(classes, total_steps=1000, ce_weight=1.0, **options).to(device)


def make_segmenter(architecture: str, classes: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture]("resnet18", encoder_weights=None, classes=classes).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    masks: Tensor,
) -> float:
    synchronize = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    loss = loss_fn(model(images), masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize()
    return time.perf_counter() - start


def updates_now(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """Whether the next call of this loss updates its analyzer (never for CE)."""
    if not isinstance(loss_fn, AdversarialStructureMatching):
        return False
    return loss_fn.step % loss_fn.analyzer_every == 0


def time_cell(
    architecture: str, size: int, classes: int, batch: int, names: list[str], rounds: int, device: torch.device
) -> dict[str, list[tuple[float, bool]]]:
    """(seconds, analyzer updated) per step of each loss, ``rounds`` alternating rounds after two
    warm-up rounds.

    Every loss trains its own copy of the same segmenter (same initial weights), so that one loss's
    updates do not change what another one's step costs."""
    images, masks = blob_segmentation_batch(batch, size, num_classes=classes, seed=0)
    images, masks = images.to(device), masks.to(device)
    setups = {
        name: (*make_segmenter(architecture, classes, device), make_loss(name, classes, device, architecture))
        for name in names
    }
    times: dict[str, list[tuple[float, bool]]] = {name: [] for name in names}
    for round_index in range(2 + rounds):
        for name, (model, optimizer, loss_fn) in setups.items():
            updated = updates_now(loss_fn)
            seconds = training_step(model, optimizer, loss_fn, images, masks)
            if round_index >= 2:
                times[name].append((seconds, updated))
    return times


def peak_memory(
    architecture: str, size: int, classes: int, batch: int, name: str, device: torch.device
) -> float | None:
    """Bytes a training step of this loss needs beyond the model and data (see the module docstring)."""
    if device.type == "cuda":
        model, optimizer = make_segmenter(architecture, classes, device)
        loss_fn = make_loss(name, classes, device, architecture)
        images, masks = blob_segmentation_batch(batch, size, num_classes=classes, seed=0)
        images, masks = images.to(device), masks.to(device)
        training_step(model, optimizer, loss_fn, images, masks)  # optimizer state exists from here on
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(3):
            training_step(model, optimizer, loss_fn, images, masks)
        return float(torch.cuda.max_memory_allocated(device) - base)
    # The CPU has no allocator statistics: a fresh process, its peak resident set over three steps
    # above what it held before them (Linux's VmHWM, reset after a warm-up step).
    command = [sys.executable, __file__, "--_memory-probe", json.dumps([architecture, size, classes, batch, name])]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # e.g. /proc/self/clear_refs not writable here: no figure, not no benchmark
        return None
    return float(result.stdout.strip().splitlines()[-1])


def _status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS: resident now; VmHWM: its peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _memory_probe(arguments: str) -> None:
    architecture, size, classes, batch, name = json.loads(arguments)
    torch.set_num_threads(1)  # thread pools allocate per thread; one keeps the figures comparable
    device = torch.device("cpu")
    model, optimizer = make_segmenter(architecture, classes, device)
    loss_fn = make_loss(name, classes, device, architecture)
    images, masks = blob_segmentation_batch(batch, size, num_classes=classes, seed=0)
    training_step(model, optimizer, loss_fn, images, masks)  # optimizer state exists from here on, as on CUDA
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to now: setup's peaks do not count
    for _ in range(3):
        training_step(model, optimizer, loss_fn, images, masks)
    print((_status_kib("VmHWM") - base) * 1024)


def report_cell(
    cell: str, times: dict[str, list[tuple[float, bool]]], memory: dict[str, float | None]
) -> list[dict[str, Any]]:
    def step_median(steps: list[tuple[float, bool]]) -> float:  # of the steps without an update, if any
        plain = [seconds for seconds, updated in steps if not updated]
        return statistics.median(plain or [seconds for seconds, _ in steps])

    ce_median, ce_mean = step_median(times["ce"]), statistics.fmean(s for s, _ in times["ce"])
    rows = []
    for name, steps in times.items():
        median, mean = step_median(steps), statistics.fmean(s for s, _ in steps)
        row = {"cell": cell, "loss": name, "mean_s": mean, "median_s": median, "updates": sum(u for _, u in steps)}
        row |= {"mean_ratio": mean / ce_mean, "median_ratio": median / ce_median}
        peak, ce_peak = memory.get(name), memory.get("ce")
        if peak is not None and ce_peak:
            row |= {"peak_MiB": peak / 2**20, "memory_ratio": peak / ce_peak}
        rows.append(row)
        memory_text = f"{row['peak_MiB']:>9.0f} {row['memory_ratio']:>7.2f}" if "peak_MiB" in row else ""
        if memory and "peak_MiB" not in row:
            memory_text = f"{'n/a':>9} {'n/a':>7}"
        print(
            f"{cell:<22}{name:<22}{mean:>9.3f}{row['mean_ratio']:>8.2f}{median:>10.3f}{row['median_ratio']:>8.2f}"
            f"{row['updates']:>4}/{len(steps):<3}{memory_text}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHITECTURES), default=["pspnet", "unet"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 21])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds (a multiple of analyzer_every)")
    parser.add_argument("--variants", action="store_true", help="also time the cost levers of docs/speed")
    parser.add_argument(
        "--only-variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=None,
        help="time these levers only (with CE and the two settings)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--_memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_probe:
        _memory_probe(args._memory_probe)
        return
    device = torch.device(args.device)
    levers = args.only_variants if args.only_variants is not None else (list(VARIANTS) if args.variants else [])
    names = ["ce", *LOSSES, *levers]
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"torch {torch.__version__}, {args.device} ({threads}); batch {args.batch}; {args.rounds} alternating rounds; "
        f"default = {ASM_DEFAULTS} (per segmenter: asml.losses.asm_defaults), released = {RELEASED_ASM}"
    )
    for architecture in args.models:
        print(f"  default on {architecture}: {asm_defaults(architecture)}")
    every = [loss_options(name, model).get("analyzer_every", 1) for name in names[1:] for model in args.models]
    if args.rounds % math.lcm(*every):
        parser.error(f"--rounds {args.rounds} must be a multiple of every analyzer_every timed ({sorted(set(every))})")
    memory_head = f"{'peak MiB':>9} {'mem/CE':>7}" if not args.no_memory else ""
    print(
        f"{'cell':<22}{'loss':<22}{'mean s':>9}{'mean/CE':>8}{'median s':>10}{'med/CE':>8}{'upd':>8}{memory_head}"
        "   (median: of the steps without an analyzer update, where there are any)"
    )
    rows: list[dict[str, Any]] = []
    for architecture, size, classes in itertools.product(args.models, args.sizes, args.classes):
        cell = f"{architecture} {size}px {classes}cls"
        start = time.perf_counter()
        times = time_cell(architecture, size, classes, args.batch, names, args.rounds, device)
        memory = (
            {}
            if args.no_memory
            else {n: peak_memory(architecture, size, classes, args.batch, n, device) for n in names}
        )
        rows += report_cell(cell, times, memory)
        print(f"{'':<22}(cell took {time.perf_counter() - start:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    main()
