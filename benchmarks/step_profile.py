"""Where the time of an ASM step goes: the loss alone (analyzer update, segmenter pass, their backward)
on fixed logits, broken down by phase and by kind of operator, next to a CE step of the segmenter.

    .venv/bin/python benchmarks/step_profile.py         # the default, PSPNet-r18, 128 px, 21 classes
    .venv/bin/python benchmarks/step_profile.py --options '{"analyzer_stride": 1}'   # PSPNet at full resolution
    .venv/bin/python benchmarks/step_profile.py --options '{"analyzer_every": 4}' --classes 2

Phases are timed with ``time.perf_counter`` around the module's own parts (mean per step over the
calls, so they add up to the whole call); the operator kinds come from ``torch.profiler`` over as
many further calls (self CPU time, so the kinds add up to the total). CPU only. "Full resolution"
operators are those on maps of the input's size: the softmax and its layout copy, one-hot maps,
the reconstruction's upsampling and cross-entropy, and the segmenter's CE term. The analyzer's
update runs on the update steps only (``analyzer_every``): its row is its mean over all steps, and
the time of one update is printed above the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from asml import AdversarialStructureMatching
from asml.data import blob_segmentation_batch
from asml.losses import asm_defaults
from step_time import ARCHITECTURES, make_segmenter  # the same segmenters as the step-time benchmark


def timed(method: Callable[..., Any], bucket: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = method(*args, **kwargs)
        bucket.append(time.perf_counter() - start)
        return result

    return wrapper


def operator_kind(name: str, shapes: list[Any], batch: int, size: int) -> str:
    """The row of the breakdown an operator's self time goes to."""
    if "convolution" in name:
        return "analyzer convolutions, backward" if "backward" in name else "analyzer convolutions, forward"

    def full_resolution(shape: Any) -> bool:  # [..., H, W, ...] maps, or [B*H*W, C] pixel rows
        if not isinstance(shape, list) or len(shape) < 2:
            return False
        return shape[0] == batch * size * size or any(shape[i : i + 2] == [size, size] for i in range(len(shape) - 1))

    if any(full_resolution(shape) for shape in shapes):
        return "full-resolution maps (softmax, layout, one-hot, reconstruction, CE)"
    if "upsample" in name or name == "aten::cat":
        return "analyzer decoder (upsampling, concatenation)"
    return "other (masks, distances, hinge, optimizer, autograd)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(ARCHITECTURES), default="pspnet")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--options", default="{}", help="ASM keyword arguments (JSON) on top of the default")
    args = parser.parse_args()
    try:
        given = json.loads(args.options)
    except json.JSONDecodeError as error:
        parser.error(f"--options must be a JSON object of ASM keyword arguments, got {args.options!r}: {error}")
    if not isinstance(given, dict):
        parser.error(f"--options must be a JSON object of ASM keyword arguments, got {args.options!r}")
    options = {**asm_defaults(args.model), "ce_weight": 1.0, **given}
    images, masks = blob_segmentation_batch(args.batch, args.size, num_classes=args.classes, seed=0)
    model, optimizer = make_segmenter(args.model, args.classes, torch.device("cpu"))
    with torch.no_grad():
        logits = model(images)

    def ce_step() -> None:
        loss = F.cross_entropy(model(images), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    try:
        asm = AdversarialStructureMatching(args.classes, total_steps=1000, **options)
    except (TypeError, ValueError) as error:  # an unknown keyword or a bad value, named by the class
        parser.error(f"--options: {error}")
    phases: dict[str, list[float]] = defaultdict(list)
    asm._update_analyzer = timed(asm._update_analyzer, phases["analyzer update (per update)"])  # type: ignore[method-assign]
    asm._prediction_and_cross_entropy = timed(  # type: ignore[method-assign]
        asm._prediction_and_cross_entropy, phases["softmax, its cell means and CE term, forward"]
    )
    asm._segmenter_loss = timed(asm._segmenter_loss, phases["segmenter pass, forward"])  # type: ignore[method-assign]

    def asm_call() -> None:
        leaf = logits.clone().requires_grad_(True)
        start = time.perf_counter()
        loss = asm(leaf, masks)
        middle = time.perf_counter()
        loss.backward()
        phases["segmenter pass, backward"].append(time.perf_counter() - middle)
        phases["ASM+CE loss, whole call"].append(time.perf_counter() - start)

    ce_times = []
    for index in range(2 + args.calls):
        start = time.perf_counter()
        ce_step()
        if index >= 2:
            ce_times.append(time.perf_counter() - start)
    for _ in range(2):
        asm_call()
    for values in phases.values():
        values.clear()  # in place: the wrappers hold these lists
    for _ in range(args.calls):  # timed without the profiler, whose recording slows every operator
        asm_call()
    timed_phases = {name: list(values) for name, values in phases.items()}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.calls):
            asm_call()

    ce_ms = 1000 * statistics.median(ce_times)
    print(
        f"{args.model}-resnet18, {args.size} px, {args.classes} classes, batch {args.batch}; ASM options {options}; "
        f"{torch.get_num_threads()} threads"
    )
    print(f"CE training step of the segmenter (median): {ce_ms:.1f} ms")
    update = timed_phases["analyzer update (per update)"]
    per_step = {name: 1000 * sum(values) / args.calls for name, values in timed_phases.items()}
    whole = per_step.pop("ASM+CE loss, whole call")
    per_step["analyzer update (share of steps)"] = per_step.pop("analyzer update (per update)")
    per_step["rest: one-hot maps, argmax, checks"] = whole - sum(per_step.values())
    print(f"one analyzer update: {1000 * statistics.median(update):.1f} ms, on {len(update)} of {args.calls} calls")
    print(f"\n{'phase (mean per step)':<46}{'ms':>8}{'x CE step':>11}")
    for name, ms in per_step.items():
        print(f"{name:<46}{ms:>8.1f}{ms / ce_ms:>11.2f}")
    print(f"{'ASM+CE loss, mean per step':<46}{whole:>8.1f}{whole / ce_ms:>11.2f}")

    kinds: dict[str, float] = defaultdict(float)
    top: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # kind -> operator -> ms
    for event in prof.key_averages(group_by_input_shape=True):
        kind = operator_kind(event.key, event.input_shapes, args.batch, args.size)
        kinds[kind] += event.self_cpu_time_total / 1000
        top[kind.split(" (")[0]][event.key] += event.self_cpu_time_total / 1000
    overall = sum(kinds.values())
    print(f"\n{'operator kind (profiler, self time)':<72}{'ms/step':>9}{'share':>8}")
    for kind, ms in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"{kind:<72}{ms / args.calls:>9.1f}{ms / overall:>8.0%}")
    if overall / args.calls > 1.5 * whole:  # the recording itself has slowed some operators
        print(
            f"(the profiler's self times add up to {overall / args.calls:.0f} ms/step against {whole:.0f} ms "
            "timed without it: the shares above are skewed towards the operators it slows most)"
        )
    for kind in ("full-resolution maps", "other"):
        largest = sorted(top[kind].items(), key=lambda item: -item[1])[:6]
        print(f"largest '{kind}' operators: " + ", ".join(f"{name} {ms / args.calls:.1f} ms" for name, ms in largest))


if __name__ == "__main__":
    main()
