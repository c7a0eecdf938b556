"""Chest X-ray analysis: lung mask -> mask-attention classifier -> explanations.

``CxrPipeline.analyse`` takes a guarded ``Study`` and returns a ``CxrResult`` with everything the
page, the batch command line and the benchmark show. Models come only from the registry.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ModelError, UnsupportedInputError
from ..explain import grad_cam, mask_attention_maps, to_image_shape
from ..lung import lung_mask_from_probability, lung_probability
from ..postprocess import HRNET_MIN_AREA_FRACTION, LungMeasurements, measure_lungs
from ..preprocess import classifier_input
from ..registry import ModelCard, Registry
from ..runtime import OnnxModel, TorchModel, torch_device
from ..study import Study

MIN_LUNG_FRACTION = 0.02  # below this no lungs were found and a class would be meaningless
BACKENDS = ("auto", "onnx", "torch")


@dataclass
class CxrResult:
    study: Study
    lung_probability: np.ndarray
    lung_mask: np.ndarray
    lung: LungMeasurements
    probabilities: dict[str, float]
    gradcam: np.ndarray | None  # [0, 1] at the image's shape, for the predicted class
    attention_map: np.ndarray | None  # mask-attention map at 1/8 of the input (see _display_map), image shape
    segmenter: ModelCard
    classifier: ModelCard
    backend: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def predicted_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


@contextmanager
def _timed(timings: dict, stage: str):
    started = time.perf_counter()
    yield
    timings[stage] = (time.perf_counter() - started) * 1000.0


class CxrPipeline:
    def __init__(self, registry: Registry, backend: str = "auto", classifier: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.device = torch_device()
        self.seg_card = registry.default("lung-segmentation")
        self.cls_card = registry.card(classifier) if classifier else registry.default("cxr-classification")
        # PyTorch copy of the classifier: Grad-CAM needs gradients, which ONNX Runtime does not give.
        self.classifier_torch = registry.load_torch(self.cls_card, self.device)
        self.backend = "onnx" if backend in ("auto", "onnx") and _has_onnx(self.seg_card, self.cls_card) else "torch"
        if backend == "onnx" and self.backend != "onnx":
            raise ModelError("ONNX weights are not in the registry for these models.")
        if self.backend == "onnx":
            self.segmenter = OnnxModel(registry.verified_path(self.seg_card, "onnx"))
            self.classifier = OnnxModel(registry.verified_path(self.cls_card, "onnx"))
        else:
            self.segmenter = TorchModel(registry.load_torch(self.seg_card, self.device), self.device)
            self.classifier = TorchModel(self.classifier_torch, self.device)

    @property
    def classes(self) -> list[str]:
        return list(self.cls_card.classes)

    def analyse(self, study: Study, explain: bool = True) -> CxrResult:
        timings: dict[str, float] = {}
        pixels = study.pixels
        with _timed(timings, "lung_mask"):
            prob = lung_probability(pixels, self.segmenter, self.seg_card.input_size)
            lung_mask = lung_mask_from_probability(prob)
            lung = measure_lungs(lung_mask)
        warnings = list(study.warnings)
        if lung.area_fraction < MIN_LUNG_FRACTION:
            raise UnsupportedInputError(
                f"No lungs were found in this image (lung area {lung.area_fraction:.1%} of the image). "
                "Is it a frontal chest radiograph? Nothing was classified."
            )
        if lung.area_fraction < HRNET_MIN_AREA_FRACTION:
            warnings.append(
                f"The lung mask covers only {lung.area_fraction:.1%} of the image (expected at least "
                f"{HRNET_MIN_AREA_FRACTION:.0%}): check the mask before trusting the classification."
            )
        size = self.cls_card.input_size
        image, mask = classifier_input(pixels, lung_mask, size)
        with _timed(timings, "classification"):
            logits = self.classifier(image[None], mask[None])[0]
            probs = np.exp(logits - logits.max())
            probs = probs / probs.sum()
        probabilities = {name: float(p) for name, p in zip(self.classes, probs)}
        heat = attention = None
        if explain:
            image_t = torch.from_numpy(image[None]).to(self.device)
            mask_t = torch.from_numpy(mask[None]).to(self.device)
            with _timed(timings, "gradcam"):
                heat = to_image_shape(grad_cam(self.classifier_torch, image_t, mask_t, int(np.argmax(probs))), pixels.shape)
            maps = mask_attention_maps(self.classifier_torch, image_t, mask_t)
            attention = to_image_shape(_display_map(maps, size), pixels.shape) if maps else None
        return CxrResult(
            study=study, lung_probability=prob, lung_mask=lung_mask, lung=lung, probabilities=probabilities,
            gradcam=heat, attention_map=attention, segmenter=self.seg_card, classifier=self.cls_card,
            backend=self.backend, timings_ms=timings, warnings=warnings,
        )


def _display_map(maps: list[np.ndarray], input_size: int) -> np.ndarray:
    """The deepest map still at 1/8 of the input or finer: deeper maps (1/32) are too coarse to read."""
    fine_enough = [m for m in maps if m.shape[-1] * 8 >= input_size]
    return fine_enough[-1] if fine_enough else maps[0]


def _has_onnx(*cards: ModelCard) -> bool:
    return all("onnx" in card.files for card in cards)
