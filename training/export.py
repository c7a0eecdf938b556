"""Turn trained networks into registry entries the app serves: PyTorch weights + ONNX + a model card."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.classes import MANET_CLASSES
from core.registry import ModelCard, Registry, WeightFile, sha256_of

INTENDED_USE = (
    "Research use only. Not for clinical use. Supports reviewers who study model behaviour on frontal "
    "chest radiographs; it is not a diagnostic device and was not validated prospectively."
)


def export_model(model: torch.nn.Module, example_inputs: tuple, weights_dir: Path, card_fields: dict) -> ModelCard:
    """Write ``<name>.pt`` (state dict) and ``<name>.onnx`` and add the card to the manifest."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = card_fields["name"]
    model = model.cpu().eval()
    pt_path, onnx_path = weights_dir / f"{name}.pt", weights_dir / f"{name}.onnx"
    torch.save(model.state_dict(), pt_path)
    input_names = ["image", "mask"][: len(example_inputs)]
    torch.onnx.export(
        model, example_inputs, onnx_path, input_names=input_names, output_names=["output"],
        dynamic_axes={n: {0: "batch"} for n in input_names + ["output"]}, dynamo=False, opset_version=17,
    )
    files = {
        "pytorch": WeightFile(pt_path.name, sha256_of(pt_path)),
        "onnx": WeightFile(onnx_path.name, sha256_of(onnx_path)),
    }
    card = ModelCard(files=files, **card_fields)
    registry = Registry.open_or_empty(weights_dir)
    registry.write_card(card)
    return card


def _segmentation_limitations(report: dict) -> list[str]:
    return [
        "Trained only on lung masks of adult COVID-19 (Cohen/V7 Labs) and normal (OpenIST) radiographs; "
        "masks of paediatric, tuberculosis and pneumonia images are unverified.",
        "Dense consolidation at the lung edge can be excluded from the mask, which then hides it from the classifier.",
        "Lateral views, CT and non-chest images are refused before segmentation; rotated or cropped films are not.",
    ] + [
        f"Test Dice on {group}: {values['dice']:.3f} (n={values['n']})."
        for group, values in report["by_source"]["per_group"].items()
    ]


def _classification_limitations(report: dict, input_size: int) -> list[str]:
    weak = [
        f"{name}: recall {values['recall']:.2f}, precision {values['precision']:.2f}"
        for name, values in report["per_class"].items()
        if values["recall"] < 0.9 or values["precision"] < 0.9
    ]
    sources = [
        f"{source} ({', '.join(values['labels'])}): accuracy {values['accuracy']:.3f} on {values['n']} images"
        for source, values in report.get("per_source", {}).items()
    ]
    return [
        "Class and source are entangled in the training data (paediatric images only in normal/bacterial/viral, "
        "TB images mostly low resolution, COVID-19 images from publications): part of the accuracy can come "
        "from recognising the source rather than the disease. Read the per-source figures.",
        "Five classes only: other findings (effusion, masses, devices, fungal pneumonia...) are forced into one of them.",
        f"Trained at {input_size} px on downsized images: fine detail (small nodules, subtle interstitial change) is invisible to it.",
    ] + ([f"Weak classes on the test split: {'; '.join(weak)}."] if weak else []) + (
        [f"Per-source test accuracy: {'; '.join(sources)}."] if sources else []
    )


ATTENTION_SUFFIX = {"mask": "ma", "none": "plain", "cbam": "cbam"}


def export_run(run_dir: Path, weights_dir: Path) -> list[ModelCard]:
    """Export the models a finished run selected (the recipe is read from its ``config.json``)."""
    from training.__main__ import recipe_module

    config = json.loads((Path(run_dir) / "config.json").read_text())
    recipe = config.get("recipe", "manet")
    result = recipe_module(recipe).load_run(Path(run_dir))
    exporters = {"manet": export_manet}
    if recipe not in exporters:
        raise ValueError(f"runs of the {recipe} recipe cannot be exported yet")
    return exporters[recipe](result, Path(run_dir), Path(weights_dir))


def export_manet(result: dict, run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    profile, selected = result["profile"], result["selected"]
    arch, attention = selected["arch"], selected["attention"]
    command = f"python -m training manet --profile {json.loads((Path(run_dir) / 'config.json').read_text())['profile']} --data DATA --export {weights_dir}"
    data = "Shared public data pack (../shared/data/cxr, see its README): patient-wise train split."
    seg_size, cls_size = profile.seg_size, profile.cls_size
    seg_card = export_model(
        result["segmenter"], (torch.zeros(1, 1, seg_size, seg_size),), weights_dir,
        {
            "name": "lung-resunet", "version": version, "task": "lung-segmentation", "architecture": "resunet",
            "architecture_config": {"widths": list(profile.seg_widths)}, "classes": ["lung"], "input_size": seg_size,
            "preprocessing": f"greyscale, resized to {seg_size}x{seg_size}, min-max to [0, 1]; output sigmoid >= 0.5, "
                             "resized back, holes filled, objects < 0.5% of the image removed",
            "training_data": data + " Image/lung-mask pairs only: Cohen COVID-19 (V7 Labs masks) and OpenIST normals.",
            "training_command": command,
            "metrics": {"test": result["segmentation"]},
            "intended_use": INTENDED_USE, "limitations": _segmentation_limitations(result["segmentation"]),
        },
    )
    arch_config = {"attention": attention, "num_classes": len(MANET_CLASSES), "width": profile.cls_width}
    cls_card = export_model(
        result["classifier"], (torch.zeros(1, 1, cls_size, cls_size), torch.ones(1, 1, cls_size, cls_size)), weights_dir,
        {
            "name": f"manet-{arch}-{ATTENTION_SUFFIX[attention]}", "version": version, "task": "cxr-classification",
            "architecture": arch, "architecture_config": arch_config, "classes": list(MANET_CLASSES),
            "input_size": cls_size,
            "preprocessing": f"lung mask from lung-resunet; image resized to {cls_size}x{cls_size}, min-max to [-1, 1], "
                             "-1 outside the lungs" + ("; the mask feeds the mask attention" if attention == "mask" else ""),
            "training_data": data + " Labels normal/covid/tb/bacterial/viral (7,774 images in the pack; "
                                    "'pneumonia' of unspecified cause, fungal and other are left out).",
            "training_command": command,
            "metrics": {"test": result["classification"]},
            "intended_use": INTENDED_USE, "limitations": _classification_limitations(result["classification"], cls_size),
        },
    )
    return [seg_card, cls_card]
