"""COVID-CXNet (Haghanifar et al.): enhanced three-channel inputs, base model and DenseNet-121 classifiers.

Inputs: a UNet lung mask (trained here, dice loss), dilated, gives the lung ROI with a margin; the crop
is resized and stacked as original / CLAHE / BEASF (gamma 1.5); the multi-class sets are histogram-
matched to one reference image from the training split. Experiments (each can be switched off in a
profile): the base model and COVID-CXNet (DenseNet-121, FC 10, dropout 0.2) for COVID-19 vs normal, the
flat three-class model (normal / CAP / COVID-19) and the hierarchical one (normal vs pneumonia, then
CAP vs COVID-19). Losses use label smoothing and class weights; batch 16; 80/20 patient-wise split of
the pack's train + val for training / epoch selection, the pack's test split for the figures.

The shortcut audit adds a leave-one-source-out evaluation of COVID-19 vs rest and a control trained
with the lungs blacked out (what can be learnt without looking at the lungs at all).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.lung import lung_probability_small
from core.postprocess import cxnet_roi_mask, manet_postprocess
from core.preprocess import cxnet_input, mask_to_shape, resize_square
from core.progress import progress_bar
from core.runtime import TorchModel
from models import create_model
from training import reports
from training.augment import AffineAugment
from training.chexnet import load_chexnet
from training.classification import ArraySet, binary_gradcam_panels, evaluate_classifier, fit_classifier, predict
from training.data import cache_dir, load_gray, save_cache
from training.engine import FitConfig, RunSettings, is_main_process, pick_device
from training.faithfulness import add_faithfulness_table, network_faithfulness
from training.metrics import classification_report
from training.recipes import start_run
from training.segmentation import SegmenterConfig, evaluate_segmenter, train_segmenter
from training.splits import holdout_split, subsample_per_class
from training.tasks import BINARY_COVID, CXNET_BINARY, CXNET_CAP_VS_COVID, CXNET_PNEUMONIA, CXNET_THREE, Task, select

EXPERIMENTS = ("base-binary", "cxnet-binary", "cxnet-three", "cxnet-hierarchical", "loso", "no-lungs-control")
PAPER = {  # Table 6 accuracy (%), F1 of the COVID-19 class
    "base-binary": (98.68, 0.94), "cxnet-binary": (98.62, 0.94), "cxnet-three": (81.04, 0.85), "cxnet-hierarchical": (87.21, 0.92),
}
AUGMENT = AffineAugment(shift=0.05, scale=0.15, rotate_degrees=10.0)  # the paper's zoom in/out, shifts and rotations


@dataclass(frozen=True)
class Profile(RunSettings):
    size: int = 224
    seg_size: int = 512
    seg_widths: tuple = (32, 64, 128, 256, 512)
    seg_epochs: int = 25
    seg_batch: int = 8
    seg_lr: float = 1e-4
    roi_dilation: int = 8  # iterations at the segmenter's resolution, before the bounding box
    lung_roi: bool = True  # False: the paper's model without segmentation
    experiments: tuple = EXPERIMENTS
    base_epochs: int = 120  # Table 6, base model v2
    cxnet_epochs: int = 10
    three_epochs: int = 30
    hierarchy_epochs: tuple = (10, 20)
    growth_rate: int = 32  # DenseNet-121 as published; smaller for CPU profiles
    num_init_features: int = 64
    batch: int = 16
    lr: float = 1e-4  # Adam
    label_smoothing: float = 0.1
    holdout: float = 0.2
    max_per_class: int | None = None  # subsample training pools (quick profiles)
    loso_sources: tuple | None = None  # None: every source
    chexnet: str | None = None  # path of a CheXNet checkpoint to start DenseNet-121 from
    seed: int = 0


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True),
    "cpu-quick": Profile(
        size=96, seg_size=128, seg_widths=(8, 16, 32, 64, 128), seg_epochs=4, seg_lr=1e-3, roi_dilation=3,
        base_epochs=6, cxnet_epochs=4, three_epochs=4, hierarchy_epochs=(3, 3), growth_rate=12, num_init_features=24,
        batch=16, lr=1e-3, max_per_class=200, loso_sources=("cohen", "hannover", "nih", "kermany-test"),
    ),
    # What trains the app's bundled COVID-CXNet models on a 2-core CPU (about an hour on one thread): 128 px,
    # 600 training images per class, 20 epochs; the lungs-blacked-out control and the audit stay in cpu-quick.
    "bundled": Profile(
        size=128, seg_size=128, seg_widths=(8, 16, 32, 64, 128), seg_epochs=12, seg_lr=1e-3, roi_dilation=3,
        experiments=("cxnet-binary", "cxnet-three"), cxnet_epochs=20, three_epochs=20, growth_rate=12,
        num_init_features=24, batch=16, lr=1e-3, max_per_class=600,
    ),
    "smoke": Profile(
        size=64, seg_size=32, seg_widths=(4, 8, 16), seg_epochs=1, seg_batch=4, seg_lr=1e-3, roi_dilation=1,
        base_epochs=1, cxnet_epochs=1, three_epochs=1, hierarchy_epochs=(1, 1), growth_rate=4, num_init_features=8,
        batch=4, lr=1e-3, loso_sources=("synthetic-a",), max_steps_per_epoch=2, device="cpu",
    ),
}


# ---------------------------------------------------------------- inputs
def train_lung_segmenter(records, profile: Profile, out_dir: Path):
    with_mask = [r for r in records if r.lung_mask is not None]
    split = {s: [r for r in with_mask if r.split == s] for s in ("train", "val", "test")}
    config = SegmenterConfig("unet", profile.seg_widths, profile.seg_size, profile.seg_epochs, profile.seg_batch,
                             profile.seg_lr, 0.0, "dice", AffineAugment(rotate_degrees=10.0), seed=profile.seed,
                             device=profile.device, amp=profile.amp, tensorboard=profile.tensorboard,
                             max_steps_per_epoch=profile.max_steps_per_epoch)
    model = train_segmenter(split["train"], split["val"], config, out_dir / "segmenter")
    return model, evaluate_segmenter(model, split["test"], profile.seg_size, manet_postprocess)


def lung_masks(records, segmenter, profile: Profile) -> list[np.ndarray]:
    """Dilated lung masks at the segmenter's size (small enough to keep for every image)."""
    run = TorchModel(segmenter, next(segmenter.parameters()).device)
    return [cxnet_roi_mask(lung_probability_small(load_gray(record.image), run, profile.seg_size), profile.roi_dilation)
            for record in progress_bar(records, desc="lung masks", leave=False)]


def build_inputs(records, masks, profile: Profile, reference=None, blank_lungs: bool = False) -> np.ndarray:
    """(N, 3, size, size) float16. ``blank_lungs``: the whole image with the lungs set to 0 (the control)."""
    key = hashlib.sha256(repr((profile.size, profile.lung_roi, blank_lungs, reference is not None and reference.tobytes())).encode())
    for record, mask in zip(records, masks):
        key.update(str(record.image).encode() + np.packbits(mask).tobytes())
    cache = cache_dir() / f"cxnet-inputs-{key.hexdigest()[:20]}.npy"
    if cache.exists():
        return np.load(cache)
    out = np.zeros((len(records), 3, profile.size, profile.size), np.float16)
    for index, (record, mask) in enumerate(progress_bar(list(zip(records, masks)), desc="CXNet inputs", leave=False)):
        pixels = load_gray(record.image)
        if blank_lungs:
            out[index] = cxnet_input(np.where(mask_to_shape(mask, pixels.shape), 0.0, pixels), None, profile.size, reference)
        else:
            out[index] = cxnet_input(pixels, mask if profile.lung_roi else None, profile.size, reference)
    save_cache(cache, out)
    return out


def histogram_reference(records, profile: Profile) -> np.ndarray:
    """The training normal of median brightness, resized: the multi-class sets are matched to it."""
    normals = [r for r in records if r.label == "normal" and r.split == "train"][:200]
    means = [load_gray(r.image).mean() for r in normals]
    chosen = normals[int(np.argsort(means)[len(means) // 2])]
    return resize_square(load_gray(chosen.image), profile.size)


class Inputs:
    """Every record's lung mask, computed once; task data sets built from them on demand."""

    def __init__(self, records, segmenter, profile: Profile):
        self.records, self.profile = records, profile
        self.masks = dict(zip((r.image for r in records), lung_masks(records, segmenter, profile)))

    def arrays(self, records, labels, reference=None, blank_lungs=False) -> ArraySet:
        images = build_inputs(records, [self.masks[r.image] for r in records], self.profile, reference, blank_lungs)
        return ArraySet((torch.from_numpy(images),), torch.from_numpy(labels), [r.source for r in records])


def task_splits(records, task: Task, profile: Profile, test_records=None) -> dict:
    """80/20 patient-wise train/val from the pack's train + val, subsampled per class; test as given or the pack's."""
    chosen, labels = select(records, task)
    pool = np.array([i for i, r in enumerate(chosen) if r.split in ("train", "val")])
    pool = pool[subsample_per_class(labels[pool], profile.max_per_class, profile.seed)]
    train, val = holdout_split([chosen[i].patient_id for i in pool], labels[pool], profile.holdout, profile.seed)
    if test_records is None:
        test = [i for i, r in enumerate(chosen) if r.split == "test"]
        test_records, test_labels = [chosen[i] for i in test], labels[test]
    else:
        test_records, test_labels = select(test_records, task)
    return {"train": ([chosen[i] for i in pool[train]], labels[pool[train]]),
            "val": ([chosen[i] for i in pool[val]], labels[pool[val]]),
            "test": (test_records, test_labels)}


# ---------------------------------------------------------------- training
def class_weighted_loss(labels: torch.Tensor, classes: int, smoothing: float):
    """Label-smoothed loss with inverse-frequency class weights (one sigmoid output when binary)."""
    counts = torch.bincount(labels, minlength=classes).float().clamp(min=1)
    weights = counts.sum() / (classes * counts)
    if classes == 2:
        def loss(logits, target):
            soft = target.float() * (1 - smoothing) + 0.5 * smoothing
            return (F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction="none") * weights.to(logits.device)[target]).mean()
        return loss
    return lambda logits, target: F.cross_entropy(logits, target, weight=weights.to(logits.device), label_smoothing=smoothing)


def prepare(stored, device, training):
    image = stored[0].float().to(device)
    if training:
        image, _ = AUGMENT(image)
    return (image,)


def build_model(profile: Profile, arch: str, classes: int):
    outputs = 1 if classes == 2 else classes
    if arch == "cxnet_base":
        return create_model("cxnet_base", in_chans=3, input_size=profile.size, num_outputs=outputs)
    model = create_model("covid_cxnet", in_chans=3, num_outputs=outputs, growth_rate=profile.growth_rate,
                         num_init_features=profile.num_init_features)
    if profile.chexnet:
        load_chexnet(profile.chexnet, model)
    return model


def train_model(data: dict, classes, profile: Profile, arch: str, epochs: int, out_dir: Path):
    torch.manual_seed(profile.seed)
    model = build_model(profile, arch, len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr)
    config = FitConfig.from_settings(profile, epochs, out_dir, "accuracy")
    model, _ = fit_classifier(model, data["train"], data["val"], optimizer=optimizer, prepare=prepare, config=config,
                              loss_fn=class_weighted_loss(data["train"].labels, len(classes), profile.label_smoothing),
                              batch=profile.batch, seed=profile.seed)
    return model


def task_data(inputs: Inputs, task: Task, profile: Profile, reference=None, test_records=None, blank_lungs=False) -> dict:
    return {name: inputs.arrays(records, labels, reference, blank_lungs)
            for name, (records, labels) in task_splits(inputs.records, task, profile, test_records).items()}


def flat_experiment(inputs, task, profile, arch, epochs, out_dir, reference=None, blank_lungs=False) -> dict:
    data = task_data(inputs, task, profile, reference, blank_lungs=blank_lungs)
    model = train_model(data, task.classes, profile, arch, epochs, out_dir)
    report, probs = evaluate_classifier(model, data["test"], prepare, task.classes, pick_device(profile.device))
    return {"report": report, "probabilities": probs, "model": model, "test": data["test"], "classes": task.classes,
            "sizes": {k: len(v) for k, v in data.items()}}


def hierarchical_experiment(inputs, profile, out_dir, reference) -> dict:
    """Level 1 normal vs pneumonia (COVID-19 included), level 2 CAP vs COVID-19, combined on the three-class test set."""
    level1 = task_data(inputs, CXNET_PNEUMONIA, profile, reference)
    level2 = task_data(inputs, CXNET_CAP_VS_COVID, profile, reference)
    model1 = train_model(level1, CXNET_PNEUMONIA.classes, profile, "covid_cxnet", profile.hierarchy_epochs[0], out_dir / "level1")
    model2 = train_model(level2, CXNET_CAP_VS_COVID.classes, profile, "covid_cxnet", profile.hierarchy_epochs[1], out_dir / "level2")
    three = task_data(inputs, CXNET_THREE, profile, reference)["test"]
    device = pick_device(profile.device)
    p1, p2 = predict(model1, three, prepare, device), predict(model2, three, prepare, device)
    # P(normal), P(pneumonia) * P(CAP | pneumonia), P(pneumonia) * P(COVID | pneumonia)
    probs = np.stack([p1[:, 0], p1[:, 1] * p2[:, 0], p1[:, 1] * p2[:, 1]], 1)
    report = classification_report(three.labels.numpy(), probs, list(CXNET_THREE.classes), three.sources)
    return {"report": report, "probabilities": probs, "model": model1, "test": three, "classes": CXNET_THREE.classes,
            "sizes": {"test": len(three)}}


def leave_one_source_out(inputs, profile: Profile, out_dir: Path) -> list[dict]:
    """COVID-19 vs rest trained without one source, tested on every image of that source."""
    sources = profile.loso_sources or sorted({r.source for r in inputs.records})
    rows = []
    for source in sources:
        kept = [r for r in inputs.records if r.source != source]
        held = [r for r in inputs.records if r.source == source]
        if not held:
            continue
        splits = task_splits(kept, BINARY_COVID, profile, test_records=held)
        data = {name: inputs.arrays(records, labels) for name, (records, labels) in splits.items()}
        model = train_model(data, BINARY_COVID.classes, profile, "covid_cxnet", profile.cxnet_epochs, out_dir / source)
        report, _ = evaluate_classifier(model, data["test"], prepare, BINARY_COVID.classes, pick_device(profile.device))
        rows.append({"source": source, "report": report})
        print(f"leave out {source}: accuracy {report['accuracy']:.4f} on {report['n']}", flush=True)
    return rows


# ---------------------------------------------------------------- report
EXPERIMENT_TITLES = {
    "base-binary": "Base model, COVID-19 vs normal", "cxnet-binary": "COVID-CXNet, COVID-19 vs normal",
    "cxnet-three": "Flat three-class COVID-CXNet", "cxnet-hierarchical": "Hierarchical three-class COVID-CXNet",
    "no-lungs-control": "Control: COVID-19 vs normal with the lungs blacked out",
}


def write_report(out_dir: Path, profile_name: str, profile: Profile, seg: dict, results: dict, loso: list) -> Path:
    report = reports.Report(out_dir, f"COVID-CXNet reproduction ({profile_name} profile)",
                            f"Run folder `{out_dir}`; settings in `config.json`. Lung ROI: {'on' if profile.lung_roi else 'off'}; "
                            f"initialisation: {'CheXNet checkpoint ' + profile.chexnet if profile.chexnet else 'random (no CheXNet weights supplied)'}.")
    seg_all = seg["by_class"]
    report.text("Lung UNet (test split)", f"Dice {reports.percent(seg_all['dice'])} %, IoU {reports.percent(seg_all['iou'])} % "
                f"on {seg_all['n']} images with reference masks.")
    rows = []
    for name, result in results.items():
        r = result["report"]
        covid_f1 = r["per_class"]["covid"]["f1"]
        auc = r.get("covid_vs_rest_auc", float("nan"))
        paper = PAPER.get(name, ("-", "-"))
        rows.append([EXPERIMENT_TITLES[name], r["n"], reports.percent(r["accuracy"]), f"{covid_f1:.3f}", f"{auc:.3f}", *paper])
    report.table("Table 6: models compared on the test split", ["model", "test n", "accuracy %", "COVID-19 F1", "COVID-19 AUC",
                                                                 "paper accuracy %", "paper COVID-19 F1"], rows)
    for name, result in results.items():
        reports.add_classification_tables(report, EXPERIMENT_TITLES[name], result["report"])
    if loso:
        report.table("Leave one source out: COVID-19 vs rest, trained without the source, tested on all of it",
                     ["held-out source", "n", "true labels", "accuracy %", "predicted as"],
                     [[row["source"], *reports.per_source_rows(row["report"])[0][1:]] for row in loso],
                     "A source the model has never seen: accuracy far below the in-source figures means the model "
                     "had learnt the source, not the disease.")
    for name in ("cxnet-binary", "cxnet-three", "cxnet-hierarchical"):
        if name in results:
            result = results[name]
            reports.plot_confusion(result["report"]["confusion_matrix"], list(result["classes"]), out_dir / f"confusion-{name}.png", name)
            reports.plot_roc(result["test"].labels.numpy(), result["probabilities"], list(result["classes"]), out_dir / f"roc-{name}.png", name)
            report.figure(f"{EXPERIMENT_TITLES[name]}: confusion matrix", f"confusion-{name}.png")
            report.figure(f"{EXPERIMENT_TITLES[name]}: ROC", f"roc-{name}.png")
    logs = {p.parent.relative_to(out_dir).as_posix(): p for p in sorted(out_dir.glob("**/log.csv"))}
    reports.plot_training_curves(logs, out_dir / "curves.png")
    reports.add_speed_table(report, logs)
    report.figure("Training curves", "curves.png")
    if "cxnet-binary" in results:
        binary = results["cxnet-binary"]
        panels = binary_gradcam_panels(binary["model"], binary["test"], prepare, binary["classes"])
        reports.plot_heatmap_grid(panels, out_dir / "gradcam.png", columns=4)
        report.figure("Grad-CAM of the COVID-19 output (COVID-CXNet, binary; image channel 0)", "gradcam.png")
    for name in ("cxnet-binary", "cxnet-three"):
        if name in results:
            result = results[name]
            entry = network_faithfulness(result["model"], result["test"], prepare, list(result["classes"]),
                                         next(result["model"].parameters()).device, single_logit=name == "cxnet-binary")
            reports.write_json(out_dir / f"faithfulness-{name}.json", entry)
            add_faithfulness_table(report, f"{EXPERIMENT_TITLES[name]}: heat-map faithfulness (Grad-CAM on test; the "
                                           "input is the lung crop, so no in-lung share)", entry)
    return report.write()


# ---------------------------------------------------------------- the whole recipe
def run(records, out_dir: Path, profile_name: str = "cpu-quick", **overrides) -> dict:
    profile, out_dir = start_run("covid-cxnet", PROFILES, profile_name, out_dir, overrides)
    segmenter, seg = train_lung_segmenter(records, profile, out_dir)
    reports.write_json(out_dir / "segmenter_test.json", seg)
    inputs = Inputs(records, segmenter, profile)
    reference = histogram_reference(records, profile)
    if is_main_process():
        np.save(out_dir / "histogram_reference.npy", reference)  # served with the multi-class models
    plan = {
        "base-binary": lambda: flat_experiment(inputs, CXNET_BINARY, profile, "cxnet_base", profile.base_epochs, out_dir / "base-binary"),
        "cxnet-binary": lambda: flat_experiment(inputs, CXNET_BINARY, profile, "covid_cxnet", profile.cxnet_epochs, out_dir / "cxnet-binary"),
        "cxnet-three": lambda: flat_experiment(inputs, CXNET_THREE, profile, "covid_cxnet", profile.three_epochs, out_dir / "cxnet-three", reference),
        "cxnet-hierarchical": lambda: hierarchical_experiment(inputs, profile, out_dir / "cxnet-hierarchical", reference),
        "no-lungs-control": lambda: flat_experiment(inputs, CXNET_BINARY, profile, "covid_cxnet", profile.cxnet_epochs,
                                                    out_dir / "no-lungs-control", blank_lungs=True),
    }
    results = {}
    for name, experiment in plan.items():
        if name in profile.experiments:
            results[name] = experiment()
            reports.write_json(out_dir / name / "test.json", {"report": results[name]["report"], "sizes": results[name]["sizes"]})
            print(f"{name}: test accuracy {results[name]['report']['accuracy']:.4f}", flush=True)
    loso = leave_one_source_out(inputs, profile, out_dir / "loso") if "loso" in profile.experiments else []
    if is_main_process():
        reports.write_json(out_dir / "summary.json", {"experiments": {k: v["report"] for k, v in results.items()},
                                                      "leave_one_source_out": loso})
        print(f"report: {write_report(out_dir, profile_name, profile, seg, results, loso)}")
    return {"profile": profile, "results": results, "leave_one_source_out": loso}

