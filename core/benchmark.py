"""Per-stage timings of the chest X-ray and CT slice analyses, PyTorch vs ONNX Runtime, on this machine.

Prints p50/p90 in milliseconds over N runs (after one warm-up run). Chest X-ray: decode (bytes ->
guarded Study), lung mask, classification, Grad-CAM, its faithfulness scores (``core.faithfulness``, as the
page asks for them), overlays, the whole analysis. CT slice (when the registry has the CT models): decode
of a synthetic CT DICOM in HU, lung mask, infection (binary and ground glass / consolidation),
classification (paper 002's four branches, always PyTorch), overlays, the whole analysis. CT volume (``run_ct_volume_benchmark``, when the registry has the CT slice models):
a synthetic chest volume (``core.ct_volume_phantoms``) of 138 x 256 x 256 and of 300 x 512 x 512 voxels
as a .nii.gz file: decode (bytes -> guarded ``Volume``), the pipeline's stages (lungs slice by slice,
3D clean-up and volumes, infection, the two 3D classifiers when installed), writing the two mask files,
and the whole case (decode + analysis; the masks are the command line's extra).

The X-ray table ends with the yardstick: a bare DenseNet-121 forward (torchxrayvision's architecture, 224 px,
same threads) timed in the same run, and the ratio of the whole case to it.
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

STAGES = ("decode", "lung_mask", "classification", "gradcam", "faithfulness", "overlays", "total")
CT_STAGES = ("decode", "lung_mask", "infection", "classification", "overlays", "total")
VOLUME_STAGES = ("decode", "lung_mask", "lungs_3d", "infection", "classification", "write_masks", "total")
# (z, y, x) voxels and (dz, dy, dx) mm: a low-dose screening series and a standard thin-slice chest CT
VOLUME_CASES = (((138, 256, 256), (2.5, 1.4, 1.4)), ((300, 512, 512), (1.0, 0.7, 0.7)))


def _png_bytes(size: int) -> bytes:
    pixels = make_phantom("covid", seed=7, size=size).pixels
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _time_runs(runs: int, decode, analyse, overlays, model_stages: tuple, between=None) -> dict[str, list[float]]:
    """Stage timings of ``runs`` analyses after one warm-up: decode, the pipeline's own stages, overlays, total;
    ``between()`` (the bare forward), when given, is timed after each analysis as "between"."""
    samples: dict[str, list[float]] = {stage: [] for stage in ("decode", *model_stages, "overlays", "total", "between")}
    for index in range(runs + 1):  # the first run warms caches and is dropped
        if between is not None and index:
            started = time.perf_counter()
            between()
            samples["between"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        study = decode()
        decoded = time.perf_counter()
        result = analyse(study)
        overlay_start = time.perf_counter()
        overlays(study, result)
        finished = time.perf_counter()
        if index == 0:
            continue
        samples["decode"].append((decoded - started) * 1000)
        for stage in model_stages:
            samples[stage].append(result.timings_ms.get(stage, 0.0))
        samples["overlays"].append((finished - overlay_start) * 1000)
        samples["total"].append((finished - started) * 1000)
    return samples


def time_pipeline(pipeline: CxrPipeline, data: bytes, runs: int, between=None) -> dict[str, list[float]]:
    def overlays(study, result):
        heat_overlay(study.pixels, result.gradcam)
        mask_overlay(study.pixels, result.lung_mask)

    return _time_runs(runs, lambda: check_chest_xray(load_image(data, "benchmark.png")),
                      lambda study: pipeline.analyse(study, explain=True, faithfulness=True), overlays, STAGES[1:5],
                      between)


def time_ct_slice(pipeline, data: bytes, runs: int) -> dict[str, list[float]]:
    from .guard import check_ct_slice
    from .viz import infection_overlay

    def overlays(study, result):
        mask_overlay(study.pixels, result.lung_mask)
        infection_overlay(study.pixels, result.infection_labels)
        if result.heatmap is not None:
            heat_overlay(study.pixels, result.heatmap)

    return _time_runs(runs, lambda: check_ct_slice(load_image(data, "benchmark.dcm")), pipeline.analyse, overlays,
                      CT_STAGES[1:4])


def _print_rows(title: str, stages: tuple, measured: list[tuple[str, dict]]) -> list[dict]:
    print(title)
    print(f"{'backend':<14}" + "".join(f"{s + ' p50':>20}{'p90':>10}" for s in stages))
    rows = []
    for label, samples in measured:
        row, line = {"backend": label}, f"{label:<14}"
        for stage in stages:
            p50, p90 = np.percentile(samples[stage], [50, 90])
            row[stage] = (float(p50), float(p90))
            line += f"{p50:>20.1f}{p90:>10.1f}"
        print(line)
        rows.append(row)
    return rows


def run_ct_slice_benchmark(registry: Registry, runs: int = 20, size: int = 512) -> list[dict]:
    """The CT slice pipeline on a synthetic ``size`` x ``size`` CT DICOM in HU, per backend."""
    from .ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom
    from .pipelines.ct_slice import CtSlicePipeline

    data = ct_phantom_dicom_bytes(make_ct_phantom("covid", seed=7, size=size))
    measured = []
    for backend in ("torch", "onnx"):
        pipeline = CtSlicePipeline(registry, backend=backend)
        if pipeline.backend != backend:
            continue  # no ONNX files for these models
        measured.append((backend, time_ct_slice(pipeline, data, runs)))
    return _print_rows(f"CT slice: synthetic {size}x{size} CT DICOM (HU); classification always runs in PyTorch",
                       CT_STAGES, measured)


def _volume_nifti(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> bytes:
    from .ct_volume_phantoms import make_ct_volume
    from .io.nifti import nifti_bytes

    phantom = make_ct_volume("covid", seed=7, shape=shape, spacing_mm=spacing_mm, infection_ratio=0.02)
    return nifti_bytes(phantom.hu, spacing_mm, "RAS", compress=True)


def time_ct_volume(pipeline, data: bytes, runs: int, warm_up: bool = True) -> dict[str, list[float]]:
    """Stage timings (ms) of ``runs`` analyses of one .nii.gz volume (after one warm-up run when ``warm_up``)."""
    import tempfile
    from pathlib import Path

    from .guard.ct_volume import check_ct_volume
    from .io.nifti import load_nifti, write_source_nifti

    samples: dict[str, list[float]] = {stage: [] for stage in VOLUME_STAGES}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(runs + int(warm_up)):
            started = time.perf_counter()
            volume = check_ct_volume(load_nifti(data))
            decoded = time.perf_counter()
            result = pipeline.analyse(volume)
            analysed = time.perf_counter()
            for name, mask in (("lungs", result.lung_mask), ("infection", result.infection_labels > 0)):
                write_source_nifti(mask, result.volume, Path(folder) / f"benchmark_{name}.nii.gz")
            written = time.perf_counter()
            if warm_up and index == 0:
                continue
            samples["decode"].append((decoded - started) * 1000)
            for stage in VOLUME_STAGES[1:5]:
                samples[stage].append(result.timings_ms.get(stage, 0.0))
            samples["write_masks"].append((written - analysed) * 1000)
            samples["total"].append((analysed - started) * 1000)
    return samples


def run_ct_volume_benchmark(registry: Registry, runs: int = 1, large: bool = True,
                            backends: tuple[str, ...] = ("torch", "onnx")) -> list[dict]:
    """The CT volume pipeline on synthetic .nii.gz chest volumes (``VOLUME_CASES``; ``large=False`` skips
    512 x 512 x 300), per backend of the slice models; the 3D classifiers always run in PyTorch."""
    from .pipelines.ct_volume import CtVolumePipeline

    pipelines = {}
    for backend in backends:
        pipeline = CtVolumePipeline(registry, backend=backend)
        if pipeline.backend == backend:  # else: no ONNX files for these models
            pipelines[backend] = pipeline
    classifiers = " + ".join(card.name for role, card in next(iter(pipelines.values())).cards.items()
                             if role in ("uniform", "size-balanced")) or "none installed (not timed)"
    rows = []
    for index, (shape, spacing) in enumerate(VOLUME_CASES):
        if index and not large:
            continue
        data = _volume_nifti(shape, spacing)
        measured = []
        for backend, pipeline in pipelines.items():
            # the first case warms each pipeline up; the large one is timed cold (one run costs enough)
            measured.append((backend, time_ct_volume(pipeline, data, runs, warm_up=index == 0)))
        title = (f"CT volume: synthetic {shape[2]}x{shape[1]}x{shape[0]} (x y z) .nii.gz, {' x '.join(map(str, spacing))} mm; "
                 f"{runs} run(s); 3D classifiers: {classifiers} (PyTorch)")
        for row in _print_rows(title, VOLUME_STAGES, measured):
            rows.append({"shape": shape, **row})
    return rows


def run_benchmark(registry: Registry, runs: int = 20, size: int = 1024, classifier: str | None = None) -> list[dict]:
    data = _png_bytes(size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {device}")
    print(f"input: synthetic {size}x{size} PNG, {runs} runs after 1 warm-up; milliseconds; "
          f"classifier {classifier or registry.default('cxr-classification').name}")
    measured = []
    bare_forward = bare_densenet121_forward(device)
    for backend in ("torch", "onnx"):  # the bare forward runs between the cases: this machine's speed drifts
        pipeline = CxrPipeline(registry, backend=backend, classifier=classifier)
        label = f"{backend}/{device if backend == 'torch' else pipeline.classifier.provider.replace('ExecutionProvider', '').lower()}"
        measured.append((label, time_pipeline(pipeline, data, runs, between=bare_forward)))
    rows = _print_rows("Chest X-ray", STAGES, measured)
    bare = float(np.percentile([ms for _, samples in measured for ms in samples["between"]], 50))
    print(f"Bare DenseNet-121 forward ({BARE_MODEL}), timed between the cases: p50 {bare:.1f} ms ("
          + ", ".join(f"between the {label} cases {np.median(samples['between']):.1f}" for label, samples in measured)
          + "); whole case p50 / bare forward p50: "
          + ", ".join(f"{row['backend']} {row['total'][0] / bare:.2f}" for row in rows))
    for row in rows:
        row["bare_densenet121_ms"], row["ratio_to_bare"] = bare, row["total"][0] / bare
    return rows


BARE_MODEL = "torchxrayvision's architecture: torchvision DenseNet-121, 1 input channel, 18 outputs, 1 x 224 x 224, PyTorch, no grad"


def bare_densenet121() -> torch.nn.Module:
    """DenseNet-121 as torchxrayvision builds it (one grey channel in, 18 findings out), random weights: the yardstick
    a whole X-ray case is measured against (what a bare classifier costs on this machine)."""
    from torchvision.models import densenet121

    net = densenet121(weights=None, num_classes=18)
    net.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net.eval()


def bare_densenet121_forward(device: str = "cpu"):
    """A callable running one bare forward pass (no grad, same threads as the cases), warmed up three times:
    oneDNN builds its kernels in the first passes."""
    net = bare_densenet121().to(device)
    image = torch.rand(1, 1, 224, 224, device=device)

    def forward() -> None:
        with torch.no_grad():
            net(image)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        forward()
    return forward
