"""Serving on CUDA: the bundled models give the CPU's outputs through ONNX Runtime's CUDA provider and PyTorch.

The CUDA tests run only where ``torch.cuda.is_available()``; the ONNX ones also need ``onnxruntime-gpu``
(README, GPU install), else they skip with the reason. TF32 and other kernels make GPU outputs differ
from the CPU's in the last digits, so outputs are compared relative to their scale (``close``).
One CPU test keeps the helpers honest on machines without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.registry import Registry
from tests.conftest import REPO

WEIGHTS = REPO / "weights"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
RELATIVE_TOLERANCE = 0.02  # of the output's largest magnitude (logits), TF32 convolutions included


def bundled_registry() -> Registry:
    return Registry.open(WEIGHTS)


def card_names(fmt: str | None = None) -> list[str]:
    return [card.name for card in bundled_registry().cards() if fmt is None or fmt in card.files]


def cpu_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def example_inputs(card, session=None, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Inputs of the card's network: the ONNX graph's shapes (free dims: batch, then the card's size), or by input kind."""
    rng = np.random.default_rng(seed)
    if session is not None:
        shapes = [[dim if isinstance(dim, int) else batch if axis == 0 else card.input_size for axis, dim in enumerate(i.shape)]
                  for i in session.get_inputs()]
    elif card.input_kind == "multisource":  # global slice, heat-map crop, left and right infected regions
        crop = card.input_config["crop_size"]
        shapes = [[batch, 1, card.input_size, card.input_size]] + [[batch, 1, crop, crop]] * 3
    elif card.input_kind == "volume":
        shapes = [[1, 1, *card.input_config["shape"]]]
    else:
        raise AssertionError(f"no example input for {card.name} ({card.input_kind})")
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


def close(actual: np.ndarray, expected: np.ndarray) -> bool:
    scale = max(1.0, float(np.abs(expected).max()))
    return actual.shape == expected.shape and float(np.abs(actual - expected).max()) <= RELATIVE_TOLERANCE * scale


def torch_outputs(card, inputs: list[np.ndarray], device: str) -> np.ndarray:
    from core.runtime import TorchModel

    return TorchModel(bundled_registry().load_torch(card, device), device)(*inputs)


def _inputs_for(card, batch: int = 2) -> list[np.ndarray]:
    session = cpu_session(bundled_registry().verified_path(card, "onnx")) if "onnx" in card.files else None
    return example_inputs(card, session, batch)


def test_example_inputs_fit_every_bundled_network_on_cpu():
    """Without a GPU: the inputs the CUDA tests build run through each network (ONNX vs PyTorch on the CPU)."""
    registry = bundled_registry()
    for card in registry.cards():
        if card.input_kind == "volume":
            continue  # the 3D classifiers take seconds per volume on a CPU; their inputs are plain shapes
        inputs = _inputs_for(card, batch=1)
        reference = torch_outputs(card, inputs, "cpu")
        if "onnx" in card.files:
            session = cpu_session(registry.verified_path(card, "onnx"))
            onnx = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})[0]
            assert close(onnx, reference), card.name


@needs_cuda
@pytest.mark.parametrize("name", card_names("onnx"))
def test_onnx_models_run_on_the_cuda_provider_as_on_cpu(name):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed: no CUDAExecutionProvider (README, GPU install)")
    from core.runtime import OnnxModel, onnx_providers

    assert onnx_providers()[0] == "CUDAExecutionProvider"  # the app's own choice of provider
    registry = bundled_registry()
    card = registry.card(name)
    path = registry.verified_path(card, "onnx")
    served = OnnxModel(path)
    assert served.provider == "CUDAExecutionProvider", f"{name} fell back to {served.provider}"
    session = cpu_session(path)
    inputs = example_inputs(card, session)
    expected = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})[0]
    assert close(served(*inputs), expected), name


@needs_cuda
@pytest.mark.parametrize("name", card_names())
def test_pytorch_models_run_on_cuda_as_on_cpu(name):
    card = bundled_registry().card(name)
    inputs = _inputs_for(card)
    assert close(torch_outputs(card, inputs, "cuda"), torch_outputs(card, inputs, "cpu")), name


@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_xray_and_ct_slice_pipelines_on_cuda_give_the_cpu_answers(backend, monkeypatch):
    """The app's own pipelines (masks, probabilities, Grad-CAM on the GPU) against the same pipelines forced to the CPU."""
    import onnxruntime as ort

    from core.ct_phantoms import make_ct_phantom
    from core.phantoms import make_phantom
    from core.pipelines import ct_slice, cxr
    from core.runtime import onnx_providers

    if backend == "onnx" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed: no CUDAExecutionProvider")
    registry = bundled_registry()
    xray, ct = make_phantom("covid", seed=3, size=256).to_study(), make_ct_phantom("covid", seed=3, size=256).to_study()
    results = {}
    for device in ("cuda", "cpu"):
        if device == "cpu":
            for module in (cxr, ct_slice):
                monkeypatch.setattr(module, "torch_device", lambda: "cpu")
            onnx_providers.cache_clear()
            monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
        pipeline = cxr.CxrPipeline(registry, backend=backend)
        assert pipeline.device == device
        results[device] = (pipeline.analyse(xray, explain=True), ct_slice.CtSlicePipeline(registry, backend=backend).analyse(ct))
    onnx_providers.cache_clear()
    (gpu_x, gpu_ct), (cpu_x, cpu_ct) = results["cuda"], results["cpu"]
    for key, value in cpu_x.probabilities.items():
        assert abs(gpu_x.probabilities[key] - value) <= 0.01, key
    assert np.mean(gpu_x.lung_mask == cpu_x.lung_mask) >= 0.99
    assert gpu_x.gradcam is not None and float(np.abs(gpu_x.gradcam - cpu_x.gradcam).mean()) <= 0.02
    assert np.mean(gpu_ct.lung_mask == cpu_ct.lung_mask) >= 0.99
    assert np.mean(gpu_ct.infection_labels == cpu_ct.infection_labels) >= 0.99
    for key, value in cpu_ct.probabilities.items():
        assert abs(gpu_ct.probabilities[key] - value) <= 0.01, key
