"""Per-stage timings of the chest X-ray analysis, PyTorch vs ONNX Runtime, on this machine's devices.

Prints p50/p90 in milliseconds over N runs (after one warm-up run) for: decode (bytes -> guarded
Study), lung mask, classification, Grad-CAM, overlays, and the whole analysis.
"""

from __future__ import annotations

import io
import platform
import time

import numpy as np
import torch
from PIL import Image

from .guard import check_chest_xray
from .io import load_image
from .phantoms import make_phantom
from .pipelines.cxr import CxrPipeline
from .registry import Registry
from .viz import heat_overlay, mask_overlay

STAGES = ("decode", "lung_mask", "classification", "gradcam", "overlays", "total")


def _png_bytes(size: int) -> bytes:
    pixels = make_phantom("covid", seed=7, size=size).pixels
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def time_pipeline(pipeline: CxrPipeline, data: bytes, runs: int) -> dict[str, list[float]]:
    samples = {stage: [] for stage in STAGES}
    for index in range(runs + 1):  # the first run warms caches and is dropped
        started = time.perf_counter()
        study = check_chest_xray(load_image(data, "benchmark.png"))
        decoded = time.perf_counter()
        result = pipeline.analyse(study, explain=True)
        overlay_start = time.perf_counter()
        heat_overlay(study.pixels, result.gradcam)
        mask_overlay(study.pixels, result.lung_mask)
        finished = time.perf_counter()
        if index == 0:
            continue
        samples["decode"].append((decoded - started) * 1000)
        for stage in ("lung_mask", "classification", "gradcam"):
            samples[stage].append(result.timings_ms[stage])
        samples["overlays"].append((finished - overlay_start) * 1000)
        samples["total"].append((finished - started) * 1000)
    return samples


def run_benchmark(registry: Registry, runs: int = 20, size: int = 1024, classifier: str | None = None) -> list[dict]:
    data = _png_bytes(size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {device}")
    print(f"input: synthetic {size}x{size} PNG, {runs} runs after 1 warm-up; milliseconds; "
          f"classifier {classifier or registry.default('cxr-classification').name}")
    print(f"{'backend':<14}" + "".join(f"{s + ' p50':>20}{'p90':>8}" for s in STAGES))
    rows = []
    for backend in ("torch", "onnx"):
        pipeline = CxrPipeline(registry, backend=backend, classifier=classifier)
        samples = time_pipeline(pipeline, data, runs)
        label = f"{backend}/{device if backend == 'torch' else pipeline.classifier.provider.replace('ExecutionProvider', '').lower()}"
        row = {"backend": label}
        line = f"{label:<14}"
        for stage in STAGES:
            p50, p90 = np.percentile(samples[stage], [50, 90])
            row[stage] = (float(p50), float(p90))
            line += f"{p50:>20.1f}{p90:>8.1f}"
        print(line)
        rows.append(row)
    return rows
