"""Capture of a whole training step in one CUDA graph (``TrainConfig(cuda_graph=True)``)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["capture_step"]


def capture_step(compute: Callable[[], Tensor], state: Callable[[], list[Tensor]], *, fresh_from: int | None,
                 device: torch.device, warmups: int = 3) -> tuple[torch.cuda.CUDAGraph, Tensor]:
    """Capture ``compute()`` (a step that reads static input tensors and updates ``state()`` in place) in one CUDA
    graph; return the graph and its output tensor. The graph is not replayed here: the state is as before.

    Warm-up steps run first on a side stream, as CUDA graphs need (they create lazy state such as optimiser moments
    and let cuDNN choose its algorithms); they change the state, so it is restored afterwards: ``state()``'s tensors
    that existed before get their values back, and where ``fresh_from`` is an int, the tensors from that index on
    (created by the warm-up, e.g. a fresh AdamW's step and moments) are zeroed.
    """
    with torch.no_grad():
        before = [v.detach().clone() for v in state()]
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmups):
            compute()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compute()
    with torch.no_grad():
        now = state()
        n = len(before) if fresh_from is None else fresh_from
        for v, b in zip(now[:n], before[:n]):
            v.copy_(b)
        for v in now[n:]:
            v.zero_()
    return graph, out
