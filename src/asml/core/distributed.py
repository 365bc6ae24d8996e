"""Keeping the analyzer identical on every process of a ``torch.distributed`` run.

The analyzer is not wrapped in DistributedDataParallel: its passes are partial (encoder only for the
hard negatives, the decoder for the ground truth only), which DDP's reducer handles poorly. Instead
its gradients are averaged explicitly with one all-reduce per step, and its initial parameters are
broadcast from rank 0 before the first update.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["average_gradients", "broadcast_parameters", "world_size"]


def world_size() -> int:
    """Number of processes in the default group, 1 when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def broadcast_parameters(module: nn.Module, source_rank: int = 0) -> None:
    """Copy ``module``'s parameters and buffers from ``source_rank`` to every process (no-op alone)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=source_rank)


def average_gradients(module: nn.Module) -> None:
    """Replace every parameter's gradient by its mean over processes (one coalesced all-reduce).

    A parameter without a gradient counts as a zero gradient, so every process sends the same
    layout even if one of them skipped a layer.
    """
    count = world_size()
    if count == 1:
        return
    parameters = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= count
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
        offset += size
