"""The model registry: ``manifest.json`` lists every served weight file with its SHA-256 and model card.

A file is served only if the manifest lists it and its bytes hash to the listed SHA-256; anything else
raises ``UntrustedWeightsError``. PyTorch weights load with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .calibration import check_calibration
from .errors import ModelError, UntrustedWeightsError

MANIFEST = "manifest.json"
TASKS = (
    "lung-segmentation", "cxr-classification",  # chest X-ray
    "ct-lung-segmentation", "ct-infection-segmentation", "ct-classification",  # CT slices
    "image-kind",  # the gate: frontal chest radiograph / axial chest CT slice / other
    "ct-volume-classification",  # CT volumes: paper 004's 3D classifier (COVID-19 vs CAP)
)
# How a classifier's inputs are built from the image and its lung mask (``core.pipelines.cxr``):
#   image+mask  MANet: segmented image in [-1, 1] and the lung mask, two inputs
#   lung-only   UNet + HRNet: image in [0, 1], 0 outside the dilated + closed lung mask, one input
#   cxnet-roi   COVID-CXNet: lung bounding box + margin, original / CLAHE / BEASF as three channels
#   grey        one grey channel: ``core.preprocess.segmenter_input`` of the image (CT models take
#               ``core.imaging.ct_input.ct_model_pixels`` first), the image-kind gate
#   multisource paper 002's fusion classifier: global slice, heat-map crop, left/right infected sub-images
#   volume      paper 004's 3D classifier: the lung-masked CT volume resampled, windowed and padded
#               (``core.imaging.volume_input.classifier_input``; shape, factor and sampling in input_config)
INPUT_KINDS = ("image+mask", "lung-only", "cxnet-roi", "grey", "multisource", "volume")
# softmax: one logit per class; sigmoid: two classes, one logit for the second (BCE-trained binary models)
OUTPUTS = ("softmax", "sigmoid")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative to the registry folder
    sha256: str


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    architecture: str  # a ``models.create_model`` name
    architecture_config: dict
    classes: list
    input_size: int
    preprocessing: str
    files: dict  # format ("pytorch", "onnx", "histogram_reference") -> WeightFile
    training_data: str
    training_command: str
    metrics: dict = field(default_factory=dict)
    intended_use: str = "Research use only. Not for clinical use."
    limitations: list = field(default_factory=list)
    synthetic: bool = False  # trained on generated data (test fixtures), never a real model
    input_kind: str = "image+mask"  # one of INPUT_KINDS (classifiers)
    input_config: dict = field(default_factory=dict)  # parameters of the input kind
    output: str = "softmax"  # one of OUTPUTS (classifiers)
    segmenter: str | None = None  # the lung-segmentation card the classifier was trained on; None: the default
    # classifiers: temperature scaling fitted on val and its effect on test (``core.calibration``); None: uncalibrated
    calibration: dict | None = None
    # X-ray classifiers: Grad-CAM deletion score and in-lung share on test (``python -m training faithfulness``)
    faithfulness: dict | None = None

    @property
    def weights_sha256(self) -> str:
        return self.files["pytorch"].sha256

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        data = dict(data)
        data["files"] = {fmt: WeightFile(**entry) for fmt, entry in data["files"].items()}
        return cls(**data)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["calibration"] is None:  # manifests of uncalibrated models stay as they were
            del data["calibration"]
        if data["faithfulness"] is None:
            del data["faithfulness"]
        return data


class Registry:
    def __init__(self, folder: Path, cards: list[ModelCard]):
        self.folder = Path(folder)
        self._cards = {card.name: card for card in cards}

    @classmethod
    def open(cls, folder: Path) -> "Registry":
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise ModelError(f"No model manifest at {manifest}. Train and export models first (see README).")
        try:
            data = json.loads(manifest.read_text())
            cards = [ModelCard.from_dict(entry) for entry in data["models"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError(f"The model manifest {manifest} is malformed: {error}") from error
        registry = cls(folder, cards)
        for card in cards:
            registry._check(card)
        return registry

    def _check(self, card: ModelCard) -> None:
        if card.task not in TASKS:
            raise ModelError(f"Model {card.name!r} has unknown task {card.task!r}.")
        if card.input_kind not in INPUT_KINDS or card.output not in OUTPUTS:
            raise ModelError(f"Model {card.name!r} has unknown input kind {card.input_kind!r} or output {card.output!r}.")
        if card.output == "sigmoid" and len(card.classes) != 2:
            raise ModelError(f"Model {card.name!r}: a sigmoid output needs exactly two classes, not {len(card.classes)}.")
        problem = check_calibration(card.calibration)
        if problem:
            raise ModelError(f"Model {card.name!r}: {problem}.")
        if card.segmenter is not None and self.card(card.segmenter).task != "lung-segmentation":
            raise ModelError(f"Model {card.name!r} names {card.segmenter!r} as its segmenter, which is not a lung model.")

    def cards(self, task: str | None = None) -> list[ModelCard]:
        return [card for card in self._cards.values() if task is None or card.task == task]

    def card(self, name: str) -> ModelCard:
        try:
            return self._cards[name]
        except KeyError:
            raise ModelError(f"No model named {name!r} in the registry ({', '.join(self._cards) or 'empty'}).") from None

    def default(self, task: str) -> ModelCard:
        cards = self.cards(task)
        if not cards:
            raise ModelError(f"The registry has no {task} model.")
        return cards[0]

    def verified_path(self, card: ModelCard, fmt: str) -> Path:
        """Path of a weight file whose bytes match the manifest's SHA-256, or ``UntrustedWeightsError``."""
        entry = card.files.get(fmt)
        if entry is None:
            raise UntrustedWeightsError(f"Model {card.name!r} has no {fmt} file in the manifest.")
        path = (self.folder / entry.path).resolve()
        if self.folder.resolve() not in path.parents:
            raise UntrustedWeightsError(f"Weight path {entry.path!r} leaves the registry folder.")
        if not path.is_file():
            raise UntrustedWeightsError(f"Weight file {entry.path} of model {card.name!r} is missing.")
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise UntrustedWeightsError(
                f"Weight file {entry.path} does not match the SHA-256 in the manifest "
                f"(expected {entry.sha256[:12]}..., found {actual[:12]}...). Refusing to load it."
            )
        return path

    def load_torch(self, card: ModelCard, device="cpu"):
        """Build the network and load its verified state dict (``weights_only=True``)."""
        import torch

        from models import create_model

        path = self.verified_path(card, "pytorch")
        model = create_model(card.architecture, **card.architecture_config)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, ValueError, OSError) as error:
            raise ModelError(f"Weights of {card.name!r} do not fit its architecture: {error}") from error
        return model.to(device).eval()

    def load_array(self, card: ModelCard, fmt: str):
        """A verified ``.npy`` file of the card (e.g. a histogram-matching reference), without pickles."""
        import numpy as np

        try:
            return np.load(self.verified_path(card, fmt), allow_pickle=False)
        except ValueError as error:
            raise ModelError(f"The {fmt} file of {card.name!r} is not a plain array: {error}") from error

    def write_card(self, card: ModelCard) -> None:
        """Add or replace a card in the manifest (used by ``training.export``)."""
        self._cards[card.name] = card
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {"schema_version": 1, "models": [c.to_dict() for c in self._cards.values()]}
        (self.folder / MANIFEST).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def open_or_empty(cls, folder: Path) -> "Registry":
        return cls.open(folder) if (Path(folder) / MANIFEST).is_file() else cls(folder, [])
