"""Where models run: ONNX Runtime (CUDA when present, else CPU) for fast inference, PyTorch for gradients.

``onnxruntime`` (CPU) is the default install; ``onnxruntime-gpu`` replaces it on CUDA machines
(README, GPU install). Providers are chosen at run time from what the installed build offers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def onnx_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return tuple(preferred or available)


def compute_description() -> str:
    """One line for the home page: which hardware serves the models."""
    device = torch_device()
    if device == "cuda":
        import torch

        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU"


class OnnxModel:
    """A callable over an ONNX Runtime session: ``model(*arrays) -> first output``."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the CPU fallback of a GPU build is expected, not an error
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(onnx_providers()))
        except Exception as error:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
            raise ModelError(f"ONNX Runtime cannot load {Path(path).name}: {error}") from error
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.provider = self.session.get_providers()[0]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(self.input_names, arrays)}
        return self.session.run(None, feeds)[0]


class TorchModel:
    """The same callable contract over a PyTorch module (inference only)."""

    def __init__(self, module, device: str):
        self.module = module
        self.device = device

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in arrays]
            return self.module(*tensors).float().cpu().numpy()
