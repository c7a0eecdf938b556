"""The image-kind gate: frontal chest radiograph / axial chest CT slice / other (no paper: the project's own).

PNG and JPEG uploads carry no modality, so the app asks a small classifier what the pixels show
(``core.guard.image_kind``). Classes (``KINDS``):

- ``chest-xray``: the pack's chest radiographs (``cxr``, every source, the pack's patient-wise split)
  and synthetic X-ray phantoms (``core.phantoms``: the app's demo cases must be called chest-xray);
- ``chest-ct``: the pack's CT slices (``ct_slices``: UCSD and SARS-CoV-2 CT; ``ct_infection``: MedSeg,
  ma2020 and the unlabelled COVID-SemiSeg pool, train only), split as ``training.ct_data`` says, and
  synthetic CT phantoms (``core.ct_phantoms``) when that module exists;
- ``other``: non-medical (and non-chest medical) images shipped offline with installed packages
  (scikit-image's sample images, scikit-learn's two sample photos, Matplotlib's sample data),
  turned into many samples by random crops, rotations, flips, inversions, colour-to-grey mixes and
  gamma. Whole source images are held out (``PHOTO_SPLITS``): no photo is in two splits.

Phantom seeds: ``range(phantom_train_seeds)`` train, ``PHANTOM_VAL_SEEDS`` validation, and the test
seeds ``PHANTOM_TEST_SEEDS`` are drawn at the demo size (512 px) and classified through the served
input maths (``core.preprocess.segmenter_input`` of ``to_study().pixels``).

Input: one grey channel, ``segmenter_input(pixels, size)`` (resize to a square, per-image min-max),
the registry's ``grey`` input kind; training indexes uint8 caches decoded once and min-maxes each batch
(``training.segmentation.min_max_batch``, the same maths). Network: COVID-CXNet's base CNN
(``cxnet_base``, one input channel, three outputs), class-weighted cross-entropy, Adam; the epoch
with the best validation accuracy is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.guard.image_kind import IMAGE_KINDS, PAGES, decide
from core.phantoms import make_phantom
from core.preprocess import resize_square, segmenter_input
from models import create_model
from training import reports
from training.augment import AffineAugment
from training.classification import ArraySet, fit_classifier, predict
from training.ct_data import (
    CT_INFECTION_SPLIT_NOTES,
    CT_SLICE_SPLIT_NOTES,
    read_ct_infection_records,
    read_ct_slice_records,
)
from training.data import cache_dir, read_cxr_records, save_cache, stack_resized
from training.engine import FitConfig, RunSettings, is_main_process, pick_device
from training.metrics import classification_report
from training.recipes import start_run
from training.segmentation import min_max_batch

KINDS = IMAGE_KINDS  # ("chest-xray", "chest-ct", "other")
DATA_COLLECTIONS = ("cxr", "ct_slices")  # what ``--data`` must hold (ct_infection is used when present)
SPLITS = ("train", "val", "test")

# Whole source images per split (groups: several arrays of one scene share a split). Everything not
# listed trains. The test photos cover each family seen in training: photos, documents, textures,
# astronomy, microscopy and non-chest medical images.
PHOTO_SPLITS = {
    "astronaut": "test", "coffee": "test", "coins": "test", "page": "test", "hubble_deep_field": "test",
    "retina": "test", "china": "test", "grace_hopper": "test", "brick": "test", "immunohistochemistry": "test",
    "flower": "val", "microaneurysms": "val", "jacksboro_fault_dem": "val", "clock": "val", "logo2": "val",
}
PHANTOM_VAL_SEEDS = range(500, 503)
PHANTOM_TEST_SEEDS = range(1000, 1010)
PHANTOM_TEST_SIZE = 512  # the demo cases' size


@dataclass(frozen=True)
class Profile(RunSettings):
    size: int = 128
    arch: str = "cxnet_base"
    epochs: int = 40
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_per_source: dict | None = None  # split -> cap per source (None: every image)
    photo_variants: tuple = (400, 40, 40)  # augmented samples per photo group in train / val / test
    phantom_train_seeds: int = 40  # per phantom label
    phantom_size: int = 256  # training phantoms (test phantoms: PHANTOM_TEST_SIZE)
    phantom_test_seeds: int = len(PHANTOM_TEST_SEEDS)
    seed: int = 0


PROFILES = {
    "full": Profile(),
    # ~10 minutes on one CPU thread (most of it decoding and drawing phantoms, once: cached).
    "cpu-quick": Profile(size=96, epochs=16, batch=64, max_per_source={"train": 160, "val": 40, "test": 100},
                         photo_variants=(100, 12, 20), phantom_train_seeds=12, phantom_size=192),
    # cpu-quick at 128 px, three times the images per source, 20 epochs: 15 minutes on one thread (the bundled 2.0.0).
    "cpu-long": Profile(size=128, epochs=20, batch=64, max_per_source={"train": 500, "val": 60, "test": 100},
                        photo_variants=(300, 12, 20), phantom_train_seeds=24, phantom_size=192),
    "smoke": Profile(size=64, epochs=1, batch=16, max_per_source={"train": 6, "val": 3, "test": 4},
                     photo_variants=(3, 2, 2), phantom_train_seeds=1, phantom_size=64, phantom_test_seeds=1,
                     max_steps_per_epoch=3, device="cpu"),
}


# ---------------------------------------------------------------- pack images
@dataclass(frozen=True)
class PackImage:
    path: Path
    kind: str
    source: str  # collection/source, e.g. "cxr/nih", "ct_slices/sarscov2-ct", "ct_infection/ma2020-slices"
    split: str


def read_records(root: Path) -> list[PackImage]:
    """Every pack image the gate learns from, with its kind, source and split."""
    root = Path(root)
    images = [PackImage(r.image, "chest-xray", f"cxr/{r.source}", r.split) for r in read_cxr_records(root)]
    images += [PackImage(r.image, "chest-ct", f"ct_slices/{r.source}", r.split) for r in read_ct_slice_records(root)]
    if (root / "ct_infection" / "labels.csv").is_file():
        for r in read_ct_infection_records(root):
            if r.subset == "multiclass-train":
                continue  # the same slices as doctor-label
            split = "train" if r.split == "unlabelled" else r.split
            images.append(PackImage(r.image, "chest-ct", f"ct_infection/{r.subset}", split))
    return images


def capped(images: list[PackImage], caps: dict | None, seed: int) -> list[PackImage]:
    """At most ``caps[split]`` random images per source and split (deterministic)."""
    if not caps:
        return images
    rng = np.random.default_rng(seed)
    kept = []
    for key in sorted({(i.source, i.split) for i in images}):
        members = [i for i in images if (i.source, i.split) == key]
        cap = caps.get(key[1])
        kept += members if cap is None or len(members) <= cap else [members[j] for j in sorted(rng.choice(len(members), cap, replace=False))]
    return kept


# ---------------------------------------------------------------- negatives shipped with packages
def _grey_or_rgb(array) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) from any sample array (bool, float, RGBA)."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., :3]
    if array.dtype == bool:
        array = array.astype(np.float64)
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = np.nanmin(array), np.nanmax(array)
        array = (np.nan_to_num(array - low) / max(high - low, 1e-12) * 255).round()
    return np.clip(array, 0, 255).astype(np.uint8)


def _skimage(name):
    import skimage.data

    return [getattr(skimage.data, name)()]


def _matplotlib(filename):
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / filename
    if filename.endswith(".npz"):
        with np.load(path) as data:
            return [data["elevation" if "elevation" in data.files else "topo"]]
    if filename.endswith(".ima.gz"):  # a 256 x 256 16-bit MR head slice
        return [np.frombuffer(gzip.open(path).read(), np.uint16).reshape(256, 256)]
    with Image.open(path) as image:
        return [np.asarray(image.convert("RGB"))]


def _sklearn(filename):
    from sklearn.datasets import load_sample_image

    return [load_sample_image(filename)]


def _blobs():
    from skimage.data import binary_blobs

    return [binary_blobs(256, blob_size_fraction=f, volume_fraction=v, rng=s)
            for s, (f, v) in enumerate([(0.1, 0.5), (0.05, 0.3), (0.2, 0.6), (0.08, 0.4)])]


def _noise_fields():
    """Smooth random fields at several scales (clouds, blurs): 'other' images with no structure at all."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(7)
    return [ndi.gaussian_filter(rng.normal(size=(192, 192)), sigma) for sigma in (1, 3, 8, 20)]


PHOTO_LOADERS = {  # group -> loader of its arrays
    **{name: (lambda n=name: _skimage(n)) for name in (
        "astronaut", "camera", "coffee", "coins", "moon", "text", "page", "horse", "hubble_deep_field",
        "immunohistochemistry", "retina", "rocket", "brick", "grass", "gravel", "cell", "clock", "colorwheel",
        "checkerboard", "logo", "microaneurysms", "shepp_logan_phantom")},
    "chelsea": lambda: _skimage("chelsea") + _skimage("cat"),  # one photo of one cat, twice
    "motorcycle": lambda: list(__import__("skimage.data", fromlist=["x"]).stereo_motorcycle()[:2]),  # two views
    "china": lambda: _sklearn("china.jpg"),
    "flower": lambda: _sklearn("flower.jpg"),
    "grace_hopper": lambda: _matplotlib("grace_hopper.jpg"),
    "minduka": lambda: _matplotlib("Minduka_Present_Blue_Pack.png"),
    "logo2": lambda: _matplotlib("logo2.png"),
    "mr_head": lambda: _matplotlib("s1045.ima.gz"),
    "topobathy": lambda: _matplotlib("topobathy.npz"),
    "jacksboro_fault_dem": lambda: _matplotlib("jacksboro_fault_dem.npz"),
    "faces": lambda: list(__import__("skimage.data", fromlist=["x"]).lfw_subset()),  # 100 faces + 100 other patches, 25 px
    "binary_blobs": _blobs,
    "noise": _noise_fields,
}


def negative_photos() -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """(group -> uint8 arrays, groups that could not be loaded offline)."""
    photos, missing = {}, []
    for group, loader in PHOTO_LOADERS.items():
        try:
            photos[group] = [_grey_or_rgb(a) for a in loader()]
        except Exception:  # noqa: BLE001 - an optional sample needing a download (pooch) or absent here
            missing.append(group)
    return photos, missing


def photo_split(group: str) -> str:
    return PHOTO_SPLITS.get(group, "train")


def _to_grey(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour to grey as uploads arrive: luma (as ``core.io``) mostly, else one channel or a random mix."""
    if image.ndim == 2:
        return image.astype(np.float64) / 255.0
    rgb = image.astype(np.float64) / 255.0
    draw = rng.random()
    if draw < 0.5:
        weights = np.array([0.299, 0.587, 0.114])
    elif draw < 0.8:
        weights = np.eye(3)[rng.integers(3)]
    else:
        weights = rng.dirichlet(np.ones(3))
    return rgb @ weights


def photo_variant(image: np.ndarray, rng: np.random.Generator, size: int, plain: bool = False) -> np.ndarray:
    """One augmented (size, size) uint8 sample: crop, rotation, flips, inversion, gamma; ``plain``: the whole
    image in luma grey, as an upload would arrive."""
    from skimage.transform import rotate

    if plain:
        grey = image.astype(np.float64) / 255.0 if image.ndim == 2 else image[..., :3] @ np.array([0.299, 0.587, 0.114]) / 255.0
        return np.clip(resize_square(grey.astype(np.float32), size) * 255 + 0.5, 0, 255).astype(np.uint8)
    grey = _to_grey(image, rng)
    h, w = grey.shape
    if rng.random() < 0.8:  # a crop of 35-100 % of each side (the aspect ratio changes too)
        ch, cw = max(8, int(h * rng.uniform(0.35, 1))), max(8, int(w * rng.uniform(0.35, 1)))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        grey = grey[top:top + ch, left:left + cw]
    grey = np.rot90(grey, rng.integers(4)) if rng.random() < 0.3 else grey
    if rng.random() < 0.3:
        grey = rotate(grey, rng.uniform(-20, 20), mode="reflect" if rng.random() < 0.5 else "constant")
    grey = grey[:, ::-1] if rng.random() < 0.5 else grey
    grey = grey[::-1] if rng.random() < 0.2 else grey
    grey = 1 - grey if rng.random() < 0.3 else grey
    grey = np.clip(grey, 0, 1) ** rng.uniform(0.6, 1.6)
    return np.clip(resize_square(np.ascontiguousarray(grey, dtype=np.float32), size) * 255 + 0.5, 0, 255).astype(np.uint8)


def photo_bank(photos: dict[str, list[np.ndarray]], split: str, per_group: int, size: int, seed: int):
    """(N, size, size) uint8 samples of the split's photo groups and their sources (``photo/<group>``).

    Each group starts with its plain images (what a user would upload), then augmented ones. Cached on disk.
    """
    groups = sorted(g for g in photos if photo_split(g) == split)
    key = hashlib.sha256(repr((groups, [[a.shape for a in photos[g]] for g in groups], per_group, size, seed, split)).encode())
    cache = cache_dir() / f"image-kind-photos-{key.hexdigest()[:20]}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return data["images"], [str(s) for s in data["sources"]]
    images, sources = [], []
    for group in groups:
        rng = np.random.default_rng([seed, int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)])
        for index in range(per_group):
            array = photos[group][index % len(photos[group])]
            images.append(photo_variant(array, rng, size, plain=index < len(photos[group])))
            sources.append(f"photo/{group}")
    images = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    save_cache(cache, {"images": images, "sources": np.array(sources)})
    return images, sources


# ---------------------------------------------------------------- phantoms
def phantom_studies(seeds, size: int) -> list[tuple[str, str, object]]:
    """(kind, source, Study) for every X-ray phantom label and, when ``core.ct_phantoms`` exists, CT label."""
    out = []
    for label in ("normal", "covid", "tb", "bacterial", "viral"):
        out += [("chest-xray", f"phantom/cxr-{label}", make_phantom(label, seed, size).to_study()) for seed in seeds]
    ct = ct_phantom_module()
    if ct is not None:
        for label in ct.CT_PHANTOM_LABELS:
            out += [("chest-ct", f"phantom/ct-{label}", ct.make_ct_phantom(label, seed, size).to_study()) for seed in seeds]
    return out


def ct_phantom_module():
    try:
        from core import ct_phantoms
    except ImportError:
        return None
    return ct_phantoms


def phantom_bank(seeds, phantom_size: int, size: int):
    """Training/validation phantoms as uint8 (N, size, size) of the displayed pixels, kinds and sources (cached)."""
    seeds = list(seeds)
    key = hashlib.sha256(repr((seeds, phantom_size, size, ct_phantom_module() is not None)).encode())
    cache = cache_dir() / f"image-kind-phantoms-{key.hexdigest()[:20]}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return data["images"], [str(k) for k in data["kinds"]], [str(s) for s in data["sources"]]
    studies = phantom_studies(seeds, phantom_size) if seeds else []
    images = np.stack([np.clip(resize_square(s.pixels, size) * 255 + 0.5, 0, 255).astype(np.uint8) for _, _, s in studies]) \
        if studies else np.zeros((0, size, size), np.uint8)
    kinds, sources = [k for k, _, _ in studies], [src for _, src, _ in studies]
    save_cache(cache, {"images": images, "kinds": np.array(kinds), "sources": np.array(sources)})
    return images, kinds, sources


# ---------------------------------------------------------------- data sets
def build_sets(images: list[PackImage], profile: Profile) -> tuple[dict[str, ArraySet], dict]:
    """train / val / test ``ArraySet`` (uint8 images) from the pack, the photo banks and the phantoms."""
    photos, missing = negative_photos()
    chosen = capped(images, profile.max_per_source, profile.seed)
    sets, counts = {}, {}
    for index, split in enumerate(SPLITS):
        pack = [i for i in chosen if i.split == split]
        parts = [(stack_resized([i.path for i in pack], profile.size), [i.kind for i in pack], [i.source for i in pack])]
        bank, bank_sources = photo_bank(photos, split, profile.photo_variants[index], profile.size, profile.seed)
        parts.append((bank, ["other"] * len(bank), bank_sources))
        if split != "test":  # test phantoms are classified from their studies (``evaluate_phantoms``)
            seeds = range(profile.phantom_train_seeds) if split == "train" else PHANTOM_VAL_SEEDS
            parts.append(phantom_bank(seeds, profile.phantom_size, profile.size))
        arrays = np.concatenate([p[0] for p in parts])
        kinds = [k for p in parts for k in p[1]]
        sources = [s for p in parts for s in p[2]]
        labels = torch.tensor([KINDS.index(k) for k in kinds], dtype=torch.long)
        sets[split] = ArraySet((torch.from_numpy(arrays),), labels, sources)
        counts[split] = {kind: kinds.count(kind) for kind in KINDS}
    info = {"counts": counts, "missing_photos": missing,
            "photo_groups": {s: sorted(g for g in photos if photo_split(g) == s) for s in SPLITS}}
    return sets, info


# ---------------------------------------------------------------- training
AUGMENT = AffineAugment(shift=0.06, scale=0.15, rotate_degrees=12.0, p=0.5)


def prepare(stored, device, training):
    """uint8 (N, S, S) -> (N, 1, S, S) min-max per image, as served; training adds flips, affine moves, gamma."""
    x = min_max_batch(stored[0].to(device))
    if training:
        flip = torch.rand(x.shape[0], device=device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x, _ = AUGMENT(x)
        gamma = torch.empty(x.shape[0], 1, 1, 1, device=device).uniform_(0.7, 1.4)
        x = x.clamp(0, 1) ** gamma
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp(min=1e-8)
    return (x,)


def build_model(profile: Profile):
    return create_model(profile.arch, **architecture_config(profile))


def architecture_config(profile: Profile) -> dict:
    if profile.arch == "cxnet_base":
        return {"in_chans": 1, "input_size": profile.size, "num_outputs": len(KINDS)}
    return {"in_chans": 1, "num_outputs": len(KINDS)}


def class_weighted_ce(labels: torch.Tensor):
    counts = torch.bincount(labels, minlength=len(KINDS)).float().clamp(min=1)
    weights = counts.sum() / (len(KINDS) * counts)
    return lambda logits, target: F.cross_entropy(logits, target, weight=weights.to(logits.device))


def train_gate(sets: dict[str, ArraySet], profile: Profile, out_dir: Path):
    """The best-validation gate and the training speed (images per second, validation included)."""
    torch.manual_seed(profile.seed)
    model = build_model(profile)
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    config = FitConfig.from_settings(profile, profile.epochs, out_dir, "accuracy")
    started = time.perf_counter()
    model, best = fit_classifier(model, sets["train"], sets["val"], loss_fn=class_weighted_ce(sets["train"].labels),
                                 optimizer=optimizer, prepare=prepare, config=config, batch=profile.batch, seed=profile.seed)
    seconds = time.perf_counter() - started
    steps = -(-len(sets["train"]) // profile.batch)
    if profile.max_steps_per_epoch:
        steps = min(steps, profile.max_steps_per_epoch)
    seen = min(steps * profile.batch, len(sets["train"])) * profile.epochs
    return model, {"images_per_second": seen / seconds, "seconds": seconds, "images_seen": seen,
                   "best_val_accuracy": best, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- evaluation
def classify_studies(model, studies, size: int) -> np.ndarray:
    """Probabilities for ``Study`` objects through the served input maths (``segmenter_input``)."""
    device = next(model.parameters()).device
    x = np.stack([segmenter_input(s.pixels, size) for s in studies]).astype(np.float32)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x).to(device)).float(), 1).cpu().numpy()


def evaluate_phantoms(model, profile: Profile) -> dict:
    seeds = list(PHANTOM_TEST_SEEDS)[: profile.phantom_test_seeds]
    size = PHANTOM_TEST_SIZE if profile.phantom_size >= 128 else profile.phantom_size
    items = phantom_studies(seeds, size)
    probs = classify_studies(model, [s for _, _, s in items], profile.size)
    labels = np.array([KINDS.index(k) for k, _, _ in items])
    report = classification_report(labels, probs, list(KINDS), [src for _, src, _ in items], positive=None)
    return {"report": report, "probabilities": probs, "labels": labels, "sources": [src for _, src, _ in items],
            "seeds": seeds, "size": size, "ct_phantoms": ct_phantom_module() is not None}


def guard_outcomes(labels, probs) -> dict:
    """What ``core.guard.image_kind.decide`` does with each test image on each page: accept / warn / refuse."""
    out = {}
    for page in PAGES:
        table = {kind: {"accept": 0, "warn": 0, "refuse": 0} for kind in KINDS}
        for label, row in zip(labels, probs):
            verdict = decide(dict(zip(KINDS, map(float, row))), page)
            table[KINDS[label]][verdict.action] += 1
        out[page] = table
    return out


# ---------------------------------------------------------------- report
def _collection_rows(report: dict) -> list[list]:
    rows = []
    for source, values in report.get("per_source", {}).items():
        predicted = values["predicted"]
        rows.append([source, values["n"], ", ".join(values["labels"]), *[predicted[k] for k in KINDS],
                     reports.percent(values["accuracy"])])
    return rows


def write_report(out_dir: Path, profile_name: str, profile: Profile, results: dict) -> Path:
    test, phantoms, info, speed = results["test"], results["phantoms"], results["info"], results["speed"]
    report = reports.Report(out_dir, f"Image-kind gate ({profile_name} profile)", (
        f"Run folder `{out_dir}`; settings in `config.json`. `{profile.arch}` at {profile.size} px, one grey channel "
        "(`core.preprocess.segmenter_input`), classes chest-xray / chest-ct / other. Chest images: the data pack "
        "(`cxr`, `ct_slices`, `ct_infection`) with its splits; other: sample images shipped with scikit-image, "
        "scikit-learn and Matplotlib, augmented, whole photos held out; synthetic X-ray and CT phantoms."))
    counts = info["counts"]
    report.table("Data", ["split", *KINDS], [[split, *[counts[split][k] for k in KINDS]] for split in SPLITS],
                 f"Photo groups: train {', '.join(info['photo_groups']['train'])}; val "
                 f"{', '.join(info['photo_groups']['val'])}; test {', '.join(info['photo_groups']['test'])}."
                 + (f" Not available offline here: {', '.join(info['missing_photos'])}." if info["missing_photos"] else "")
                 + f" Phantoms: seeds 0-{profile.phantom_train_seeds - 1} train, {PHANTOM_VAL_SEEDS.start}-"
                 f"{PHANTOM_VAL_SEEDS.stop - 1} validation, {phantoms['seeds'][0]}-{phantoms['seeds'][-1]} test.")
    report.text("Split rules of the CT collections", "\n\n".join(
        f"- {note}" for note in [*CT_SLICE_SPLIT_NOTES.values(), *CT_INFECTION_SPLIT_NOTES.values()]))
    report.text("Training speed", (
        f"{speed['images_per_second']:.0f} training images/s on {speed['threads']} CPU thread(s) "
        f"({speed['images_seen']} images in {speed['seconds']:.0f} s, per-epoch validation included); "
        f"best validation accuracy {reports.percent(speed['best_val_accuracy'])} %."))
    report.table("Held-out test: confusion matrix (rows true, columns predicted)",
                 ["true \\ predicted", *KINDS], reports.confusion_rows(test),
                 f"Accuracy {reports.percent(test['accuracy'])} % on {test['n']} images.")
    report.table("Held-out test per source collection", ["source", "n", "true kind", *[f"as {k}" for k in KINDS], "accuracy %"],
                 _collection_rows(test))
    report.table("Held-out test: precision, recall and F1 per kind", reports.PER_CLASS_HEADERS, reports.per_class_rows(test))
    phantom_report = phantoms["report"]
    report.table(f"Synthetic phantoms ({phantoms['size']} px, test seeds): confusion matrix",
                 ["true \\ predicted", *KINDS], reports.confusion_rows(phantom_report),
                 ("" if phantoms["ct_phantoms"] else "core.ct_phantoms is absent: X-ray phantoms only. ")
                 + "Classified from `to_study()` through the served input maths.")
    report.table("Synthetic phantoms per label", ["phantom", "n", "true kind", *[f"as {k}" for k in KINDS], "accuracy %"],
                 _collection_rows(phantom_report))
    rows = []
    for page, table in results["guard"].items():
        for kind in KINDS:
            rows.append([PAGES[page], kind, *[table[kind][a] for a in ("accept", "warn", "refuse")]])
    report.table("What the guard does with the held-out test images (core.guard.image_kind.decide)",
                 ["page", "true kind", "accepted", "accepted with a warning", "refused"], rows,
                 "Refused when another kind has probability >= 0.80; a warning when the page's kind is below 0.50.")
    reports.plot_confusion(test["confusion_matrix"], list(KINDS), out_dir / "confusion-test.png", "held-out test")
    reports.plot_confusion(phantom_report["confusion_matrix"], list(KINDS), out_dir / "confusion-phantoms.png", "phantoms")
    report.figure("Confusion matrix, held-out test", "confusion-test.png")
    report.figure("Confusion matrix, phantoms", "confusion-phantoms.png")
    reports.plot_training_curves({"gate": out_dir / "gate" / "log.csv"}, out_dir / "curves.png")
    report.figure("Training curves", "curves.png")
    return report.write()


# ---------------------------------------------------------------- the whole recipe
def run(records: list[PackImage], out_dir: Path, profile_name: str = "cpu-quick", data_root: Path | None = None,
        **overrides) -> dict:
    profile, out_dir = start_run("image-kind", PROFILES, profile_name, out_dir, overrides)
    sets, info = build_sets(records, profile)
    print(f"image-kind data: {info['counts']}", flush=True)
    model, speed = train_gate(sets, profile, out_dir / "gate")
    device = pick_device(profile.device)
    probs = predict(model, sets["test"], prepare, device)
    test = classification_report(sets["test"].labels.numpy(), probs, list(KINDS), sets["test"].sources, positive=None)
    phantoms = evaluate_phantoms(model, profile)
    results = {"test": test, "phantoms": phantoms, "info": info, "speed": speed,
               "guard": guard_outcomes(sets["test"].labels.numpy(), probs)}
    if is_main_process():
        reports.write_json(out_dir / "test.json", {"report": test, "phantoms": phantoms["report"], "speed": speed,
                                                   "guard": results["guard"], "data": info,
                                                   "phantom_seeds": phantoms["seeds"], "phantom_size": phantoms["size"]})
        print(f"image-kind: test accuracy {test['accuracy']:.4f}, phantoms {phantoms['report']['accuracy']:.4f}, "
              f"{speed['images_per_second']:.0f} images/s", flush=True)
        print(f"report: {write_report(out_dir, profile_name, profile, results)}")
    return {"profile": profile, "model": model, **results}


def load_gate(run_dir: Path, profile: Profile):
    model = build_model(profile)
    model.load_state_dict(torch.load(Path(run_dir) / "gate" / "best.pt", map_location="cpu", weights_only=True))
    return model.eval()

