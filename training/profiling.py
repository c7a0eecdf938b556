"""Model cost for the papers' cost tables (MANet Table 3): parameters, FLOPs, time per image."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_cost(model: torch.nn.Module, example_inputs: tuple, runs: int = 10) -> dict:
    """Parameters (M), forward GFLOPs for one image (multiply-add = 2 FLOPs), median ms per image."""
    model = model.eval()
    device = next(model.parameters()).device
    inputs = tuple(x[:1].to(device) for x in example_inputs)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(*inputs)
        times = []
        for _ in range(runs + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(*inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - started) * 1000)
    times = sorted(times[1:])  # the first call warms caches up
    return {
        "params_m": count_parameters(model) / 1e6,
        "gflops": counter.get_total_flops() / 1e9,
        "ms_per_image": times[len(times) // 2],
        "device": str(device),
    }
