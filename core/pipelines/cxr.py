"""Chest X-ray analysis: lung mask -> classifier -> explanations.

``CxrPipeline.analyse`` takes a guarded ``Study`` and returns a ``CxrResult`` with everything the
page, the batch command line and the benchmark show. Models come only from the registry; the
classifier's card says how its inputs are built (``input_kind``: MANet's image + mask, UNet + HRNet's
lung-only image, COVID-CXNet's enhanced lung crop) and how its outputs become probabilities: softmax or
sigmoid of the logits divided by the card's temperature when it has a ``calibration`` entry
(``core.calibration``; T > 0 leaves the predicted class and the Grad-CAM target unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..calibration import probabilities as scaled_probabilities
from ..calibration import temperature_of
from ..errors import ModelError, UnsupportedInputError
from ..explain import grad_cam, grad_cam_with_attention, to_image_shape
from ..faithfulness import case_scores
from ..lung import lung_mask_from_probability, lung_probability_small, probability_to_shape
from ..postprocess import HRNET_MIN_AREA_FRACTION, LungMeasurements, cxnet_roi_mask, hrnet_postprocess, measure_lungs
from ..preprocess import cxnet_input, lung_only_input, lung_roi_box, mask_to_shape, masked_classifier_input
from ..registry import ModelCard, Registry
from ..runtime import OnnxModel, TorchModel, torch_device
from ..study import Study
from . import timed

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
    logits: np.ndarray | None = None  # the classifier's raw output, before the temperature (calibration fits on these)
    # analyse(..., faithfulness=True): {"deletion_score", "in_lung_share", "top_drop", "random_drop"} (core.faithfulness)
    faithfulness: dict | None = None

    @property
    def predicted_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


@dataclass
class ClassifierInput:
    arrays: tuple  # the network's inputs, each (C, S, S) float32
    box: tuple | None = None  # (rows, cols) slices of the image the inputs cover; None: the whole image


def classifier_inputs(card: ModelCard, pixels: np.ndarray, lung_small: np.ndarray, lung_prob: np.ndarray,
                      lung_mask: np.ndarray, reference: np.ndarray | None) -> ClassifierInput:
    """Build the classifier's inputs as its recipe did in training (the same ``core`` functions).

    ``lung_small``: lung probability at the segmenter's size; ``lung_prob``: the same at the image's shape.
    """
    size, config = card.input_size, card.input_config
    if card.input_kind == "image+mask":
        return ClassifierInput(*masked_classifier_input(pixels, lung_mask, size, config))
    if card.input_kind == "lung-only":
        dilated = hrnet_postprocess(lung_prob >= 0.5,
                                    config.get("dilation", 8), config.get("closing", 2))
        return ClassifierInput((lung_only_input(pixels, dilated, size),))
    if not config.get("lung_roi", True):  # COVID-CXNet without segmentation: the whole image
        return ClassifierInput((cxnet_input(pixels, None, size, reference),))
    roi = cxnet_roi_mask(lung_small, config["roi_dilation"])
    box = lung_roi_box(mask_to_shape(roi, pixels.shape))
    return ClassifierInput((cxnet_input(pixels, roi, size, reference),), box)


def to_probabilities(logits: np.ndarray, output: str, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of one case's logits: softmax, or (1 - p, p) of a sigmoid's single logit, after
    dividing the logits by ``temperature`` (1: the network's own probabilities)."""
    return scaled_probabilities(np.asarray(logits, dtype=np.float64).reshape(-1), output, temperature)


def heat_to_image(heat: np.ndarray, shape: tuple[int, int], box: tuple | None) -> np.ndarray:
    """A map over the classifier's input placed on the whole image (0 outside a cropped region)."""
    if box is None:
        return to_image_shape(heat, shape)
    full = np.zeros(shape, np.float32)
    rows, cols = box
    full[box] = to_image_shape(heat, (rows.stop - rows.start, cols.stop - cols.start))
    return full


class CxrPipeline:
    def __init__(self, registry: Registry, backend: str = "auto", classifier: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.device = torch_device()
        self.cls_card = registry.card(classifier) if classifier else registry.default("cxr-classification")
        if self.cls_card.task != "cxr-classification":
            raise ModelError(f"{self.cls_card.name!r} is not a chest X-ray classifier.")
        # The classifier was trained on masks from one segmenter (and its post-processing): serve that one.
        self.seg_card = registry.card(self.cls_card.segmenter) if self.cls_card.segmenter else registry.default("lung-segmentation")
        self.reference = (registry.load_array(self.cls_card, "histogram_reference")
                          if "histogram_reference" in self.cls_card.files else None)
        # PyTorch copy of the classifier: Grad-CAM needs gradients, which ONNX Runtime does not give.
        # One pipeline serves every session's thread: each use of the module holds its lock (core.runtime).
        # Channels-last: oneDNN's convolutions in that layout make Grad-CAM's pass about a tenth faster on this CPU
        # (11.0 against 12.4 ms for MANet at 128 px); its values differ from the default layout's by float32 rounding.
        network = registry.load_torch(self.cls_card, self.device).to(memory_format=torch.channels_last)
        self.classifier_torch = TorchModel(network, self.device)
        self.backend = "onnx" if backend in ("auto", "onnx") and _has_onnx(self.seg_card, self.cls_card) else "torch"
        if backend == "onnx" and self.backend != "onnx":
            raise ModelError("ONNX weights are not in the registry for these models.")
        if self.backend == "onnx":
            self.segmenter = OnnxModel(registry.verified_path(self.seg_card, "onnx"))
            self.classifier = OnnxModel(registry.verified_path(self.cls_card, "onnx"))
        else:
            self.segmenter = TorchModel(registry.load_torch(self.seg_card, self.device), self.device)
            self.classifier = self.classifier_torch

    @property
    def classes(self) -> list[str]:
        return list(self.cls_card.classes)

    def analyse(self, study: Study, explain: bool = True, faithfulness: bool = False) -> CxrResult:
        """``faithfulness`` (with ``explain``): also score the Grad-CAM (``core.faithfulness``): 5 more classifier
        passes on the served backend (the case, its 20 % hottest pixels blurred, 3 random 20 % blurred)."""
        timings: dict[str, float] = {}
        pixels = study.pixels
        with timed(timings, "lung_mask"):
            lung_small = lung_probability_small(pixels, self.segmenter, self.seg_card.input_size)
            prob = probability_to_shape(lung_small, pixels.shape)
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
        card = self.cls_card
        inputs = classifier_inputs(card, pixels, lung_small, prob, lung_mask, self.reference)
        with timed(timings, "classification"):
            logits = self.classifier(*(x[None] for x in inputs.arrays))[0]
            probs = to_probabilities(logits, card.output, temperature_of(card))
        probabilities = {name: float(p) for name, p in zip(self.classes, probs)}
        heat = attention = scores = None
        if explain:
            tensors = [torch.from_numpy(x[None]).to(self.device).contiguous(memory_format=torch.channels_last)
                       for x in inputs.arrays]
            image_t, mask_t = tensors[0], (tensors[1] if len(tensors) > 1 else None)
            single_logit = card.output == "sigmoid"
            with self.classifier_torch.exclusive() as net, timed(timings, "gradcam"):  # explanations hook the shared module
                if mask_t is None:
                    input_heat, maps = grad_cam(net, image_t, None, int(np.argmax(probs)), single_logit), []
                else:  # the attention maps come from Grad-CAM's own forward pass
                    input_heat, maps = grad_cam_with_attention(net, image_t, mask_t, int(np.argmax(probs)), single_logit)
                heat = heat_to_image(input_heat, pixels.shape, inputs.box)
                attention = heat_to_image(_display_map(maps, card.input_size), pixels.shape, inputs.box) if maps else None
            if faithfulness:
                with timed(timings, "faithfulness"):
                    scores = self._faithfulness(inputs, input_heat, int(np.argmax(probs)), heat, lung_mask, probs)
        return CxrResult(
            study=study, lung_probability=prob, lung_mask=lung_mask, lung=lung, probabilities=probabilities,
            gradcam=heat, attention_map=attention, segmenter=self.seg_card, classifier=self.cls_card,
            backend=self.backend, timings_ms=timings, warnings=warnings, logits=np.asarray(logits, np.float32).copy(),
            faithfulness=scores,
        )

    def _faithfulness(self, inputs: ClassifierInput, input_heat: np.ndarray, class_index: int, heat: np.ndarray,
                      lung_mask: np.ndarray, probabilities: np.ndarray) -> dict:
        """Deletion score on the classifier's input grid (served backend, served probabilities); in-lung share of
        the Grad-CAM placed on the image (0 outside a cropped region) against the image's lung mask. All None when
        the Grad-CAM is zero everywhere. ``probabilities``: the case's, as just served (no pass to repeat)."""
        card, temperature = self.cls_card, temperature_of(self.cls_card)

        def predict_batch(batch):
            return [to_probabilities(logits, card.output, temperature) for logits in self.classifier(*batch)]

        def predict(arrays):
            return predict_batch([np.asarray(x)[None] for x in arrays])[0]

        return case_scores(predict, inputs.arrays, input_heat, class_index, heat, lung_mask, probabilities, predict_batch)


def _display_map(maps: list[np.ndarray], input_size: int) -> np.ndarray:
    """The deepest map still at 1/8 of the input or finer: deeper maps (1/32) are too coarse to read."""
    fine_enough = [m for m in maps if m.shape[-1] * 8 >= input_size]
    return fine_enough[-1] if fine_enough else maps[0]


def _has_onnx(*cards: ModelCard) -> bool:
    return all("onnx" in card.files for card in cards)
