"""MANet (Xu, Lam, Jia 2021): stage 1 ResUNet lung segmentation, stage 2 mask-attention classifier.

Profiles hold every setting. ``paper`` is the published configuration; ``bundled`` is what trains the
app's default models on a 2-core CPU in about an hour (smaller inputs, fewer epochs: see each field).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.classes import MANET_CLASSES
from core.lung import predict_lung_mask
from core.preprocess import classifier_input
from core.runtime import TorchModel
from models import create_model
from training.augment import CLASSIFICATION_AUGMENT, SEGMENTATION_AUGMENT
from training.data import CxrRecord, cache_dir, load_gray, read_cxr_records, stack_resized
from training.engine import Engine, FitConfig, pick_device, seed_everything
from training.losses import generalised_dice_loss
from training.metrics import classification_report, dice_iou, segmentation_report


@dataclass(frozen=True)
class Profile:
    seg_size: int = 512
    seg_widths: tuple = (32, 64, 128, 256, 512)
    seg_epochs: int = 50
    seg_batch: int = 64
    seg_lr: float = 2e-4
    seg_weight_decay: float = 1e-5
    cls_arch: str = "resnet50"
    cls_attention: str = "mask"
    cls_width: int = 64  # channels of the first stage (64 in the paper)
    cls_size: int = 224
    cls_epochs: int = 200
    cls_batch: int = 64
    cls_lr: float = 0.01
    cls_momentum: float = 0.9
    resolution_jitter: float = 0.0  # p of random down/up-sampling (counters the TB low-resolution shortcut)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    amp: bool = False


PROFILES = {
    "paper": Profile(),
    "bundled": Profile(
        seg_size=192, seg_widths=(16, 32, 64, 128, 256), seg_epochs=10, seg_batch=8, seg_lr=1e-3,
        # Half-width ResNet34: a quarter of the FLOPs and 21 MB of weights, so the served
        # files stay under the 100 MB bundle cap and training fits a 2-core CPU.
        cls_arch="resnet34", cls_width=32, cls_size=160, cls_epochs=10, cls_batch=32, cls_lr=0.02,
        resolution_jitter=0.3,
    ),
    "gpu": Profile(amp=True),
    # Seconds on tiny synthetic data: for tests only.
    "smoke": Profile(
        seg_size=32, seg_widths=(4, 8, 16), seg_epochs=1, seg_batch=4, seg_lr=1e-3,
        cls_arch="resnet34", cls_width=8, cls_size=32, cls_epochs=1, cls_batch=4, max_steps_per_epoch=2, device="cpu",
    ),
}


def shuffled_batches(count: int, batch: int, seed: int):
    """``epoch -> index batches``, reshuffled per epoch from (seed, epoch) so a resumed run sees the same order."""

    def batches(epoch):
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(count, generator=generator)
        return [order[i:i + batch] for i in range(0, count, batch)]

    return batches


# ---------------------------------------------------------------- stage 1: lung segmentation
def train_segmenter(records: list[CxrRecord], profile: Profile, out_dir: Path) -> dict:
    with_mask = [r for r in records if r.lung_mask is not None]
    train = [r for r in with_mask if r.split == "train"]
    val = [r for r in with_mask if r.split == "val"]
    seed_everything(profile.seed)
    images = {s: torch.from_numpy(stack_resized([r.image for r in rs], profile.seg_size)) for s, rs in (("train", train), ("val", val))}
    masks = {s: torch.from_numpy(stack_resized([r.lung_mask for r in rs], profile.seg_size, True)) for s, rs in (("train", train), ("val", val))}

    device = pick_device(profile.device)

    def to_input(batch_u8):  # per-image min-max, as core.preprocess.segmenter_input
        x = batch_u8.float()[:, None]
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        return (x - low) / (high - low).clamp(min=1e-8)

    def loss_step(net, batch):
        index = batch
        x = to_input(images["train"][index]).to(device)
        y = masks["train"][index].float()[:, None].to(device)
        x, y = SEGMENTATION_AUGMENT(x, y, background=0.0)
        return generalised_dice_loss(net(x), y)

    def evaluate(net):
        dices = []
        for start in range(0, len(val), 16):
            x = to_input(images["val"][start:start + 16]).to(device)
            pred = (net(x) > 0).cpu().numpy()[:, 0]
            dices += [dice_iou(p, t)[0] for p, t in zip(pred, masks["val"][start:start + 16].numpy())]
        return {"dice": float(np.mean(dices))}

    model = create_model("resunet", widths=profile.seg_widths)
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.seg_lr, weight_decay=profile.seg_weight_decay)
    config = FitConfig(profile.seg_epochs, out_dir, "dice", device=profile.device, amp=profile.amp,
                       max_steps_per_epoch=profile.max_steps_per_epoch)
    engine = Engine(model, optimizer, loss_step, evaluate, config)

    engine.fit(shuffled_batches(len(train), profile.seg_batch, profile.seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=device, weights_only=True))
    return model.eval()


def evaluate_segmenter(model, records: list[CxrRecord], profile: Profile, split: str = "test") -> dict:
    """Dice/IoU at the image's own resolution, after the served post-processing, per class and source."""
    device = next(model.parameters()).device
    segmenter = TorchModel(model, device)
    chosen = [r for r in records if r.lung_mask is not None and r.split == split]
    dices, ious = [], []
    for record in tqdm(chosen, desc=f"segmentation {split}", leave=False):
        pred = predict_lung_mask(load_gray(record.image), segmenter, profile.seg_size)
        dice, iou = dice_iou(pred, load_gray(record.lung_mask) > 0.5)
        dices.append(dice)
        ious.append(iou)
    return {
        "split": split,
        "by_class": segmentation_report(dices, ious, [r.label for r in chosen]),
        "by_source": segmentation_report(dices, ious, [r.source for r in chosen]),
    }


# ---------------------------------------------------------------- stage 2: mask-attention classifier
def classifier_arrays(records, segmenter_model, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Segmented images and predicted lung masks at the classifier's size, through the serving code."""
    device = next(segmenter_model.parameters()).device
    key = hashlib.sha256(str(profile.cls_size).encode() + "|".join(str(r.image) for r in records).encode())
    for tensor in segmenter_model.state_dict().values():
        key.update(tensor.detach().cpu().numpy().tobytes())
    cache = cache_dir() / f"classifier-inputs-{key.hexdigest()[:20]}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["masks"]
    segmenter = TorchModel(segmenter_model, device)
    images = np.zeros((len(records), profile.cls_size, profile.cls_size), np.float16)
    masks = np.zeros_like(images, dtype=np.uint8)
    for index, record in enumerate(tqdm(records, desc="lung masks for classification", leave=False)):
        pixels = load_gray(record.image)
        lung_mask = predict_lung_mask(pixels, segmenter, profile.seg_size)
        image, mask = classifier_input(pixels, lung_mask, profile.cls_size)
        images[index], masks[index] = image[0], mask[0]
    np.savez(cache, images=images, masks=masks)
    return images, masks


def _resolution_jitter(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """Down- then up-sample a random subset of the batch, so every class is seen at low resolution."""
    if p <= 0:
        return x
    size = x.shape[-1]
    pick = torch.rand(x.shape[0], generator=generator) < p
    if not pick.any():
        return x
    low = int(size * (0.35 + 0.4 * torch.rand(1, generator=generator).item()))
    small = F.interpolate(x[pick], size=(low, low), mode="bilinear", antialias=True, align_corners=False)
    x = x.clone()
    x[pick] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return x


def train_classifier(records, segmenter_model, profile: Profile, out_dir: Path):
    chosen = [r for r in records if r.label in MANET_CLASSES]
    seed_everything(profile.seed)
    images, masks = classifier_arrays(chosen, segmenter_model, profile)
    labels = np.array([MANET_CLASSES.index(r.label) for r in chosen])
    split = np.array([r.split for r in chosen])
    tensors = {
        s: (torch.from_numpy(images[split == s]), torch.from_numpy(masks[split == s]), torch.from_numpy(labels[split == s]))
        for s in ("train", "val", "test")
    }
    device = pick_device(profile.device)
    train_x, train_m, train_y = tensors["train"]

    def loss_step(net, index):
        x = train_x[index].float()[:, None]
        m = train_m[index].float()[:, None]
        x = _resolution_jitter(x, profile.resolution_jitter)
        x, m = CLASSIFICATION_AUGMENT(x.to(device), m.to(device), background=-1.0)
        x = torch.where(m > 0, x, torch.full_like(x, -1.0))  # keep the outside black after resampling
        return F.cross_entropy(net(x, m), train_y[index].to(device))

    def evaluate(net):
        probs = predict_probabilities(net, *tensors["val"][:2], device)
        return {"accuracy": float((probs.argmax(1) == tensors["val"][2].numpy()).mean())}

    model = create_model(
        profile.cls_arch, attention=profile.cls_attention, num_classes=len(MANET_CLASSES), width=profile.cls_width
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=profile.cls_lr, momentum=profile.cls_momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=profile.cls_epochs, eta_min=0.0)
    config = FitConfig(profile.cls_epochs, out_dir, "accuracy", device=profile.device, amp=profile.amp,
                       max_steps_per_epoch=profile.max_steps_per_epoch)
    engine = Engine(model, optimizer, loss_step, evaluate, config, scheduler)

    engine.fit(shuffled_batches(len(train_y), profile.cls_batch, profile.seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=device, weights_only=True))
    model.eval()
    test_x, test_m, test_y = tensors["test"]
    probs = predict_probabilities(model, test_x, test_m, device)
    sources = [r.source for r, s in zip(chosen, split) if s == "test"]
    report = classification_report(test_y.numpy(), probs, list(MANET_CLASSES), sources)
    return model, report


def predict_probabilities(net, images, masks, device, batch=64) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].float()[:, None].to(device)
            m = masks[start:start + batch].float()[:, None].to(device)
            out.append(torch.softmax(net(x, m).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(MANET_CLASSES)))


# ---------------------------------------------------------------- the whole recipe
def load_run(run_dir: Path) -> dict:
    """Rebuild ``run()``'s result from a finished run folder (best weights + test reports)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config.pop("profile")
    config["seg_widths"] = tuple(config["seg_widths"])
    profile = Profile(**config)
    segmenter = create_model("resunet", widths=profile.seg_widths)
    segmenter.load_state_dict(torch.load(run_dir / "segmenter" / "best.pt", map_location="cpu", weights_only=True))
    classifier = create_model(
        profile.cls_arch, attention=profile.cls_attention, num_classes=len(MANET_CLASSES), width=profile.cls_width
    )
    classifier.load_state_dict(torch.load(run_dir / "classifier" / "best.pt", map_location="cpu", weights_only=True))
    return {
        "profile": profile, "segmenter": segmenter.eval(), "classifier": classifier.eval(),
        "segmentation": json.loads((run_dir / "segmenter_test.json").read_text()),
        "classification": json.loads((run_dir / "classifier_test.json").read_text()),
    }



def run(data_root: Path, out_dir: Path, profile_name: str = "bundled", **overrides) -> dict:
    profile = replace(PROFILES[profile_name], **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({"profile": profile_name, **asdict(profile)}, indent=2))
    records = read_cxr_records(data_root)
    segmenter = train_segmenter(records, profile, out_dir / "segmenter")
    seg_report = evaluate_segmenter(segmenter, records, profile)
    (out_dir / "segmenter_test.json").write_text(json.dumps(seg_report, indent=2))
    print(f"lung segmentation test: dice={seg_report['by_class']['dice']:.4f} iou={seg_report['by_class']['iou']:.4f}")
    classifier, cls_report = train_classifier(records, segmenter, profile, out_dir / "classifier")
    (out_dir / "classifier_test.json").write_text(json.dumps(cls_report, indent=2))
    print(f"classification test: accuracy={cls_report['accuracy']:.4f} macro_f1={cls_report['macro_f1']:.4f}")
    return {"profile": profile, "segmenter": segmenter, "classifier": classifier,
            "segmentation": seg_report, "classification": cls_report}
