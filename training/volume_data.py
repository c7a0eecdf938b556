"""CT volumes for the dual-sampling recipe (paper 004): records, the layouts users have, the synthetic
collection, and a uint8 cache of the network inputs built once per run.

Layouts (``read_volume_records(root)``), both with ``root/labels.csv``:

- a folder of NIfTI volumes: columns ``file,label`` and optionally ``lung_mask,infection_mask,
  patient_id,split``; ``file`` and the masks are paths relative to ``root`` (masks: NIfTI in the
  volume's own grid, any value > 0 counts; the lung mask may leave the infection out, it is added);
- a folder of DICOM series, one subfolder per series: the same CSV, ``file`` naming the subfolder.

``label`` is ``covid`` (also ``covid-19``) or ``cap``. ``split`` is ``tv`` (training-validation,
cross-validated) or ``test`` (independent test); without the column 20% of the patients (per label)
are held out as the test set. ``patient_id`` defaults to the file: the volumes of one patient stay
in one fold and one set.

Volumes without masks get them from the app's own CT lung and infection models (the CT-volume
pipeline, ``core.pipelines.ct_volume``), as the paper took its masks from a segmentation network.

``synthetic_records`` is the generated collection (``core.ct_volume_phantoms``): a TV set and an
independent test set from disjoint seeds, one volume per patient.

``build_volume_set`` decodes every volume once, builds the classifier input with the serving code
(``core.imaging.volume_input.classifier_input``) and the infection mask on the same grid, and stores
both as uint8 memory maps (``inputs.npy``, ``masks.npy``) under the run folder with a JSON index; a
rerun with the same records and settings reuses them (an interrupted build resumes).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from core.imaging.infection_burden import ratio_band, sampling_group
from core.imaging.volume_input import Placement, classifier_input, mask_input, quantise
from core.progress import progress_bar
from training.splits import holdout_split

LABELS = ("cap", "covid")  # index 1 = the sigmoid's positive class
LABEL_ALIASES = {"covid": "covid", "covid-19": "covid", "covid19": "covid", "cap": "cap"}
SPLITS = ("tv", "test")
SPLIT_ALIASES = {"tv": "tv", "train": "tv", "trainval": "tv", "training": "tv", "test": "test"}
TEST_FRACTION = 0.2  # held out per label when labels.csv has no split column


@dataclass(frozen=True)
class VolumeRecord:
    case_id: str  # unique within the collection (file name or synthetic id)
    label: str  # "covid" | "cap"
    patient_id: str
    split: str  # "tv" | "test"
    image: str | None = None  # NIfTI file or DICOM series folder; None for a synthetic volume
    lung_mask: str | None = None
    infection_mask: str | None = None
    seed: int | None = None  # synthetic volumes
    infection_ratio: float | None = None  # synthetic volumes: the requested ratio (None: the generator's draw)


# ---------------------------------------------------------------- the users' layouts
def _path_in(root: Path, value: str | None, column: str, row: int) -> str | None:
    if not value:
        return None
    path = (root / value).resolve()
    if not path.exists():
        raise FileNotFoundError(f"labels.csv row {row}: the {column} path does not exist under {root}.")
    return str(path)


def read_volume_records(root: str | Path) -> list[VolumeRecord]:
    """Records of a NIfTI folder or a folder of DICOM series described by ``root/labels.csv`` (module doc)."""
    root = Path(root)
    table = root / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} is missing: the dual-sampling recipe reads volumes listed in a labels.csv "
                                "with the columns file,label[,lung_mask,infection_mask,patient_id,split].")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{table} needs at least the columns file and label.")
    records = []
    for number, row in enumerate(rows, start=2):
        label = LABEL_ALIASES.get(row["label"].strip().lower())
        if label is None:
            raise ValueError(f"labels.csv row {number}: label must be covid or cap.")
        split = row.get("split", "").strip().lower()
        if split and split not in SPLIT_ALIASES:
            raise ValueError(f"labels.csv row {number}: split must be tv or test.")
        records.append(VolumeRecord(
            case_id=row["file"], label=label, patient_id=row.get("patient_id") or row["file"],
            split=SPLIT_ALIASES.get(split, ""), image=_path_in(root, row["file"], "file", number),
            lung_mask=_path_in(root, row.get("lung_mask"), "lung_mask", number),
            infection_mask=_path_in(root, row.get("infection_mask"), "infection_mask", number)))
    if len({r.case_id for r in records}) != len(records):
        raise ValueError(f"{table} lists a file more than once.")
    return _with_test_split(records)


def _with_test_split(records: list[VolumeRecord]) -> list[VolumeRecord]:
    """Records without a split: 20% of each label's patients to the test set (seeded, patient-wise)."""
    if all(r.split for r in records):
        return records
    if any(r.split for r in records):
        raise ValueError("labels.csv gives a split for some rows and not for others: give it for all or none.")
    _, held_out = holdout_split([r.patient_id for r in records], [r.label for r in records], TEST_FRACTION, seed=0)
    test = set(held_out.tolist())
    return [VolumeRecord(**{**asdict(r), "split": "test" if i in test else "tv"}) for i, r in enumerate(records)]


def synthetic_records(n_tv: int, n_test: int, seed_tv: int = 0, seed_test: int = 1_000_000) -> list[VolumeRecord]:
    """Generated volumes, labels alternating covid / cap: ``n_tv`` for cross-validation, ``n_test`` held out
    (seeds from ``seed_tv`` and ``seed_test``, far apart so the two sets never share a volume)."""
    records = []
    for split, count, first in (("tv", n_tv, seed_tv), ("test", n_test, seed_test)):
        for index in range(count):
            label, seed = ("covid", "cap")[index % 2], first + index
            case = f"synthetic-{split}-{label}-{seed}"
            records.append(VolumeRecord(case_id=case, label=label, patient_id=case, split=split, seed=seed))
    return records


# ---------------------------------------------------------------- one case: HU, lungs, infection
@dataclass(frozen=True)
class SyntheticSettings:
    shape: tuple = (96, 192, 192)  # (z, y, x) voxels of a generated volume
    spacing_mm: tuple = (2.5, 1.8, 1.8)
    # "models": lungs and infection from the bundled CT models, as the app computes them for an upload (the
    # paper segments training and test volumes alike with its VB-Net); "ground truth": the generator's masks.
    masks: str = "ground truth"


@dataclass
class CaseArrays:
    hu: np.ndarray  # float32 canonical [z, y, x]
    spacing_mm: tuple
    lungs: np.ndarray  # bool, lungs including the infection (the paper's lung mask)
    infection: np.ndarray  # bool
    mask_source: str  # "ground truth" | "given" | "models"


def synthetic_volume(label: str, seed: int, shape, spacing_mm, infection_ratio=None):
    """One generated volume (``core.ct_volume_phantoms.make_ct_volume``)."""
    from core.ct_volume_phantoms import make_ct_volume

    return make_ct_volume(label, seed, shape=tuple(shape), spacing_mm=tuple(spacing_mm), infection_ratio=infection_ratio)


def segment_with_bundled_models(volume, models_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(lungs bool, infection bool) of a ``core.io.Volume`` from the registry's CT lung and infection models,
    through the app's CT-volume pipeline: the hook for volumes listed without masks."""
    try:
        from core.pipelines.ct_volume import CtVolumePipeline
    except ImportError as error:
        raise RuntimeError("This volume has no lung or infection mask and the CT-volume pipeline "
                           "(core.pipelines.ct_volume) that would segment it is not available; list the masks "
                           "in labels.csv (lung_mask, infection_mask).") from error
    result = _segmentation_pipeline(str(models_dir), CtVolumePipeline).analyse(volume)
    return np.asarray(result.lung_mask, bool), np.asarray(result.infection_labels) > 0


@lru_cache(maxsize=2)
def _segmentation_pipeline(models_dir: str, pipeline_class):
    """The CT-volume pipeline on the registry's segmentation models only, loaded once per process: its 3D
    classifiers (perhaps the very models being retrained) stay out; the backend is the app's default."""
    from core.registry import Registry

    registry = Registry.open(Path(models_dir))
    segmenters = Registry(registry.folder, [c for c in registry.cards() if c.task != "ct-volume-classification"])
    return pipeline_class(segmenters)


def _load_mask(path: str, shape: tuple, what: str) -> np.ndarray:
    from core.io import load_volume_path

    mask = load_volume_path(Path(path)).hu > 0
    if mask.shape != shape:
        raise ValueError(f"The {what} of a volume does not have the volume's shape ({mask.shape} vs {shape}).")
    return mask


def load_case(record: VolumeRecord, synthetic: SyntheticSettings, models_dir: str | Path) -> CaseArrays:
    """HU, spacing, lungs (infection included) and infection of one record, on the canonical grid."""
    if record.image is None:
        phantom = synthetic_volume(record.label, record.seed, synthetic.shape, synthetic.spacing_mm,
                                   record.infection_ratio)
        if synthetic.masks == "models":
            lungs, infection = segment_with_bundled_models(phantom.to_volume(), models_dir)
            return CaseArrays(phantom.hu, phantom.spacing_mm, lungs | infection, infection & lungs, "models")
        infection = phantom.infection_mask > 0
        return CaseArrays(phantom.hu, phantom.spacing_mm, phantom.lung_mask | infection, infection, "ground truth")
    from core.io import load_volume_path

    volume = load_volume_path(Path(record.image))
    shape = volume.hu.shape
    lungs = _load_mask(record.lung_mask, shape, "lung mask") if record.lung_mask else None
    infection = _load_mask(record.infection_mask, shape, "infection mask") if record.infection_mask else None
    source = "given"
    if lungs is None or infection is None:
        found_lungs, found_infection = segment_with_bundled_models(volume, models_dir)
        lungs = found_lungs if lungs is None else lungs
        infection = found_infection & lungs if infection is None else infection
        source = "models" if record.lung_mask is None and record.infection_mask is None else "given + models"
    return CaseArrays(volume.hu, volume.spacing_mm, lungs | infection, infection, source)


# ---------------------------------------------------------------- the cached set
@dataclass(frozen=True)
class InputSettings:
    shape: tuple  # network input (z, y, x)
    factor: float  # common downsampling factor after resampling to 1.25 x 0.7168 x 0.7168 mm
    synthetic: SyntheticSettings
    models_dir: str = "weights"  # registry with the CT lung and infection models (volumes without masks)


def prepare_case(record: VolumeRecord, settings: InputSettings) -> tuple[np.ndarray, np.ndarray, dict]:
    """(input uint8, infection mask uint8 0/1, facts) of one record on the network grid."""
    started = time.perf_counter()
    case = load_case(record, settings.synthetic, settings.models_dir)
    network_input, placement = classifier_input(case.hu, case.lungs, case.spacing_mm, settings.shape, settings.factor)
    infection = mask_input(case.infection, placement)
    lung_voxels = int(np.count_nonzero(case.lungs))
    ratio = float(np.count_nonzero(case.infection) / max(lung_voxels, 1))
    voxel_ml = float(np.prod(case.spacing_mm)) / 1000.0
    facts = {"infection_ratio": ratio, "lung_ml": lung_voxels * voxel_ml, "mask_source": case.mask_source,
             "placement": placement.to_dict(), "infected_input_voxels": int(infection.sum()),
             "seconds": round(time.perf_counter() - started, 3)}
    return quantise(network_input), infection, facts


def _prepare_in_worker(args):
    torch.set_num_threads(1)
    return prepare_case(*args)


@dataclass
class VolumeSet:
    """Every volume of a run on the network grid: uint8 inputs and infection masks (memory-mapped)."""

    records: list[VolumeRecord]
    inputs: np.ndarray  # (N, Z, Y, X) uint8, k / 255 = the classifier input
    masks: np.ndarray  # (N, Z, Y, X) uint8 0/1 infection
    facts: list[dict]
    folder: Path

    @cached_property
    def labels(self) -> np.ndarray:
        return np.array([LABELS.index(r.label) for r in self.records], dtype=np.int64)

    @cached_property
    def ratios(self) -> np.ndarray:
        return np.array([f["infection_ratio"] for f in self.facts])

    @cached_property
    def bands(self) -> np.ndarray:
        return np.array([ratio_band(r) for r in self.ratios])

    @cached_property
    def groups(self) -> np.ndarray:
        return np.array([sampling_group(r.label, f["infection_ratio"]) for r, f in zip(self.records, self.facts)])

    @cached_property
    def has_mask(self) -> np.ndarray:
        """COVID-19 volumes whose infection mask reaches the network grid: the ones L_ex applies to."""
        return np.array([r.label == "covid" and f["infected_input_voxels"] > 0 for r, f in zip(self.records, self.facts)])

    def index(self, split: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.records) if r.split == split], dtype=np.int64)

    def placement(self, i: int) -> Placement:
        return Placement.from_dict(self.facts[i]["placement"])

    def batch(self, indices, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs float (B, 1, Z, Y, X) in [0, 1], infection masks float (B, 1, Z, Y, X)) of ``indices``."""
        order = np.asarray(indices, dtype=np.int64)
        x = torch.from_numpy(np.stack([self.inputs[i] for i in order]))[:, None].to(device)
        m = torch.from_numpy(np.stack([self.masks[i] for i in order]))[:, None].to(device)
        return x.float().div_(255.0), m.float()


def _cache_key(records: list[VolumeRecord], settings: InputSettings) -> str:
    payload = json.dumps([[asdict(r) for r in records], asdict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _open_arrays(folder: Path, count: int, shape: tuple, fresh: bool) -> tuple[np.ndarray, np.ndarray]:
    mode = "w+" if fresh else "r+"
    full = (count, *shape)
    from numpy.lib.format import open_memmap

    return (open_memmap(folder / "inputs.npy", mode=mode, dtype=np.uint8, shape=full if fresh else None),
            open_memmap(folder / "masks.npy", mode=mode, dtype=np.uint8, shape=full if fresh else None))


def build_volume_set(records: list[VolumeRecord], folder: Path, settings: InputSettings, workers: int = 0) -> VolumeSet:
    """Decode and preprocess every record once into ``folder`` (reused when records and settings match)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "volumes.json"
    key = _cache_key(records, settings)
    stored = json.loads(index_path.read_text()) if index_path.is_file() else {}
    fresh = stored.get("key") != key or not (folder / "inputs.npy").is_file()
    facts = [None] * len(records) if fresh else stored["facts"]
    inputs, masks = _open_arrays(folder, len(records), tuple(settings.shape), fresh)
    todo = [i for i, fact in enumerate(facts) if fact is None]
    if todo:
        print(f"preparing {len(todo)} of {len(records)} volumes -> {folder}", flush=True)

    def store(i, result):
        inputs[i], masks[i], facts[i] = result
        if sum(f is None for f in facts) % 10 == 0:  # checkpoint the index now and then: a rerun resumes
            inputs.flush()
            masks.flush()
            index_path.write_text(json.dumps({"key": key, "facts": facts}))

    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_prepare_in_worker, [(records[i], settings) for i in todo])
            for i, result in progress_bar(zip(todo, results), total=len(todo), desc="volumes", leave=False):
                store(i, result)
    else:
        for i in progress_bar(todo, desc="volumes", leave=False):
            store(i, prepare_case(records[i], settings))
    inputs.flush()
    masks.flush()
    index_path.write_text(json.dumps({"key": key, "facts": facts}))
    read_inputs, read_masks = (np.load(folder / name, mmap_mode="r") for name in ("inputs.npy", "masks.npy"))
    return VolumeSet(list(records), read_inputs, read_masks, facts, folder)
