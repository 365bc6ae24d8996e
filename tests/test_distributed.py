"""Under torch.distributed every process holds the same analyzer, equal to a one-process run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asml import AdversarialStructureMatching
from asml.data import random_blob_masks

STEPS = 3
PER_PROCESS_BATCH = 2
WORLD = 2


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch of one step: fixed logits and blob masks (no ignored pixels)."""
    masks = random_blob_masks(PER_PROCESS_BATCH * WORLD, 48, num_classes=3, seed=step)
    logits = torch.randn(PER_PROCESS_BATCH * WORLD, 3, 48, 48, generator=torch.Generator().manual_seed(step))
    return logits, masks


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(rank)  # different initial analyzers: the first update must broadcast rank 0's
        asm = AdversarialStructureMatching(3, total_steps=STEPS)
        for step in range(STEPS):
            logits, masks = global_batch(step)
            part = slice(rank * PER_PROCESS_BATCH, (rank + 1) * PER_PROCESS_BATCH)
            asm(logits[part].clone().requires_grad_(True), masks[part]).backward()
        torch.save(asm.analyzer.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_hold_identical_analyzers_equal_to_one_process_on_the_full_batch(tmp_path: Path) -> None:
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name

    torch.manual_seed(0)  # rank 0's initial analyzer
    single = AdversarialStructureMatching(3, total_steps=STEPS)
    initial = {name: value.clone() for name, value in single.analyzer.state_dict().items()}
    for step in range(STEPS):
        logits, masks = global_batch(step)
        single(logits.requires_grad_(True), masks).backward()
    for name, value in single.analyzer.state_dict().items():
        assert not torch.equal(value, initial[name]) or name.endswith("bias"), name
        torch.testing.assert_close(states[0][name], value, rtol=1e-4, atol=1e-6)
