import json
import shutil

import numpy as np
import pytest
import torch

from core.errors import ModelError, UntrustedWeightsError
from core.registry import Registry, sha256_of


def test_manifest_lists_every_file_with_its_hash(tiny_registry_dir):
    registry = Registry.open(tiny_registry_dir)
    assert {c.name for c in registry.cards()} == {"tiny-seg", "tiny-cls", "tiny-cls-lung-crop", "tiny-lung-only", "tiny-cxnet-three"}
    for card in registry.cards():
        for entry in card.files.values():
            assert sha256_of(tiny_registry_dir / entry.path) == entry.sha256
            assert registry.verified_path(card, "pytorch").is_file()


def test_altered_weights_are_refused(tiny_registry_dir, tmp_path):
    folder = tmp_path / "reg"
    shutil.copytree(tiny_registry_dir, folder)
    registry = Registry.open(folder)
    card = registry.card("tiny-cls")
    path = folder / card.files["pytorch"].path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UntrustedWeightsError, match="does not match the SHA-256"):
        registry.load_torch(card)
    assert registry.verified_path(card, "onnx").is_file()  # the untouched file is still served


def test_unknown_or_missing_files_are_refused(tiny_registry_dir, tmp_path):
    folder = tmp_path / "reg"
    shutil.copytree(tiny_registry_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"][0]["files"]["pytorch"]["path"] = "../outside.pt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    registry = Registry.open(folder)
    with pytest.raises(UntrustedWeightsError, match="leaves the registry"):
        registry.verified_path(registry.cards()[0], "pytorch")
    (folder / registry.card("tiny-cls").files["onnx"].path).unlink()
    with pytest.raises(UntrustedWeightsError, match="missing"):
        registry.verified_path(registry.card("tiny-cls"), "onnx")
    with pytest.raises(ModelError, match="No model named"):
        registry.card("nope")


def test_pickled_code_is_never_executed(tmp_path, tiny_registry_dir):
    """A weight file holding a pickled object (not tensors) is refused by weights_only loading."""
    folder = tmp_path / "reg"
    shutil.copytree(tiny_registry_dir, folder)
    registry = Registry.open(folder)
    card = registry.card("tiny-seg")
    path = folder / card.files["pytorch"].path
    torch.save({"payload": Exception("not a tensor")}, path)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["name"] == "tiny-seg":
            entry["files"]["pytorch"]["sha256"] = sha256_of(path)  # even with a matching hash
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError):
        Registry.open(folder).load_torch(card)


def test_missing_or_malformed_manifest(tmp_path):
    with pytest.raises(ModelError, match="No model manifest"):
        Registry.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="malformed"):
        Registry.open(tmp_path)


def _edited(tiny_registry_dir, tmp_path, name, **fields):
    folder = tmp_path / "reg"
    shutil.copytree(tiny_registry_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["name"] == name:
            entry.update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("fields, message", [
    ({"input_kind": "rgb"}, "unknown input kind"),
    ({"output": "sigmoid"}, "needs exactly two classes"),  # tiny-cxnet-three has three
    ({"segmenter": "tiny-cls"}, "not a lung model"),
    ({"segmenter": "missing-seg"}, "No model named"),
])
def test_inconsistent_cards_are_refused(tiny_registry_dir, tmp_path, fields, message):
    with pytest.raises(ModelError, match=message):
        Registry.open(_edited(tiny_registry_dir, tmp_path, "tiny-cxnet-three", **fields))


def test_histogram_reference_is_verified_before_use(tiny_registry_dir, tmp_path):
    folder = tmp_path / "reg"
    shutil.copytree(tiny_registry_dir, folder)
    registry = Registry.open(folder)
    card = registry.card("tiny-cxnet-three")
    assert registry.load_array(card, "histogram_reference").shape == (48, 48)
    np.save(folder / card.files["histogram_reference"].path, np.zeros((48, 48), np.float32))
    with pytest.raises(UntrustedWeightsError, match="does not match the SHA-256"):
        registry.load_array(card, "histogram_reference")
