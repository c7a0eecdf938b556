"""One axial CT slice: lung mask -> infection (ground glass / consolidation) -> COVID-19 classifier.

``CtSlicePipeline.analyse`` takes a guarded ``Study`` (HU or an 8-bit export) and returns a
``CtSliceResult``. Every network sees ``core.imaging.ct_input.ct_model_pixels`` (the one CT input
rule, shared with training). Models come only from the registry:

* ``ct-lung-segmentation``: the lungs (holes filled, small objects removed), then grown by the infected
  regions that touch them (``lung_mask`` = lungs including their infection);
* ``ct-infection-segmentation``: the binary Inf-Net (infection probability) and, when the registry has
  it, the multi-class head that splits the infection into ground glass and consolidation; the split is
  taken inside the binary infection mask, so ground glass + consolidation = infection;
* ``ct-classification``: paper 002's fusion classifier, fed with the global slice, the crop of its
  own heat map (Eq. 1 and 2) and the left/right sub-images of the infected regions. Its fusion logit is
  divided by the card's temperature (``core.calibration``) when the card has a ``calibration`` entry, so
  ``probabilities`` are calibrated; ``branch_probabilities`` stay each branch's own sigmoid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..calibration import probabilities as scaled_probabilities
from ..calibration import temperature_of
from ..errors import ModelError, UnsupportedInputError
from ..faithfulness import case_scores
from ..imaging.ct_input import ct_model_pixels
from ..imaging.regions import Box, branch_input, heatmap_crop_box, heatmap_from_features, infected_side_boxes
from ..imaging.slice_batch import squares_to_size
from ..lung import lung_mask_from_probability, lung_probability_small, probability_to_shape, sigmoid
from ..postprocess import components_touching
from ..preprocess import resize_square, segmenter_input
from ..registry import ModelCard, Registry
from ..runtime import OnnxModel, TorchModel, torch_device
from ..study import Study
from . import CovidCall, timed

MIN_LUNG_FRACTION = 0.01  # below this, no lung is in view and infection burden is meaningless
INFECTION_THRESHOLD = 0.5
MULTICLASS = ("background", "ggo", "consolidation")


def infection_and_lungs(infection_probability: np.ndarray, lung_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(infected, lungs): the regions of p >= ``INFECTION_THRESHOLD`` that touch the lung model's mask, kept whole,
    and that mask grown by them. Serving and the classifier recipe's infected regions both use this rule.

    Why not the plain intersection: the lung model, trained on one collection, cuts dense infection out of others'
    lungs (MedSeg test slices: Dice 0.364 inside its mask, 0.580 unrestricted, 0.589 with this rule), and the
    burden is a share of the lungs including their infection."""
    infected = components_touching(infection_probability >= INFECTION_THRESHOLD, lung_mask)
    return infected, lung_mask | infected


@dataclass(frozen=True)
class InfectionViews:
    """Test-time views of the infection model: the slice resized to each of ``sizes`` and, with ``flip``, also
    mirrored left-right; their probabilities are averaged at the card's size. A card gets them from
    ``python -m training infection-views``, which chooses them on val (``input_config["views"]``); without that
    entry the one view the model was trained on. The CT volume page keeps that one view: six views on every slice
    of a volume would take minutes on a CPU."""

    sizes: tuple[int, ...]
    flip: bool = False

    @classmethod
    def of(cls, card: ModelCard) -> InfectionViews:
        views = card.input_config.get("views")
        return cls.from_config(views) if views else cls((card.input_size,))

    @classmethod
    def from_config(cls, views: dict) -> InfectionViews:
        return cls(tuple(int(size) for size in views["sizes"]), bool(views.get("flip", False)))

    def as_config(self) -> dict:
        return {"sizes": list(self.sizes), "flip": self.flip}


def view_probabilities(run: Callable[[np.ndarray], np.ndarray], grey_at: Callable[[int], np.ndarray], size: int,
                       views: InfectionViews) -> dict[tuple[int, bool], np.ndarray]:
    """(view size, mirrored) -> the infection probability (N, size, size) of that view; ``grey_at(s)`` gives the
    slices' grey input (N, 1, s, s) and ``run`` the model's logits for it."""
    maps = {}
    for view_size in views.sizes:
        grey = grey_at(view_size)
        for flip in (False, True)[: 1 + views.flip]:
            logits = run(np.ascontiguousarray(grey[..., ::-1]) if flip else grey)[:, 0]
            maps[(view_size, flip)] = squares_to_size(sigmoid(logits[..., ::-1] if flip else logits), size)
    return maps


def infection_probability_views(run: Callable[[np.ndarray], np.ndarray], grey_at: Callable[[int], np.ndarray],
                                size: int, views: InfectionViews) -> np.ndarray:
    """(N, size, size): the mean infection probability over ``views`` (arguments as ``view_probabilities``)."""
    return np.mean(list(view_probabilities(run, grey_at, size, views).values()), axis=0)


@dataclass(frozen=True)
class InfectionBurden:
    """Areas on this slice, as fractions of the lung area (infection = ground glass + consolidation)."""

    lung_area_fraction: float  # lung pixels / slice pixels
    infection_fraction: float  # infected lung pixels / lung pixels
    ggo_fraction: float | None  # None without the multi-class model
    consolidation_fraction: float | None


@dataclass
class CtSliceResult(CovidCall):
    study: Study
    model_pixels: np.ndarray  # what the networks saw, [0, 1] at the slice's shape
    lung_mask: np.ndarray  # the lung model's lungs and the infected regions touching them
    infection_probability: np.ndarray  # [0, 1] at the slice's shape
    infection_labels: np.ndarray  # uint8: 0 none, 1 ground glass, 2 consolidation (1 = infection without the multi-class model)
    burden: InfectionBurden
    probabilities: dict[str, float]  # {"non-covid": p, "covid": p} after the card's temperature; empty without a classifier
    heatmap: np.ndarray | None  # paper 002's H (Eq. 1) at the slice's shape
    heatmap_box: Box | None  # the crop of Eq. 2 (largest region of H > tau)
    infected_boxes: dict[str, Box | None]  # {"right": ..., "left": ...}, the patient's sides
    branch_probabilities: dict[str, float]  # P(COVID-19) of the global, heat-map, infected and fusion branches (no temperature)
    cards: dict[str, ModelCard]  # role ("lungs", "infection", "multiclass", "classifier") -> card
    backend: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    logits: np.ndarray | None = None  # the fusion classifier's raw logit (1,), before the temperature; None without one
    # analyse(..., faithfulness=True): {"deletion_score", "in_lung_share", "top_drop", "random_drop"} of the heat map
    faithfulness: dict | None = None


def measure_burden(lung_mask: np.ndarray, labels: np.ndarray, multiclass: bool) -> InfectionBurden:
    lung_pixels = int(lung_mask.sum())
    lung_area = lung_pixels / lung_mask.size

    def share(mask: np.ndarray) -> float:
        return float(np.logical_and(mask, lung_mask).sum() / lung_pixels) if lung_pixels else 0.0

    return InfectionBurden(
        lung_area_fraction=float(lung_area), infection_fraction=share(labels > 0),
        ggo_fraction=share(labels == 1) if multiclass else None,
        consolidation_fraction=share(labels == 2) if multiclass else None,
    )


def segmentation_cards(registry: Registry) -> dict[str, ModelCard]:
    """The CT lung and infection models both CT pipelines serve: ``lungs``, ``infection`` (binary) and,
    when the registry has one, ``multiclass`` (ground glass / consolidation).

    The slice classifier's infected branch was trained on one lung and one infection model, named on
    its card: those are served (a volume's slices are then segmented as a single slice is).
    """
    classifiers = registry.cards("ct-classification")
    named = classifiers[0].input_config if classifiers else {}
    cards = {
        "lungs": registry.card(named["lung_model"]) if named.get("lung_model") else registry.default("ct-lung-segmentation"),
        "infection": (registry.card(named["infection_model"]) if named.get("infection_model")
                      else _infection_card(registry, binary=True)),
    }
    multiclass = _infection_card(registry, binary=False)
    if multiclass is not None:
        cards["multiclass"] = multiclass
    return cards


def _infection_card(registry: Registry, binary: bool) -> ModelCard | None:
    cards = [c for c in registry.cards("ct-infection-segmentation") if (len(c.classes) == 1) == binary]
    if binary and not cards:
        raise ModelError("The registry has no binary CT infection model (task ct-infection-segmentation, one class).")
    return cards[0] if cards else None


def segmentation_runners(registry: Registry, cards: dict[str, ModelCard], backend: str, device: str) -> tuple[dict, str]:
    """(role -> callable model, backend name): ONNX Runtime when the lung and infection models have ONNX files
    (and ``backend`` is not "torch"), else PyTorch; ``backend="onnx"`` without ONNX files is a ``ModelError``."""
    use_onnx = backend != "torch" and all("onnx" in cards[r].files for r in ("lungs", "infection"))
    if backend == "onnx" and not use_onnx:
        raise ModelError("ONNX weights are not in the registry for the CT lung and infection models.")

    def runner(card: ModelCard):
        if use_onnx and "onnx" in card.files:
            return OnnxModel(registry.verified_path(card, "onnx"))
        return TorchModel(registry.load_torch(card, device), device)

    return {role: runner(card) for role, card in cards.items()}, "onnx" if use_onnx else "torch"


def multiclass_input(grey: np.ndarray, infection_probability: np.ndarray) -> np.ndarray:
    """The multi-class head's input (N, 2, s, s): the slice's grey input (N, 1, s, s) and the binary model's
    infection probability (N, s, s) at the same size."""
    return np.concatenate([grey, np.clip(infection_probability, 0, 1)[:, None]], axis=1).astype(np.float32)


def label_infection(infected: np.ndarray, consolidation: np.ndarray | None) -> np.ndarray:
    """uint8 0 none / 1 ground glass / 2 consolidation inside ``infected`` (1 everywhere infected without the split)."""
    labels = infected.astype(np.uint8)
    if consolidation is not None:
        labels[infected & consolidation] = 2
    return labels


class CtSlicePipeline:
    def __init__(self, registry: Registry, backend: str = "auto"):
        self.device = torch_device()
        self.registry = registry
        self.cards: dict[str, ModelCard] = segmentation_cards(registry)
        runners, self.backend = segmentation_runners(registry, self.cards, backend, self.device)
        self.lungs, self.infection, self.multiclass = runners["lungs"], runners["infection"], runners.get("multiclass")
        classifiers = registry.cards("ct-classification")
        classifier = classifiers[0] if classifiers else None
        if classifier is not None:
            self.cards["classifier"] = classifier
        # The classifier runs in PyTorch: Eq. 1 needs its last feature maps, not only its output.
        self.classifier = TorchModel(registry.load_torch(classifier, self.device), self.device) if classifier else None

    def analyse(self, study: Study, faithfulness: bool = False) -> CtSliceResult:
        """``faithfulness``: also score the heat map (``core.faithfulness``) on the global branch's input: 5 more
        classifier passes (the slice, its 20 % hottest pixels blurred, 3 random 20 % blurred), crops held fixed."""
        timings: dict[str, float] = {}
        warnings = list(study.warnings)
        pixels = ct_model_pixels(study)
        with timed(timings, "lung_mask"):
            lung_mask = self.lung_mask(pixels)
        if lung_mask.mean() < MIN_LUNG_FRACTION:
            raise UnsupportedInputError(
                f"No lungs were found on this slice (lung area {lung_mask.mean():.1%} of the image). "
                "Is it an axial chest CT slice through the lungs? Nothing was analysed."
            )
        with timed(timings, "infection"):
            infection_small = self._infection_small(pixels)
            infection_prob = probability_to_shape(infection_small, pixels.shape)
            infected, lung_mask = infection_and_lungs(infection_prob, lung_mask)
            labels = self._labels(pixels, infection_small, infected)
        burden = measure_burden(lung_mask, labels, self.multiclass is not None)
        probabilities, branches, heatmap, heatmap_box, logits, scores = {}, {}, None, None, None, None
        boxes = infected_side_boxes(labels, lung_mask)
        if self.classifier is not None:
            with timed(timings, "classification"):
                probabilities, branches, heatmap, heatmap_box, logits, inputs = self._classify(pixels, boxes)
            if faithfulness:
                with timed(timings, "faithfulness"):
                    scores = self._faithfulness(inputs, heatmap, lung_mask, probabilities)
        else:
            warnings.append("No CT classifier is installed: the slice was segmented but not classified.")
        return CtSliceResult(
            study=study, model_pixels=pixels, lung_mask=lung_mask, infection_probability=infection_prob,
            infection_labels=labels, burden=burden, probabilities=probabilities, heatmap=heatmap,
            heatmap_box=heatmap_box, infected_boxes=boxes, branch_probabilities=branches, cards=dict(self.cards),
            backend=self.backend, timings_ms=timings, warnings=warnings, logits=logits, faithfulness=scores,
        )

    def lung_mask(self, pixels: np.ndarray) -> np.ndarray:
        """The lung model's mask at the slice's size (before the infection grows it)."""
        lung_small = lung_probability_small(pixels, self.lungs, self.cards["lungs"].input_size)
        return lung_mask_from_probability(probability_to_shape(lung_small, pixels.shape))

    def _infection_small(self, pixels: np.ndarray) -> np.ndarray:
        """Infection probability at the infection model's own size, averaged over the card's test-time views."""
        card = self.cards["infection"]
        return infection_probability_views(self.infection, lambda size: segmenter_input(pixels, size)[None],
                                           card.input_size, InfectionViews.of(card))[0]

    def _labels(self, pixels: np.ndarray, infection_small: np.ndarray, infected: np.ndarray) -> np.ndarray:
        """0 / 1 ground glass / 2 consolidation inside ``infected``; 1 everywhere infected without the multi-class model."""
        if self.multiclass is None:
            return label_infection(infected, None)
        size = self.cards["multiclass"].input_size
        x = multiclass_input(segmenter_input(pixels, size)[None], resize_square(infection_small, size)[None])
        probs = softmax(self.multiclass(x)[0])
        consolidation = probability_to_shape(probs[2], pixels.shape) > probability_to_shape(probs[1], pixels.shape)
        return label_infection(infected, consolidation)

    def _classify(self, pixels: np.ndarray, boxes: dict[str, Box | None]):
        """Paper 002's fusion classifier: (probabilities after the card's temperature, branch probabilities, H,
        crop box, the fusion's raw logit, the four branch inputs as arrays)."""
        import torch

        card = self.cards["classifier"]
        size, tau = card.input_size, float(card.input_config.get("tau", 0.75))
        crop = int(card.input_config.get("crop_size", size))
        global_input = torch.from_numpy(segmenter_input(pixels, size)[None]).to(self.device)
        with self.classifier.exclusive() as net, torch.no_grad():  # one pipeline serves every session's thread
            features = net.global_branch.features(global_input)[0].float().cpu().numpy()
            heatmap = heatmap_from_features(features, pixels.shape)
            heatmap_box = heatmap_crop_box(heatmap, tau)
            # the infected branch takes the patient's right side first, as training fed it
            local = [torch.from_numpy(branch_input(pixels, box, crop)[None]).to(self.device)
                     for box in (heatmap_box, boxes["right"], boxes["left"])]
            logits = net.branch_logits(global_input, *local)
        branches = {name: float(torch.sigmoid(value.float()).reshape(-1)[0]) for name, value in logits.items()}
        fusion = logits["fusion"].float().reshape(-1)[:1].cpu().numpy()
        non_covid, covid = scaled_probabilities(fusion, "sigmoid", temperature_of(card))  # one logit: P(COVID-19)
        inputs = [x[0].cpu().numpy() for x in (global_input, *local)]
        return {"non-covid": float(non_covid), "covid": float(covid)}, branches, heatmap, heatmap_box, fusion, inputs

    def _faithfulness(self, inputs: list[np.ndarray], heatmap: np.ndarray, lung_mask: np.ndarray,
                      probabilities: dict[str, float]) -> dict:
        """Deletion score of H on the global branch's input (the crops as served, so it measures what the global
        evidence adds to the fusion's call); in-lung share of H on the slice. All None when H is zero everywhere."""
        import torch

        temperature = temperature_of(self.cards["classifier"])

        def predict(arrays):
            tensors = [torch.from_numpy(np.asarray(x)[None]).to(self.device) for x in arrays]
            with self.classifier.exclusive() as net, torch.no_grad():
                fusion = net.branch_logits(*tensors)["fusion"].float().reshape(-1)[:1].cpu().numpy()
            return scaled_probabilities(fusion, "sigmoid", temperature)

        predicted = int(probabilities["covid"] >= probabilities["non-covid"])
        return case_scores(predict, inputs, resize_square(heatmap, inputs[0].shape[-1]), predicted, heatmap, lung_mask)


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(logits - logits.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)
