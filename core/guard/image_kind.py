"""What kind of image is this? Frontal chest radiograph / axial chest CT slice / other, from the pixels.

PNG and JPEG files carry no modality, so the metadata guards (``cxr``, ``ct_slice``) cannot tell a CT
slice or a holiday photo from a chest radiograph. The image-kind gate is a small classifier from the
registry (task ``image-kind``, classes ``IMAGE_KINDS``, input kind ``grey``: the displayed pixels
through ``core.preprocess.segmenter_input``), trained by ``python -m training image-kind``.

``check_image_kind(study, expected, gate)`` applies it for a page or a command that expects one kind:

- another kind with probability >= ``REFUSE_AT``: refused (``UnsupportedInputError``) with a message
  naming what the image looks like and where to go;
- the expected kind below ``ACCEPT_AT`` otherwise: accepted with a warning (the gate is unsure);
- DICOM files whose Modality is CT, CR, DX or DR were already judged on their metadata by the
  modality guards, so for them the gate never refuses, it only warns.

Synthetic phantoms go through the gate like any upload.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError, UnsupportedInputError
from ..preprocess import segmenter_input
from ..registry import ModelCard, Registry
from ..runtime import OnnxModel
from ..study import Study

TASK = "image-kind"
CHEST_XRAY, CHEST_CT, OTHER = "chest-xray", "chest-ct", "other"
IMAGE_KINDS = (CHEST_XRAY, CHEST_CT, OTHER)  # the card's classes, in this order
REFUSE_AT = 0.80  # another kind at least this probable: refuse
ACCEPT_AT = 0.50  # the expected kind at least this probable (and no refusal): accept silently
METADATA_KINDS = {"CT": CHEST_CT, "CR": CHEST_XRAY, "DX": CHEST_XRAY, "DR": CHEST_XRAY}  # decided by the DICOM tags

KIND_NAMES = {CHEST_XRAY: "a chest radiograph", CHEST_CT: "an axial CT slice", OTHER: "another kind of image"}
PAGES = {CHEST_XRAY: "Chest X-ray", CHEST_CT: "CT slice"}
LOOKS_LIKE = {
    CHEST_CT: "This looks like an axial CT slice; use the CT slice page.",
    CHEST_XRAY: "This looks like a chest radiograph; use the Chest X-ray page.",
    OTHER: "This does not look like a chest radiograph or CT slice (photo, document...).",
}
WANTED = {
    CHEST_XRAY: "The Chest X-ray page analyses frontal chest radiographs only.",
    CHEST_CT: "The CT slice page analyses axial chest CT slices only.",
}


@dataclass(frozen=True)
class KindDecision:
    action: str  # "accept", "warn" or "refuse"
    kind: str  # the most probable kind
    message: str | None  # the refusal or the warning, for the user


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def decide(probabilities: dict[str, float], expected: str) -> KindDecision:
    """The gate's verdict for a page expecting ``expected`` (pure: the recipe's report uses it too)."""
    if expected not in PAGES:
        raise ValueError(f"expected must be one of {tuple(PAGES)}, not {expected!r}")
    kind = max(IMAGE_KINDS, key=lambda k: probabilities[k])
    if kind != expected and probabilities[kind] >= REFUSE_AT:
        return KindDecision("refuse", kind, f"{LOOKS_LIKE[kind]} {WANTED[expected]}")
    if probabilities[expected] < ACCEPT_AT:
        rival = max((k for k in IMAGE_KINDS if k != expected), key=lambda k: probabilities[k])
        return KindDecision("warn", kind, (
            f"The image-kind check is not sure that this is {KIND_NAMES[expected]} (it gives it "
            f"{_percent(probabilities[expected])}, and {_percent(probabilities[rival])} to {KIND_NAMES[rival]}). "
            "Check that the right image was uploaded before relying on the result."
        ))
    return KindDecision("accept", kind, None)


class ImageKindGate:
    """The registry's ``image-kind`` model on ONNX Runtime; ``classify(study) -> {kind: probability}``.

    ONNX Runtime sessions may be run from several threads at once, so one gate serves every session.
    """

    def __init__(self, registry: Registry, name: str | None = None):
        self.card: ModelCard = registry.card(name) if name else registry.default(TASK)
        if self.card.task != TASK:
            raise ModelError(f"Model {self.card.name!r} is a {self.card.task} model, not an image-kind gate.")
        if sorted(self.card.classes) != sorted(IMAGE_KINDS) or self.card.input_kind != "grey":
            raise ModelError(
                f"Model {self.card.name!r} cannot serve as the image-kind gate: it needs classes {list(IMAGE_KINDS)} "
                "and the 'grey' input kind."
            )
        self.model = OnnxModel(registry.verified_path(self.card, "onnx"))

    def classify(self, study: Study) -> dict[str, float]:
        """Probabilities of the three kinds for the displayed pixels (CT: the lung window already applied)."""
        x = segmenter_input(np.asarray(study.pixels, dtype=np.float32), self.card.input_size)[None]
        logits = np.asarray(self.model(x), dtype=np.float64)[0]
        exp = np.exp(logits - logits.max())
        probs = exp / exp.sum()
        return {kind: float(probs[self.card.classes.index(kind)]) for kind in IMAGE_KINDS}


def open_gate(registry: Registry) -> ImageKindGate | None:
    """The registry's default gate, or None when it has no ``image-kind`` model (then only the metadata and
    pixel rules apply). A gate that is listed but fails to load (hash mismatch, corrupt file) raises."""
    return ImageKindGate(registry) if registry.cards(TASK) else None


def decided_by_metadata(study: Study) -> bool:
    """A DICOM whose Modality names a radiograph or CT: the modality guards have judged it already."""
    return study.file_format == "dicom" and (study.modality or "").strip().upper() in METADATA_KINDS


def check_image_kind(study: Study, expected: str, gate: ImageKindGate) -> Study:
    """Return ``study`` (a copy, with a warning when the gate is unsure) or raise ``UnsupportedInputError``."""
    verdict = decide(gate.classify(study), expected)
    if verdict.action == "accept":
        return dataclasses.replace(study, warnings=list(study.warnings))
    if verdict.action == "refuse" and not decided_by_metadata(study):
        raise UnsupportedInputError(verdict.message)
    message = verdict.message
    if verdict.action == "refuse":  # the DICOM tags say otherwise: they win, but the user should know
        message = (f"The image-kind check says: {LOOKS_LIKE[verdict.kind]} The file's DICOM Modality says otherwise, "
                   "so it is analysed; check that the right image was uploaded.")
    return dataclasses.replace(study, warnings=[*study.warnings, message])
