"""UNet + HRNet (Ahmed et al.): UNet lung segmentation and an HRNet COVID-19 vs non-COVID classifier.

Stage 1 trains the Table 4 UNet with the dice coefficient loss by k-fold cross-validation; masks are
post-processed by dilation (8) and closing (2), and images whose lung area is under 50,000 px at
512 x 512 are left out. Stage 2 trains HRNet (features + fully connected head, BCE) and the paper's
baselines (ResNet152, DenseNet121, EfficientNet-B4) by k-fold cross-validation on the segmented images,
and writes Tables 6 and 7 (accuracy, sensitivity, specificity per fold and on average).

Protocol on the data pack: cross-validation runs over the pack's train split (patient-wise folds);
the pack's val split chooses each fold's epoch; every fold model is also scored on the untouched test
split, per source, where the paper had no separate test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.lung import lung_probability
from core.postprocess import hrnet_postprocess, manet_postprocess, passes_min_area
from core.preprocess import lung_only_input
from core.progress import progress_bar
from core.runtime import TorchModel
from models import create_model
from training import reports
from training.augment import HrnetAugment
from training.classification import ArraySet, binary_gradcam_panels, evaluate_classifier, fit_classifier
from training.data import load_gray
from training.engine import FitConfig, RunSettings, is_main_process, pick_device
from training.faithfulness import add_faithfulness_table, network_faithfulness
from training.metrics import classification_report, mean_and_spread
from training.recipes import start_run
from training.segmentation import SegmenterConfig, evaluate_segmenter, train_segmenter
from training.splits import patient_kfold, subsample_per_class
from training.tasks import BINARY_COVID, select

PAPER_CLASSIFIERS = ("hrnet", "timm_resnet152", "timm_densenet121", "timm_efficientnet_b4")
PAPER_TABLE_7 = {  # accuracy, sensitivity, specificity (%)
    "hrnet": (99.26, 98.53, 98.82), "timm_resnet152": (94.50, 95.12, 94.00),
    "timm_densenet121": (93.40, 90.24, 96.00), "timm_efficientnet_b4": (97.56, 95.12, 96.15),
}
AUGMENT = HrnetAugment()


@dataclass(frozen=True)
class Profile(RunSettings):
    folds: int = 10
    seg_size: int = 512
    seg_widths: tuple = (32, 64, 128, 256, 512)
    seg_epochs: int = 25
    seg_batch: int = 8
    seg_lr: float = 0.005  # the paper's value; Adam (the paper names only the rate)
    classifiers: tuple = PAPER_CLASSIFIERS
    hrnet_variant: str = "hrnet_w18"
    cls_size: int = 224
    cls_epochs: int = 25  # Table 5
    cls_batch: int = 8
    cls_lr: float = 0.01
    cls_momentum: float = 0.8
    cls_weight_decay: float = 1e-4
    cls_milestones: tuple = (30, 60, 90)  # lr x 0.1 (beyond 25 epochs, as published)
    max_per_class: int | None = 500  # the paper's set: 410 COVID + 500 non-COVID images
    seed: int = 0


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True, cls_batch=32, seg_batch=16),
    # Every stage on a 2-core CPU in minutes: 3 folds, small inputs, 150 images per class, slim HRNet.
    "cpu-quick": Profile(
        folds=3, seg_size=128, seg_widths=(8, 16, 32, 64, 128), seg_epochs=4, seg_lr=1e-3,
        hrnet_variant="hrnet_w18_small", cls_size=64, cls_epochs=4, cls_batch=16, max_per_class=150,
    ),
    "smoke": Profile(
        folds=2, seg_size=32, seg_widths=(4, 8, 16), seg_epochs=1, seg_batch=4, seg_lr=1e-3,
        classifiers=("hrnet", "timm_densenet121"), hrnet_variant="hrnet_w18_small", cls_size=64, cls_epochs=1,
        cls_batch=4, max_per_class=None, max_steps_per_epoch=2, device="cpu",
    ),
}


# ---------------------------------------------------------------- stage 1: UNet, k-fold
def segmenter_config(profile: Profile) -> SegmenterConfig:
    return SegmenterConfig(
        "unet", profile.seg_widths, profile.seg_size, profile.seg_epochs, profile.seg_batch, profile.seg_lr, 0.0,
        "dice", AUGMENT, seed=profile.seed, device=profile.device, amp=profile.amp,
        tensorboard=profile.tensorboard, max_steps_per_epoch=profile.max_steps_per_epoch,
    )


def stage_one(records, profile: Profile, out_dir: Path):
    """k-fold UNet on the train split's image/mask pairs; the fold best on val segments everything."""
    with_mask = [r for r in records if r.lung_mask is not None]
    pool = [r for r in with_mask if r.split == "train"]
    val = [r for r in with_mask if r.split == "val"]
    folds = patient_kfold([r.patient_id for r in pool], [r.label for r in pool], profile.folds, profile.seed)
    results, best = [], None
    for fold, (train_index, held_index) in enumerate(folds):
        model = train_segmenter([pool[i] for i in train_index], val, segmenter_config(profile), out_dir / "segmenter" / f"fold{fold + 1}")
        held = evaluate_segmenter(model, [pool[i] for i in held_index], profile.seg_size, manet_postprocess)
        val_dice = evaluate_segmenter(model, val, profile.seg_size, manet_postprocess)["by_class"]["dice"]
        results.append({"fold": fold + 1, "held_out": held["by_class"], "val_dice": val_dice})
        print(f"UNet fold {fold + 1}: held-out dice {held['by_class']['dice']:.4f} val dice {val_dice:.4f}", flush=True)
        if best is None or val_dice > best[0]:
            best = (val_dice, fold + 1, model)
    test = [r for r in with_mask if r.split == "test"]
    return {
        "folds": results, "selected_fold": best[1], "model": best[2],
        "test_filled": evaluate_segmenter(best[2], test, profile.seg_size, manet_postprocess),
        "test_dilated": evaluate_segmenter(best[2], test, profile.seg_size, hrnet_postprocess),
    }


# ---------------------------------------------------------------- stage 2: classifiers, k-fold
def segmented_images(records, segmenter, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Lung-only images (dilated, closed mask; 0 outside) at the classifier size, and the min-area verdict."""
    run = TorchModel(segmenter, next(segmenter.parameters()).device)
    images = np.zeros((len(records), profile.cls_size, profile.cls_size), np.float16)
    kept = np.zeros(len(records), bool)
    for index, record in enumerate(progress_bar(records, desc="segmenting for classification", leave=False)):
        pixels = load_gray(record.image)
        mask = hrnet_postprocess(lung_probability(pixels, run, profile.seg_size) >= 0.5)
        kept[index] = passes_min_area(mask)
        images[index] = lung_only_input(pixels, mask, profile.cls_size)[0]
    return images, kept


def stage_two_data(records, segmenter, profile: Profile) -> tuple[dict, list, dict]:
    chosen, labels = select(records, BINARY_COVID)
    splits = np.array([r.split for r in chosen])
    picked = {s: np.flatnonzero(splits == s) for s in ("train", "val", "test")}
    picked["train"] = picked["train"][subsample_per_class(labels[picked["train"]], profile.max_per_class, profile.seed)]
    picked["val"] = picked["val"][subsample_per_class(labels[picked["val"]], profile.max_per_class, profile.seed)]
    sets, dropped = {}, {}
    for split, index in picked.items():
        images, kept = segmented_images([chosen[i] for i in index], segmenter, profile)
        dropped[split] = int((~kept).sum())
        picked[split], images = index[kept], images[kept]
        sets[split] = ArraySet((torch.from_numpy(images),), torch.from_numpy(labels[picked[split]]),
                               [chosen[i].source for i in picked[split]])
    return sets, [chosen[i].patient_id for i in picked["train"]], dropped


def prepare(stored, device, training):
    image = stored[0].float()[:, None].to(device)
    if training:
        image, _ = AUGMENT(image)
    return (image,)


def bce_loss(logits, labels):
    return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())


def build_classifier(profile: Profile, arch: str):
    if arch == "hrnet":
        return create_model("hrnet", variant=profile.hrnet_variant, num_classes=1, in_chans=1)
    return create_model(arch, num_classes=1, in_chans=1)


def train_fold(sets, profile: Profile, arch: str, train_index, held_index, out_dir: Path) -> dict:
    torch.manual_seed(profile.seed)
    model = build_classifier(profile, arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=profile.cls_lr, momentum=profile.cls_momentum,
                                weight_decay=profile.cls_weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(profile.cls_milestones), gamma=0.1)
    model, val_accuracy = fit_classifier(
        model, sets["train"].subset(train_index), sets["val"], loss_fn=bce_loss, optimizer=optimizer,
        scheduler=scheduler, prepare=prepare, config=FitConfig.from_settings(profile, profile.cls_epochs, out_dir, "accuracy"),
        batch=profile.cls_batch, seed=profile.seed,
    )
    device = pick_device(profile.device)
    held, _ = evaluate_classifier(model, sets["train"].subset(held_index), prepare, BINARY_COVID.classes, device)
    test, test_probs = evaluate_classifier(model, sets["test"], prepare, BINARY_COVID.classes, device)
    return {"val_accuracy": val_accuracy, "held_out": held, "test": test, "test_probabilities": test_probs, "model": model}


def stage_two(sets, patients, profile: Profile, out_dir: Path) -> dict:
    folds = patient_kfold(patients, sets["train"].labels.numpy(), profile.folds, profile.seed)
    results = {}
    for arch in profile.classifiers:
        results[arch] = []
        for fold, (train_index, held_index) in enumerate(folds):
            folder = out_dir / "classifiers" / arch / f"fold{fold + 1}"
            result = train_fold(sets, profile, arch, train_index, held_index, folder)
            reports.write_json(folder / "result.json", {k: v for k, v in result.items() if k not in ("model", "test_probabilities")})
            print(f"{arch} fold {fold + 1}: held-out acc {result['held_out']['accuracy']:.4f} "
                  f"test acc {result['test']['accuracy']:.4f}", flush=True)
            results[arch].append(result)
    return results


def fold_ensemble(results: list[dict], test: ArraySet) -> dict:
    """Mean of the fold models' test probabilities: one test figure per architecture."""
    probs = np.mean([r["test_probabilities"] for r in results], axis=0)
    return classification_report(test.labels.numpy(), probs, list(BINARY_COVID.classes), test.sources), probs


# ---------------------------------------------------------------- report
def write_report(out_dir: Path, profile_name: str, profile: Profile, seg: dict, sets: dict, dropped: dict, cls: dict) -> Path:
    report = reports.Report(out_dir, f"UNet + HRNet reproduction ({profile_name} profile)",
                            f"Run folder `{out_dir}`; settings in `config.json`. {profile.folds}-fold cross-validation "
                            "over the pack's train split (patient-wise folds), epochs chosen on the val split, "
                            "and every fold model scored on the untouched test split.")
    report.table("Stage 1: UNet per fold (held-out fold, fill-holes post-processing)", ["fold", "n", "Dice %", "IoU %", "val Dice %"],
                 [[f["fold"], f["held_out"]["n"], reports.percent(f["held_out"]["dice"]), reports.percent(f["held_out"]["iou"]),
                   reports.percent(f["val_dice"])] for f in seg["folds"]])
    for name, key in (("fill holes + small objects", "test_filled"), ("dilation 8 + closing 2 (the paper's)", "test_dilated")):
        groups = seg[key]["by_class"]
        report.table(f"Stage 1: test split, fold {seg['selected_fold']} (best val Dice), {name}", ["class", "n", "Dice %", "IoU %"],
                     [[g, v["n"], reports.percent(v["dice"]), reports.percent(v["iou"])] for g, v in groups["per_group"].items()]
                     + [["all", groups["n"], reports.percent(groups["dice"]), reports.percent(groups["iou"])]],
                     "Dilation deliberately grows the mask past the lung border, so its Dice against tight masks is lower.")
    report.text("Minimum lung area", "Images left out by the 50,000 px (at 512 x 512) rule: "
                + ", ".join(f"{split} {count}" for split, count in dropped.items())
                + f". Classifier images: train {len(sets['train'])}, val {len(sets['val'])}, test {len(sets['test'])}.")
    for arch, folds in cls.items():
        rows = [[i + 1, reports.percent(f["held_out"]["accuracy"]), reports.percent(f["held_out"]["sensitivity"]),
                 reports.percent(f["held_out"]["specificity"]), reports.percent(f["test"]["accuracy"])] for i, f in enumerate(folds)]
        stats = {k: mean_and_spread([f["held_out"][k] for f in folds]) for k in ("accuracy", "sensitivity", "specificity")}
        rows.append(["mean ± std"] + [reports.spread(stats[k]) for k in ("accuracy", "sensitivity", "specificity")]
                    + [reports.spread(mean_and_spread([f["test"]["accuracy"] for f in folds]))])
        report.table(f"Table 6 ({arch}): per fold", ["fold", "accuracy %", "sensitivity %", "specificity %", "test-split accuracy %"], rows)
    table7, ensembles = [], {}
    for arch, folds in cls.items():
        ensemble, probs = fold_ensemble(folds, sets["test"])
        ensembles[arch] = (ensemble, probs)
        cv = {k: np.mean([f["held_out"][k] for f in folds]) for k in ("accuracy", "sensitivity", "specificity")}
        paper = PAPER_TABLE_7.get(arch, ("-",) * 3)
        table7.append([arch] + [reports.percent(cv[k]) for k in ("accuracy", "sensitivity", "specificity")]
                      + [reports.percent(ensemble[k]) for k in ("accuracy", "sensitivity", "specificity")]
                      + [f"{ensemble.get('covid_vs_rest_auc', float('nan')):.3f}"] + list(paper))
    report.table("Table 7: models compared (CV mean over held-out folds | fold ensemble on the test split | paper)",
                 ["model", "CV acc %", "CV sens %", "CV spec %", "test acc %", "test sens %", "test spec %", "test AUC",
                  "paper acc %", "paper sens %", "paper spec %"], table7)
    best_arch = max(cls, key=lambda a: np.mean([f["val_accuracy"] for f in cls[a]]))
    ensemble, probs = ensembles[best_arch]
    reports.add_classification_tables(report, f"{best_arch} fold ensemble on the test split", ensemble)
    reports.plot_confusion(ensemble["confusion_matrix"], list(BINARY_COVID.classes), out_dir / "confusion.png", best_arch)
    reports.plot_roc(sets["test"].labels.numpy(), probs, list(BINARY_COVID.classes), out_dir / "roc.png", best_arch)
    logs = {f"unet fold {f['fold']}": out_dir / "segmenter" / f"fold{f['fold']}" / "log.csv" for f in seg["folds"]}
    logs.update({f"{arch} fold {i + 1}": out_dir / "classifiers" / arch / f"fold{i + 1}" / "log.csv"
                 for arch, folds in cls.items() for i in range(len(folds))})
    reports.plot_training_curves(logs, out_dir / "curves.png")
    panels = binary_gradcam_panels(cls[best_arch][0]["model"], sets["test"], prepare, BINARY_COVID.classes)
    reports.plot_heatmap_grid(panels, out_dir / "gradcam.png", columns=4)
    model = cls[best_arch][0]["model"]
    faithfulness = network_faithfulness(model, sets["test"], prepare, list(BINARY_COVID.classes),
                                        next(model.parameters()).device, single_logit=True, lungs_are_nonzero=True)
    reports.write_json(out_dir / "faithfulness.json", faithfulness)
    add_faithfulness_table(report, f"Heat-map faithfulness ({best_arch} fold 1, Grad-CAM on test; lungs = the "
                                   "segmented input's non-zero pixels)", faithfulness)
    for title, file in (("Confusion matrix", "confusion.png"), ("ROC", "roc.png"), ("Training curves", "curves.png"),
                        (f"Grad-CAM of the COVID-19 output ({best_arch}, fold 1)", "gradcam.png")):
        report.figure(title, file)
    return report.write()


# ---------------------------------------------------------------- the whole recipe
def run(records, out_dir: Path, profile_name: str = "cpu-quick", **overrides) -> dict:
    profile, out_dir = start_run("hrnet-unet", PROFILES, profile_name, out_dir, overrides)
    seg = stage_one(records, profile, out_dir)
    reports.write_json(out_dir / "segmenter_test.json", {k: v for k, v in seg.items() if k != "model"})
    sets, patients, dropped = stage_two_data(records, seg["model"], profile)
    cls = stage_two(sets, patients, profile, out_dir)
    if is_main_process():
        summary = {arch: [{"held_out": f["held_out"], "test": f["test"], "val_accuracy": f["val_accuracy"]} for f in folds]
                   for arch, folds in cls.items()}
        reports.write_json(out_dir / "summary.json", {"classifiers": summary, "dropped_by_min_area": dropped})
        print(f"report: {write_report(out_dir, profile_name, profile, seg, sets, dropped, cls)}")
    return {"profile": profile, "segmentation": seg, "classification": cls}

