"""A chest CT volume: lungs and infection slice by slice, cleaned in 3D, measured in ml, then paper 004's
dual-sampling 3D classifiers (Ouyang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2995508).

``CtVolumePipeline.analyse`` takes a guarded ``Volume`` (HU on the canonical ``[z, y, x]`` grid,
``core.io.volume``) and returns a ``CtVolumeResult``. Models come only from the registry:

1. ``lung_mask``: the CT slice lung model on every axial slice, in batches. Each slice enters as a
   single uploaded slice does (``core.imaging.ct_input``: lung window, 8-bit levels, then the square
   resize and min-max of ``core.preprocess.segmenter_input``, batched by ``core.imaging.slice_batch``);
2. ``lungs_3d``: the stacked masks cleaned in 3D (``core.imaging.volume_masks``: holes, the two
   lungs, left/right), and ``core.guard.ct_volume.check_lung_coverage`` refuses a
   volume with too little lung in view;
3. ``infection``: the binary Inf-Net and the ground glass / consolidation head (the maths of
   ``core.pipelines.ct_slice``) on the slices that hold lung: infected regions touching the 3D lungs,
   kept whole, and the lungs grown by them (lungs including their infection, measured in ml after it);
4. ``classification``: the two 3D classifiers (task ``ct-volume-classification``, one card per
   ``input_config["sampling"]``, "uniform" and "size-balanced") on ``core.imaging.volume_input``'s
   lung-masked input, their attention maps T(A) brought back to the volume's grid, and the
   dual-sampling fusion of Eq. 5 (``core.imaging.infection_burden``). Without the cards the volume is
   segmented and measured only, with a warning.

One pipeline serves every session's thread: ONNX Runtime sessions are thread-safe and each PyTorch
module is used under its own lock (``core.runtime``); everything else is local to the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..calibration import temperature_of
from ..guard.ct_volume import check_lung_coverage, field_of_view_warning
from ..imaging.ct_input import hu_to_model_levels, levels_to_model_pixels
from ..imaging.infection_burden import dual_sampling_probability, fusion_weight, ratio_band
from ..imaging.slice_batch import probabilities_to_shape, segmenter_inputs, squares_to_size
from ..imaging.volume_input import attention_to_volume, classifier_input_from_config
from ..imaging.volume_masks import body_midline, clean_lung_mask, split_lungs, volume_ml
from ..io.volume import Volume
from ..lung import sigmoid
from ..registry import ModelCard, Registry
from ..runtime import TorchModel, torch_device
from . import CovidCall, timed
from .ct_slice import (
    INFECTION_THRESHOLD,
    infection_and_lungs,
    label_infection,
    multiclass_input,
    segmentation_cards,
    segmentation_runners,
    softmax,
)

TASK = "ct-volume-classification"
SAMPLINGS = ("uniform", "size-balanced")  # paper 004's two models, by the card's input_config["sampling"]
STAGES = ("lung_mask", "lungs_3d", "infection", "classification")
STAGE_TITLES = {
    "lung_mask": "Lungs, slice by slice",
    "lungs_3d": "Lungs in 3D: clean-up and volumes",
    "infection": "Infection, slice by slice",
    "classification": "3D classifiers (uniform and size-balanced sampling)",
}
BATCH_SLICES = 16  # slices per network call: large enough to use both cores, small enough for a laptop
LUNG_THRESHOLD = 0.5
NO_CLASSIFIER_WARNING = ("No 3D classifier is installed (task ct-volume-classification): the volume was "
                         "segmented and measured but not classified.")

Progress = Callable[[str, float], None]


@dataclass
class CtVolumeResult(CovidCall):
    volume: Volume
    lung_mask: np.ndarray  # bool, canonical [z, y, x]
    infection_labels: np.ndarray  # uint8 0 none / 1 ground glass / 2 consolidation (1 = infection without the split)
    lung_volume_ml: dict[str, float]  # {"right", "left", "total"}: the patient's sides
    infection_volume_ml: dict[str, float]  # {"total"} and, with the multi-class model, {"ggo", "consolidation"}
    infection_ratio: float  # infection / lung volume, in [0, 1]
    ratio_band: str  # Table III's band: "small" | "medium" | "large"
    probabilities: dict[str, float]  # {"cap": p, "covid": p} of the dual-sampling fusion; empty without classifiers
    model_probabilities: dict[str, float]  # P(COVID-19) of "uniform", "size-balanced" and "dual"
    fusion_weight: float | None  # w of Eq. 5 (the uniform model's share); None unless both models ran
    attention: dict[str, np.ndarray]  # sampling -> T(A), float32 in [0, 1] on the canonical grid
    cards: dict[str, ModelCard]  # role ("lungs", "infection", "multiclass", "uniform", "size-balanced") -> card
    backend: str
    lung_slices: int = 0  # axial slices holding lung
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Classification:
    probabilities: dict[str, float] = field(default_factory=dict)
    model_probabilities: dict[str, float] = field(default_factory=dict)
    fusion_weight: float | None = None
    attention: dict[str, np.ndarray] = field(default_factory=dict)


def classifier_cards(registry: Registry) -> dict[str, ModelCard]:
    """sampling ("uniform", "size-balanced") -> the first card of the task with that sampling."""
    cards: dict[str, ModelCard] = {}
    for card in registry.cards(TASK):
        sampling = card.input_config.get("sampling")
        if sampling in SAMPLINGS and sampling not in cards:
            cards[sampling] = card
    return cards


def _batches(indices: np.ndarray, size: int):
    for start in range(0, len(indices), size):
        yield indices[start:start + size]


class CtVolumePipeline:
    def __init__(self, registry: Registry, backend: str = "auto", batch_slices: int = BATCH_SLICES):
        self.device = torch_device()
        self.registry = registry
        self.batch_slices = int(batch_slices)
        self.cards: dict[str, ModelCard] = segmentation_cards(registry)
        runners, self.backend = segmentation_runners(registry, self.cards, backend, self.device)
        self.lungs, self.infection, self.multiclass = runners["lungs"], runners["infection"], runners.get("multiclass")
        self.classifiers: dict[str, TorchModel] = {}
        for sampling, card in classifier_cards(registry).items():
            self.cards[sampling] = card
            # PyTorch: T(A) reads the last feature maps and the FC weight, not only the output
            self.classifiers[sampling] = TorchModel(registry.load_torch(card, self.device), self.device)

    # ------------------------------------------------------------------------------------------------
    def analyse(self, volume: Volume, progress: Progress | None = None) -> CtVolumeResult:
        report = progress or (lambda stage, fraction: None)
        timings: dict[str, float] = {}
        warnings = list(volume.warnings)
        inputs: dict[int, np.ndarray] = {}  # network input size -> (Z, 1, s, s) grey inputs, filled as needed
        classified = _Classification()
        with timed(timings, "total"):
            with timed(timings, "lung_mask"):
                raw_lungs = self._raw_lungs(volume.hu, inputs, report)
            with timed(timings, "lungs_3d"):
                lung_mask, midline, lung_slices = self._lungs_3d(volume, raw_lungs, report)
            warnings += [w for w in [field_of_view_warning(lung_mask)] if w]
            with timed(timings, "infection"):
                labels = self._infection(volume.hu, lung_mask, lung_slices, inputs, report)
            lung_mask = lung_mask | (labels > 0)  # the lungs including their infection, as on the slice page
            lung_ml = self._lung_ml(lung_mask, midline, volume.spacing_mm)
            infection_ml = self._infection_ml(labels, volume.spacing_mm)
            ratio = min(infection_ml["total"] / lung_ml["total"], 1.0) if lung_ml["total"] > 0 else 0.0
            if self.classifiers:
                with timed(timings, "classification"):
                    classified = self._classify(volume, lung_mask, ratio, report)
            warnings += self._classifier_warnings()
        return CtVolumeResult(
            volume=volume, lung_mask=lung_mask, infection_labels=labels, lung_volume_ml=lung_ml,
            infection_volume_ml=infection_ml, infection_ratio=float(ratio), ratio_band=ratio_band(ratio),
            probabilities=classified.probabilities, model_probabilities=classified.model_probabilities,
            fusion_weight=classified.fusion_weight, attention=classified.attention, cards=dict(self.cards),
            backend=self.backend, lung_slices=len(lung_slices), timings_ms=timings, warnings=warnings,
        )

    def _classifier_warnings(self) -> list[str]:
        if not self.classifiers:
            return [NO_CLASSIFIER_WARNING]
        missing = [s for s in SAMPLINGS if s not in self.classifiers]
        if missing:
            return [(f"Only one of the two 3D classifiers is installed (missing: {', '.join(missing)}): the "
                     "probability is that model's, not the dual-sampling fusion.")]
        return []

    def _lungs_3d(self, volume: Volume, raw_lungs: np.ndarray, report: Progress):
        """(3D lung mask, the body's midline, indices of the slices holding lung); refuses too little lung."""
        report("lungs_3d", 0.0)
        midline = body_midline(volume.hu)
        lung_mask = clean_lung_mask(raw_lungs, midline)
        lung_slices = np.flatnonzero(lung_mask.any(axis=(1, 2)))
        check_lung_coverage(volume_ml(lung_mask, volume.spacing_mm), len(lung_slices))
        report("lungs_3d", 1.0)
        return lung_mask, midline, lung_slices

    @staticmethod
    def _lung_ml(lung_mask: np.ndarray, midline, spacing_mm) -> dict[str, float]:
        right, left = split_lungs(lung_mask, midline)
        return {"right": volume_ml(right, spacing_mm), "left": volume_ml(left, spacing_mm),
                "total": volume_ml(lung_mask, spacing_mm)}

    def _infection_ml(self, labels: np.ndarray, spacing_mm) -> dict[str, float]:
        infection_ml = {"total": volume_ml(labels > 0, spacing_mm)}
        if self.multiclass is not None:
            infection_ml["ggo"] = volume_ml(labels == 1, spacing_mm)
            infection_ml["consolidation"] = volume_ml(labels == 2, spacing_mm)
        return infection_ml

    # ------------------------------------------------------------------------------------------------
    def _grey_inputs(self, hu: np.ndarray, indices: np.ndarray, size: int, cache: dict[int, np.ndarray]) -> np.ndarray:
        """(len(indices), 1, size, size): ``segmenter_input(ct_model_pixels(slice), size)`` of those axial slices.

        Inputs at the lung model's size are kept for every slice during one analysis: the infection
        models usually share that size, and the slices are then windowed and resized once.
        """
        if size in cache:
            return cache[size][indices]
        return segmenter_inputs(levels_to_model_pixels(hu_to_model_levels(hu[indices])), size)

    def _raw_lungs(self, hu: np.ndarray, cache: dict[int, np.ndarray], report: Progress) -> np.ndarray:
        """bool (Z, Y, X): lung probability >= 0.5 on every axial slice, before any clean-up."""
        size = self.cards["lungs"].input_size
        depth = hu.shape[0]
        grey = np.empty((depth, 1, size, size), np.float32)
        raw = np.zeros(hu.shape, dtype=bool)
        for batch in _batches(np.arange(depth), self.batch_slices):
            grey[batch] = segmenter_inputs(levels_to_model_pixels(hu_to_model_levels(hu[batch])), size)
            small = sigmoid(self.lungs(grey[batch])[:, 0])
            # bilinear resizing never exceeds the small map's maximum: slices without lung skip the resize
            found = small.reshape(len(batch), -1).max(axis=1) >= LUNG_THRESHOLD - 1e-5
            if found.any():
                raw[batch[found]] = probabilities_to_shape(small[found], hu.shape[1:]) >= LUNG_THRESHOLD
            report("lung_mask", float(batch[-1] + 1) / depth)
        cache[size] = grey
        return raw

    def _infection(self, hu: np.ndarray, lung_mask: np.ndarray, lung_slices: np.ndarray,
                   cache: dict[int, np.ndarray], report: Progress) -> np.ndarray:
        """uint8 (Z, Y, X) 0 / 1 ground glass / 2 consolidation: infected regions touching the 3D lungs, kept whole (slices
        without lung skipped)."""
        labels = np.zeros(hu.shape, dtype=np.uint8)
        size = self.cards["infection"].input_size
        done = 0
        for batch in _batches(lung_slices, self.batch_slices):
            small = sigmoid(self.infection(self._grey_inputs(hu, batch, size, cache))[:, 0])
            found = small.reshape(len(batch), -1).max(axis=1) >= INFECTION_THRESHOLD - 1e-5
            if found.any():
                infected, _ = infection_and_lungs(probabilities_to_shape(small[found], hu.shape[1:]), lung_mask[batch[found]])
                labels[batch[found]] = self._split(hu, batch[found], small[found], infected, cache)
            done += len(batch)
            report("infection", done / max(len(lung_slices), 1))
        return labels

    def _split(self, hu: np.ndarray, indices: np.ndarray, infection_small: np.ndarray, infected: np.ndarray,
               cache: dict[int, np.ndarray]) -> np.ndarray:
        """``label_infection`` of each slice: ground glass vs consolidation where the multi-class head has them."""
        if self.multiclass is None:
            return label_infection(infected, None)
        labels = infected.astype(np.uint8)
        any_infected = infected.reshape(len(indices), -1).any(axis=1)
        if not any_infected.any():
            return labels
        chosen = np.flatnonzero(any_infected)
        size = self.cards["multiclass"].input_size
        x = multiclass_input(self._grey_inputs(hu, indices[chosen], size, cache),
                             squares_to_size(infection_small[chosen], size))
        probs = softmax(self.multiclass(x), axis=1)
        shape = hu.shape[1:]
        consolidation = probabilities_to_shape(probs[:, 2], shape) > probabilities_to_shape(probs[:, 1], shape)
        labels[chosen] = label_infection(infected[chosen], consolidation)
        return labels

    # ------------------------------------------------------------------------------------------------
    def _classify(self, volume: Volume, lung_mask: np.ndarray, ratio: float, report: Progress) -> _Classification:
        """Probabilities, P(COVID-19) per model and fused, w, and T(A) per model on the volume's grid."""
        covid, attention, inputs = {}, {}, {}
        report("classification", 0.0)
        for done, (sampling, model) in enumerate(self.classifiers.items()):
            config = self.cards[sampling].input_config
            key = (tuple(config["shape"]), float(config["factor"]))  # the two models usually share their input
            if key not in inputs:
                inputs[key] = classifier_input_from_config(volume.hu, lung_mask, volume.spacing_mm, config)
            x, placement = inputs[key]
            logit, soft_attention = self._run_classifier(model, x)
            covid[sampling] = float(sigmoid(np.float32(logit / temperature_of(self.cards[sampling]))))
            attention[sampling] = attention_to_volume(soft_attention, placement, volume.hu.shape)
            report("classification", (done + 1) / len(self.classifiers))
        if len(covid) == len(SAMPLINGS):
            weight = fusion_weight(ratio)
            covid["dual"] = dual_sampling_probability(covid["uniform"], covid["size-balanced"], ratio)
        else:
            weight = None
            covid["dual"] = next(iter(covid.values()))
        return _Classification({"cap": 1.0 - covid["dual"], "covid": covid["dual"]}, covid, weight, attention)

    def _run_classifier(self, model, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(the COVID-19 logit, T(A) on the network grid) of one network input (Z, Y, X)."""
        import torch

        tensor = torch.from_numpy(x[None, None].astype(np.float32)).to(model.device)
        with model.exclusive() as net, torch.no_grad():  # one pipeline serves every session's thread
            logits, _, soft = net.forward_with_attention(tensor)
        return float(logits.float().reshape(-1)[0]), soft[0, 0].float().cpu().numpy()
