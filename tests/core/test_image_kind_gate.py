"""The image-kind gate: loading through the registry, and the refusal / warning rules (outputs monkeypatched)."""

import dataclasses

import numpy as np
import pytest
import torch

from core.errors import ModelError, UnsupportedInputError
from core.guard.image_kind import (
    ACCEPT_AT, IMAGE_KINDS, REFUSE_AT, ImageKindGate, check_image_kind, decide, decided_by_metadata,
)
from core.phantoms import make_phantom
from core.preprocess import segmenter_input
from core.registry import Registry
from core.study import Study


@pytest.fixture(scope="module")
def gate_registry(tmp_path_factory):
    """A registry holding one tiny random image-kind gate, exported the real way."""
    from models import create_model
    from training.export import export_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gate-registry")
    config = {"in_chans": 1, "input_size": 64, "num_outputs": 3}
    export_model(create_model("cxnet_base", **config), (torch.zeros(1, 1, 64, 64),), folder, {
        "name": "tiny-gate", "version": "0.0.1", "task": "image-kind", "architecture": "cxnet_base",
        "architecture_config": config, "classes": list(IMAGE_KINDS), "input_size": 64, "input_kind": "grey",
        "preprocessing": "as bundled", "training_data": "none (random weights)", "training_command": "tests",
        "synthetic": True,
    })
    return Registry.open(folder)


def fixed_gate(monkeypatch, gate, xray, ct, other):
    monkeypatch.setattr(gate, "classify", lambda study: {"chest-xray": xray, "chest-ct": ct, "other": other})
    return gate


def png(pixels=None) -> Study:
    return Study(pixels=np.random.default_rng(0).random((80, 80)).astype(np.float32) if pixels is None else pixels,
                 file_format="png")


def test_gate_loads_from_the_registry_and_returns_three_probabilities(gate_registry):
    gate = ImageKindGate(gate_registry)
    assert gate.card.name == "tiny-gate"
    probs = gate.classify(make_phantom("normal", seed=0, size=64).to_study())
    assert list(probs) == list(IMAGE_KINDS)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5) and all(0 <= p <= 1 for p in probs.values())


def test_gate_serves_what_the_network_computes(gate_registry):
    """ONNX Runtime on segmenter_input(pixels) == the PyTorch network on the same input (train = serve)."""
    gate = ImageKindGate(gate_registry)
    study = png()
    network = gate_registry.load_torch(gate.card)
    with torch.no_grad():
        logits = network(torch.from_numpy(segmenter_input(study.pixels, 64)[None]))
    expected = torch.softmax(logits, 1)[0].numpy()
    assert np.allclose([gate.classify(study)[k] for k in IMAGE_KINDS], expected, atol=1e-5)


def test_gate_refuses_cards_that_are_not_gates(tiny_registry_dir, gate_registry):
    with pytest.raises(ModelError):
        ImageKindGate(Registry.open(tiny_registry_dir))  # no image-kind model there
    with pytest.raises(ModelError, match="not an image-kind gate"):
        ImageKindGate(Registry.open(tiny_registry_dir), "tiny-seg")


def test_confident_ct_on_the_xray_page_is_refused_with_the_ct_message(monkeypatch, gate_registry):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.05, 0.9, 0.05)
    with pytest.raises(UnsupportedInputError, match="This looks like an axial CT slice; use the CT slice page."):
        check_image_kind(png(), "chest-xray", gate)
    assert check_image_kind(png(), "chest-ct", gate).warnings == []  # the right page accepts it silently


def test_confident_radiograph_on_the_ct_page_is_refused(monkeypatch, gate_registry):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.95, 0.03, 0.02)
    with pytest.raises(UnsupportedInputError, match="looks like a chest radiograph; use the Chest X-ray page"):
        check_image_kind(png(), "chest-ct", gate)


@pytest.mark.parametrize("expected", ["chest-xray", "chest-ct"])
def test_photos_are_refused_on_both_pages(monkeypatch, gate_registry, expected):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.1, 0.05, 0.85)
    with pytest.raises(UnsupportedInputError,
                       match=r"This does not look like a chest radiograph or CT slice \(photo, document\.\.\.\)"):
        check_image_kind(png(), expected, gate)


def test_an_unsure_gate_adds_a_warning_and_keeps_earlier_ones(monkeypatch, gate_registry):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.40, 0.35, 0.25)
    study = dataclasses.replace(png(), warnings=["earlier"])
    checked = check_image_kind(study, "chest-xray", gate)
    assert checked.warnings[0] == "earlier" and len(checked.warnings) == 2
    assert "not sure that this is a chest radiograph" in checked.warnings[1] and "40%" in checked.warnings[1]
    assert study.warnings == ["earlier"]  # the input study is not modified
    # Another kind most probable but below the refusal level: a warning, not a refusal.
    gate = fixed_gate(monkeypatch, gate, 0.25, 0.70, 0.05)
    assert "70% to an axial CT slice" in check_image_kind(png(), "chest-xray", gate).warnings[-1]


def test_dicom_decided_by_its_modality_is_only_warned(monkeypatch, gate_registry):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.02, 0.03, 0.95)
    for modality in ("CT", "CR", "DX", "dx "):
        study = dataclasses.replace(png(), file_format="dicom", modality=modality)
        assert decided_by_metadata(study)
        checked = check_image_kind(study, "chest-ct" if modality == "CT" else "chest-xray", gate)
        assert "DICOM Modality says otherwise" in checked.warnings[-1]
    # A DICOM without a modality (or 'OT') has no such say: refused like any upload.
    with pytest.raises(UnsupportedInputError):
        check_image_kind(dataclasses.replace(png(), file_format="dicom", modality="OT"), "chest-xray", gate)


def test_synthetic_studies_go_through_the_gate(monkeypatch, gate_registry):
    gate = fixed_gate(monkeypatch, ImageKindGate(gate_registry), 0.0, 0.0, 1.0)
    with pytest.raises(UnsupportedInputError):
        check_image_kind(make_phantom("covid", seed=1, size=64).to_study(), "chest-xray", gate)


def test_decision_thresholds():
    assert REFUSE_AT > ACCEPT_AT
    assert decide({"chest-xray": 0.5, "chest-ct": 0.5, "other": 0.0}, "chest-xray").action == "accept"
    assert decide({"chest-xray": 0.19, "chest-ct": 0.80, "other": 0.01}, "chest-xray").action == "refuse"
    assert decide({"chest-xray": 0.21, "chest-ct": 0.79, "other": 0.0}, "chest-xray").action == "warn"
    with pytest.raises(ValueError):
        decide({"chest-xray": 1, "chest-ct": 0, "other": 0}, "other")


def test_open_gate_is_none_without_an_image_kind_model(tiny_registry_dir, gate_registry):
    from core.guard.image_kind import open_gate

    assert open_gate(Registry.open(tiny_registry_dir)) is None
    assert open_gate(gate_registry).card.name == "tiny-gate"
