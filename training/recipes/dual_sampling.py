"""Dual-sampling attention network for COVID-19 vs community-acquired pneumonia on CT volumes (paper 004:
Ouyang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2995508, arXiv:2005.02690).

Per fold of a 5-fold cross-validation on the TV set (patient-wise), three 3D ResNet34s
(``models.resnet3d``, stride 1 in the last stage) trained from scratch:

- **RN34 + US**: BCE only, uniform sampling (every training volume once per epoch, shuffled);
- **Attention RN34 + US**: BCE + lambda L_ex (Eq. 3-4, lambda 0.5) on COVID-19 volumes with an
  infection mask, T(A) from the FC weights (Eq. 1-2), uniform sampling;
- **Attention RN34 + SS**: the same with size-balanced sampling (Sec. III-C, ``training.samplers``);

and **Attention RN34 + DS**, the fusion of the last two (Eq. 5, ``core.imaging.infection_burden``):
P = w P_US + (1 - w) P_SS, w = 0.35 when the infection/lung ratio is < 0.001 or > 0.030, else 0.96.
Adam (lr 2e-4, divided by 10 every 5 epochs, weight decay 1e-4), batch 20, the best of 20 epochs on
the fold's validation volumes (AUC; ties broken by the validation BCE). Every fold's models are then
run on the independent test set: Table II gives the validation figures pooled over the folds (as the
paper) and as mean ± std over folds, and the test figures as mean ± std over the five folds' models;
Table III the same per infection-ratio band. The overlap of T(A) with the infection mask on COVID-19
test volumes is measured for the models with and without L_ex (for RN34 + US, T(A) is its class
activation map, which it was never trained to shape).

Not in the paper: before each validation the batch-norm statistics are re-estimated on a few training
volumes (``recalibrate_batch_norm``, profile ``precise_bn_volumes``); with the few steps per epoch of the
small profiles the running averages otherwise lag the weights and every volume is called CAP.

Inputs: ``core.imaging.volume_input.classifier_input`` (lung-masked, 1.25 x 0.7168 x 0.7168 mm times a
common factor, window [-1350, 150] to [0, 1], padded / cropped to the profile's shape), the serving
code itself, built once per run into a uint8 cache (``training.volume_data``). Without ``--data`` the
volumes are synthetic (``core.ct_volume_phantoms``): a TV set and a test set from disjoint seeds.
With ``--data``: a folder of NIfTI volumes or of DICOM series with a labels.csv (``training.volume_data``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.imaging.infection_burden import BAND_TITLES, RATIO_BANDS, SAMPLING_GROUPS, fusion_weight
from core.imaging.volume_input import INPUT_WINDOW, RESAMPLE_SPACING_MM, network_spacing
from models import create_model
from training import reports  # sets Matplotlib's headless backend before pyplot is imported
from training.engine import (
    Engine,
    FitConfig,
    RunSettings,
    is_main_process,
    pick_device,
    seed_everything,
    shuffled_batches,
)
from training.losses import attention_loss
from training.metrics import BINARY_SCORES, binary_scores, dice_iou, mean_and_spread
from training.recipes import start_run
from training.samplers import SizeBalancedSampler, group_weights
from training.splits import patient_kfold
from training.volume_data import (
    LABELS,
    InputSettings,
    SyntheticSettings,
    VolumeSet,
    build_volume_set,
    synthetic_records,
)

DATA_LAYOUT = "volumes"  # --data: a labels.csv folder of CT volumes (training.volume_data); without it, synthetic
CLASSES = LABELS  # ("cap", "covid"): index 1 = the sigmoid's positive class
MODELS = ("rn34-us", "att-us", "att-ss")  # trained per fold
ROWS = MODELS + ("att-ds",)  # Table II's rows
TITLES = {"rn34-us": "RN34 + US", "att-us": "Attention RN34 + US", "att-ss": "Attention RN34 + SS",
          "att-ds": "Attention RN34 + DS"}
SAMPLING = {"rn34-us": "uniform", "att-us": "uniform", "att-ss": "size-balanced"}
EXPORTED = {"att-us": "uniform", "att-ss": "size-balanced"}  # the two served models (the DS fusion's inputs)
# Paper 004, Table II: (TV set pooled over the 5 validation folds, test set mean over the 5 folds' models).
PAPER_TABLE2 = {
    "auc": {"rn34-us": (0.984, 0.934), "att-us": (0.986, 0.948), "att-ss": (0.987, 0.938), "att-ds": (0.988, 0.944)},
    "accuracy": {"rn34-us": (0.945, 0.859), "att-us": (0.947, 0.879), "att-ss": (0.951, 0.869), "att-ds": (0.954, 0.875)},
    "sensitivity": {"rn34-us": (0.931, 0.856), "att-us": (0.941, 0.872), "att-ss": (0.953, 0.868),
                    "att-ds": (0.954, 0.869)},
    "specificity": {"rn34-us": (0.959, 0.870), "att-us": (0.953, 0.907), "att-ss": (0.948, 0.876),
                    "att-ds": (0.954, 0.901)},
    "f1": {"rn34-us": (0.945, 0.798), "att-us": (0.947, 0.825), "att-ss": (0.951, 0.811), "att-ds": (0.954, 0.820)},
}
SCORE_TITLES = {"auc": "AUC", "accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
                "f1": "F1-score"}
ATTENTION_THRESHOLD = 0.5  # T(A) > 0.5: the attended region compared with the infection mask


@dataclass(frozen=True)
class Profile(RunSettings):
    shape: tuple = (138, 256, 256)  # network input (z, y, x)
    factor: float = 2.0  # common downsampling after resampling to 1.25 x 0.7168 x 0.7168 mm
    width: int = 64  # first-stage channels of the 3D ResNet34
    epochs: int = 20  # best of 20 on the fold's validation volumes
    batch: int = 20
    lr: float = 2e-4  # Adam, momentum (beta1) 0.9
    lr_step: int = 5  # lr / 10 every 5 epochs
    lr_gamma: float = 0.1
    weight_decay: float = 1e-4
    folds: int = 5
    attention_weight: float = 0.5  # lambda of Eq. 4
    alpha: float = 100.0  # Eq. 2
    beta: float = 0.4
    seed: int = 0
    eval_batch: int = 4
    # Batch-norm statistics re-estimated before each validation on this many training volumes (0: the running
    # averages as trained). Not in the paper: with few steps per epoch the running averages lag the weights
    # and eval-mode outputs collapse to one class (measured on cpu-quick: every validation volume called CAP).
    precise_bn_volumes: int = 32
    # Synthetic collection (used when --data is not given)
    synthetic_tv: int = 200
    synthetic_test: int = 100
    synthetic_shape: tuple = (96, 192, 192)  # voxels of a generated volume (z, y, x)
    synthetic_spacing: tuple = (2.5, 1.8, 1.8)  # mm (dz, dy, dx)
    # Masks of the synthetic volumes (training.volume_data.SyntheticSettings): "models" trains on the lungs and
    # infection the app will serve. Measured on cpu-quick trained with "ground truth": test AUC with the
    # generator's masks 0.68 (US) / 0.83 (SS), with the served masks 0.50 / 0.63 (scripts/check_ct_volume_served.py).
    synthetic_masks: str = "models"
    models_dir: str = "weights"  # CT lung and infection models, for listed volumes without masks
    workers: int = 0  # processes preparing volumes (0: this process)
    figure_cases: int = 3  # COVID-19 test volumes in the attention figure (one per ratio band where possible)
    half_tolerance: float = 0.005  # largest test-AUC change that still allows storing fp16 weights


PROFILES = {
    # The paper's settings; with --data a real collection (paper: 2186 TV + 2796 test volumes).
    "paper": Profile(),
    # The same network, input and optimiser on one H200 (AMP) within about 10 minutes on the synthetic
    # collection: 120 TV + 60 test volumes (prepared by 12 processes), 8 epochs (lr / 10 after 5).
    # Sized from FLOP counts (about 2 TFLOP per training volume), not measured: no GPU was at hand.
    "gpu": Profile(amp=True, synthetic_tv=120, synthetic_test=60, epochs=8, workers=12, eval_batch=10),
    # Width 16, factor 4: 5 x 2.87 x 2.87 mm voxels, 64 x 96 x 112 (320 x 275 x 321 mm, cropped around the lungs:
    # room for adult lungs when served). 5-fold CV, 8 epochs (lr / 10 after 5, the paper's step), batch 8 (24 steps
    # an epoch), 240 TV + 80 test volumes generated at 64 x 128 x 128 voxels of 3.75 x 2.7 x 2.7 mm (the generator's
    # field of view), segmented by the bundled CT models (1.4 s a volume). The bundled pair: 78 min at --threads 1
    # on the shared 2-core machine (28-38 s an epoch).
    "cpu-quick": Profile(
        shape=(64, 96, 112), factor=4.0, width=16, epochs=8, lr_step=5, batch=8, lr=5e-4, synthetic_tv=240,
        synthetic_test=80, synthetic_shape=(64, 128, 128), synthetic_spacing=(3.75, 2.7, 2.7), precise_bn_volumes=16,
    ),
    # Seconds, for tests: tiny volumes, 2 folds, a few steps.
    "smoke": Profile(
        shape=(16, 32, 32), factor=8.0, width=4, epochs=2, lr_step=1, batch=4, lr=1e-3, folds=2, synthetic_tv=8,
        synthetic_test=4, synthetic_shape=(16, 48, 48), synthetic_spacing=(15.0, 7.2, 7.2), max_steps_per_epoch=2,
        synthetic_masks="ground truth",
        device="cpu", figure_cases=2, precise_bn_volumes=4,
    ),
}


def architecture_config(profile: Profile) -> dict:
    """``create_model("resnet3d34_attention", **config)`` rebuilds the network (the registry card's config)."""
    return {"num_classes": 1, "width": profile.width, "in_channels": 1, "alpha": profile.alpha, "beta": profile.beta}


def input_config(profile: Profile, sampling: str) -> dict:
    """The registry card's ``input_config``: what ``core.imaging.volume_input.classifier_input`` needs."""
    return {"shape": list(profile.shape), "factor": profile.factor,
            "spacing_mm": [round(s, 4) for s in network_spacing(profile.factor)],
            "resample_spacing_mm": list(RESAMPLE_SPACING_MM), "window": [INPUT_WINDOW.low, INPUT_WINDOW.high],
            "sampling": sampling}


def input_settings(profile: Profile) -> InputSettings:
    return InputSettings(tuple(profile.shape), float(profile.factor),
                         SyntheticSettings(tuple(profile.synthetic_shape), tuple(profile.synthetic_spacing),
                                           profile.synthetic_masks),
                         profile.models_dir)


# ---------------------------------------------------------------- training one model
def model_dir(out_dir: Path, fold: int, name: str) -> Path:
    return Path(out_dir) / f"fold{fold}" / name


def train_batches(data: VolumeSet, train: np.ndarray, name: str, profile: Profile, seed: int):
    """``epoch -> batches of positions in train``: shuffled once per epoch (US) or size-balanced draws (SS)."""
    if SAMPLING[name] == "size-balanced":
        return SizeBalancedSampler(data.groups[train], seed=seed).batches(profile.batch)
    return shuffled_batches(len(train), profile.batch, seed)


def recalibrate_batch_norm(model: torch.nn.Module, data: VolumeSet, volumes: np.ndarray, device, batch: int) -> None:
    """Re-estimate every batch-norm layer's running mean and variance as the plain average over ``volumes``
    (train-mode forward passes without gradients, in batches of the training size), then restore eval/train
    mode ("precise BN", Wu & Johnson, arXiv:2105.07576). Only the statistics change, never the weights."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not len(volumes):
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    with torch.no_grad():
        for start in range(0, len(volumes), batch):
            model(data.batch(volumes[start:start + batch], device)[0])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def predict(model, data: VolumeSet, indices: np.ndarray, device, batch: int, attention: bool = False,
            keep: dict | None = None) -> dict:
    """P(covid) of ``indices``; with ``attention`` also T(A)'s overlap with the infection mask on COVID-19
    volumes with a mask, and T(A) on the slices ``keep`` names ({index: (axial z, coronal y)})."""
    model.eval()
    probs, overlap, slices = [], {}, {}
    has_mask = data.has_mask
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            x, m = data.batch(chunk, device)
            if attention:
                logits, _, t = model(x, with_attention=True)
            else:
                logits = model(x)
            probs.append(torch.sigmoid(logits.float()[:, 0]).cpu().numpy())
            if not attention:
                continue
            for j, i in enumerate(chunk):
                t_i = t[j, 0].float().cpu().numpy()
                if has_mask[i]:
                    overlap[int(i)] = attention_overlap(t_i, m[j, 0].cpu().numpy() > 0, x[j, 0].cpu().numpy() > 0)
                if keep and int(i) in keep:
                    z, y = keep[int(i)]
                    slices[int(i)] = (t_i[z].astype(np.float16), t_i[:, y].astype(np.float16))
    prob = np.concatenate(probs) if probs else np.zeros(0)
    if not np.isfinite(prob).all():
        raise FloatingPointError("the network produced NaN/inf outputs: training diverged (lower the learning rate)")
    return {"prob": prob, "overlap": overlap, "slices": slices}


def attention_overlap(t: np.ndarray, infection: np.ndarray, lungs: np.ndarray) -> dict:
    """Dice of T(A) > 0.5 with the infection, and the share of T(A)'s mass inside the infection and the lungs."""
    mass = float(t.sum())
    return {"dice": dice_iou(t > ATTENTION_THRESHOLD, infection)[0],
            "mass_in_infection": float(t[infection].sum()) / mass if mass > 0 else float("nan"),
            "mass_in_lungs": float(t[lungs].sum()) / mass if mass > 0 else float("nan"),
            "attended_fraction": float((t > ATTENTION_THRESHOLD).mean())}


def validation_score(labels: np.ndarray, prob: np.ndarray) -> dict:
    """AUC and BCE of the validation volumes; ``select`` = AUC with ties broken by a lower BCE (a tie-break
    too small to outweigh one AUC step of a validation set under ~300 x 300 volumes)."""
    bce = float(F.binary_cross_entropy(torch.from_numpy(prob).double().clamp(1e-7, 1 - 1e-7),
                                       torch.from_numpy(labels).double()))
    auc = binary_scores(labels, prob)["auc"]
    auc = 0.5 if np.isnan(auc) else auc
    return {"auc": auc, "bce": bce, "select": auc - 1e-6 * min(bce, 10.0)}


def train_model(data: VolumeSet, train: np.ndarray, val: np.ndarray, name: str, profile: Profile, folder: Path,
                seed: int):
    """Fit one of ``MODELS`` on ``train`` (best epoch on ``val``); returns (best network in eval mode, timing)."""
    seed_everything(seed)
    model = create_model("resnet3d34_attention", **architecture_config(profile))
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr, betas=(0.9, 0.999), weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=profile.lr_step, gamma=profile.lr_gamma)
    labels = torch.from_numpy(data.labels).float()
    with_mask = torch.from_numpy(data.has_mask)
    use_attention = name != "rn34-us"
    config = FitConfig.from_settings(profile, profile.epochs, folder, "select")
    engine = None

    def loss_step(net, positions):
        index = train[positions.numpy()]
        x, mask = data.batch(index, engine.device)
        y = labels[index].to(engine.device)
        if not use_attention:
            return F.binary_cross_entropy_with_logits(net(x)[:, 0].float(), y)
        logits, _, attention = net(x, with_attention=True)
        classification = F.binary_cross_entropy_with_logits(logits[:, 0].float(), y)
        return classification + profile.attention_weight * attention_loss(attention, mask, with_mask[index])

    calibration = np.random.default_rng(seed).permutation(train)[:profile.precise_bn_volumes]

    def evaluate(net):
        recalibrate_batch_norm(net, data, calibration, engine.device, profile.batch)  # saved with best.pt
        net.eval()
        return validation_score(data.labels[val], predict(net, data, val, engine.device, profile.eval_batch)["prob"])

    engine = Engine(model, optimizer, loss_step, evaluate, config, scheduler=scheduler)
    started = time.perf_counter()
    epochs_before = engine.start_epoch
    engine.fit(train_batches(data, train, name, profile, seed))
    seconds = time.perf_counter() - started
    model.load_state_dict(torch.load(engine.best_path, map_location=engine.device, weights_only=True))
    epochs_run = profile.epochs - epochs_before
    timing = {"seconds": round(seconds, 1), "epochs_run": epochs_run, "train_volumes": len(train),
              "seconds_per_epoch": round(seconds / epochs_run, 2) if epochs_run else None}
    return model.eval(), timing


# ---------------------------------------------------------------- one fold
def figure_picks(data: VolumeSet, test: np.ndarray, count: int) -> dict[int, tuple[int, int]]:
    """COVID-19 test volumes for the attention figure, one per ratio band first (small, medium, large), each
    with the axial and coronal slice holding the most infection on the network grid."""
    candidates = [i for i in test if data.has_mask[i]]
    by_band = {band: [i for i in candidates if data.bands[i] == band] for band in RATIO_BANDS}
    picks = [by_band[band][0] for band in RATIO_BANDS if by_band[band]]
    picks += [i for i in candidates if i not in picks]
    out = {}
    for i in picks[:count]:
        mask = np.asarray(data.masks[i])
        out[int(i)] = (int(mask.sum(axis=(1, 2)).argmax()), int(mask.sum(axis=(0, 2)).argmax()))
    return out


def fuse(p_us: np.ndarray, p_ss: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Eq. 5 per volume."""
    w = np.array([fusion_weight(r) for r in ratios])
    return w * p_us + (1 - w) * p_ss


def run_fold(data: VolumeSet, fold: int, train: np.ndarray, val: np.ndarray, test: np.ndarray, profile: Profile,
             out_dir: Path, keep: dict) -> dict:
    """Train the three models of one fold, predict validation and test volumes, fuse US and SS."""
    folder = Path(out_dir) / f"fold{fold}"
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    device = pick_device(profile.device)
    result = {"fold": fold, "train": train.tolist(), "val": val.tolist(), "timing": {}, "overlap": {}}
    arrays = {"val_index": val, "test_index": test}
    for name in MODELS:
        model, timing = train_model(data, train, val, name, profile, model_dir(out_dir, fold, name),
                                    seed=profile.seed * 100 + fold * 10 + MODELS.index(name))
        started = time.perf_counter()
        on_val = predict(model, data, val, device, profile.eval_batch)
        on_test = predict(model, data, test, device, profile.eval_batch, attention=True, keep=keep)
        timing["test_seconds_per_volume"] = round((time.perf_counter() - started) / max(len(val) + len(test), 1), 3)
        result["timing"][name] = timing
        result["overlap"][name] = {str(i): v for i, v in on_test["overlap"].items()}
        arrays[f"val_{name}"], arrays[f"test_{name}"] = on_val["prob"], on_test["prob"]
        for i, (axial, coronal) in on_test["slices"].items():
            arrays[f"axial_{name}_{i}"], arrays[f"coronal_{name}_{i}"] = axial, coronal
    for split, index in (("val", val), ("test", test)):
        arrays[f"{split}_att-ds"] = fuse(arrays[f"{split}_att-us"], arrays[f"{split}_att-ss"], data.ratios[index])
    result["scores"] = {split: {row: binary_scores(data.labels[index], arrays[f"{split}_{row}"]) for row in ROWS}
                        for split, index in (("val", val), ("test", test))}
    result["groups_train"] = {g: int((data.groups[train] == g).sum()) for g in SAMPLING_GROUPS}
    result["group_weights"] = group_weights(result["groups_train"])
    if is_main_process():
        np.savez(folder / "predictions.npz", **arrays)
        reports.write_json(done, result)
    return result


# ---------------------------------------------------------------- the run
def run(records, out_dir: Path, profile_name: str = "cpu-quick", data_root: Path | None = None, **overrides) -> dict:
    """``records`` from ``training.volume_data.read_volume_records``, or None for the synthetic collection."""
    profile, out_dir = start_run("dual-sampling", PROFILES, profile_name, out_dir, overrides)
    started = time.perf_counter()
    synthetic = records is None
    if synthetic:
        records = synthetic_records(profile.synthetic_tv, profile.synthetic_test, seed_tv=profile.seed * 10_000,
                                    seed_test=1_000_000 + profile.seed * 10_000)
    data = build_volume_set(records, out_dir / "cache", input_settings(profile), workers=profile.workers)
    prepare_seconds = time.perf_counter() - started
    tv, test = data.index("tv"), data.index("test")
    folds = patient_kfold([data.records[i].patient_id for i in tv], data.labels[tv], profile.folds, seed=profile.seed)
    keep = figure_picks(data, test, profile.figure_cases)
    results = [run_fold(data, k, tv[train], tv[val], test, profile, out_dir, keep)
               for k, (train, val) in enumerate(folds)]
    selected = select_fold(results)
    summary = summarise(data, results, out_dir)
    summary.update({
        "recipe": "dual-sampling", "profile": profile_name, "synthetic": synthetic,
        "data": (f"synthetic (core.ct_volume_phantoms), masks: {profile.synthetic_masks}" if synthetic
                 else str(data_root)),
        "selected_fold": selected, "seconds": round(time.perf_counter() - started, 1),
        "prepare_seconds": round(prepare_seconds, 1), "threads": torch.get_num_threads(),
        "prepare_seconds_per_volume": float(np.mean([f["seconds"] for f in data.facts])),
        "figure_cases": {str(i): list(v) for i, v in keep.items()},
    })
    summary["half_precision"] = half_precision_check(out_dir, profile, data, selected)
    if is_main_process():
        reports.write_json(out_dir / "summary.json", summary)
        reports.write_json(out_dir / "volumes.json", [{**asdict(r), **{k: v for k, v in f.items() if k != "placement"}}
                                                      for r, f in zip(data.records, data.facts)])
        print(f"report: {write_report(out_dir, profile_name, profile, data, results, summary)}")
    ds = summary["table2"]["test"]["att-ds"]
    print(f"dual sampling, test over {len(results)} folds: AUC {ds['auc']['mean']:.3f} ± {ds['auc']['std']:.3f}, "
          f"accuracy {ds['accuracy']['mean']:.3f}; whole run {summary['seconds'] / 60:.1f} min", flush=True)
    return {"profile": profile, "summary": summary, "folds": results}


def select_fold(results: list[dict]) -> int:
    """The fold whose dual-sampling fusion has the best validation AUC (the exported pair); ties: the first."""
    aucs = [np.nan_to_num(r["scores"]["val"]["att-ds"]["auc"], nan=0.5) for r in results]
    return int(np.argmax(aucs))


def _fold_stats(values) -> dict:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return mean_and_spread(values) if values else {"mean": float("nan"), "std": float("nan"), "n": 0}


def summarise(data: VolumeSet, results: list[dict], out_dir: Path) -> dict:
    """Tables II and III (validation pooled and per fold, test per fold), attention overlap, sizes."""
    predictions = [np.load(Path(out_dir) / f"fold{r['fold']}" / "predictions.npz") for r in results]
    val_index = np.concatenate([p["val_index"] for p in predictions])
    pooled = {row: np.concatenate([p[f"val_{row}"] for p in predictions]) for row in ROWS}
    labels, bands = data.labels, data.bands
    table2 = {"val_pooled": {row: binary_scores(labels[val_index], pooled[row]) for row in ROWS},
              "val": {row: {s: _fold_stats([r["scores"]["val"][row][s] for r in results]) for s in BINARY_SCORES}
                      for row in ROWS},
              "test": {row: {s: _fold_stats([r["scores"]["test"][row][s] for r in results]) for s in BINARY_SCORES}
                       for row in ROWS}}
    table3 = {}
    for band in RATIO_BANDS:
        in_val = bands[val_index] == band
        entry = {"val_pooled": {row: binary_scores(labels[val_index][in_val], pooled[row][in_val]) for row in ROWS},
                 "test": {}}
        for row in ROWS:
            per_fold = []
            for p in predictions:
                pick = bands[p["test_index"]] == band
                per_fold.append(binary_scores(labels[p["test_index"]][pick], p[f"test_{row}"][pick]))
            entry["test"][row] = {s: _fold_stats([f[s] for f in per_fold]) for s in BINARY_SCORES}
        table3[band] = entry
    overlap = {name: {measure: _fold_stats([np.nanmean([v[measure] for v in r["overlap"][name].values()])
                                            if r["overlap"][name] else np.nan for r in results])
                      for measure in ("dice", "mass_in_infection", "mass_in_lungs", "attended_fraction")}
               for name in MODELS}
    sizes = {}
    for i, record in enumerate(data.records):
        cell = sizes.setdefault(record.split, {}).setdefault(record.label, {b: 0 for b in RATIO_BANDS})
        cell[bands[i]] += 1
    return {"table2": table2, "table3": table3, "overlap": overlap, "sizes": sizes,
            "overlap_volumes": len(results[0]["overlap"]["att-us"]) if results else 0}


def load_fold_model(run_dir: Path, profile: Profile, fold: int, name: str):
    model = create_model("resnet3d34_attention", **architecture_config(profile))
    state = torch.load(model_dir(run_dir, fold, name) / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def half_state(state: dict) -> dict:
    """Floating-point tensors to float16 (batch-norm counters stay integers)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def half_precision_check(out_dir: Path, profile: Profile, data: VolumeSet, fold: int) -> dict:
    """Test AUC of the selected fold's two exported models with weights rounded to fp16 (and loaded back
    into fp32, as served) next to fp32; fp16 is stored when every change is within ``half_tolerance``."""
    test, device = data.index("test"), pick_device(profile.device)
    out = {}
    for name in EXPORTED:
        model = load_fold_model(out_dir, profile, fold, name).to(device)
        full = predict(model, data, test, device, profile.eval_batch)["prob"]
        model.load_state_dict(half_state(model.state_dict()))
        half = predict(model, data, test, device, profile.eval_batch)["prob"]
        auc_full, auc_half = (np.nan_to_num(binary_scores(data.labels[test], p)["auc"], nan=0.5) for p in (full, half))
        out[name] = {"auc_fp32": float(auc_full), "auc_fp16": float(auc_half), "auc_change": float(auc_half - auc_full),
                     "max_probability_change": float(np.abs(half - full).max()) if len(full) else 0.0}
    out["store_half"] = all(abs(v["auc_change"]) <= profile.half_tolerance for v in out.values())
    return out


# ---------------------------------------------------------------- report
def _ms(stats: dict) -> str:
    if not stats.get("n"):
        return "-"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats["n"] > 1 else f"{stats['mean']:.3f}"


def _f(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def write_report(out_dir: Path, profile_name: str, profile: Profile, data: VolumeSet, results: list[dict],
                 summary: dict) -> Path:
    spacing = " x ".join(f"{s:.4g}" for s in network_spacing(profile.factor))
    report = reports.Report(
        out_dir, f"Dual-sampling attention network on CT volumes, paper 004 ({profile_name} profile)",
        f"Run folder `{out_dir}`; settings in `config.json`. Data: {summary['data']}. 3D ResNet34 at width "
        f"{profile.width} (paper 64), from scratch; input {' x '.join(map(str, profile.shape))} (z, y, x) voxels of "
        f"{spacing} mm (factor {profile.factor:g} over 1.25 x 0.7168 x 0.7168 mm), lung-masked, window [-1350, 150]. "
        f"{len(results)}-fold cross-validation on the TV set, {profile.epochs} epochs per model (best on validation "
        f"AUC), batch {profile.batch}, Adam lr {profile.lr:g} / 10 every {profile.lr_step} epochs, lambda "
        f"{profile.attention_weight}, alpha {profile.alpha:g}, beta {profile.beta}. Whole run "
        f"{summary['seconds'] / 60:.1f} min on {summary['threads']} thread(s).")
    _data_tables(report, summary, results)
    _table2(report, summary)
    _table3(report, summary)
    _overlap_table(report, summary)
    figure = _attention_figure(out_dir, data, summary, network_spacing(profile.factor))
    if figure:
        report.figure("Attention maps T(A) next to the infection mask (COVID-19 test volumes, selected fold; axial "
                      "slice and coronal slice, head at the top)", figure)
    _speed_table(report, results, summary)
    report.text("Exported pair", f"Fold {summary['selected_fold']} (best dual-sampling validation AUC): "
                f"`python -m training export {out_dir} --weights WEIGHTS` writes Attention RN34 + US and + SS as "
                f"two registry cards (task ct-volume-classification). fp16 check: "
                + "; ".join(f"{TITLES[n]} test AUC {v['auc_fp32']:.4f} -> {v['auc_fp16']:.4f}"
                            for n, v in summary["half_precision"].items() if n in EXPORTED)
                + f"; stored as {'fp16' if summary['half_precision']['store_half'] else 'fp32'}.")
    report.figure("Training curves (selected fold)", _curves(out_dir, summary["selected_fold"]))
    return report.write()


def _data_tables(report, summary: dict, results: list[dict]) -> None:
    rows = []
    for split in ("tv", "test"):
        for label in ("covid", "cap"):
            counts = summary["sizes"].get(split, {}).get(label, {})
            rows.append([split, label] + [counts.get(b, 0) for b in RATIO_BANDS] + [sum(counts.values())])
    report.table("Volumes per set, label and infection-ratio band (one volume per patient)",
                 ["set", "label"] + [BAND_TITLES[b] for b in RATIO_BANDS] + ["total"], rows)
    rows = [[r["fold"]] + [r["groups_train"][g] for g in SAMPLING_GROUPS]
            + [f"{r['group_weights'][g]:.2f}" for g in SAMPLING_GROUPS] for r in results]
    report.table("Size-balanced sampling: training volumes per group and the group weights (Sec. III-C)",
                 ["fold"] + [f"n {g}" for g in SAMPLING_GROUPS] + [f"w {g}" for g in SAMPLING_GROUPS], rows,
                 "Weights [N_cov_large / N_cov_small, 1, 1, N_cap_small / N_cap_large] (paper: both about 1.5).")


def _table2(report, summary: dict) -> None:
    t2, rows = summary["table2"], []
    for score in BINARY_SCORES:
        for row in ROWS:
            paper = PAPER_TABLE2[score][row]
            rows.append([SCORE_TITLES[score], TITLES[row], _f(t2["val_pooled"][row][score]), _ms(t2["val"][row][score]),
                         _ms(t2["test"][row][score]), paper[0], paper[1]])
    report.table("Table II: validation (TV set) and test set",
                 ["score", "model", "TV pooled over folds", "TV mean ± std over folds", "test mean ± std over folds",
                  "paper TV", "paper test"], rows,
                 "Accuracy, sensitivity (COVID-19), specificity (CAP) and F1 at P(COVID-19) >= 0.5. The paper's "
                 "figures are on 4982 real CT volumes; ours on the data named above.")


def _table3(report, summary: dict) -> None:
    rows = []
    for score in BINARY_SCORES:
        for row in ROWS:
            cells = []
            for band in RATIO_BANDS:
                entry = summary["table3"][band]
                cells += [_f(entry["val_pooled"][row][score]), _ms(entry["test"][row][score])]
            rows.append([SCORE_TITLES[score], TITLES[row]] + cells)
    headers = ["score", "model"] + [f"{title} {part}" for b in RATIO_BANDS for title in [BAND_TITLES[b]]
                                    for part in ("TV pooled", "test")]
    report.table("Table III: by infection/lung ratio band", headers, rows,
                 "'-': undefined in that band (e.g. AUC where the band holds one class only).")


def _overlap_table(report, summary: dict) -> None:
    rows = [[TITLES[name], "no" if name == "rn34-us" else "yes"]
            + [_ms(summary["overlap"][name][m]) for m in ("dice", "mass_in_infection", "mass_in_lungs",
                                                             "attended_fraction")] for name in MODELS]
    report.table("Attention vs infection on COVID-19 test volumes (mean over volumes, mean ± std over folds)",
                 ["model", "trained with L_ex", "Dice(T(A) > 0.5, infection)", "share of T(A) in the infection",
                  "share of T(A) in the lungs", "volume share with T(A) > 0.5"], rows,
                 f"{summary['overlap_volumes']} COVID-19 test volumes with infection on the network grid. For RN34 + US "
                 "T(A) is its class activation map (Eq. 1-2 with its own FC weights), never trained by L_ex.")


def _speed_table(report, results: list[dict], summary: dict) -> None:
    rows = []
    for name in MODELS:
        timings = [r["timing"][name] for r in results if r["timing"].get(name)]
        per_epoch = [t["seconds_per_epoch"] for t in timings if t.get("seconds_per_epoch")]
        rows.append([TITLES[name], _f(float(np.mean(per_epoch))) if per_epoch else "-",
                     timings[0]["train_volumes"] if timings else "-",
                     _f(float(np.mean([t["test_seconds_per_volume"] for t in timings]))) if timings else "-"])
    report.table(f"Speed ({summary['threads']} thread(s))",
                 ["model", "seconds per epoch (incl. validation)", "training volumes per fold",
                  "seconds per volume, prediction with T(A)"], rows,
                 f"Volumes prepared once (generate or decode, segment where needed, classifier input): "
                 f"{summary['prepare_seconds']:.0f} s, {summary['prepare_seconds_per_volume']:.2f} s per volume.")


def _attention_figure(out_dir: Path, data: VolumeSet, summary: dict, spacing: tuple) -> str | None:
    import matplotlib.pyplot as plt  # after training.reports chose the headless backend

    picks = {int(i): tuple(v) for i, v in summary["figure_cases"].items()}
    if not picks:
        return None
    stored = np.load(Path(out_dir) / f"fold{summary['selected_fold']}" / "predictions.npz")
    columns = ["input", "infection mask"] + [f"T(A) {TITLES[n]}" for n in MODELS]
    fig, axes = plt.subplots(2 * len(picks), len(columns), figsize=(2.6 * len(columns), 2.6 * 2 * len(picks)),
                             squeeze=False)
    for row, (i, (z, y)) in enumerate(picks.items()):
        volume, mask = np.asarray(data.inputs[i]) / 255.0, np.asarray(data.masks[i])
        for view in (0, 1):
            def take(a, view=view, z=z, y=y):  # axial slice z, or coronal slice y with the head at the top
                return a[z] if view == 0 else a[:, y][::-1]

            axes_row = axes[2 * row + view]
            aspect = 1.0 if view == 0 else spacing[0] / spacing[2]  # true proportions of the network's voxels
            axes_row[0].imshow(take(volume), cmap="gray", vmin=0, vmax=1, aspect=aspect)
            axes_row[1].imshow(take(volume), cmap="gray", vmin=0, vmax=1, aspect=aspect)
            axes_row[1].imshow(np.ma.masked_equal(take(mask), 0), cmap="autumn", alpha=0.6, vmin=0, vmax=1,
                               aspect=aspect)
            for col, name in enumerate(MODELS, start=2):
                attention = stored[f"{'axial' if view == 0 else 'coronal'}_{name}_{i}"].astype(np.float32)
                attention = attention if view == 0 else attention[::-1]
                axes_row[col].imshow(take(volume), cmap="gray", vmin=0, vmax=1, aspect=aspect)
                axes_row[col].imshow(attention, cmap="jet", alpha=0.45, vmin=0, vmax=1, aspect=aspect)
            band = BAND_TITLES[data.bands[i]]
            axes_row[0].set_ylabel(f"{data.records[i].case_id[-18:]}\nratio {data.ratios[i]:.4f} ({band})\n"
                                   f"{'axial' if view == 0 else 'coronal'}", fontsize=7)
            for ax in axes_row:
                ax.set_xticks([])
                ax.set_yticks([])
    for ax, title in zip(axes[0], columns):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "attention.png", dpi=100)
    plt.close(fig)
    return "attention.png"


def _curves(out_dir: Path, fold: int) -> str:
    logs = {TITLES[name]: model_dir(out_dir, fold, name) / "log.csv" for name in MODELS}
    reports.plot_training_curves(logs, Path(out_dir) / "curves.png")
    return "curves.png"


# ---------------------------------------------------------------- export support
def load_run(run_dir: Path, fold: int | None = None) -> dict:
    """The exported pair (Attention RN34 + US and + SS of one fold), its profile and the run's summary."""
    from training.recipes import load_profile

    run_dir = Path(run_dir)
    name, profile = load_profile(run_dir, Profile)
    summary = json.loads((run_dir / "summary.json").read_text())
    fold = summary["selected_fold"] if fold is None else int(fold)
    return {"profile_name": name, "profile": profile, "summary": summary, "fold": fold,
            "fold_result": json.loads((run_dir / f"fold{fold}" / "result.json").read_text()),
            "models": {m: load_fold_model(run_dir, profile, fold, m) for m in EXPORTED},
            "calibration": {m: fold_calibration(run_dir, fold, m) for m in EXPORTED}}


def fold_calibration(run_dir: Path, fold: int, name: str) -> dict:
    """The card's ``calibration`` entry of one exported model: T fitted on the fold's validation volumes (its
    stored P(COVID-19) as logits), ECE and NLL before and after on the test set (``training.calibration``)."""
    from training.calibration import ServedSplit, calibration_entry

    stored = np.load(Path(run_dir) / f"fold{fold}" / "predictions.npz")
    labels = np.array([v["label"] == "covid" for v in json.loads((Path(run_dir) / "volumes.json").read_text())])
    splits = []
    for split in ("val", "test"):
        p = np.clip(stored[f"{split}_{name}"].astype(np.float64), 1e-7, 1 - 1e-7)
        index = stored[f"{split}_index"]
        splits.append(ServedSplit(f"{split} volumes", np.log(p / (1 - p))[:, None], labels[index].astype(np.int64), 0))
    entry = calibration_entry(*splits, "sigmoid", command=f"python -m training export {run_dir} --weights WEIGHTS")
    entry["fitted_on"] = f"validation volumes of fold {fold}, {splits[0].n} volumes"
    entry["evaluated_on"] = f"test volumes, {splits[1].n} volumes"
    return entry

