"""MANet (Xu, Lam, Jia 2021): stage 1 ResUNet lung segmentation, stage 2 mask-attention classifiers.

Stage 2 trains every backbone of the paper (ResNet34, ResNet50, VGG16, Inception-v3), each plain, with
mask attention (MA) and, for the ResNets, with CBAM, over several seeds on the same split, and writes
the paper's Tables 2-5 (accuracy per trial, cost, per-class report, confusion matrix) plus the shortcut
audit. Profiles hold every setting: ``paper`` is the published configuration; the others shrink
inputs, widths, epochs or the training set to fit the hardware (each field says what it is).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.classes import MANET_CLASSES
from core.explain import grad_cam
from core.lung import lung_mask_from_probability, lung_probability_small, probability_to_shape
from core.postprocess import manet_postprocess
from core.preprocess import masked_classifier_input
from core.progress import progress_bar
from core.runtime import TorchModel
from models import create_model
from training import reports
from training.augment import CLASSIFICATION_AUGMENT, gamma_jitter, resolution_jitter
from training.classification import ArraySet, evaluate_classifier, fit_classifier
from training.data import cache_dir, load_gray, save_cache
from training.engine import FitConfig, RunSettings, is_main_process, pick_device
from training.faithfulness import add_faithfulness_table, network_faithfulness
from training.metrics import mean_and_spread
from training.profiling import model_cost
from training.recipes import load_profile, start_run
from training.segmentation import SEGMENTATION_AUGMENT, SegmenterConfig, evaluate_segmenter, train_segmenter
from training.splits import subsample_per_class
from training.tasks import MANET, select

PAPER_CLASSIFIERS = (
    ("resnet34", "none"), ("resnet34", "mask"), ("resnet34", "cbam"),
    ("resnet50", "none"), ("resnet50", "mask"), ("resnet50", "cbam"),
    ("vgg16", "none"), ("vgg16", "mask"),
    ("inception_v3", "none"), ("inception_v3", "mask"),
)
# Table 2, mean test accuracy (%) over three trials, for the results tables.
PAPER_MEAN_ACCURACY = {
    "resnet34-none": 95.78, "resnet34-mask": 96.03, "resnet34-cbam": 94.92, "resnet50-none": 96.08,
    "resnet50-mask": 96.32, "resnet50-cbam": 95.59, "vgg16-none": 93.87, "vgg16-mask": 95.10,
    "inception_v3-none": 95.39, "inception_v3-mask": 96.03,
}
PAPER_TEST_IOU = {"normal": 93.49, "tb": 93.14, "covid": 89.07, "all": 92.50}


@dataclass(frozen=True)
class Profile(RunSettings):
    seg_size: int = 512
    seg_widths: tuple = (32, 64, 128, 256, 512)
    seg_epochs: int = 50
    seg_batch: int = 64
    seg_lr: float = 2e-4
    seg_weight_decay: float = 1e-5
    classifiers: tuple = PAPER_CLASSIFIERS  # (architecture, attention) pairs
    seeds: tuple = (0, 1, 2)  # one trial per seed, same split
    cls_width: int = 64  # channels of the first stage (64 in the paper)
    cls_size: int = 224
    cls_epochs: int = 200
    cls_batch: int = 64
    cls_lr: float = 0.01
    cls_momentum: float = 0.9
    max_train_per_class: int | None = None  # subsample the training split (quick profiles)
    resolution_jitter: float = 0.0  # p of random down/up-sampling (counters the TB low-resolution shortcut)
    # Against source shortcuts (not in the paper; chosen by leave-one-source-out, ``training.source_holdout``):
    lung_crop: float | None = None  # margin: inputs cover only the lungs' bounding box (core.preprocess)
    equalise: bool = False  # lung histogram equalised instead of min-max (core.preprocess.classifier_input)
    gamma_jitter: float = 0.0  # training: gamma drawn from exp(U(-g, g)) inside the lungs


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True),
    # What trained the app's bundled models on a 2-core CPU (about two hours): the ResUNet for 40 epochs,
    # then the classifier with the anti-shortcut settings that won the leave-one-source-out study
    # (``python -m training source-holdout``: lung crop, lung histogram equalised, gamma and resolution jitter).
    "bundled": Profile(
        seg_size=192, seg_widths=(16, 32, 64, 128, 256), seg_epochs=40, seg_batch=8, seg_lr=1e-3,
        # Half-width ResNet34: a quarter of the FLOPs and 21 MB of weights, so the served
        # files stay under the 100 MB bundle cap and training fits a 2-core CPU. 128 px of the lungs'
        # box hold as much lung as 160 px of the whole image; at most 700 images per class (balance).
        classifiers=(("resnet34", "mask"),), seeds=(0,),
        cls_width=32, cls_size=128, cls_epochs=16, cls_batch=32, cls_lr=0.02, max_train_per_class=700,
        lung_crop=0.05, equalise=True, gamma_jitter=0.4, resolution_jitter=0.6,
    ),
    # Every stage and all ten classifiers x three seeds on a 2-core CPU: quarter-width networks at
    # 96 px, 6 epochs, 240 training images per class.
    "cpu-quick": Profile(
        seg_size=128, seg_widths=(8, 16, 32, 64, 128), seg_epochs=6, seg_batch=8, seg_lr=1e-3,
        cls_width=16, cls_size=96, cls_epochs=6, cls_batch=32, cls_lr=0.02, max_train_per_class=240,
        resolution_jitter=0.3,
    ),
    # Seconds on tiny synthetic data: for tests only.
    "smoke": Profile(
        seg_size=32, seg_widths=(4, 8, 16), seg_epochs=1, seg_batch=4, seg_lr=1e-3,
        classifiers=(("resnet34", "none"), ("resnet34", "mask")), seeds=(0, 1),
        cls_width=8, cls_size=32, cls_epochs=1, cls_batch=4, max_steps_per_epoch=2, device="cpu",
    ),
}


def variant_name(arch: str, attention: str) -> str:
    return f"{arch}-{attention}"


# ---------------------------------------------------------------- stage 1: lung segmentation
def segmenter_config(profile: Profile) -> SegmenterConfig:
    return SegmenterConfig(
        "resunet", profile.seg_widths, profile.seg_size, profile.seg_epochs, profile.seg_batch, profile.seg_lr,
        profile.seg_weight_decay, "generalised_dice", SEGMENTATION_AUGMENT, device=profile.device, amp=profile.amp,
        tensorboard=profile.tensorboard, max_steps_per_epoch=profile.max_steps_per_epoch,
    )


def stage_one(records, profile: Profile, out_dir: Path):
    with_mask = [r for r in records if r.lung_mask is not None]
    by_split = {s: [r for r in with_mask if r.split == s] for s in ("train", "val", "test")}
    segmenter = train_segmenter(by_split["train"], by_split["val"], segmenter_config(profile), out_dir / "segmenter")
    report = evaluate_segmenter(segmenter, by_split["test"], profile.seg_size, manet_postprocess)
    reports.write_json(out_dir / "segmenter_test.json", report)
    print(f"lung segmentation test: dice={report['by_class']['dice']:.4f} iou={report['by_class']['iou']:.4f}")
    return segmenter, report


# ---------------------------------------------------------------- stage 2: classifiers
def input_config(profile: Profile) -> dict:
    """The classifier card's ``input_config`` (``core.preprocess.masked_classifier_input``)."""
    config = {"lung_crop": profile.lung_crop} if profile.lung_crop is not None else {}
    return config | ({"equalise": True} if profile.equalise else {})


def lung_probabilities(records, segmenter_model, seg_size: int) -> np.ndarray:
    """(N, seg_size, seg_size) float16 lung probabilities through the serving code, cached per segmenter."""
    key = hashlib.sha256(f"{seg_size}|".encode() + "|".join(str(r.image) for r in records).encode())
    for tensor in segmenter_model.state_dict().values():
        key.update(tensor.detach().cpu().numpy().tobytes())
    cache = cache_dir() / f"lung-probabilities-{key.hexdigest()[:20]}.npy"
    if cache.exists():
        return np.load(cache, mmap_mode="r")
    segmenter = TorchModel(segmenter_model, next(segmenter_model.parameters()).device)
    out = np.zeros((len(records), seg_size, seg_size), np.float16)
    for index, record in enumerate(progress_bar(records, desc="lung masks for classification", leave=False)):
        out[index] = lung_probability_small(load_gray(record.image), segmenter, seg_size)
    save_cache(cache, out)
    return out


def classifier_arrays(records, segmenter_model, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Classifier inputs (float16 image, uint8 mask) at the classifier's size, built by the serving code."""
    probabilities = lung_probabilities(records, segmenter_model, profile.seg_size)
    config = input_config(profile)
    images = np.zeros((len(records), profile.cls_size, profile.cls_size), np.float16)
    masks = np.zeros_like(images, dtype=np.uint8)
    for index, record in enumerate(records):
        pixels = load_gray(record.image)
        lung_mask = lung_mask_from_probability(probability_to_shape(probabilities[index].astype(np.float32), pixels.shape))
        (image, mask), _ = masked_classifier_input(pixels, lung_mask, profile.cls_size, config)
        images[index], masks[index] = image[0], mask[0]
    return images, masks


def stage_two_data(records, segmenter, profile: Profile) -> dict[str, ArraySet]:
    chosen, labels = select(records, MANET)
    images, masks = classifier_arrays(chosen, segmenter, profile)
    splits = np.array([r.split for r in chosen])
    sets = {}
    for split in ("train", "val", "test"):
        index = np.flatnonzero(splits == split)
        if split == "train":
            index = index[subsample_per_class(labels[index], profile.max_train_per_class)]
        sets[split] = ArraySet(
            (torch.from_numpy(images[index]), torch.from_numpy(masks[index])),
            torch.from_numpy(labels[index]), [chosen[i].source for i in index],
        )
    return sets


def prepare_batch(profile: Profile):
    """Stored (image float16 in [-1, 1], mask uint8) -> network inputs; augmented while training."""

    def prepare(stored, device, training):
        image, mask = stored[0].float()[:, None], stored[1].float()[:, None]
        if training:
            image = resolution_jitter(image, profile.resolution_jitter)
            image = gamma_jitter(image, mask, profile.gamma_jitter)
            image, mask = CLASSIFICATION_AUGMENT(image.to(device), mask.to(device), background=-1.0)
            image = torch.where(mask > 0, image, torch.full_like(image, -1.0))  # keep the outside black
        return image.to(device), mask.to(device)

    return prepare


def build_classifier(profile: Profile, arch: str, attention: str):
    return create_model(arch, attention=attention, num_classes=len(MANET_CLASSES), width=profile.cls_width)


def train_trial(sets, profile: Profile, arch: str, attention: str, seed: int, out_dir: Path) -> dict:
    torch.manual_seed(seed)  # same split, different initialisation and batch order
    model = build_classifier(profile, arch, attention)
    optimizer = torch.optim.SGD(model.parameters(), lr=profile.cls_lr, momentum=profile.cls_momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=profile.cls_epochs, eta_min=0.0)
    prepare = prepare_batch(profile)
    model, val_accuracy = fit_classifier(
        model, sets["train"], sets["val"], loss_fn=F.cross_entropy, optimizer=optimizer, scheduler=scheduler,
        prepare=prepare, config=FitConfig.from_settings(profile, profile.cls_epochs, out_dir, "accuracy"),
        batch=profile.cls_batch, seed=seed,
    )
    test, probs = evaluate_classifier(model, sets["test"], prepare, MANET_CLASSES, pick_device(profile.device))
    trial = {"arch": arch, "attention": attention, "seed": seed, "val_accuracy": val_accuracy, "test": test}
    reports.write_json(out_dir / "test.json", trial)
    if is_main_process():
        np.save(out_dir / "test_probabilities.npy", probs)
    return {**trial, "model": model, "probabilities": probs}


def stage_two(records, segmenter, profile: Profile, out_dir: Path) -> dict:
    sets = stage_two_data(records, segmenter, profile)
    trials = {}
    for arch, attention in profile.classifiers:
        name = variant_name(arch, attention)
        for seed in profile.seeds:
            trial = train_trial(sets, profile, arch, attention, seed, out_dir / "classifiers" / name / f"seed{seed}")
            print(f"{name} seed {seed}: val {trial['val_accuracy']:.4f} test {trial['test']['accuracy']:.4f}", flush=True)
            trials.setdefault(name, []).append(trial)
    return {"sets": sets, "trials": trials}


def select_model(trials: dict) -> dict:
    """The variant with the best mean validation accuracy, and its best-validation trial (never test)."""
    best_variant = max(trials, key=lambda name: np.mean([t["val_accuracy"] for t in trials[name]]))
    return max(trials[best_variant], key=lambda t: t["val_accuracy"])


# ---------------------------------------------------------------- report
def write_report(out_dir: Path, profile_name: str, profile: Profile, seg: dict, stage2: dict, selected: dict) -> Path:
    report = reports.Report(out_dir, f"MANet reproduction ({profile_name} profile)",
                            f"Run folder `{out_dir}`. Settings: `config.json`. Test split of the data pack; "
                            "models and epochs chosen on the validation split.")
    _segmentation_tables(report, seg)
    _accuracy_tables(report, stage2["trials"], profile)
    _cost_table(report, profile, stage2["sets"]["test"])
    name = variant_name(selected["arch"], selected["attention"])
    report.text("Selected model", f"`{name}` seed {selected['seed']} (best mean validation accuracy, then best "
                                  f"validation trial): test accuracy {reports.percent(selected['test']['accuracy'])} %.")
    reports.add_classification_tables(report, f"Table 4/5 ({name}, seed {selected['seed']})", selected["test"])
    reports.plot_confusion(selected["test"]["confusion_matrix"], list(MANET_CLASSES), out_dir / "confusion.png", name)
    reports.plot_roc(stage2["sets"]["test"].labels.numpy(), selected["probabilities"], list(MANET_CLASSES), out_dir / "roc.png", name)
    logs = {"segmenter": out_dir / "segmenter" / "log.csv"}
    logs.update({f"{variant}/seed{t['seed']}": out_dir / "classifiers" / variant / f"seed{t['seed']}" / "log.csv"
                 for variant, ts in stage2["trials"].items() for t in ts})
    reports.plot_training_curves(logs, out_dir / "curves.png")
    reports.add_speed_table(report, logs)
    _gradcam_grid(selected["model"], stage2["sets"]["test"], profile, out_dir / "gradcam.png")
    faithfulness = network_faithfulness(selected["model"], stage2["sets"]["test"], prepare_batch(profile), MANET_CLASSES,
                                        next(selected["model"].parameters()).device)
    reports.write_json(out_dir / "faithfulness.json", faithfulness)
    add_faithfulness_table(report, f"Heat-map faithfulness ({name}, Grad-CAM on test)", faithfulness)
    for title, file in (("Confusion matrix", "confusion.png"), ("ROC (one vs rest)", "roc.png"),
                        ("Training curves", "curves.png"), ("Grad-CAM on test images", "gradcam.png")):
        report.figure(title, file)
    return report.write()


def _segmentation_tables(report, seg: dict) -> None:
    rows = [[group, v["n"], reports.percent(v["iou"]), reports.percent(v["dice"]),
             PAPER_TEST_IOU.get(group, "-")] for group, v in seg["by_class"]["per_group"].items()]
    rows.append(["all", seg["by_class"]["n"], reports.percent(seg["by_class"]["iou"]),
                 reports.percent(seg["by_class"]["dice"]), PAPER_TEST_IOU["all"]])
    report.table("Stage 1: lung segmentation on the test split, per class of image", ["class", "n", "IoU %", "Dice %", "paper IoU %"], rows,
                 "Lung masks exist only for COVID-19 (Cohen/V7) and normal (OpenIST) images here; the paper also had TB.")
    report.table("Stage 1: per source", ["source", "n", "IoU %", "Dice %"],
                 [[g, v["n"], reports.percent(v["iou"]), reports.percent(v["dice"])] for g, v in seg["by_source"]["per_group"].items()])


def _accuracy_tables(report, trials: dict, profile: Profile) -> None:
    headers = ["model"] + [f"trial {i + 1} (seed {s})" for i, s in enumerate(profile.seeds)] + ["mean ± std (min-max)", "paper mean"]
    rows = []
    for name, ts in trials.items():
        accuracies = [t["test"]["accuracy"] for t in ts]
        rows.append([name] + [reports.percent(a) for a in accuracies]
                    + [reports.spread(mean_and_spread(accuracies)), PAPER_MEAN_ACCURACY.get(name, "-")])
    report.table("Table 2: test accuracy (%) per trial", headers, rows)
    comparison = []
    for arch in dict.fromkeys(a for a, _ in profile.classifiers):
        plain = trials.get(variant_name(arch, "none"))
        for attention in ("mask", "cbam"):
            other = trials.get(variant_name(arch, attention))
            if plain and other and len(plain) == len(other):
                delta = [o["test"]["accuracy"] - p["test"]["accuracy"] for o, p in zip(other, plain)]
                comparison.append([arch, attention, reports.spread(mean_and_spread(delta)), sum(d > 0 for d in delta), len(delta)])
    if comparison:
        report.table("Attention vs plain, same split and seed (test accuracy difference, percentage points)",
                     ["backbone", "attention", "difference mean ± std (min-max)", "trials better", "trials"], comparison)


def _cost_table(report, profile: Profile, test: ArraySet) -> None:
    rows = []
    example = (torch.zeros(1, 1, profile.cls_size, profile.cls_size), torch.ones(1, 1, profile.cls_size, profile.cls_size))
    for arch, attention in profile.classifiers:
        cost = model_cost(build_classifier(profile, arch, attention), example)
        rows.append([variant_name(arch, attention), f"{cost['params_m']:.2f}", f"{cost['gflops'] * 1000:.1f}",
                     f"{cost['ms_per_image']:.1f}"])
    report.table(f"Table 3: cost at {profile.cls_size} px, width {profile.cls_width} (CPU, batch 1)",
                 ["model", "params (M)", "MFLOPs", "ms / image"], rows)


def _gradcam_grid(model, test: ArraySet, profile: Profile, path: Path, per_class: int = 2) -> None:
    device = next(model.parameters()).device
    panels = []
    for label in range(len(MANET_CLASSES)):
        for index in np.flatnonzero(test.labels.numpy() == label)[:per_class]:
            image = test.inputs[0][index:index + 1].float()[:, None].to(device)
            mask = test.inputs[1][index:index + 1].float()[:, None].to(device)
            with torch.no_grad():
                predicted = int(model(image, mask).argmax(1))
            heat = grad_cam(model, image, mask, predicted)
            caption = f"true {MANET_CLASSES[label]} / pred {MANET_CLASSES[predicted]}\n{test.sources[index]}"
            panels.append(((image[0, 0].cpu().numpy() + 1) / 2, heat, caption))
    reports.plot_heatmap_grid(panels, path, columns=per_class * 2 if per_class > 1 else 5)


# ---------------------------------------------------------------- the whole recipe
def load_run(run_dir: Path) -> dict:
    """Rebuild ``run()``'s result from a finished run folder (the selected models and their test reports)."""
    run_dir = Path(run_dir)
    _, profile = load_profile(run_dir, Profile)
    summary = json.loads((run_dir / "summary.json").read_text())
    selected = summary["selected"]
    segmenter = create_model("resunet", widths=profile.seg_widths)
    segmenter.load_state_dict(torch.load(run_dir / "segmenter" / "best.pt", map_location="cpu", weights_only=True))
    classifier = build_classifier(profile, selected["arch"], selected["attention"])
    folder = run_dir / "classifiers" / variant_name(selected["arch"], selected["attention"]) / f"seed{selected['seed']}"
    classifier.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    return {
        "profile": profile, "segmenter": segmenter.eval(), "classifier": classifier.eval(),
        "segmentation": json.loads((run_dir / "segmenter_test.json").read_text()),
        "classification": selected["test"], "selected": selected,
    }


def run(records, out_dir: Path, profile_name: str = "cpu-quick", **overrides) -> dict:
    """Both stages on ``records`` (``training.adapters``), every output in ``out_dir``."""
    profile, out_dir = start_run("manet", PROFILES, profile_name, out_dir, overrides)
    segmenter, seg_report = stage_one(records, profile, out_dir)
    stage2 = stage_two(records, segmenter, profile, out_dir)
    selected = select_model(stage2["trials"])
    if is_main_process():
        summary = {name: [{k: t[k] for k in ("seed", "val_accuracy")} | {"test_accuracy": t["test"]["accuracy"]} for t in ts]
                   for name, ts in stage2["trials"].items()}
        plain_selected = {k: v for k, v in selected.items() if k not in ("model", "probabilities")}
        reports.write_json(out_dir / "summary.json", {"trials": summary, "selected": plain_selected})
        print(f"report: {write_report(out_dir, profile_name, profile, seg_report, stage2, selected)}")
    return {"profile": profile, "segmenter": segmenter, "classifier": selected["model"],
            "segmentation": seg_report, "classification": selected["test"], "selected": selected}
