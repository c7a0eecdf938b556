"""Multi-source attention for CT slices (paper 002: Nguyen et al., "Attention with multiple sources
knowledges for COVID-19 from CT images", arXiv:2009.11008): global, heat-map, infected and fusion
branches over ResNet50 and DenseNet169, trained G -> H -> I -> F with earlier branches frozen.

Algorithm 2, per backbone and seed (one trial):

1. **G** (global branch) on the whole slice, BCE on one sigmoid logit (Eq. 3-4).
2. **H** (heat-map branch) on the crop of each slice under the largest connected region of
   H > tau, H = (sum_k f_k - min) / max over G's last feature maps (Eq. 1-2), G frozen.
3. **I** (infected branch) on the left/right sub-images of the infected regions that the infection
   model (Inf-Net, from the registry) finds, its FC over [Pool_in, Pool_g]; G and H frozen.
4. **F** (fusion branch): one FC over Pool_f = [Pool_g, Pool_h, Pool_in], every branch frozen.

Every region is computed with the serving code (``core.imaging.regions``, ``core.lung``) on the
slice at its own resolution, exactly as ``core.pipelines.ct_slice`` does: lung mask from the CT lung
model, infection probability >= 0.5 inside the lungs, boxes split at the lungs' midline, crops resized
to ``crop_size``. Slices are decoded once (uint8, native size and ``size``); the infected sub-images
are derived once per (infection model, lung model) and cached on disk, the heat-map crops once per
trained global branch; batches are augmented as tensors (``training.augment.CtSliceAugment``).

Frozen branches are in eval mode (fixed batch-norm statistics), so their pooled features do not
change from one epoch to the next: I sees Pool_g and F sees Pool_f computed once per slice (on the
un-augmented inputs). Training F on those cached features is the same computation as training
``FusionNet`` with ``freeze_branches()``, without re-running three backbones every epoch.

Table 1's rows: Global = G; Global + Heatmap = one FC over [Pool_g, Pool_h] (trained like F);
Global + Infected = I (its FC sees Pool_g: p_in(c | I_g, I_in), Eq. 5); Fusion = F. The heat-map
branch alone (crop only) is an extra row. The best epoch of each branch is chosen on the validation
split (``select_metric``); the exported model (backbone x seed) by the fusion's validation AUC.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from core.imaging.regions import crop_to_square, heatmap_crop_box, heatmap_from_features, infected_side_boxes
from core.lung import lung_mask_from_probability, probability_to_shape, sigmoid
from core.pipelines.ct_slice import (INFECTION_THRESHOLD, InfectionViews,  # regions are built as served
                                     infection_and_lungs, infection_probability_views)
from core.preprocess import segmenter_input
from core.progress import progress_bar
from models import create_model
from training import reports  # sets Matplotlib's headless backend before pyplot is imported
from training.augment import CtSliceAugment
from training.classification import ArraySet, predict
from training.ct_data import CT_SLICE_SPLIT_NOTES, image_stack, read_ct_slice_records
from training.data import cache_dir, save_cache
from training.engine import Engine, FitConfig, RunSettings, is_main_process, pick_device, seed_everything, shuffled_batches
from training.metrics import classification_report, mean_and_spread
from training.recipes import start_run
from training.splits import subsample_per_class

import matplotlib.pyplot as plt  # noqa: E402,I001  (after training.reports chose the Agg backend)

DATA_COLLECTIONS = ("ct_slices",)  # what ``--data`` must hold (training/__main__.py)
CLASSES = ("non-covid", "covid")  # the registry's ct-classification classes; index 1 = the sigmoid's positive class
ROWS = ("global", "heatmap", "global+heatmap", "global+infected", "fusion")
ROW_TITLES = {
    "global": "Global", "heatmap": "Heat-map branch alone (crop only)", "global+heatmap": "Global + Heatmap",
    "global+infected": "Global + Infected", "fusion": "Fusion",
}
# Table 1 of the paper (D3 = UCSD COVID-CT, ImageNet initialisation): accuracy, F1, AUC as published.
PAPER_TABLE1 = {
    "resnet50": {"global": (0.80, 0.81, 0.88), "global+infected": (0.83, 0.81, 0.89),
                 "global+heatmap": (0.82, 0.83, 0.88), "fusion": (0.84, 0.82, 0.91)},
    "densenet169": {"global": (0.83, 0.81, 0.87), "global+infected": (0.86, 0.83, 0.91),
                    "global+heatmap": (0.85, 0.82, 0.89), "fusion": (0.87, 0.84, 0.92)},
}
AUGMENT = CtSliceAugment()


@dataclass(frozen=True)
class Profile(RunSettings):
    backbone_seeds: tuple = (("resnet50", (0, 1, 2)), ("densenet169", (0, 1, 2)))  # one trial per (backbone, seed)
    width: float = 1.0  # backbone width multiplier (1.0 = the published ResNet50 / DenseNet169)
    size: int = 224  # global branch input
    crop_size: int = 224  # heat-map crop and infected sub-images
    tau: float = 0.75  # Eq. 2 (the paper's best on validation)
    epochs_global: int = 50
    epochs_heatmap: int = 50
    epochs_infected: int = 50
    epochs_fusion: int = 50
    batch: int = 32
    lr: float = 0.01  # SGD
    lr_drop_at: float = 0.6  # lr / 10 after this fraction of a branch's epochs (paper: after 30 of 50)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    select_metric: str = "auc"  # val metric choosing each branch's best epoch: "auc", "accuracy" or "source_auc"
    augment: bool = True
    zero_init_residual: bool = True  # random init: each ResNet bottleneck's last BN starts at 0 (see ``initialise``)
    max_train_per_group: int | None = None  # training slices kept per (source, label); None = all
    models_dir: str = "weights"  # registry folder holding the infection and lung models
    infection_model: str | None = "ct-infection-infnet"  # card name; None = no infection model (sub-images blank; tests only)
    lung_model: str | None = "ct-lungs-resunet"  # card name; None = no lung mask (midline = image centre)
    half_tolerance: float = 0.005  # largest test-AUC change that still allows storing fp16 weights


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True),
    # Both backbones at quarter width, 128 px slices and 64 px local crops (a heat-map or infected region is a
    # fraction of the slice, so 64 px keeps about its native resolution), 3 seeds each, 8/5/5 epochs for G/H/I,
    # all of UCSD (the paper's D3) but 200 slices per source and label (767 training slices). Measured with
    # ``--threads 1`` on the shared 2-core CPU (load ~3), training slices/s ResNet50 / DenseNet169: G 52 / 33,
    # H 184 / 91, I 97 / 40 (two sub-images each); infected regions (slim Inf-Net 192 px + lung ResUNet 160 px)
    # 12 slices/s, once. Whole run about 36 minutes at those speeds. Two threads on a busy machine were 15x slower.
    "cpu-quick": Profile(
        backbone_seeds=(("resnet50", (0, 1, 2)), ("densenet169", (0, 1, 2))), width=0.25, size=128, crop_size=64,
        epochs_global=8, epochs_heatmap=5, epochs_infected=5, epochs_fusion=50, max_train_per_group=200,
    ),
    # The bundled ct-multisource-densenet169 2.0.0: cpu-quick's networks and crops, DenseNet169 only, one seed, every
    # training slice (2,109) and 12 global epochs. 17.4 minutes with --threads 1 on the 2-core CPU (another training
    # on the other core).
    "bundled": Profile(
        backbone_seeds=(("densenet169", (0,)),), width=0.25, size=128, crop_size=64,
        epochs_global=12, epochs_heatmap=5, epochs_infected=5, epochs_fusion=50,
    ),
    # Seconds on a generated pack: for tests only.
    "smoke": Profile(
        backbone_seeds=(("resnet50", (0, 1)), ("densenet169", (0,))), width=0.0625, size=32, crop_size=32,
        epochs_global=1, epochs_heatmap=1, epochs_infected=1, epochs_fusion=2, batch=8, infection_model=None,
        lung_model=None, max_steps_per_epoch=2, device="cpu",
    ),
}


def branch_epochs(profile: Profile) -> dict[str, int]:
    return {"global": profile.epochs_global, "heatmap": profile.epochs_heatmap, "infected": profile.epochs_infected,
            "fusion": profile.epochs_fusion, "global+heatmap": profile.epochs_fusion}


def architecture_config(profile: Profile, backbone: str) -> dict:
    """``create_model("multisource_fusion", **config)`` rebuilds the whole four-branch net (the registry card's config)."""
    return {"backbone": backbone, "in_channels": 1, "num_classes": 1, "width": profile.width}


# ---------------------------------------------------------------- data: decoded once
@dataclass
class SliceData:
    """The slices in use: labels, sources, splits, native uint8 pixels and the uint8 global inputs."""

    records: list
    labels: np.ndarray  # 1 = covid
    sources: list
    splits: np.ndarray
    native: list  # uint8 2-D arrays at the file's own size (what serving sees, as 8-bit exports)
    global_u8: torch.Tensor  # (N, size, size) uint8

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def pixels(self, i: int) -> np.ndarray:
        """Slice ``i`` as float32 in [0, 1], as ``core.io`` / ``ct_model_pixels`` give an 8-bit export."""
        return self.native[i].astype(np.float32) / 255.0


def chosen_records(records, profile: Profile) -> list:
    """train / val / test records, the training split subsampled per (source, label) with a fixed seed."""
    records = [r for r in records if r.split in ("train", "val", "test")]
    train = [r for r in records if r.split == "train"]
    keep = subsample_per_class([f"{r.source}/{r.label}" for r in train], profile.max_train_per_group, seed=0)
    return [train[i] for i in keep] + [r for r in records if r.split != "train"]


def native_slices(paths: list[Path]) -> list[np.ndarray]:
    """uint8 greyscale slices at their own size, decoded once and cached as one flat array."""
    key = hashlib.sha256("|".join(map(str, paths)).encode()).hexdigest()[:20]
    cache = cache_dir() / f"native-slices-{key}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            flat, shapes = stored["flat"], stored["shapes"]
    else:
        arrays = []
        for path in progress_bar(paths, desc="decoding slices", leave=False):
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("L"), dtype=np.uint8))
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8)
        shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 2)
        save_cache(cache, {"flat": flat, "shapes": shapes})
    ends = np.cumsum([h * w for h, w in shapes])
    return [flat[end - h * w:end].reshape(h, w) for end, (h, w) in zip(ends, shapes)]


def load_slices(records, profile: Profile) -> SliceData:
    chosen = chosen_records(records, profile)
    return SliceData(
        records=chosen, labels=np.array([int(r.label == "covid") for r in chosen], dtype=np.int64),
        sources=[r.source for r in chosen], splits=np.array([r.split for r in chosen]),
        native=native_slices([r.image for r in chosen]), global_u8=torch.from_numpy(image_stack(chosen, profile.size)),
    )


def to_u8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)


def min_max_u8(batch_u8: torch.Tensor) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, S, S) per-image min-max to [0, 1] (``core.preprocess.min_max``); blank stays 0."""
    x = batch_u8.float()[:, None]
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return (x - low) / (high - low).clamp(min=1e-8)


# ---------------------------------------------------------------- infected regions (the infection model, once)
@dataclass
class InfectedRegions:
    crops: torch.Tensor  # (N, 2, crop, crop) uint8: the patient's right side (image left) then left side
    present: torch.Tensor  # (N, 2) bool: a box was found on that side
    boxes: np.ndarray  # (N, 2, 4) int rows/cols start-stop at the native size, -1 where absent
    infected_fraction: np.ndarray  # (N,) infected pixels / slice pixels
    lung_fraction: np.ndarray  # (N,) lung pixels / slice pixels (nan without a lung model)


def registry_model(profile: Profile, name: str | None, task: str, device):
    """(network in eval mode, card) of a registry model the recipe builds inputs with, or (None, None)."""
    if name is None:
        return None, None
    from core.errors import ModelError
    from core.registry import Registry

    registry = Registry.open(Path(profile.models_dir))
    card = registry.card(name)
    if card.task != task:
        raise ModelError(f"Model {name!r} in {profile.models_dir} is a {card.task} model, not {task}. "
                         f"Pass the right card with --set {'infection' if 'infection' in task else 'lung'}_model=NAME.")
    return registry.load_torch(card, device), card


def small_probabilities(model, card, pixels: list[np.ndarray], device) -> list[np.ndarray]:
    """Sigmoid maps at the model's own size, averaged over the card's test-time views as served, batched."""
    def run(grey: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(grey).to(device)).float().cpu().numpy()

    return list(infection_probability_views(run, lambda size: np.stack([segmenter_input(p, size) for p in pixels]),
                                            card.input_size, InfectionViews.of(card)))


def _box_array(box) -> list[int]:
    return [-1] * 4 if box is None else [box[0].start, box[0].stop, box[1].start, box[1].stop]


def _as_box(row) -> tuple | None:
    return None if row[0] < 0 else (slice(int(row[0]), int(row[1])), slice(int(row[2]), int(row[3])))


def infected_regions(data: SliceData, profile: Profile, device) -> tuple[InfectedRegions, dict]:
    """Left/right infected sub-images of every slice, as ``core.pipelines.ct_slice`` builds them; cached on disk."""
    infection, infection_card = registry_model(profile, profile.infection_model, "ct-infection-segmentation", device)
    lungs, lung_card = registry_model(profile, profile.lung_model, "ct-lung-segmentation", device)
    models = {"infection_model": profile.infection_model, "lung_model": profile.lung_model,
              "infection_sha256": infection_card.weights_sha256 if infection_card else None,
              "infection_views": InfectionViews.of(infection_card).as_config() if infection_card else None,
              "lung_sha256": lung_card.weights_sha256 if lung_card else None}
    key = hashlib.sha256(json.dumps([models, profile.crop_size, INFECTION_THRESHOLD, "regions touching the lungs",
                                     [str(r.image) for r in data.records]]).encode()).hexdigest()[:20]
    cache = cache_dir() / f"multisource-infected-{key}.npz"
    started = time.perf_counter()
    if cache.exists():
        with np.load(cache) as stored:
            arrays = dict(stored)
    else:
        arrays = _compute_regions(data, profile, (infection, infection_card), (lungs, lung_card), device)
        save_cache(cache, arrays)
    regions = InfectedRegions(torch.from_numpy(arrays["crops"]), torch.from_numpy(arrays["present"]),
                              arrays["boxes"], arrays["infected_fraction"], arrays["lung_fraction"])
    return regions, models | {"seconds": round(time.perf_counter() - started, 1)}


def _compute_regions(data: SliceData, profile: Profile, infection, lungs, device) -> dict[str, np.ndarray]:
    n, size = len(data.records), profile.crop_size
    crops = np.zeros((n, 2, size, size), np.uint8)
    present = np.zeros((n, 2), bool)
    boxes = np.full((n, 2, 4), -1, np.int64)
    infected_fraction, lung_fraction = np.zeros(n), np.full(n, np.nan)
    for start in progress_bar(range(0, n, 32), desc="infected regions", leave=False):
        batch = list(range(start, min(start + 32, n)))
        pixels = [data.pixels(i) for i in batch]
        infection_small = small_probabilities(*infection, pixels, device) if infection[0] is not None else None
        lung_small = small_probabilities(*lungs, pixels, device) if lungs[0] is not None else None
        for j, i in enumerate(batch):
            shape = pixels[j].shape
            lung_mask = lung_mask_from_probability(probability_to_shape(lung_small[j], shape)) if lung_small else None
            infection_prob = probability_to_shape(infection_small[j], shape) if infection_small is not None else None
            if infection_prob is None:
                infected = np.zeros(shape, bool)
            elif lung_mask is None:
                infected = infection_prob >= INFECTION_THRESHOLD
            else:
                infected, lung_mask = infection_and_lungs(infection_prob, lung_mask)
            sides = infected_side_boxes(infected.astype(np.uint8), lung_mask)
            for k, side in enumerate(("right", "left")):
                present[i, k] = sides[side] is not None
                boxes[i, k] = _box_array(sides[side])
                crops[i, k] = to_u8(crop_to_square(pixels[j], sides[side], size))
            infected_fraction[i] = infected.mean()
            if lung_mask is not None:
                lung_fraction[i] = lung_mask.mean()
    return {"crops": crops, "present": present, "boxes": boxes, "infected_fraction": infected_fraction,
            "lung_fraction": lung_fraction}


# ---------------------------------------------------------------- heat-map crops (from a trained global branch)
def global_pass(global_branch, data: SliceData, profile: Profile, device, indices=None) -> dict:
    """Pool_g and the heat-map crop (Eq. 1-2, largest region, at the slice's own size) of every slice."""
    indices = np.arange(len(data.records)) if indices is None else np.asarray(indices)
    size = profile.crop_size
    pooled = np.zeros((len(indices), global_branch.feature_dim), np.float32)
    crops = np.zeros((len(indices), size, size), np.uint8)
    boxes = np.full((len(indices), 4), -1, np.int64)
    global_branch.eval()
    for start in progress_bar(range(0, len(indices), 64), desc="heat-map crops", leave=False):
        chunk = indices[start:start + 64]
        with torch.no_grad():
            features = global_branch.features(min_max_u8(data.global_u8[chunk]).to(device)).float()
            pooled[start:start + len(chunk)] = global_branch.pool(features).flatten(1).cpu().numpy()
        features = features.cpu().numpy()
        for j, i in enumerate(chunk):
            pixels = data.pixels(i)
            box = heatmap_crop_box(heatmap_from_features(features[j], pixels.shape), profile.tau)
            boxes[start + j] = _box_array(box)
            crops[start + j] = to_u8(crop_to_square(pixels, box, size))
    return {"pooled": pooled, "crops": torch.from_numpy(crops), "boxes": boxes}


# ---------------------------------------------------------------- one branch's training
def image_prepare(augment: bool):
    """Stored (uint8 image,) -> (N, 1, S, S) in [0, 1]; augmented while training."""

    def prepare(stored, device, training):
        x = min_max_u8(stored[0]).to(device)
        if training and augment:
            x, _ = AUGMENT(x)
        return (x,)

    return prepare


def infected_prepare(augment: bool):
    """Stored (sub-images (N, 2, C, C) uint8, present (N, 2), Pool_g) -> (right side, left side, Pool_g).

    The sides go in as ``core.pipelines.ct_slice`` feeds them: the patient's right (image left) first.
    A side without infection stays blank, augmented or not (as served).
    """

    def prepare(stored, device, training):
        crops, present, pooled = stored
        sides = []
        for k in (0, 1):
            x = min_max_u8(crops[:, k]).to(device)
            if training and augment:
                x, _ = AUGMENT(x)
            sides.append(x * present[:, k].to(device).view(-1, 1, 1, 1).float())
        return sides[0], sides[1], pooled.float().to(device)

    return prepare


def features_prepare(stored, device, training):
    return (stored[0].float().to(device),)


def auc_or_half(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; 0.5 where one class is missing (tiny synthetic splits)."""
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else 0.5


def val_scores(labels: np.ndarray, probs: np.ndarray, sources: list) -> dict:
    """AUC, accuracy and the mean of the per-source AUCs (a pooled AUC can rise by telling the sources apart)."""
    sources = np.asarray(sources)
    per_source = [auc_or_half(labels[sources == s], probs[sources == s]) for s in sorted(set(sources))]
    return {"auc": auc_or_half(labels, probs), "accuracy": float(((probs >= 0.5) == labels).mean()),
            "source_auc": float(np.mean(per_source))}


def fit_branch(model, train: ArraySet, val: ArraySet, prepare, profile: Profile, epochs: int, out_dir: Path,
               seed: int) -> dict:
    """SGD + BCE on the single logit, lr / 10 after ``lr_drop_at`` of the epochs, best epoch on val.

    Returns the fit's statistics; ``model`` holds the best epoch's weights, in eval mode.
    """
    seed_everything(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=profile.lr, momentum=profile.momentum, weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, max(1, round(profile.lr_drop_at * epochs)), 0.1)
    counted = {"images": 0, "eval_seconds": 0.0}

    def loss_step(net, index):
        counted["images"] += len(index)
        inputs = prepare(tuple(x[index] for x in train.inputs), engine.device, True)
        return F.binary_cross_entropy_with_logits(net(*inputs)[:, 0].float(), train.labels[index].float().to(engine.device))

    def evaluate(net):
        started = time.perf_counter()
        probs = predict(net, val, prepare, engine.device)[:, 1]
        counted["eval_seconds"] += time.perf_counter() - started
        return val_scores(val.labels.numpy(), probs, val.sources)

    engine = Engine(model, optimizer, loss_step, evaluate, FitConfig.from_settings(profile, epochs, out_dir, profile.select_metric),
                    scheduler)
    started = time.perf_counter()
    engine.fit(shuffled_batches(len(train), profile.batch, seed))
    seconds = time.perf_counter() - started
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    train_seconds = seconds - counted["eval_seconds"]
    return {"seconds": round(seconds, 1), "images": counted["images"], "best_val": engine.best_score,
            "images_per_second": counted["images"] / train_seconds if counted["images"] else None}


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """A trained branch: no more gradients, batch-norm statistics fixed (Algorithm 2)."""
    module.requires_grad_(False)
    return module.eval()


def split_set(inputs: tuple, data: SliceData, indices: np.ndarray) -> ArraySet:
    return ArraySet(tuple(x[indices] for x in inputs), torch.from_numpy(data.labels[indices]), [data.sources[i] for i in indices])


def split_sets(inputs: tuple, data: SliceData, positions: dict) -> dict[str, ArraySet]:
    return {split: split_set(inputs, data, index) for split, index in positions.items()}


def initialise(fusion, profile: Profile):
    """Random init as torchvision's, plus ``zero_init_residual`` (Goyal et al. 2017): with no ImageNet weights,
    ResNet50's 16 residual sums otherwise give pooled features in the tens to hundreds (measured: mean 33), which
    saturate the FC layers that take them; starting each bottleneck as the identity keeps them O(1)."""
    from torchvision.models.resnet import Bottleneck

    if profile.zero_init_residual:
        for module in fusion.modules():
            if isinstance(module, Bottleneck):
                torch.nn.init.zeros_(module.bn3.weight)
    return fusion


class StandardisedHead(torch.nn.Module):
    """An FC trained on standardised cached features (mean 0, std 1 over the training split); ``fold()`` then
    writes the standardisation into the FC's own weights, so the served network is the plain FC over raw features
    (the paper's fusion layer) and computes exactly what was trained. Only the optimiser's conditioning changes."""

    def __init__(self, linear: torch.nn.Linear, train_features: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("mean", train_features.float().mean(0))
        self.register_buffer("std", train_features.float().std(0).nan_to_num(1.0).clamp(min=1e-3))

    def forward(self, features):
        return self.linear((features - self.mean) / self.std)

    def fold(self) -> torch.nn.Linear:
        with torch.no_grad():
            weight = self.linear.weight / self.std
            self.linear.bias -= (weight * self.mean).sum(1)
            self.linear.weight.copy_(weight)
        return self.linear


# ---------------------------------------------------------------- pooled features of frozen branches
def pooled_images(branch, images_u8: torch.Tensor, device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(images_u8), 64):
            out.append(branch.pooled(min_max_u8(images_u8[start:start + 64]).to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, branch.feature_dim), np.float32)


def pooled_infected(branch, regions: InfectedRegions, indices: np.ndarray, device) -> np.ndarray:
    """Pool_in = [pool(right side), pool(left side)]; a blank side (eval mode) gives one fixed vector, computed once."""
    with torch.no_grad():
        size = regions.crops.shape[-1]
        blank = branch.pool(branch.body(torch.zeros(1, 1, size, size, device=device))).flatten(1).float().cpu().numpy()
    sides = []
    for k in (0, 1):
        side = np.repeat(blank, len(indices), axis=0)
        found = np.flatnonzero(regions.present[indices, k].numpy())
        if len(found):
            crops = regions.crops[indices[found], k]
            with torch.no_grad():
                side[found] = np.concatenate([
                    branch.pool(branch.body(min_max_u8(crops[s:s + 64]).to(device))).flatten(1).float().cpu().numpy()
                    for s in range(0, len(crops), 64)])
        sides.append(side)
    return np.concatenate(sides, axis=1)


def row_logits(fusion, pairs: torch.nn.Module, pool_g, pool_h, pool_in) -> dict[str, np.ndarray]:
    """Every Table 1 row's logit from the frozen branches' pooled features (``FusionNet.branch_logits`` maths)."""
    g, h, i = (torch.from_numpy(x) for x in (pool_g, pool_h, pool_in))
    with torch.no_grad():
        logits = {
            "global": fusion.global_branch.fc(g), "heatmap": fusion.heatmap_branch.fc(h),
            "global+heatmap": pairs(torch.cat([g, h], 1)), "global+infected": fusion.infected_branch.fc(torch.cat([i, g], 1)),
            "fusion": fusion.fc(torch.cat([g, h, i], 1)),
        }
    return {name: value[:, 0].numpy() for name, value in logits.items()}


# ---------------------------------------------------------------- one trial: G -> H -> I -> F
def trial_dir(out_dir: Path, backbone: str, seed: int) -> Path:
    return Path(out_dir) / backbone / f"seed{seed}"


def run_trial(data: SliceData, regions: InfectedRegions, profile: Profile, backbone: str, seed: int, out_dir: Path) -> dict:
    """Algorithm 2 for one backbone and seed; everything lands in ``out_dir`` (resumable per branch)."""
    if (out_dir / "result.json").is_file():
        print(f"{backbone} seed {seed}: already trained, results loaded", flush=True)
        return json.loads((out_dir / "result.json").read_text())
    device = pick_device(profile.device)
    epochs = branch_epochs(profile)
    positions = {split: data.index(split) for split in ("train", "val", "test")}
    torch.manual_seed(seed)
    fusion = initialise(create_model("multisource_fusion", **architecture_config(profile, backbone)), profile)
    stages = []

    def stage(name, model, inputs, prepare):
        sets = split_sets(inputs, data, positions)
        started = time.time()
        stats = fit_branch(model, sets["train"], sets["val"], prepare, profile, epochs[name], out_dir / name, seed)
        stages.append({"branch": name, "started": started, "finished": time.time(), **stats})
        print(f"{backbone} seed {seed} {name}: best val {profile.select_metric} {stats['best_val']:.4f}, "
              f"{stats['images_per_second'] or float('nan'):.1f} training images/s", flush=True)
        return freeze(model)

    # Stage I: the global branch.
    stage("global", fusion.global_branch, (data.global_u8,), image_prepare(profile.augment))
    fusion.global_branch.to(device)
    started = time.perf_counter()
    heat = global_pass(fusion.global_branch, data, profile, device)
    prep = {"heatmap_crops": time.perf_counter() - started}
    # Stage II: heat-map and infected branches, the global branch frozen.
    stage("heatmap", fusion.heatmap_branch, (heat["crops"],), image_prepare(profile.augment))
    pool_g = torch.from_numpy(heat["pooled"])
    stage("infected", fusion.infected_branch, (regions.crops, regions.present, pool_g), infected_prepare(profile.augment))
    # Stage III: the fusion FC over the frozen branches' pooled features.
    fusion.to(device).freeze_branches()
    started = time.perf_counter()
    pool_h = pooled_images(fusion.heatmap_branch, heat["crops"], device)
    pool_in = pooled_infected(fusion.infected_branch, regions, np.arange(len(data.records)), device)
    prep["pooled_features"] = time.perf_counter() - started
    pool_f = torch.from_numpy(np.concatenate([heat["pooled"], pool_h, pool_in], 1))
    train = torch.from_numpy(positions["train"])
    head = StandardisedHead(fusion.fc, pool_f[train])
    stage("fusion", head, (pool_f,), features_prepare)
    head.fold()
    pool_gh = torch.from_numpy(np.concatenate([heat["pooled"], pool_h], 1))
    pairs = StandardisedHead(torch.nn.Linear(pool_gh.shape[1], 1), pool_gh[train])  # Global + Heatmap: FC over [Pool_g, Pool_h]
    stage("global+heatmap", pairs, (pool_gh,), features_prepare)
    pairs = pairs.fold()
    fusion.cpu()
    if is_main_process():
        torch.save(fusion.state_dict(), out_dir / "fusion_model.pt")
    logits = row_logits(fusion, pairs.cpu(), heat["pooled"], pool_h, pool_in)
    result = trial_result(data, logits, positions, backbone, seed, stages)
    result["prep_seconds"] = {k: round(v, 1) for k, v in prep.items()}  # per-slice passes of frozen branches
    if is_main_process():
        np.savez(out_dir / "outputs.npz", heat_crops=heat["crops"].numpy(), heat_boxes=heat["boxes"],
                 test_features=pool_f.numpy()[positions["test"]].astype(np.float16),
                 **{f"prob_{name}": sigmoid(value) for name, value in logits.items()})
    reports.write_json(out_dir / "result.json", result)
    return result


def trial_result(data: SliceData, logits: dict, positions: dict, backbone: str, seed: int, stages: list) -> dict:
    out = {"backbone": backbone, "seed": seed, "stages": stages, "val": {}, "test": {}}
    for name, value in logits.items():
        prob = sigmoid(value)
        val = positions["val"]
        out["val"][name] = val_scores(data.labels[val], prob[val], [data.sources[i] for i in val])
        out["test"][name] = evaluation(data, prob, positions["test"])
    return out


def evaluation(data: SliceData, prob: np.ndarray, index: np.ndarray) -> dict:
    """The classification report (accuracy, per-class F1, confusion, per source) plus AUC overall and per source."""
    labels, p = data.labels[index], prob[index]
    sources = [data.sources[i] for i in index]
    report = classification_report(labels, np.stack([1 - p, p], 1), list(CLASSES), sources, positive="covid")
    report["auc"] = auc_or_half(labels, p)
    for source, values in report.get("per_source", {}).items():
        pick = np.array([s == source for s in sources])
        values["auc"] = auc_or_half(labels[pick], p[pick])
    return report


# ---------------------------------------------------------------- selection and the fp16 check
def select_trial(trials: list[dict], metric: str = "auc") -> dict:
    """The (backbone, seed) whose fusion has the best validation ``metric``, then accuracy (never test)."""
    return max(trials, key=lambda t: (t["val"]["fusion"][metric], t["val"]["fusion"]["accuracy"]))


def load_fusion(run_dir: Path, profile: Profile, backbone: str, seed: int):
    model = create_model("multisource_fusion", **architecture_config(profile, backbone))
    state = torch.load(trial_dir(run_dir, backbone, seed) / "fusion_model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def half_state(state: dict) -> dict:
    """Floating-point tensors to float16 (batch-norm counters stay integers)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def full_forward(model, data: SliceData, regions: InfectedRegions, heat_crops: torch.Tensor, index: np.ndarray,
                 device) -> np.ndarray:
    """P(covid) of the whole four-input network, as served: (global, heat-map crop, right side, left side)."""
    out = []
    model.to(device).eval()
    with torch.no_grad():
        for start in range(0, len(index), 64):
            chunk = index[start:start + 64]
            present = regions.present[chunk].float().view(-1, 2, 1, 1, 1)
            inputs = (min_max_u8(data.global_u8[chunk]), min_max_u8(heat_crops[chunk]),
                      min_max_u8(regions.crops[chunk, 0]) * present[:, 0], min_max_u8(regions.crops[chunk, 1]) * present[:, 1])
            out.append(torch.sigmoid(model(*(x.to(device) for x in inputs)).float())[:, 0].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def half_precision_check(run_dir: Path, profile: Profile, selected: dict, data: SliceData, regions: InfectedRegions) -> dict:
    """Test AUC of the selected fusion net with fp32 weights and with the weights rounded to fp16."""
    model = load_fusion(run_dir, profile, selected["backbone"], selected["seed"])
    stored = np.load(trial_dir(run_dir, selected["backbone"], selected["seed"]) / "outputs.npz")
    heat_crops, cached = torch.from_numpy(stored["heat_crops"]), stored["prob_fusion"]
    test, device = data.index("test"), pick_device(profile.device)
    fp32 = full_forward(model, data, regions, heat_crops, test, device)
    model.load_state_dict(half_state(model.state_dict()))  # fp16 values, loaded back into fp32 tensors as served
    fp16 = full_forward(model, data, regions, heat_crops, test, device)
    labels = data.labels[test]
    result = {"auc_fp32": auc_or_half(labels, fp32), "auc_fp16": auc_or_half(labels, fp16),
              "max_probability_change": float(np.abs(fp32 - fp16).max()) if len(test) else 0.0,
              "cached_vs_full_forward": float(np.abs(fp32 - cached[test]).max()) if len(test) else 0.0}
    result["auc_change"] = result["auc_fp16"] - result["auc_fp32"]
    result["store_half"] = abs(result["auc_change"]) <= profile.half_tolerance
    print(f"fp16 weights: test AUC {result['auc_fp32']:.4f} (fp32) -> {result['auc_fp16']:.4f} (fp16), change "
          f"{result['auc_change']:+.5f}, largest P(covid) change {result['max_probability_change']:.5f}; "
          f"stored as {'fp16' if result['store_half'] else 'fp32'}", flush=True)
    return result


# ---------------------------------------------------------------- the whole recipe
def read_records(root: Path):
    return read_ct_slice_records(root)


def run(records, out_dir: Path, profile_name: str = "cpu-quick", data_root: Path | None = None, **overrides) -> dict:
    profile, out_dir = start_run("multisource-ct", PROFILES, profile_name, out_dir, overrides)
    started = time.perf_counter()
    data = load_slices(records, profile)
    regions, region_models = infected_regions(data, profile, pick_device(profile.device))
    trials = [run_trial(data, regions, profile, backbone, seed, trial_dir(out_dir, backbone, seed))
              for backbone, seeds in profile.backbone_seeds for seed in seeds]
    selected = select_trial(trials, profile.select_metric)
    half = half_precision_check(out_dir, profile, selected, data, regions)
    summary = {
        "selected": {"backbone": selected["backbone"], "seed": selected["seed"], "val": selected["val"]["fusion"],
                     "test": selected["test"]["fusion"], "branches_test": {k: v["auc"] for k, v in selected["test"].items()}},
        "half_precision": half, "region_models": region_models, "sizes": split_sizes(data),
        "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
        "trials": [{k: t.get(k) for k in ("backbone", "seed", "stages", "prep_seconds")} | {
            "val": t["val"], "test": {row: {m: t["test"][row][m] for m in ("accuracy", "auc")} for row in ROWS}}
            for t in trials],
    }
    if is_main_process():
        reports.write_json(out_dir / "summary.json", summary)
        # The order of every per-slice array of the run (outputs.npz): for serving checks and later analysis.
        reports.write_json(out_dir / "slices.json", [{"image": str(r.image), "source": r.source, "label": r.label,
                                                      "split": r.split} for r in data.records])
        print(f"report: {write_report(out_dir, profile_name, profile, data, regions, trials, summary)}")
    print(f"selected {selected['backbone']} seed {selected['seed']}: fusion test AUC {selected['test']['fusion']['auc']:.4f}, "
          f"accuracy {selected['test']['fusion']['accuracy']:.4f}; whole run {summary['seconds']:.0f} s", flush=True)
    return {"profile": profile, "trials": trials, "summary": summary}


def split_sizes(data: SliceData) -> dict:
    out: dict = {}
    for split, source, label in zip(data.splits, data.sources, data.labels):
        group = out.setdefault(split, {}).setdefault(source, {"covid": 0, "non-covid": 0})
        group[CLASSES[label]] += 1
    return out


# ---------------------------------------------------------------- report
def _mean_std(values) -> str:
    stats = mean_and_spread(values)
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats["n"] > 1 else f"{stats['mean']:.3f}"


def _covid_f1(report: dict) -> float:
    return report["per_class"]["covid"]["f1"]


def write_report(out_dir: Path, profile_name: str, profile: Profile, data: SliceData, regions: InfectedRegions,
                 trials: list[dict], summary: dict) -> Path:
    report = reports.Report(
        out_dir, f"Multi-source attention for CT slices, paper 002 ({profile_name} profile)",
        f"Run folder `{out_dir}`; settings in `config.json`. Backbones at width {profile.width} (random init: no "
        f"ImageNet weights here), {profile.size} px slices, {profile.crop_size} px local crops, tau = {profile.tau}. "
        f"Best epoch of every branch on the validation split ({profile.select_metric}); whole run "
        f"{summary['seconds'] / 60:.1f} min on {summary['threads']} thread(s).")
    _data_tables(report, summary, regions, data)
    _table1(report, trials)
    _per_trial_table(report, trials)
    _fusion_vs_global(report, trials)
    _per_source_table(report, trials)
    _speed_table(report, trials, summary)
    _selected_text(report, summary)
    figures = [("ROC on the test split (best-validation seed of each backbone)", _roc_figure(out_dir, data, trials)),
               ("t-SNE of the fusion features Pool_f, test split (selected model)", _tsne_figure(out_dir, data, summary)),
               ("Heat map (Eq. 1), its crop box (yellow, Eq. 2) and the infected boxes (red: patient's right, cyan: "
                "left) on test slices (selected model)", _region_grid(out_dir, profile, data, regions, summary)),
               ("Training curves", _curves(out_dir))]
    _faithfulness_table(report, out_dir, profile, data, summary)
    for title, file in figures:
        if file:
            report.figure(title, file)
    return report.write()


def _data_tables(report, summary: dict, regions: InfectedRegions, data: SliceData) -> None:
    rows = [[split, source, counts["covid"], counts["non-covid"]]
            for split in ("train", "val", "test") for source, counts in sorted(summary["sizes"].get(split, {}).items())]
    report.table("Slices per split and source", ["split", "source", "covid", "non-covid"], rows,
                 "Training split subsampled per (source, label) where the profile says so (`max_train_per_group`).")
    for source, note in CT_SLICE_SPLIT_NOTES.items():
        report.text(f"Split rule: {source}", note)
    models = summary["region_models"]
    rows = []
    for source in sorted(set(data.sources)):
        for label in (1, 0):
            pick = np.array([s == source for s in data.sources]) & (data.labels == label)
            if pick.any():
                present = regions.present.numpy()[pick]
                rows.append([source, CLASSES[label], int(pick.sum()), reports.fmt(float(present.any(1).mean()), 3),
                             reports.fmt(float(present.all(1).mean()), 3),
                             reports.fmt(float(np.median(regions.infected_fraction[pick])), 4)])
    report.table("Infected regions found by the infection model (all slices in use)",
                 ["source", "label", "n", "any side", "both sides", "median infected fraction of the slice"], rows,
                 f"Infection model `{models['infection_model']}`, lung model `{models['lung_model']}` "
                 f"(served maths: regions of probability >= {INFECTION_THRESHOLD} touching the lungs, boxes split at the lungs' midline).")


def _table1(report, trials: list[dict]) -> None:
    rows = []
    for backbone in dict.fromkeys(t["backbone"] for t in trials):
        own = [t for t in trials if t["backbone"] == backbone]
        for row in ROWS:
            tests = [t["test"][row] for t in own]
            paper = PAPER_TABLE1.get(backbone, {}).get(row, ("-", "-", "-"))
            rows.append([f"{ROW_TITLES[row]}, {backbone}", len(own), _mean_std([r["accuracy"] for r in tests]),
                         _mean_std([_covid_f1(r) for r in tests]), _mean_std([r["auc"] for r in tests]), *paper])
    report.table("Table 1: test split, mean ± std over seeds, next to the paper (ImageNet init, D3)",
                 ["method", "seeds", "accuracy", "F1 (covid)", "AUC", "paper accuracy", "paper F1", "paper AUC"], rows,
                 "The paper's figures are on UCSD COVID-CT (D3) alone with ImageNet weights; ours are random-init "
                 "networks on UCSD + SARS-CoV-2 CT (per source below).")


def _per_trial_table(report, trials: list[dict]) -> None:
    rows = [[t["backbone"], t["seed"]] + [f"{t['val'][row]['auc']:.3f} / {t['test'][row]['auc']:.3f}" for row in ROWS]
            for t in trials]
    report.table("Every trial: validation AUC / test AUC per row", ["backbone", "seed"] + [ROW_TITLES[r] for r in ROWS], rows)


def _fusion_vs_global(report, trials: list[dict]) -> None:
    rows = []
    for backbone in dict.fromkeys(t["backbone"] for t in trials):
        own = [t for t in trials if t["backbone"] == backbone]
        for metric in ("auc", "accuracy"):
            delta = [t["test"]["fusion"][metric] - t["test"]["global"][metric] for t in own]
            rows.append([backbone, metric, _mean_std(delta), f"{sum(d > 0 for d in delta)} of {len(delta)}"])
    report.table("Fusion minus Global, same seed (test split)", ["backbone", "metric", "difference mean ± std", "seeds better"], rows)


def _per_source_table(report, trials: list[dict]) -> None:
    rows = []
    for backbone in dict.fromkeys(t["backbone"] for t in trials):
        own = [t for t in trials if t["backbone"] == backbone]
        for row in ROWS:
            for source in own[0]["test"][row].get("per_source", {}):
                values = [t["test"][row]["per_source"][source] for t in own]
                rows.append([backbone, ROW_TITLES[row], source, values[0]["n"], _mean_std([v["accuracy"] for v in values]),
                             _mean_std([v["auc"] for v in values])])
    report.table("Per source (test split, mean ± std over seeds)", ["backbone", "method", "source", "n", "accuracy", "AUC"], rows,
                 "UCSD COVID-CT is the paper's D3; SARS-CoV-2 CT has no patient ids (optimistic, see the split rule).")


def _speed_table(report, trials: list[dict], summary: dict) -> None:
    rows = []
    for backbone in dict.fromkeys(t["backbone"] for t in trials):
        own = [t for t in trials if t["backbone"] == backbone]
        for branch in ("global", "heatmap", "infected", "fusion", "global+heatmap"):
            stages = [s for t in own for s in t["stages"] if s["branch"] == branch]
            speeds = [s["images_per_second"] for s in stages if s["images_per_second"]]
            rows.append([backbone, branch, reports.fmt(float(np.mean(speeds)), 1) if speeds else "-",
                         reports.fmt(float(np.mean([s["seconds"] for s in stages])), 1)])
        for step, title in (("heatmap_crops", "heat-map crops (G over every slice, Eq. 1-2)"),
                            ("pooled_features", "pooled features (H and I over every slice)")):
            seconds = [t["prep_seconds"][step] for t in own if t.get("prep_seconds")]
            rows.append([backbone, title, "-", reports.fmt(float(np.mean(seconds)), 1) if seconds else "-"])
    report.table(f"Training speed ({summary['threads']} thread(s); infected = two sub-images per slice; fusion and "
                 "global+heatmap train one FC on cached features)",
                 ["backbone", "branch", "training slices / s", "seconds per trial"], rows,
                 f"Infected regions (infection + lung models over every slice, cached): {summary['region_models']['seconds']} s.")


def _selected_text(report, summary: dict) -> None:
    selected, half = summary["selected"], summary["half_precision"]
    report.text("Selected model (exported)",
                f"`{selected['backbone']}` seed {selected['seed']}: best fusion validation AUC {selected['val']['auc']:.3f}; "
                f"test AUC {selected['test']['auc']:.3f}, accuracy {selected['test']['accuracy']:.3f}. Weights rounded "
                f"to fp16: test AUC {half['auc_fp32']:.4f} -> {half['auc_fp16']:.4f} (change {half['auc_change']:+.5f}, "
                f"largest P(covid) change {half['max_probability_change']:.5f}); stored as "
                f"{'fp16' if half['store_half'] else 'fp32'}. The four-input network run end to end matches the cached-"
                f"feature figures to {half['cached_vs_full_forward']:.2e}.")


def _save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _best_seed_per_backbone(trials: list[dict]) -> list[dict]:
    return [select_trial([t for t in trials if t["backbone"] == b]) for b in dict.fromkeys(t["backbone"] for t in trials)]


def _roc_figure(out_dir: Path, data: SliceData, trials: list[dict]) -> str | None:
    from sklearn.metrics import roc_curve

    test = data.index("test")
    labels = data.labels[test]
    if not 0 < labels.sum() < len(labels):
        return None
    chosen = _best_seed_per_backbone(trials)
    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 5), squeeze=False)
    for ax, trial in zip(axes[0], chosen):
        stored = np.load(trial_dir(out_dir, trial["backbone"], trial["seed"]) / "outputs.npz")
        for row in ROWS:
            fpr, tpr, _ = roc_curve(labels, stored[f"prob_{row}"][test])
            ax.plot(fpr, tpr, label=f"{ROW_TITLES[row]} ({trial['test'][row]['auc']:.3f})")
        ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{trial['backbone']} seed {trial['seed']}")
        ax.legend(loc="lower right", fontsize=7)
    _save_figure(fig, out_dir / "roc.png")
    return "roc.png"


def _tsne_figure(out_dir: Path, data: SliceData, summary: dict) -> str | None:
    from sklearn.manifold import TSNE

    selected = summary["selected"]
    features = np.load(trial_dir(out_dir, selected["backbone"], selected["seed"]) / "outputs.npz")["test_features"]
    test = data.index("test")
    if len(test) < 5:
        return None
    embedded = TSNE(n_components=2, perplexity=float(min(30, (len(test) - 1) / 3)), init="pca",
                    random_state=0).fit_transform(features.astype(np.float32))
    fig, ax = plt.subplots(figsize=(6, 5))
    markers = dict(zip(sorted(set(data.sources)), "o^sD"))
    for source, marker in markers.items():
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            pick = np.array([data.sources[i] == source and data.labels[i] == label for i in test])
            if pick.any():
                ax.scatter(*embedded[pick].T, s=10, marker=marker, c=colour, alpha=0.7, label=f"{source} {CLASSES[label]}")
    ax.set_title(f"t-SNE of Pool_f ({selected['backbone']} seed {selected['seed']})")
    ax.legend(fontsize=7)
    _save_figure(fig, out_dir / "tsne.png")
    return "tsne.png"


def _region_grid(out_dir: Path, profile: Profile, data: SliceData, regions: InfectedRegions, summary: dict,
                 per_class: int = 4) -> str | None:
    from matplotlib.patches import Rectangle

    selected = summary["selected"]
    model = load_fusion(out_dir, profile, selected["backbone"], selected["seed"])
    stored = np.load(trial_dir(out_dir, selected["backbone"], selected["seed"]) / "outputs.npz")
    test = data.index("test")
    sources = np.array(data.sources)[test]
    per_source = max(1, per_class // len(set(sources)))
    picks = [i for label in (1, 0) for source in sorted(set(sources))
             for i in test[(data.labels[test] == label) & (sources == source)][:per_source]]
    if not picks:
        return None
    fig, axes = plt.subplots(2, per_class, figsize=(3 * per_class, 6.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks):
        pixels = data.pixels(i)
        with torch.no_grad():
            features = model.global_branch.features(min_max_u8(data.global_u8[i:i + 1]))[0].numpy()
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heatmap_from_features(features, pixels.shape), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for row, colour in ((stored["heat_boxes"][i], "yellow"), (regions.boxes[i, 0], "red"), (regions.boxes[i, 1], "cyan")):
            box = _as_box(row)
            if box is not None:
                ax.add_patch(Rectangle((box[1].start - 0.5, box[0].start - 0.5), box[1].stop - box[1].start,
                                       box[0].stop - box[0].start, fill=False, edgecolor=colour, linewidth=1.5))
        ax.set_title(f"true {CLASSES[data.labels[i]]}, P(covid) {stored['prob_fusion'][i]:.2f}\n{data.sources[i]}", fontsize=8)
    _save_figure(fig, out_dir / "regions.png")
    return "regions.png"


def global_faithfulness(branch, data: SliceData, profile: Profile, device, per_class: int = 100) -> dict:
    """Heat map H (Eq. 1) of the global branch scored against the branch's own call on test slices
    (``core.faithfulness``, as the app scores a case): deletion on the global input grid, in-lung share against the
    lung model's mask on that grid (None without a lung model). At most ``per_class`` slices per class."""
    from core.faithfulness import deletion_score, in_lung_share
    from training.faithfulness import faithfulness_entry

    lungs = registry_model(profile, profile.lung_model, "ct-lung-segmentation", device)
    branch.eval()

    def probabilities(arrays) -> np.ndarray:
        with torch.no_grad():
            covid = float(torch.sigmoid(branch(torch.from_numpy(arrays[0][None]).to(device)).float().reshape(-1)[0]))
        return np.array([1.0 - covid, covid])

    test = data.index("test")
    scores: dict[str, list[dict]] = {name: [] for name in CLASSES}
    no_heat = 0
    for label, name in enumerate(CLASSES):
        for i in test[data.labels[test] == label][:per_class]:
            image = min_max_u8(data.global_u8[i:i + 1])
            with torch.no_grad():
                features = branch.features(image.to(device))[0].float().cpu().numpy()
            heat = heatmap_from_features(features, tuple(image.shape[-2:]))
            if not np.any(heat > 0):
                no_heat += 1
                continue
            arrays = [image[0].numpy()]
            row = deletion_score(probabilities, arrays, heat, int(probabilities(arrays)[1] >= 0.5))
            row["in_lung_share"] = None
            if lungs[0] is not None:
                lung_probability = small_probabilities(*lungs, [data.pixels(i)], device)[0]
                row["in_lung_share"] = in_lung_share(heat, lung_mask_from_probability(probability_to_shape(lung_probability, heat.shape)))
            scores[name].append(row)
    return faithfulness_entry(scores, 0, no_heat, per_class, "the recipe's report (training arrays, global branch)",
                              heat_map="heat map H (paper 002, Eq. 1)")


def _faithfulness_table(report, out_dir: Path, profile: Profile, data: SliceData, summary: dict) -> None:
    from training.faithfulness import add_faithfulness_table

    selected = summary["selected"]
    model = load_fusion(out_dir, profile, selected["backbone"], selected["seed"])
    entry = global_faithfulness(model.global_branch, data, profile, torch.device("cpu"))
    reports.write_json(out_dir / "faithfulness.json", entry)
    add_faithfulness_table(report, f"Heat-map faithfulness (H of the global branch, {selected['backbone']} seed "
                                   f"{selected['seed']}, test)", entry)


def _curves(out_dir: Path) -> str:
    logs = {p.parent.relative_to(out_dir).as_posix(): p for p in sorted(out_dir.glob("*/seed*/*/log.csv"))
            if p.parent.name in ("global", "heatmap", "infected")}
    reports.plot_training_curves(logs, out_dir / "curves.png")
    return "curves.png"


# ---------------------------------------------------------------- export support
def load_run(run_dir: Path) -> dict:
    """The selected fusion net of a finished run, its profile and its summary (for ``training.export``)."""
    from training.recipes import load_profile

    run_dir = Path(run_dir)
    name, profile = load_profile(run_dir, Profile)
    summary = json.loads((run_dir / "summary.json").read_text())
    selected = summary["selected"]
    return {"profile_name": name, "profile": profile, "summary": summary,
            "model": load_fusion(run_dir, profile, selected["backbone"], selected["seed"])}
