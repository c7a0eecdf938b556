"""Lung-segmentation training and evaluation shared by the MANet and UNet + HRNet recipes.

Images are cached as uint8 arrays at the training size; evaluation runs the served code
(``core.lung``) at each image's own resolution, with the recipe's post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.lung import lung_probability
from core.progress import progress_bar
from core.runtime import TorchModel
from models import create_model
from training.augment import AffineAugment
from training.data import CxrRecord, load_gray, stack_resized
from training.engine import Engine, FitConfig, pick_device, seed_everything, shuffled_batches
from training.losses import SEGMENTATION_LOSSES
from training.metrics import dice_iou, segmentation_report


@dataclass(frozen=True)
class SegmenterConfig:
    arch: str  # "resunet" (MANet) or "unet" (HRNet paper)
    widths: tuple
    size: int
    epochs: int
    batch: int
    lr: float
    weight_decay: float
    loss: str  # key of training.losses.SEGMENTATION_LOSSES
    augment: Callable  # (image, mask) batch transform
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    tensorboard: bool = False
    max_steps_per_epoch: int | None = None


def min_max_batch(batch_u8: torch.Tensor) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) per-image min-max to [0, 1], as ``core.preprocess.segmenter_input``."""
    x = batch_u8.float()[:, None]
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    return (x - low) / (high - low).clamp(min=1e-8)


def train_segmenter(train: list[CxrRecord], val: list[CxrRecord], config: SegmenterConfig, out_dir: Path):
    """Fit on image/mask pairs, keep the best validation Dice; returns the network in eval mode."""
    seed_everything(config.seed)
    images = {name: torch.from_numpy(stack_resized([r.image for r in rs], config.size)) for name, rs in (("train", train), ("val", val))}
    masks = {name: torch.from_numpy(stack_resized([r.lung_mask for r in rs], config.size, True)) for name, rs in (("train", train), ("val", val))}
    device = pick_device(config.device)
    loss_fn = SEGMENTATION_LOSSES[config.loss]

    def loss_step(net, index):
        x = min_max_batch(images["train"][index]).to(device)
        y = masks["train"][index].float()[:, None].to(device)
        x, y = config.augment(x, y)
        return loss_fn(net(x), y)

    def evaluate(net):
        dices = []
        for start in range(0, len(val), 16):
            pred = (net(min_max_batch(images["val"][start:start + 16]).to(device)) > 0).cpu().numpy()[:, 0]
            dices += [dice_iou(p, t)[0] for p, t in zip(pred, masks["val"][start:start + 16].numpy())]
        return {"dice": float(np.mean(dices))}

    model = create_model(config.arch, widths=config.widths)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Cosine decay: the last epochs refine boundaries at a small step instead of jumping around them.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.01)
    fit = FitConfig.from_settings(config, config.epochs, out_dir, "dice")
    engine = Engine(model, optimizer, loss_step, evaluate, fit, scheduler)
    engine.fit(shuffled_batches(len(train), config.batch, config.seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    return model.eval()


def evaluate_segmenter(model, records: list[CxrRecord], size: int, postprocess: Callable[[np.ndarray], np.ndarray],
                       group_by: dict[str, str] | None = None) -> dict:
    """Dice/IoU at each image's own resolution after ``postprocess``, per group of records.

    ``group_by``: report key -> record attribute (default: per class of image and per source).
    """
    segmenter = TorchModel(model, next(model.parameters()).device)
    dices, ious = [], []
    for record in progress_bar(records, desc="segmentation evaluation", leave=False):
        pred = postprocess(lung_probability(load_gray(record.image), segmenter, size) >= 0.5)
        dice, iou = dice_iou(pred, load_gray(record.lung_mask) > 0.5)
        dices.append(dice)
        ious.append(iou)
    group_by = group_by or {"by_class": "label", "by_source": "source"}
    return {key: segmentation_report(dices, ious, [getattr(r, attr) for r in records]) for key, attr in group_by.items()}


SEGMENTATION_AUGMENT = AffineAugment(rotate_degrees=10.0)
