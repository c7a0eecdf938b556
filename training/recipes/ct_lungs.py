"""CT lungs: a ResUNet that segments both lungs on one axial CT slice (the CT pipelines' first stage).

No paper specifies it: the settings reuse MANet's stage 1 (ResUNet, generalised dice, Adam) on the
only CT lung masks the pack has, the 807 ``ma2020-slices`` of Ma et al. (CLAHE-enhanced 8-bit
slices, runs of ~100 neighbouring slices kept in one split). Those slices are CLAHE-enhanced while
users upload lung-window exports or HU (``core.imaging.ct_input``), so training adds random gamma,
contrast and blur on top of the affine augmentation; the report checks the model on slices of the
pack's real HU volume too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from core.lung import predict_lung_mask
from core.postprocess import manet_postprocess
from core.runtime import TorchModel
from training import reports
from training.augment import CT_SEGMENTATION_AUGMENT
from training.engine import RunSettings, is_main_process
from training.recipes import manet, start_run
from training.segmentation import SegmenterConfig, evaluate_segmenter, train_segmenter


@dataclass(frozen=True)
class Profile(RunSettings):
    seg_size: int = 256
    seg_widths: tuple = (32, 64, 128, 256, 512)
    seg_epochs: int = 50
    seg_batch: int = 16
    seg_lr: float = 2e-4
    seg_weight_decay: float = 1e-5


PROFILES = {
    "paper": Profile(),
    "gpu": Profile(amp=True, tensorboard=True),
    # ~1/16 of the paper's FLOPs at 160 px: about 5 minutes on a 2-core CPU.
    "cpu-quick": Profile(seg_size=160, seg_widths=(8, 16, 32, 64, 128), seg_epochs=14, seg_batch=8, seg_lr=1e-3),
    "smoke": Profile(seg_size=32, seg_widths=(4, 8, 16), seg_epochs=1, seg_batch=4, seg_lr=1e-3,
                     max_steps_per_epoch=2, device="cpu"),
}
DATA_COLLECTIONS = ("ct_infection",)  # what ``--data`` must hold (training/__main__.py)
VOLUME = "ct_volumes/mediastinum_crop.nii.gz"  # real HU anatomy, no labels: a sanity check only


def segmenter_config(profile: Profile) -> SegmenterConfig:
    """MANet's stage 1 (same fields, same loss) with the CT photometric augmentation."""
    return replace(manet.segmenter_config(profile), augment=CT_SEGMENTATION_AUGMENT)


def lung_records(records) -> dict[str, list]:
    with_lungs = [r for r in records if r.lung_mask is not None]
    return {split: [r for r in with_lungs if r.split == split] for split in ("train", "val", "test")}


def hu_volume_check(model, size: int, data_root: Path | None) -> dict | None:
    """Lung fraction found on every 4th axial slice of the pack's real HU volume (None without it)."""
    if data_root is None or not (data_root / VOLUME).is_file():
        return None
    import nibabel as nib

    from core.imaging.ct_input import ct_model_pixels
    from core.study import Study

    volume = nib.as_closest_canonical(nib.load(data_root / VOLUME)).get_fdata(dtype=np.float32)
    segmenter = TorchModel(model, next(model.parameters()).device)
    fractions = []
    for z in range(0, volume.shape[2], 4):
        # RAS array -> rows anterior at the top, the patient's right on the image's left (radiological display)
        hu = np.ascontiguousarray(volume[:, :, z].T[::-1, ::-1], dtype=np.float32)
        study = Study(pixels=np.zeros_like(hu), file_format="nifti", modality="CT", hu=hu)
        fractions.append(float(predict_lung_mask(ct_model_pixels(study), segmenter, size).mean()))
    return {"slices": len(fractions), "median_lung_fraction": float(np.median(fractions)),
            "slices_with_lungs": int(sum(f > 0.02 for f in fractions))}


def run(records, out_dir: Path, profile_name: str = "cpu-quick", data_root: Path | None = None, **overrides) -> dict:
    profile, out_dir = start_run("ct-lungs", PROFILES, profile_name, out_dir, overrides)
    splits = lung_records(records)
    model = train_segmenter(splits["train"], splits["val"], segmenter_config(profile), out_dir / "segmenter")
    test = evaluate_segmenter(model, splits["test"], profile.seg_size, manet_postprocess, {"by_source": "subset"})
    volume = hu_volume_check(model, profile.seg_size, data_root)
    result = {"test": test["by_source"], "hu_volume": volume, "sizes": {k: len(v) for k, v in splits.items()}}
    if is_main_process():
        reports.write_json(out_dir / "segmenter_test.json", result)
        write_report(out_dir, profile, result)
    print(f"CT lung segmentation test: dice={test['by_source']['dice']:.4f} iou={test['by_source']['iou']:.4f}")
    return result


def write_report(out_dir: Path, profile: Profile, result: dict) -> None:
    report = reports.Report(out_dir, "CT lungs: ResUNet on the pack's ma2020 slices",
                            f"Run folder `{out_dir}`; settings in `config.json`. Split sizes: {result['sizes']}.")
    test = result["test"]
    report.table("Test split (each slice at its own resolution, holes filled, small objects removed)",
                 ["subset", "n", "Dice", "IoU"],
                 [["all", test["n"], reports.fmt(test["dice"]), reports.fmt(test["iou"])]]
                 + [[g, v["n"], reports.fmt(v["dice"]), reports.fmt(v["iou"])] for g, v in test["per_group"].items()])
    if result["hu_volume"]:
        v = result["hu_volume"]
        report.text("Real HU volume (no labels)",
                    f"`{VOLUME}` through `core.imaging.ct_input.ct_model_pixels`: lungs found on "
                    f"{v['slices_with_lungs']} of {v['slices']} axial slices, median lung fraction "
                    f"{v['median_lung_fraction']:.3f}.")
    report.figure("Training curves", _curves(out_dir))
    report.write()


def _curves(out_dir: Path) -> str:
    reports.plot_training_curves({"segmenter": out_dir / "segmenter" / "log.csv"}, out_dir / "curves.png")
    return "curves.png"


def load_segmenter(run_dir: Path, profile: Profile):
    from models import create_model

    model = create_model("resunet", widths=profile.seg_widths)
    model.load_state_dict(torch.load(Path(run_dir) / "segmenter" / "best.pt", map_location="cpu", weights_only=True))
    return model.eval()


def read_records(root: Path):
    from training.ct_data import read_ct_infection_records

    return read_ct_infection_records(root)
