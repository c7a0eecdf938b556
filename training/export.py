"""Turn trained networks into registry entries the app serves: PyTorch weights + ONNX + a model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.classes import MANET_CLASSES
from core.registry import ModelCard, Registry, WeightFile, sha256_of
from models import create_model
from training.recipes import load_profile

INTENDED_USE = (
    "Research use only. Not for clinical use. Supports reviewers who study model behaviour on frontal "
    "chest radiographs; it is not a diagnostic device and was not validated prospectively."
)


def export_model(model: torch.nn.Module, example_inputs: tuple, weights_dir: Path, card_fields: dict,
                 extra_files: dict | None = None, any_size: bool = False) -> ModelCard:
    """Write ``<name>.pt`` (state dict) and ``<name>.onnx`` and add the card to the manifest.

    ``extra_files`` (format -> a file already in ``weights_dir``) are listed and hashed with the weights.
    ``any_size``: the ONNX graph takes any height and width (a fully convolutional network served at several sizes).
    """
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = card_fields["name"]
    model = model.cpu().eval()
    pt_path, onnx_path = weights_dir / f"{name}.pt", weights_dir / f"{name}.onnx"
    torch.save(model.state_dict(), pt_path)
    input_names = ["image", "mask"][: len(example_inputs)]
    torch.onnx.export(
        model, example_inputs, onnx_path, input_names=input_names, output_names=["output"],
        dynamic_axes={n: {0: "batch"} | ({2: "height", 3: "width"} if any_size else {}) for n in input_names + ["output"]},
        dynamo=False, opset_version=17,
    )
    files = {
        "pytorch": WeightFile(pt_path.name, sha256_of(pt_path)),
        "onnx": WeightFile(onnx_path.name, sha256_of(onnx_path)),
    } | {fmt: WeightFile(Path(path).name, sha256_of(path)) for fmt, path in (extra_files or {}).items()}
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


def _classification_limitations(report: dict, input_size: int, classes_note: str) -> list[str]:
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
        f"{classes_note}: other findings (effusion, masses, devices, fungal pneumonia...) are forced into one of the classes.",
        f"Trained at {input_size} px on downsized images: fine detail (small nodules, subtle interstitial change) is invisible to it.",
    ] + ([f"Weak classes on the test split: {'; '.join(weak)}."] if weak else []) + (
        [f"Per-source test accuracy: {'; '.join(sources)}."] if sources else []
    )


ATTENTION_SUFFIX = {"mask": "ma", "none": "plain", "cbam": "cbam"}
PACK = "Shared public data pack (../shared/data/cxr, see its README): patient-wise train split."


def export_run(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """Export the models a finished run selected (the recipe is read from its ``config.json``) as ``version``.

    A retrained model gets a new version: reviews record it, so the analytics keep old and new apart."""
    run_dir, weights_dir = Path(run_dir), Path(weights_dir)
    recipe = json.loads((run_dir / "config.json").read_text()).get("recipe", "manet")
    exporters = {"manet": export_manet, "hrnet-unet": export_hrnet_unet, "covid-cxnet": export_covid_cxnet,
                 "ct-lungs": export_ct_lungs, "infnet": export_infnet, "image-kind": export_image_kind, "multisource-ct": export_multisource_ct,
                 "dual-sampling": export_dual_sampling}
    return exporters[recipe](run_dir, weights_dir, version=version)


def _command(recipe: str, profile_name: str, weights_dir: Path) -> str:
    return f"python -m training {recipe} --profile {profile_name} --data DATA --export {weights_dir}"


def _export_segmenter(model, name: str, arch: str, profile, metrics: dict, postprocess: str, command: str,
                      weights_dir: Path, version: str) -> ModelCard:
    size = profile.seg_size
    return export_model(model, (torch.zeros(1, 1, size, size),), weights_dir, {
        "name": name, "version": version, "task": "lung-segmentation", "architecture": arch,
        "architecture_config": {"widths": list(profile.seg_widths)}, "classes": ["lung"], "input_size": size,
        "preprocessing": f"greyscale, resized to {size}x{size}, min-max to [0, 1]; output sigmoid >= 0.5, resized back, "
                         + postprocess,
        "training_data": PACK + " Image/lung-mask pairs only: Cohen COVID-19 (V7 Labs masks) and OpenIST normals.",
        "training_command": command, "metrics": {"test": metrics},
        "intended_use": INTENDED_USE, "limitations": _segmentation_limitations(metrics),
    })


def export_manet(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    from training.recipes import manet

    result = manet.load_run(run_dir)
    profile, selected = result["profile"], result["selected"]
    arch, attention = selected["arch"], selected["attention"]
    command = _command("manet", load_profile(run_dir, manet.Profile)[0], weights_dir)
    cls_size = profile.cls_size
    seg_card = _export_segmenter(result["segmenter"], "lung-resunet", "resunet", profile, result["segmentation"],
                                 "holes filled, objects < 0.5% of the image removed", command, weights_dir, version)
    arch_config = {"attention": attention, "num_classes": len(MANET_CLASSES), "width": profile.cls_width}
    cls_card = export_model(
        result["classifier"], (torch.zeros(1, 1, cls_size, cls_size), torch.ones(1, 1, cls_size, cls_size)), weights_dir,
        {
            "name": f"manet-{arch}-{ATTENTION_SUFFIX[attention]}", "version": version, "task": "cxr-classification",
            "architecture": arch, "architecture_config": arch_config, "classes": list(MANET_CLASSES),
            "input_size": cls_size, "segmenter": seg_card.name, "input_config": manet.input_config(profile),
            "preprocessing": _manet_preprocessing(profile, seg_card.name, attention),
            "training_data": PACK + " Labels normal/covid/tb/bacterial/viral (7,774 images in the pack; "
                                    "'pneumonia' of unspecified cause, fungal and other are left out).",
            "training_command": command,
            "metrics": {"test": result["classification"]},
            "intended_use": INTENDED_USE, "limitations": _classification_limitations(result["classification"], cls_size, "Five classes only"),
        },
    )
    return [seg_card, cls_card]


def _manet_preprocessing(profile, segmenter: str, attention: str) -> str:
    crop = (f"cropped to the lungs' bounding box + {profile.lung_crop:.0%} of the image side, "
            if profile.lung_crop is not None else "")
    scaling = "lung histogram equalised" if profile.equalise else "min-max"
    return (f"lung mask from {segmenter}; image {crop}resized to {profile.cls_size}x{profile.cls_size}, {scaling} to [-1, 1], "
            "-1 outside the lungs" + ("; the mask feeds the mask attention" if attention == "mask" else ""))


def export_hrnet_unet(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """The UNet fold best on val, and the fold model of the architecture best on val (mean over folds)."""
    from training.recipes import hrnet_unet
    from training.tasks import BINARY_COVID

    profile_name, profile = load_profile(run_dir, hrnet_unet.Profile)
    command = _command("hrnet-unet", profile_name, weights_dir)
    seg = json.loads((run_dir / "segmenter_test.json").read_text())
    segmenter = _load_state(create_model("unet", widths=profile.seg_widths), run_dir / "segmenter" / f"fold{seg['selected_fold']}")
    seg_card = _export_segmenter(segmenter, "hrnet-unet-lungs", "unet", profile, seg["test_filled"],
                                 "holes filled, objects < 0.5% of the image removed (the classifier's input is "
                                 "then dilated 8 and closed 2)", command, weights_dir, version)
    folds = json.loads((run_dir / "summary.json").read_text())["classifiers"]
    arch = max(folds, key=lambda a: np.mean([f["val_accuracy"] for f in folds[a]]))
    fold = int(np.argmax([f["val_accuracy"] for f in folds[arch]]))
    classifier = _load_state(hrnet_unet.build_classifier(profile, arch), run_dir / "classifiers" / arch / f"fold{fold + 1}")
    size, test = profile.cls_size, folds[arch][fold]["test"]
    arch_config = {"num_classes": 1, "in_chans": 1} | ({"variant": profile.hrnet_variant} if arch == "hrnet" else {})
    cls_card = export_model(classifier, (torch.zeros(1, 1, size, size),), weights_dir, {
        "name": f"hrnet-unet-{arch.removeprefix('timm_')}", "version": version, "task": "cxr-classification",
        "architecture": arch, "architecture_config": arch_config, "classes": list(BINARY_COVID.classes),
        "input_size": size, "segmenter": seg_card.name, "input_kind": "lung-only",
        "input_config": {"dilation": 8, "closing": 2}, "output": "sigmoid",
        "preprocessing": f"lung mask from {seg_card.name} dilated (8) and closed (2); image min-max to [0, 1], "
                         f"0 outside the mask, resized to {size}x{size}; one sigmoid output = P(covid)",
        "training_data": PACK + f" COVID-19 vs every other label (at most {profile.max_per_class} images per class); "
                                "images whose lung mask is under 50,000 px at 512 x 512 were left out.",
        "training_command": command,
        "metrics": {"test": test, "cross_validation_fold": fold + 1, "validation_accuracy": folds[arch][fold]["val_accuracy"]},
        "intended_use": INTENDED_USE,
        "limitations": _classification_limitations(test, size, "COVID-19 vs everything else (normal, TB, pneumonias)"),
    })
    return [seg_card, cls_card]


def export_covid_cxnet(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """The lung UNet and the binary and flat three-class COVID-CXNet models (the hierarchy is two models: not served)."""
    from training.recipes import covid_cxnet
    from training.tasks import CXNET_BINARY, CXNET_THREE

    profile_name, profile = load_profile(run_dir, covid_cxnet.Profile)
    command = _command("covid-cxnet", profile_name, weights_dir)
    segmenter = _load_state(create_model("unet", widths=profile.seg_widths), run_dir / "segmenter")
    seg_card = _export_segmenter(segmenter, "covid-cxnet-lungs", "unet", profile,
                                 json.loads((run_dir / "segmenter_test.json").read_text()),
                                 "holes filled, objects < 0.5% of the image removed", command, weights_dir, version)
    cards = [seg_card]
    for experiment, task in (("cxnet-binary", CXNET_BINARY), ("cxnet-three", CXNET_THREE)):
        if not (run_dir / experiment / "best.pt").is_file():
            continue
        binary = len(task.classes) == 2
        model = _load_state(covid_cxnet.build_model(profile, "covid_cxnet", len(task.classes)), run_dir / experiment)
        name, size = f"covid-{experiment}", profile.size
        extra = {} if binary else {"histogram_reference": _copy_reference(run_dir, weights_dir / f"{name}-reference.npy")}
        test = json.loads((run_dir / experiment / "test.json").read_text())["report"]
        cards.append(export_model(model, (torch.zeros(1, 3, size, size),), weights_dir, {
            "name": name, "version": version, "task": "cxr-classification", "architecture": "covid_cxnet",
            "architecture_config": {"in_chans": 3, "num_outputs": 1 if binary else len(task.classes),
                                    "growth_rate": profile.growth_rate, "num_init_features": profile.num_init_features},
            "classes": list(task.classes), "input_size": size, "segmenter": seg_card.name, "input_kind": "cxnet-roi",
            "input_config": {"roi_dilation": profile.roi_dilation, "lung_roi": profile.lung_roi},
            "output": "sigmoid" if binary else "softmax",
            "preprocessing": f"lung mask from {seg_card.name} at {profile.seg_size} px dilated ({profile.roi_dilation}); "
                             "bounding box + 5% margin cropped, resized to "
                             f"{size}x{size}{'' if binary else ', histogram-matched to the reference normal'}; "
                             "channels original / CLAHE / BEASF (gamma 1.5)",
            "training_data": PACK + (" COVID-19 and normal images" if binary else
                                     " normal, pneumonia (bacterial, viral, unspecified) and COVID-19 images")
                             + f" (at most {profile.max_per_class or 'all'} per class), 80/20 patient-wise train/val.",
            "training_command": command, "metrics": {"test": test},
            "intended_use": INTENDED_USE,
            "limitations": _classification_limitations(
                test, size, "COVID-19 vs normal only" if binary else "Three classes only (normal / pneumonia / COVID-19)"),
        }, extra))
    return cards


CT_INTENDED_USE = (
    "Research use only. Not for clinical use. Supports reviewers who study model behaviour on axial chest CT "
    "slices; it is not a diagnostic device and was not validated prospectively."
)
CT_INPUT = ("one axial slice: HU through the lung window W1500/L-600 (the multi-source paper's [-1350, 150]) "
            "quantised to 8 bits, or an 8-bit export as it is (core.imaging.ct_input.ct_model_pixels); ")


def export_ct_lungs(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """The CT lung ResUNet (best epoch on val) with its test Dice per subset."""
    from training.recipes import ct_lungs

    profile_name, profile = load_profile(run_dir, ct_lungs.Profile)
    result = json.loads((run_dir / "segmenter_test.json").read_text())
    size, test = profile.seg_size, result["test"]
    hu = result.get("hu_volume")
    card = export_model(ct_lungs.load_segmenter(run_dir, profile), (torch.zeros(1, 1, size, size),), weights_dir, {
        "name": "ct-lungs-resunet", "version": version, "task": "ct-lung-segmentation", "architecture": "resunet",
        "architecture_config": {"widths": list(profile.seg_widths)}, "classes": ["lung"], "input_size": size,
        "input_kind": "grey",
        "preprocessing": CT_INPUT + f"resized to {size}x{size}, min-max to [0, 1]; output sigmoid >= 0.5, resized back, "
                         "holes filled, objects < 0.5% of the slice removed",
        "training_data": "Shared public data pack (../shared/data/ct_infection): the 457 `train` slices of ma2020 "
                         "(Ma et al., COVID-19 CT Lung and Infection Segmentation, CC BY 4.0) with their lung masks.",
        "training_command": _command("ct-lungs", profile_name, weights_dir), "metrics": {"test": test, "hu_volume": hu},
        "intended_use": CT_INTENDED_USE,
        "limitations": [
            "Trained on 20 COVID-19 CT volumes of one collection (ma2020), CLAHE-enhanced slices: other scanners, "
            "windows and non-COVID lungs are outside its training data.",
            "Slice by slice: it knows nothing of the neighbouring slices.",
            f"Test Dice {test['dice']:.3f} on {test['n']} ma2020 slices of held-out volumes.",
        ] + ([f"On the pack's real HU volume it found lungs on {hu['slices_with_lungs']} of {hu['slices']} sampled slices."]
             if hu else []),
    })
    return [card]


def export_image_kind(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """The image-kind gate (chest radiograph / axial chest CT slice / other) that every page and ``core predict`` use."""
    from training.recipes import image_kind

    profile_name, profile = load_profile(run_dir, image_kind.Profile)
    result = json.loads((run_dir / "test.json").read_text())
    test, phantoms = result["report"], result["phantoms"]
    size = profile.size
    per_source = [f"{source}: {values['accuracy']:.3f} (n={values['n']})" for source, values in test["per_source"].items()
                  if values["accuracy"] < 0.95]
    card = export_model(image_kind.load_gate(run_dir, profile), (torch.zeros(1, 1, size, size),), weights_dir, {
        "name": "image-kind-gate", "version": version, "task": "image-kind", "architecture": profile.arch,
        "architecture_config": image_kind.architecture_config(profile), "classes": list(image_kind.KINDS),
        "input_size": size, "input_kind": "grey", "output": "softmax",
        "preprocessing": f"displayed grey pixels (CT: the lung window) resized to {size}x{size}, min-max to [0, 1] "
                         "(core.preprocess.segmenter_input); softmax over chest-xray / chest-ct / other",
        "training_data": "Shared public data pack (../shared/data): cxr (chest radiographs, every source), ct_slices and "
                         "ct_infection (CT slices) with their train splits; non-medical and non-chest images shipped "
                         "with scikit-image, scikit-learn and Matplotlib (augmented; whole images held out for test); "
                         "synthetic X-ray and CT phantoms (seeds apart from the test seeds).",
        "training_command": _command("image-kind", profile_name, weights_dir),
        "metrics": {"test": test, "phantoms": phantoms, "training_images_per_second": result["speed"]["images_per_second"]},
        "intended_use": "Research use only. Not for clinical use. Checks that an upload looks like the kind of image a "
                        "page analyses (frontal chest radiograph or axial chest CT slice) before any model sees it; it "
                        "does not judge image quality, view or body part beyond that.",
        "limitations": [
            "Trained on a few dozen non-medical sample images (augmented): unusual uploads (screenshots with text "
            "around an image, photos of a screen or film, other body parts' radiographs) may be called a chest image.",
            "Non-chest radiographs and CT slices of other body regions were not in training: the gate cannot be "
            "relied on to refuse them (the DICOM guards check the body part where the tags exist).",
            f"Held-out test accuracy {test['accuracy']:.3f} on {test['n']} images; phantoms {phantoms['accuracy']:.3f} "
            f"on {phantoms['n']}.",
        ] + ([f"Weaker sources on the test split: {'; '.join(per_source)}."] if per_source else []),
    })
    return [card]


def export_multisource_ct(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """Paper 002's fusion classifier (backbone x seed best on val) as one card; the .pt holds all four branches.

    Weights are stored in fp16 when the run measured that rounding them moves the test AUC by at most the
    profile's ``half_tolerance``; no ONNX file (the CT pipeline runs it in PyTorch: Eq. 1 needs its feature maps).
    """
    from training.recipes import multisource_ct

    run = multisource_ct.load_run(run_dir)
    profile, summary = run["profile"], run["summary"]
    selected, half = summary["selected"], summary["half_precision"]
    if profile.infection_model is None:
        raise ValueError(f"{run_dir} was trained without an infection model (blank infected sub-images): "
                         "it cannot be served; train with --set infection_model=CARD")
    backbone, size, crop = selected["backbone"], profile.size, profile.crop_size
    name = f"ct-multisource-{backbone}"
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    state = run["model"].state_dict()
    pt_path = weights_dir / f"{name}.pt"
    torch.save(multisource_ct.half_state(state) if half["store_half"] else state, pt_path)
    test = selected["test"]
    per_source = [f"{source}: accuracy {v['accuracy']:.3f}, AUC {v['auc']:.3f} (n={v['n']})"
                  for source, v in test.get("per_source", {}).items()]
    card = ModelCard(
        name=name, version=version, task="ct-classification", architecture="multisource_fusion",
        architecture_config=multisource_ct.architecture_config(profile, backbone), classes=list(multisource_ct.CLASSES),
        input_size=size, input_kind="multisource", output="sigmoid",
        input_config={"tau": profile.tau, "crop_size": crop, "infection_model": profile.infection_model,
                      "lung_model": profile.lung_model, "infection_threshold": multisource_ct.INFECTION_THRESHOLD},
        preprocessing=CT_INPUT + f"global input resized to {size}x{size}, min-max to [0, 1]; heat map H of the global "
                      f"branch's last features (Eq. 1) at the slice's size, H > {profile.tau} (Eq. 2), largest region "
                      f"cropped; infection from {profile.infection_model} (p >= {multisource_ct.INFECTION_THRESHOLD}) inside "
                      f"the lungs of {profile.lung_model}, boxes split at the lungs' midline into the patient's right and "
                      f"left; each crop resized to {crop}x{crop}, min-max to [0, 1], blank without a box; one sigmoid "
                      "output (fusion branch) = P(covid)",
        files={"pytorch": WeightFile(pt_path.name, sha256_of(pt_path))},
        training_data="Shared public data pack (../shared/data/ct_slices): UCSD COVID-CT (patient-wise 70/15/15 "
                      "split of official-train-val) and the SARS-CoV-2 CT-scan dataset (its own split, no patient ids)"
                      + (f", at most {profile.max_train_per_group} training slices per source and label" if profile.max_train_per_group else "")
                      + ".",
        training_command=_command("multisource-ct", run["profile_name"], weights_dir),
        metrics={"test": test, "validation": selected["val"], "branch_test_auc": selected["branches_test"],
                 "backbone": backbone, "seed": selected["seed"], "half_precision": half},
        intended_use=CT_INTENDED_USE,
        limitations=[
            "Random initialisation (no ImageNet weights), "
            + (f"backbone at width {profile.width}, " if profile.width != 1 else "")
            + f"{size} px: below the paper's setting.",
            "COVID-19 vs non-COVID slices of two public collections only; other pneumonias, other scanners and "
            "reconstruction kernels are outside its training data. SARS-CoV-2 CT has no patient ids, so its test "
            "figures are optimistic.",
            "Slice by slice: it knows nothing of the neighbouring slices or of the patient.",
            f"Its infected branch was trained on the regions of {_region_models(weights_dir, summary['region_models'])}; "
            "serve it with the same models.",
        ] + ([f"Per-source test figures: {'; '.join(per_source)}."] if per_source else []),
    )
    Registry.open_or_empty(weights_dir).write_card(card)
    return [card]


def _region_models(weights_dir: Path, models: dict) -> str:
    """'ct-infection-infnet 5.0.0 (its test-time views) and ct-lungs-resunet 1.0.0': a version where the registry's
    card still holds the weights the regions were built with."""
    registry = Registry.open_or_empty(weights_dir)
    cards = {card.name: card for card in registry.cards()}

    def named(role: str) -> str:
        name, sha = models.get(f"{role}_model"), models.get(f"{role}_sha256")
        if name is None:
            return f"no {role} model"
        card = cards.get(name)
        return f"{name} {card.version}" if card is not None and card.weights_sha256 == sha else name

    views = models.get("infection_views") or {}
    mirrored = ", each mirrored" if views.get("flip") else ""
    seen = f" (views {' / '.join(map(str, views['sizes']))} px{mirrored})" if len(views.get("sizes", ())) > 1 or mirrored else ""
    return f"{named('infection')}{seen} and {named('lung')}"


def export_infnet(run_dir: Path, weights_dir: Path, version: str = "1.0.0") -> list[ModelCard]:
    """The binary infection model chosen on val (Inf-Net or Semi-Inf-Net) and the GGO/consolidation model."""
    from training.recipes import infnet

    run = infnet.load_run(run_dir)
    profile, results, chosen = run["profile"], run["results"], run["chosen"]
    size, command = profile.size, _command("infnet", run["profile_name"], weights_dir)

    def table(measured: dict) -> dict:
        return {"all test": {k: v for k, v in measured.items() if k != "per_group"}, **measured["per_group"]}

    data = ("Shared public data pack (../shared/data/ct_infection): MedSeg COVID-SemiSeg labelled slices (35 train) and "
            "the ma2020 slices of the train split (Ma et al., CC BY 4.0)")
    if results.get("started_from"):
        data += (", stage 1 started from {name} {version} (SHA-256 {sha256}; the commit that bundles it has its "
                 "card and training command)").format(**results["started_from"])
    binary = export_model(run["binary"], (torch.zeros(1, 1, size, size),), weights_dir, {
        "name": "ct-infection-infnet", "version": version, "task": "ct-infection-segmentation",
        "architecture": profile.arch, "architecture_config": {}, "classes": ["infection"], "input_size": size,
        "input_kind": "grey",
        "preprocessing": CT_INPUT + f"resized to {size}x{size}, min-max to [0, 1]; sigmoid of the final map "
                         "(lateral_map_2), resized back; infection = the regions of p >= 0.5 that touch the lung mask, "
                         "kept whole (the lungs grow by them)",
        "training_data": data + (f", plus {results['sizes']['unlabelled']} unlabelled COVID-SemiSeg slices pseudo-labelled "
                                 "by Algorithm 1" if chosen == "Semi-Inf-Net" else "") + ".",
        "training_command": command,
        "metrics": {"test": table(results[chosen]), "model": chosen, "validation_dice": results["val_dice"],
                    "other_model_test": {k: table(results[k]) for k in ("Inf-Net", "Semi-Inf-Net") if k != chosen}},
        "intended_use": CT_INTENDED_USE,
        "limitations": [
            f"{chosen} (chosen on val Dice) with the slim Res2Net backbone at {size} px, trained on a 2-core CPU: "
            "far fewer epochs and a thinner network than the paper's.",
            "Trained on COVID-19 slices only (two collections): infection of other causes, and other scanners, are untested.",
            "Infection is kept where a region of p >= 0.5 touches the CT lung model's lung mask, and the lungs grow "
            "by it: an infected region the lung model misses entirely is dropped, one that reaches past the lungs "
            "from inside them is kept whole.",
            f"Test Dice {results[chosen]['dice_at_threshold']:.3f} at the served threshold on "
            f"{results[chosen]['n']} held-out slices, one view at {size} px (the recipe's figure).",
        ],
    }, any_size=True)  # its test-time views (core.pipelines.ct_slice.InfectionViews) run it at several sizes
    mc = results["multiclass"]
    config = {"in_channels": 2, "num_classes": 3, "width": profile.mc_width}
    multiclass = export_model(run["multiclass"], (torch.zeros(1, 2, size, size),), weights_dir, {
        "name": "ct-infection-multiclass", "version": version, "task": "ct-infection-segmentation",
        "architecture": profile.mc_arch, "architecture_config": config,
        "classes": ["background", "ggo", "consolidation"], "input_size": size, "input_kind": "grey",
        "preprocessing": CT_INPUT + f"two channels at {size}x{size}: the slice (min-max to [0, 1]) and the infection "
                         "probability of ct-infection-infnet; softmax; the app labels ground glass or consolidation "
                         "inside the binary infection mask",
        "training_data": "Shared public data pack (../shared/data/ct_infection): the 35 training slices of the MedSeg "
                         "multi-class set (0 background / 1 ground glass / 2 consolidation).",
        "training_command": command,
        "metrics": {"test": {name: mc[name] for name in ("ggo", "consolidation")}, "slices": mc["n"]},
        "intended_use": CT_INTENDED_USE,
        "limitations": [
            f"Trained on 35 slices and tested on {mc['n']}: its ground glass / consolidation split is a rough guide.",
            f"Test Dice (mean over slices with the class): ground glass {mc['ggo']['mean']:.3f}, "
            f"consolidation {mc['consolidation']['mean']:.3f}, on the probability it was trained on (Semi-Inf-Net's, "
            "one view)" + ("." if chosen == "Semi-Inf-Net" else f"; the app feeds it {chosen}'s, chosen on val."),
        ],
    })
    return [binary, multiclass]


def _load_state(model, folder: Path):
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    return model.eval()


def _copy_reference(run_dir: Path, target: Path) -> Path:
    source = run_dir / "histogram_reference.npy"
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: the multi-class models need the run's histogram reference")
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.load(source, allow_pickle=False).astype(np.float32))
    return target


VOLUME_NAMES = {"uniform": "ct-volume-dual-sampling-us", "size-balanced": "ct-volume-dual-sampling-ss"}


def export_dual_sampling(run_dir: Path, weights_dir: Path, fold: int | None = None, version: str = "1.0.0") -> list[ModelCard]:
    """Paper 004's pair, Attention RN34 + US and + SS of one fold (default: the best dual-sampling validation
    AUC), as two cards of task ct-volume-classification; the app fuses them with Eq. 5. PyTorch only (T(A)
    needs the feature maps); fp16 when the run measured that rounding moves the test AUC by at most the
    profile's ``half_tolerance``."""
    from training.recipes import dual_sampling

    run = dual_sampling.load_run(run_dir, fold)
    profile, summary, fold, result = run["profile"], run["summary"], run["fold"], run["fold_result"]
    store_half = summary["half_precision"]["store_half"]
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    shape = " x ".join(map(str, profile.shape))
    spacing = " x ".join(f"{s:.4g}" for s in dual_sampling.network_spacing(profile.factor))
    command = (_command("dual-sampling", "paper", weights_dir) + "  (DATA: a folder with labels.csv, columns "
               "file,label[,lung_mask,infection_mask,patient_id,split], each file a NIfTI volume or a DICOM series "
               "folder; see training/volume_data.py)")
    if summary["synthetic"]:
        counts = {split: {label: sum(bands.values()) for label, bands in labels.items()}
                  for split, labels in summary["sizes"].items()}
        data = (f"Synthetic CT volumes generated by core.ct_volume_phantoms: {_volume_counts(counts.get('tv', {}))} in "
                f"the TV set, {_volume_counts(counts.get('test', {}))} in the independent test set (other seeds); "
                f"fold {fold} of a {profile.folds}-fold cross-validation on the TV set; lung and infection masks "
                f"{_MASK_SOURCES.get(profile.synthetic_masks, profile.synthetic_masks)}. No real patient data.")
        origin = [
            "TRAINED ON SYNTHETIC VOLUMES ONLY (generated COVID-19-like and CAP-like lesions): its outputs on real "
            "CT say nothing about real COVID-19 or pneumonia. It demonstrates the method and the app's path; "
            "retrain on real labelled volumes with the training command before drawing any conclusion.",
        ]
    else:
        data = f"{summary['data']}: fold {fold} of a {profile.folds}-fold cross-validation on its TV set."
        origin = []
    cards = []
    for name, sampling in dual_sampling.EXPORTED.items():
        card_name = VOLUME_NAMES[sampling]
        pt_path = weights_dir / f"{card_name}.pt"
        state = run["models"][name].state_dict()
        torch.save(dual_sampling.half_state(state) if store_half else state, pt_path)
        test = result["scores"]["test"]
        card = ModelCard(
            name=card_name, version=version, task="ct-volume-classification", architecture="resnet3d34_attention",
            architecture_config=dual_sampling.architecture_config(profile), classes=list(dual_sampling.CLASSES),
            input_size=int(profile.shape[-1]), input_kind="volume", output="sigmoid",
            input_config=dual_sampling.input_config(profile, sampling),
            preprocessing=(f"core.imaging.volume_input.classifier_input: HU outside the lung mask (lungs + infection) "
                           f"set to -1350; resampled (trilinear) to {spacing} mm (1.25 x 0.7168 x 0.7168 mm times "
                           f"{profile.factor:g}); window [-1350, 150] HU to [0, 1] on 8-bit levels; zero-padded or "
                           f"cropped around the lungs to {shape} (z, y, x). One sigmoid output = P(COVID-19) vs CAP; "
                           "T(A) (Eq. 1-2) from the FC weights, alpha "
                           f"{profile.alpha:g}, beta {profile.beta}. Dual sampling: P = w P_US + (1 - w) P_SS, w = 0.35 "
                           "if the infection/lung ratio is < 0.001 or > 0.030, else 0.96 "
                           "(core.imaging.infection_burden)."),
            files={"pytorch": WeightFile(pt_path.name, sha256_of(pt_path))},
            training_data=data, training_command=command,
            metrics={"test": test[name], "test_dual_sampling": test["att-ds"], "validation": result["scores"]["val"][name],
                     "fold": fold, "cross_validation_test": summary["table2"]["test"][name],
                     "attention_overlap": summary["overlap"][name], "half_precision": summary["half_precision"][name]},
            intended_use=("Research use only. Not for clinical use. Shows how paper 004's dual-sampling attention "
                          "network behaves on chest CT volumes; it is not a diagnostic device."),
            limitations=origin + [
                f"Attention RN34 + {'US' if sampling == 'uniform' else 'SS'} at width {profile.width} (paper 64), "
                f"input {shape} voxels of {spacing} mm, {profile.epochs} epochs: below the paper's setting."
                if profile.width != 64 or tuple(profile.shape) != (138, 256, 256) else
                f"Attention RN34 + {'US' if sampling == 'uniform' else 'SS'} with the paper's network and input.",
                "Two classes only (COVID-19 vs community-acquired pneumonia): a normal scan or another disease is "
                "forced into one of them.",
                "Its input is masked to the lungs of the app's CT lung model: lungs the model misses are invisible to it.",
                f"Fold {fold} test: AUC {_or_dash(test[name]['auc'])}, accuracy {test[name]['accuracy']:.3f}; dual "
                f"sampling AUC {_or_dash(test['att-ds']['auc'])}.",
            ],
            synthetic=bool(summary["synthetic"]),
            calibration=run["calibration"][name],
        )
        Registry.open_or_empty(weights_dir).write_card(card)
        cards.append(card)
    return cards


_MASK_SOURCES = {"models": "from the bundled CT lung and infection models, as the app computes them",
                 "ground truth": "from the generator (ground truth)"}


def _volume_counts(counts: dict) -> str:
    return f"{sum(counts.values())} volumes ({counts.get('covid', 0)} COVID-19-like, {counts.get('cap', 0)} CAP-like)"


def _or_dash(value) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.3f}"
