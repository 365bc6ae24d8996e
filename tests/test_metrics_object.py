"""SegmentationMetrics: dataset accumulation, torchmetrics agreement, JSON, table, distributed reduction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.classification import MulticlassJaccardIndex

from asml.metrics import SegmentationMetrics, format_table, to_json
from asml.metrics.functional import boundary_prf, default_boundary_tolerance

CLASSES = 4


def batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        target = torch.randint(0, CLASSES, (2, 24, 20), generator=generator)
        target[:, :3] = 0  # larger uniform regions make boundaries sparse
        target[torch.rand(target.shape, generator=generator) < 0.05] = 255
        preds = target.clone()
        noise = torch.rand(target.shape, generator=generator) < 0.2
        preds[noise] = torch.randint(0, CLASSES, (int(noise.sum()),), generator=generator)
        preds[preds == 255] = 0
        out.append((preds, target))
    return out


def test_accumulating_batches_equals_one_pass_over_the_dataset() -> None:
    data = batches(3)
    metric = SegmentationMetrics(CLASSES, trimap_widths=(1, 3))
    for preds, target in data:
        metric.update(preds, target)
    result = metric.compute()
    everything = SegmentationMetrics(CLASSES, trimap_widths=(1, 3))
    everything.update(torch.cat([p for p, _ in data]), torch.cat([t for _, t in data]))
    for key, value in everything.compute().items():
        torch.testing.assert_close(result[key], value, equal_nan=True, msg=key)


def test_boundary_f_aggregates_over_images_as_documented() -> None:
    data = batches(2, seed=1)
    metric = SegmentationMetrics(CLASSES)
    per_image = []
    for preds, target in data:
        metric.update(preds, target)
        tolerance = default_boundary_tolerance(24, 20)
        per_image.append(boundary_prf(preds, target, CLASSES, tolerance)[2].numpy())
    f = np.concatenate(per_image)  # [images, classes], NaN where undefined
    image_means = [np.nanmean(row) for row in f if not np.all(np.isnan(row))]
    result = metric.compute()
    assert float(result["BF"]) == pytest.approx(np.mean(image_means), abs=1e-12)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(result["BF_per_class"].numpy(), np.nanmean(f, axis=0), atol=1e-12)


def test_context_pair_matrices_split_the_confusion_matrix_off_its_diagonal() -> None:
    data = batches(2, seed=2)
    metric = SegmentationMetrics(CLASSES)
    for preds, target in data:
        metric.update(preds, target)
    result = metric.compute()
    co_occurring, absent = result["co_occurring_confusion"], result["absent_confusion"]
    off_diagonal = result["confusion_matrix"] * (1 - torch.eye(CLASSES, dtype=torch.long))
    torch.testing.assert_close(co_occurring + absent, off_diagonal)
    assert int(result["wrong_pixels"]) == int(off_diagonal.sum())
    assert float(result["context_share"]) == pytest.approx(int(co_occurring.sum()) / int(off_diagonal.sum()))


def test_miou_equals_torchmetrics_jaccard_macro() -> None:
    metric = SegmentationMetrics(CLASSES)
    jaccard = MulticlassJaccardIndex(num_classes=CLASSES, average="macro", ignore_index=255)
    for preds, target in batches(3, seed=2):
        metric.update(preds, target)
        jaccard.update(preds, target)
    assert float(metric.compute()["mIoU"]) == pytest.approx(float(jaccard.compute()), abs=1e-6)


def test_logits_are_accepted_and_results_serialise_to_strict_json() -> None:
    preds, target = batches(1, seed=3)[0]
    logits = torch.nn.functional.one_hot(preds, CLASSES).permute(0, 3, 1, 2).float()
    from_logits, from_labels = SegmentationMetrics(CLASSES), SegmentationMetrics(CLASSES)
    from_logits.update(logits, target)
    from_labels.update(preds, target)
    assert torch.equal(from_logits.compute()["confusion_matrix"], from_labels.compute()["confusion_matrix"])
    empty_class = SegmentationMetrics(CLASSES + 1, class_names=["a", "b", "c", "d", "never"])
    empty_class.update(preds, target)
    result = empty_class.compute()
    assert math.isnan(float(result["IoU"][4]))
    text = json.dumps(to_json(result, empty_class.class_names), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["IoU"][4] is None and loaded["class_names"][4] == "never"
    table = format_table(result, empty_class.class_names)
    assert table.splitlines()[5].startswith("never") and "     -" in table.splitlines()[5]
    assert f"mIoU {100 * float(result['mIoU']):.2f}" in table


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metric = SegmentationMetrics(CLASSES, trimap_widths=(1, 3))
        for index, (preds, target) in enumerate(batches(4, seed=4)):
            if index % world == rank:
                metric.update(preds, target)
        result = metric.compute()  # torchmetrics reduces the sum states across processes here
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_reduce_to_the_single_process_result(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = SegmentationMetrics(CLASSES, trimap_widths=(1, 3))
    for preds, target in batches(4, seed=4):
        single.update(preds, target)
    expected = single.compute()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key, value in expected.items():
            torch.testing.assert_close(result[key], value, equal_nan=True, msg=f"rank {rank}: {key}")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="2 class names for 4 classes"):
        SegmentationMetrics(4, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        SegmentationMetrics(0)
