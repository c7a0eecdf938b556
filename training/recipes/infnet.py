"""Inf-Net (Fan et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2996645): CT infection segmentation.

Three stages, each the paper's:
1. **Inf-Net**, supervised on the labelled slices: deep supervision of the side outputs with the
   weighted BCE + weighted IoU loss, plus BCE on the edge map.
2. **Semi-Inf-Net** by the pseudo-label loop (Algorithm 1 of the multi-source paper, Sec. III-C of
   Inf-Net): pseudo-label ``semi_k`` random unlabelled slices with the current model, add them to the
   training set, fine-tune, repeat until the pool is used up.
3. **Multi-class Inf-Net**: the image and the Semi-Inf-Net infection probability into a network with a
   background / ground-glass / consolidation softmax, trained on the multi-class slices.

Data: the pack's ``ct_infection`` (``training.ct_data``: the split rules are printed in the report).
Binary training uses the MedSeg ``doctor-label`` slices and the ma2020 slices of the train split; the
main test set is ma2020's ``test`` split plus the 10 held-out MedSeg slices. Every slice is decoded
once into a uint8 cache; inputs are ``core.preprocess.segmenter_input`` maths (per-image min-max), as
served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.lung import probability_to_shape, sigmoid
from core.preprocess import segmenter_input
from core.progress import progress_bar
from models import create_model
from training import reports
from training.augment import CT_SEGMENTATION_AUGMENT
from training.ct_data import (CT_INFECTION_SPLIT_NOTES, MULTICLASS_LABELS, by_split, image_stack, infection_stack,
                              read_ct_infection_records)
from training.data import load_gray, load_label_map
from training.engine import Engine, FitConfig, RunSettings, is_main_process, pick_device, seed_everything, shuffled_batches
from training.losses import infnet_loss, multiclass_loss
from training.metrics import INFNET_TABLE_COLUMNS, infection_metrics, infection_table, multiclass_dice_report
from training.recipes import start_run
from training.segmentation import min_max_batch

DATA_COLLECTIONS = ("ct_infection",)
# Fan et al. 2020, Table II (COVID-SemiSeg test, 48 slices) and Table IV (multi-class, Dice), as published.
PAPER_BINARY = {
    "Inf-Net": {"dice": 0.682, "sensitivity": 0.692, "specificity": 0.943, "s_alpha": 0.781, "e_phi_mean": 0.838, "mae": 0.082},
    "Semi-Inf-Net": {"dice": 0.739, "sensitivity": 0.725, "specificity": 0.960, "s_alpha": 0.800, "e_phi_mean": 0.894, "mae": 0.064},
}
PAPER_MULTICLASS_DICE = {"ggo": 0.624, "consolidation": 0.362}


@dataclass(frozen=True)
class Profile(RunSettings):
    arch: str = "infnet"  # "infnet_slim" on CPUs
    size: int = 352  # Inf-Net's training size
    scales: tuple = (0.75, 1.0, 1.25)  # multi-scale training rates of the public code
    epochs: int = 100
    batch: int = 24
    lr: float = 1e-4
    lr_decay_epochs: int = 50  # x0.1 every 50 epochs (the public code's adjust_lr)
    semi_k: int = 100  # unlabelled slices pseudo-labelled per round (Algorithm 1)
    semi_pool: int | None = None  # unlabelled slices used in all (None: the pack's 1,600)
    semi_epochs: int = 10  # fine-tuning epochs per round
    mc_arch: str = "infnet_multiclass"
    mc_width: int = 64  # first-stage channels of the multi-class network
    mc_epochs: int = 100
    mc_batch: int = 16
    mc_lr: float = 1e-4
    seed: int = 0
    # Progressive resizing: start stage 1 from a registry card's binary network (same architecture), e.g. the
    # 160 px model fine-tuned at 256 px. The card's version and SHA-256 go into results.json and the report.
    init_model: str | None = None
    models_dir: str = "weights"


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True),
    # The slim Inf-Net at 160 px, 300 unlabelled slices (3 rounds of Algorithm 1, one epoch each). Measured here
    # at 192 px: 9-13 images/s on ONE idle thread, 2-4 on a busy machine; two threads on a busy 2-core machine
    # were 4-12 times slower. So: --threads 1, about 30-45 minutes.
    "cpu-quick": Profile(arch="infnet_slim", size=160, scales=(1.0,), epochs=12, batch=8, lr=3e-4, lr_decay_epochs=9,
                         semi_pool=300, semi_epochs=1, mc_width=16, mc_epochs=25, mc_batch=8, mc_lr=3e-4),
    # cpu-quick five times longer (60 epochs, 600 unlabelled slices in 6 rounds): the bundled 2.0.0 models. 65-85
    # minutes with --threads 1 on the 2-core CPU (other work on the other core), 7.6-9.4 training images/s; test Dice
    # 0.501-0.505 (Inf-Net, chosen on val in both runs) against 0.300 for cpu-quick.
    "cpu-long": Profile(arch="infnet_slim", size=160, scales=(1.0,), epochs=60, batch=8, lr=3e-4, lr_decay_epochs=45,
                        semi_pool=600, semi_epochs=1, mc_width=16, mc_epochs=60, mc_batch=8, mc_lr=3e-4),
    # cpu-long's network (ct-infection-infnet 2.0.0, 160 px) fine-tuned at 256 px, the ma2020 slices' own size: 8
    # epochs, 2 rounds of Algorithm 1, the multi-class head at 256 px. 36 minutes with --threads 1 (3.3 training
    # images/s, the other core busy): the bundled 3.0.0, test Dice 0.582 against 0.505. The same network trained
    # from scratch at 256 px reached val Dice 0.545 in 22 epochs (55 min) against 0.576 for this warm start.
    # It starts from whatever ct-infection-infnet the registry holds: to redo 3.0.0 exactly, pass
    # --set models_dir=DIR with DIR = weights/ of commit 18d3bab (git worktree add), which bundles 2.0.0.
    "cpu-long-256": Profile(arch="infnet_slim", size=256, scales=(1.0,), epochs=8, batch=8, lr=1e-4, lr_decay_epochs=100,
                            semi_pool=200, semi_epochs=1, mc_width=16, mc_epochs=40, mc_batch=8, mc_lr=3e-4,
                            init_model="ct-infection-infnet"),
    "smoke": Profile(arch="infnet_slim", size=64, scales=(1.0,), epochs=1, batch=4, lr=1e-3, semi_k=4, semi_pool=8,
                     semi_epochs=1, mc_width=4, mc_epochs=1, mc_batch=4, max_steps_per_epoch=2, device="cpu"),
}

# One more step of progressive resizing: 3.0.0 (256 px) fine-tuned at 352 px, Inf-Net's own training size (the
# decoder's 1/8-scale maps get finer: 44 x 44 instead of 32 x 32): cpu-long-256 with one round of Algorithm 1 over
# 100 unlabelled slices. 67 minutes with --threads 1 (1.7 training images/s, the other core busy): the bundled
# 4.0.0. To redo it exactly, pass --set models_dir=DIR with DIR = weights/ of commit c75bb30, which bundles 3.0.0.
PROFILES["cpu-long-352"] = replace(PROFILES["cpu-long-256"], size=352, semi_pool=100)
# And one more: 4.0.0 (352 px) fine-tuned at 448 px, the multi-class head for 25 epochs (it is not what limits Dice).
# The bundled 5.0.0 (docs/RESULTS.md): about 85 minutes on one thread (stage 1 7.6 min an epoch); test Dice 0.679
# (0.703 at 0.5) against 4.0.0's 0.638 (0.673). It starts from the registry's ct-infection-infnet: to redo 5.0.0
# exactly, use a registry holding 4.1.0 (4.0.0's weights), e.g. weights/ of commit 304b957.
PROFILES["cpu-long-448"] = replace(PROFILES["cpu-long-352"], size=448, mc_epochs=25)


# ---------------------------------------------------------------- data
@dataclass
class SegArrays:
    images: torch.Tensor  # (N, S, S) uint8
    masks: torch.Tensor  # (N, S, S) uint8 labels (0/1, or 0/1/2)


def binary_splits(records) -> dict[str, list]:
    labelled = [r for r in records if r.mask_kind == "binary"]
    return {split: rs for split, rs in by_split(labelled).items() if split in ("train", "val", "test")}


def arrays(records, size: int) -> SegArrays:
    return SegArrays(torch.from_numpy(image_stack(records, size)), torch.from_numpy(infection_stack(records, size)))


def scaled(x: torch.Tensor, y: torch.Tensor, scales: tuple, generator: torch.Generator):
    """Inf-Net's multi-scale training: one random rate per batch, sides rounded to multiples of 32."""
    rate = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    side = max(32, int(round(x.shape[-1] * rate / 32)) * 32)
    if side == x.shape[-1]:
        return x, y
    return (F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False),
            F.interpolate(y, size=(side, side), mode="nearest"))


# ---------------------------------------------------------------- stage 1 and 2: binary Inf-Net
def val_dice(net, data: SegArrays, device) -> float:
    dices = []
    for start in range(0, len(data.images), 16):
        x = min_max_batch(data.images[start:start + 16]).to(device)
        pred = (net(x) > 0).float().cpu()[:, 0]
        target = data.masks[start:start + 16].float()
        inter = (pred * target).sum((1, 2))
        total = pred.sum((1, 2)) + target.sum((1, 2))
        dices += torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).tolist()
    return float(np.mean(dices))


def fit_binary(model, train: SegArrays, val: SegArrays, profile: Profile, epochs: int, out_dir: Path, seed: int):
    generator = seed_everything(seed)
    device = pick_device(profile.device)

    def loss_step(net, index):
        x = min_max_batch(train.images[index]).to(device)
        y = train.masks[index].float()[:, None].to(device)
        x, y = CT_SEGMENTATION_AUGMENT(x, y)
        x, y = scaled(x, y, profile.scales, generator)
        return infnet_loss(net(x), y)

    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, profile.lr_decay_epochs, 0.1)
    engine = Engine(model, optimizer, loss_step, lambda net: {"dice": val_dice(net, val, engine.device)},
                    FitConfig.from_settings(profile, epochs, out_dir, "dice"), scheduler)
    engine.fit(shuffled_batches(len(train.images), profile.batch, seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    return model.eval()


def build(profile: Profile, arch: str | None = None, **config):
    return create_model(arch or profile.arch, **config)


def warm_start(model, profile: Profile) -> dict | None:
    """Load ``profile.init_model``'s verified weights into ``model``; (name, version, SHA-256) of the card, or None."""
    if profile.init_model is None:
        return None
    from core.errors import ModelError
    from core.registry import Registry

    registry = Registry.open(Path(profile.models_dir))
    card = registry.card(profile.init_model)
    if card.architecture != profile.arch:
        raise ModelError(f"{card.name} {card.version} is a {card.architecture} network; this run trains {profile.arch}. "
                         "Pass --set init_model=NAME of a card with the same architecture, or none.")
    state = registry.load_torch(card).state_dict()
    model.load_state_dict({name: value.float() for name, value in state.items()})
    return {"name": card.name, "version": card.version, "sha256": card.weights_sha256}


def pseudo_label(model, images: torch.Tensor, device) -> torch.Tensor:
    """Binary pseudo masks (threshold 0.5) of uint8 slices, by the current model."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            out.append((model(min_max_batch(images[start:start + 16]).to(device)) > 0).to(torch.uint8).cpu()[:, 0])
    return torch.cat(out)


def semi_supervised(model, train: SegArrays, val: SegArrays, unlabelled: torch.Tensor, profile: Profile, out_dir: Path):
    """Algorithm 1: pseudo-label ``semi_k`` random unlabelled slices per round, add them, fine-tune, until none are left."""
    device = pick_device(profile.device)
    order = torch.randperm(len(unlabelled), generator=torch.Generator().manual_seed(profile.seed))
    images, masks = train.images, train.masks
    rounds = []
    for round_index, start in enumerate(range(0, len(order), profile.semi_k)):
        picked = order[start:start + profile.semi_k]
        model.to(device).eval()
        pseudo = pseudo_label(model, unlabelled[picked], device)
        images, masks = torch.cat([images, unlabelled[picked]]), torch.cat([masks, pseudo])
        model = fit_binary(model, SegArrays(images, masks), val, profile, profile.semi_epochs,
                                  out_dir / f"round{round_index + 1:02d}", profile.seed + round_index + 1)
        rounds.append({"round": round_index + 1, "training_slices": len(images), "val_dice": val_dice(model.to(device), val, device),
                       "pseudo_infected_fraction": float(pseudo.float().mean())})
        print(f"Semi-Inf-Net round {round_index + 1}: {len(images)} training slices, val dice {rounds[-1]['val_dice']:.4f}")
    return model, rounds


# ---------------------------------------------------------------- evaluation (served maths, native resolution)
def infection_probability_small(model, pixels: np.ndarray, size: int, device) -> np.ndarray:
    """Infection probability at the network's size, exactly as the CT pipeline computes it."""
    with torch.no_grad():
        logits = model(torch.from_numpy(segmenter_input(pixels, size)[None]).to(device)).cpu().numpy()
    return sigmoid(logits[0, 0])


def evaluate_binary(model, records, size: int, device) -> dict:
    """Inf-Net's table per test slice at its own resolution, averaged overall and per subset."""
    rows = []
    for record in progress_bar(records, desc="infection evaluation", leave=False):
        pixels = load_gray(record.image)
        prob = probability_to_shape(infection_probability_small(model, pixels, size, device), pixels.shape)
        rows.append(infection_metrics(prob, load_gray(record.mask) > 0.5))
    return infection_table(rows, [r.subset for r in records])


# ---------------------------------------------------------------- stage 3: multi-class
def multiclass_inputs(images_u8: torch.Tensor, infection_prob: torch.Tensor) -> torch.Tensor:
    """(N, 2, S, S): the slice (per-image min-max) and the Semi-Inf-Net infection probability."""
    return torch.cat([min_max_batch(images_u8), infection_prob[:, None]], 1)


def semi_probabilities(model, images_u8: torch.Tensor, device) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, len(images_u8), 16):
            out.append(torch.sigmoid(model(min_max_batch(images_u8[start:start + 16]).to(device))).cpu()[:, 0])
    return torch.cat(out)


def fit_multiclass(semi_model, splits: dict, profile: Profile, out_dir: Path):
    seed_everything(profile.seed)
    device = pick_device(profile.device)
    semi_model.to(device).eval()
    data = {}
    for split, records in splits.items():
        stack = arrays(records, profile.size)
        data[split] = (stack, semi_probabilities(semi_model, stack.images, device))
    train, train_prob = data["train"]
    val, val_prob = data["val"]

    def loss_step(net, index):
        x = multiclass_inputs(train.images[index], train_prob[index]).to(device)
        y = train.masks[index].float()[:, None].to(device)
        x, y = CT_SEGMENTATION_AUGMENT(x, y)
        outputs = net(x)  # a tuple of side outputs when the multi-class net is an Inf-Net
        return infnet_loss(outputs, y) if isinstance(outputs, tuple) else multiclass_loss(outputs, y)

    def evaluate(net):
        pred = net(multiclass_inputs(val.images, val_prob).to(device)).argmax(1).cpu().numpy()
        report = multiclass_dice_report(list(pred), list(val.masks.numpy()), MULTICLASS_LABELS)
        return {"mean_dice": float(np.mean([np.nan_to_num(report[c]["pooled"]) for c in MULTICLASS_LABELS[1:]]))}

    model = build(profile, profile.mc_arch, in_channels=2, num_classes=len(MULTICLASS_LABELS), width=profile.mc_width)
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.mc_lr)
    engine = Engine(model, optimizer, loss_step, evaluate, FitConfig.from_settings(profile, profile.mc_epochs, out_dir, "mean_dice"))
    engine.fit(shuffled_batches(len(train.images), profile.mc_batch, profile.seed))
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    return model.eval()


def evaluate_multiclass(model, semi_model, records, size: int, device) -> dict:
    """Per-class Dice of ground glass and consolidation at each slice's own resolution."""
    preds, targets = [], []
    for record in records:
        pixels = load_gray(record.image)
        x = np.stack([segmenter_input(pixels, size)[0], infection_probability_small(semi_model, pixels, size, device)])
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(x[None]).to(device)), 1).cpu().numpy()[0]
        preds.append(np.stack([probability_to_shape(p, pixels.shape) for p in probs]).argmax(0))
        targets.append(load_label_map(record.mask))
    return multiclass_dice_report(preds, targets, MULTICLASS_LABELS) | {"n": len(records)}


# ---------------------------------------------------------------- the recipe
def run(records, out_dir: Path, profile_name: str = "cpu-quick", data_root: Path | None = None, **overrides) -> dict:
    profile, out_dir = start_run("infnet", PROFILES, profile_name, out_dir, overrides)
    device = pick_device(profile.device)
    splits = binary_splits(records)
    train, val = arrays(splits["train"], profile.size), arrays(splits["val"], profile.size)

    model = build(profile, in_channels=1, num_classes=1)
    started_from = warm_start(model, profile)
    supervised = fit_binary(model, train, val, profile, profile.epochs, out_dir / "infnet", profile.seed)
    results = {"Inf-Net": evaluate_binary(supervised, splits["test"], profile.size, device),
               "images_per_second": reports.logged_speed(out_dir / "infnet" / "log.csv"),
               "val_dice": {"Inf-Net": val_dice(supervised.to(device), val, device)}, "started_from": started_from}

    unlabelled_records = [r for r in records if r.mask_kind == "none"][: profile.semi_pool]
    unlabelled = torch.from_numpy(image_stack(unlabelled_records, profile.size))
    semi, rounds = semi_supervised(supervised, train, val, unlabelled, profile, out_dir / "semi")
    results["Semi-Inf-Net"] = evaluate_binary(semi, splits["test"], profile.size, device)
    results["semi_rounds"] = rounds
    results["val_dice"]["Semi-Inf-Net"] = rounds[-1]["val_dice"] if rounds else results["val_dice"]["Inf-Net"]

    mc_splits = {s: rs for s, rs in by_split([r for r in records if r.mask_kind == "multiclass"]).items()}
    multiclass = fit_multiclass(semi, {s: mc_splits[s] for s in ("train", "val")}, profile, out_dir / "multiclass")
    results["multiclass"] = evaluate_multiclass(multiclass, semi, mc_splits["test"], profile.size, device)
    results["sizes"] = {"binary": {k: len(v) for k, v in splits.items()}, "unlabelled": len(unlabelled_records),
                        "multiclass": {k: len(v) for k, v in mc_splits.items()}}
    if is_main_process():
        reports.write_json(out_dir / "results.json", results)
        write_report(out_dir, profile, results)
    print(f"Inf-Net test dice {results['Inf-Net']['dice']:.4f}; Semi-Inf-Net {results['Semi-Inf-Net']['dice']:.4f}; "
          f"multi-class GGO {results['multiclass']['ggo']['mean']:.4f}, consolidation {results['multiclass']['consolidation']['mean']:.4f}")
    return results


def write_report(out_dir: Path, profile: Profile, results: dict) -> None:
    report = reports.Report(out_dir, "Inf-Net: CT infection segmentation",
                            f"Run folder `{out_dir}`; settings in `config.json`; network `{profile.arch}` at {profile.size} px"
                            + (" started from {name} {version} (SHA-256 {sha256}). ".format(**results["started_from"])
                               if results.get("started_from") else ". ") +
                            f"Split sizes: {results['sizes']}. Training speed (stage 1): "
                            f"{results['images_per_second'] or float('nan'):.1f} images/s.")
    for source, note in CT_INFECTION_SPLIT_NOTES.items():
        report.text(f"Split rule: {source}", note)
    columns = (*INFNET_TABLE_COLUMNS, "dice_at_threshold")
    rows = []
    for model in ("Inf-Net", "Semi-Inf-Net"):
        measured = results[model]
        for name, values in [("all test", measured), *measured["per_group"].items()]:
            rows.append([f"{model} ({name})", values["n"]] + [reports.fmt(values[m], 3) for m in columns])
        rows.append([f"{model} (paper, COVID-SemiSeg test)", 48] + [reports.fmt(PAPER_BINARY[model][m], 3) for m in columns[:-1]] + [""])
    report.table("Binary infection (Inf-Net Table II shape)",
                 ["model", "n", "Dice", "Sen.", "Spec.", "S-alpha", "E-phi mean", "MAE", "Dice at 0.5"], rows,
                 "Per slice at the slice's own resolution, then averaged. Dice/Sen./Spec./E-phi: means over 256 thresholds "
                 "of the min-max-normalised map, as Inf-Net's evaluation code; 'Dice at 0.5': the mask the app shows.")
    report.table("Semi-Inf-Net rounds (Algorithm 1)", ["round", "training slices", "val Dice", "pseudo-infected fraction"],
                 [[r["round"], r["training_slices"], reports.fmt(r["val_dice"], 3), reports.fmt(r["pseudo_infected_fraction"], 3)]
                  for r in results["semi_rounds"]])
    mc = results["multiclass"]
    report.table("Multi-class (ground glass / consolidation Dice)", ["", "slices", "GGO Dice", "consolidation Dice"],
                 [["measured, mean over slices with the class (MedSeg held-out)", mc["n"], reports.fmt(mc["ggo"]["mean"], 3),
                   reports.fmt(mc["consolidation"]["mean"], 3)],
                  ["measured, pooled over all pixels", mc["n"], reports.fmt(mc["ggo"]["pooled"], 3),
                   reports.fmt(mc["consolidation"]["pooled"], 3)],
                  ["paper", "", reports.fmt(PAPER_MULTICLASS_DICE["ggo"], 3), reports.fmt(PAPER_MULTICLASS_DICE["consolidation"], 3)]])
    logs = {"infnet": out_dir / "infnet" / "log.csv", "multiclass": out_dir / "multiclass" / "log.csv"}
    reports.plot_training_curves({k: v for k, v in logs.items() if v.is_file()}, out_dir / "curves.png")
    report.figure("Training curves", "curves.png")
    report.write()


def read_records(root: Path):
    return read_ct_infection_records(root)


def load_run(run_dir: Path) -> dict:
    """A finished run: profile, results, the binary model chosen on val (Inf-Net or Semi-Inf-Net), the multi-class model."""
    from training.recipes import load_profile

    run_dir = Path(run_dir)
    name, profile = load_profile(run_dir, Profile)
    results = json.loads((run_dir / "results.json").read_text())
    chosen = max(results["val_dice"], key=results["val_dice"].get)
    rounds = sorted((run_dir / "semi").glob("round*"))
    folder = run_dir / "infnet" if chosen == "Inf-Net" or not rounds else rounds[-1]
    binary = build(profile, in_channels=1, num_classes=1)
    binary.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    multiclass = build(profile, profile.mc_arch, in_channels=2, num_classes=len(MULTICLASS_LABELS), width=profile.mc_width)
    multiclass.load_state_dict(torch.load(run_dir / "multiclass" / "best.pt", map_location="cpu", weights_only=True))
    return {"profile_name": name, "profile": profile, "results": results, "chosen": chosen,
            "binary": binary.eval(), "multiclass": multiclass.eval()}
