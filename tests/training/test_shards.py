"""``python -m training pack-shards``: capped shards with SHA-256, identical arrays back, recipes train from them."""

import csv
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import write_pack
from tests.training.ct_pack import write_ct_pack
from training.__main__ import main as training_main
from training.adapters import read_records
from training.ct_data import read_ct_infection_records
from training.data import load_gray, stack_resized
from training.shards import MIB, ShardError, pack_shards, training_size, unpack_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def packs(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_pack(root)  # 30 X-rays, 96 px
    write_ct_pack(root)  # CT slices, 64 px
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_shards_stay_under_the_cap_and_hold_the_recipe_arrays(packs, tmp_path, capsys):
    out = tmp_path / "shards"
    cap = 0.03  # MiB: forces several shards
    assert training_main(["pack-shards", "manet", "--profile", "smoke", "--data", str(packs), "--out", str(out),
                          "--max-mib", str(cap)]) == 0
    assert "files resized to 32 px" in capsys.readouterr().out
    index = json.loads((out / "shards.json").read_text())
    assert index["size"] == training_size("manet", "smoke") == 32 and index["collections"] == {"cxr": 30}
    assert len(index["shards"]) >= 3 and sorted(p.name for p in out.glob("*.tar")) == [s["file"] for s in index["shards"]]
    for shard in index["shards"]:
        path = out / shard["file"]
        assert path.stat().st_size == shard["bytes"] <= cap * MIB
        with tarfile.open(path) as tar:
            assert len(tar.getmembers()) == shard["members"]
    assert index["files"] == {"resized": 60, "kept": 0}  # 30 images + 30 lung masks, all larger than 32 px

    root = unpack_shards(out)
    assert unpack_shards(out) == root  # unpacked once
    original, unpacked = read_records([packs]), read_records([out])  # --data SHARDS through the X-ray adapters
    assert [(r.label, r.source, r.patient_id, r.split, r.orig_width) for r in original] == \
           [(r.label, r.source, r.patient_id, r.split, r.orig_width) for r in unpacked]
    assert all(r.image.is_relative_to(root) for r in unpacked)
    # the recipe's cached arrays at S, from the folder and from the shards: identical
    for attribute, is_mask in (("image", False), ("lung_mask", True)):
        before, after = ([getattr(r, attribute) for r in rs] for rs in (original, unpacked))
        assert np.array_equal(stack_resized(before, 32, is_mask), stack_resized(after, 32, is_mask)), attribute
    rows = _rows(root / "cxr" / "labels.csv")
    assert {(row["width"], row["height"]) for row in rows} == {("32", "32")}

    # the same input gives the same shards, byte for byte (a re-pack can be checked against the old index)
    again = tmp_path / "again"
    pack_shards("manet", "smoke", [str(packs)], again, cap, progress=False)
    assert json.loads((again / "shards.json").read_text())["shards"] == index["shards"]


def test_files_no_larger_than_the_training_size_are_kept_byte_for_byte(packs, tmp_path):
    out = tmp_path / "shards"
    index = pack_shards("ct-lungs", "smoke", [str(packs)], out, overrides={"seg_size": 64}, progress=False)
    assert index["size"] == 64 and index["files"]["resized"] == 0 and index["collections"] == {"ct_infection": 40}
    root = unpack_shards(out)
    for name in ("infnet/doctor-label/images/3.jpg", "ma2020/lungs/0005.png", "infnet/multiclass-train/masks/7.png"):
        assert (root / "ct_infection" / name).read_bytes() == (packs / "ct_infection" / name).read_bytes()
    # same records, same MedSeg hold-out (it orders file names by SHA-256), same multi-class label maps
    original, unpacked = read_ct_infection_records(packs), read_ct_infection_records(root)
    assert [(r.image.name, r.subset, r.split, r.mask_kind) for r in original] == \
           [(r.image.name, r.subset, r.split, r.mask_kind) for r in unpacked]
    assert _rows(root / "ct_infection" / "labels.csv") == _rows(packs / "ct_infection" / "labels.csv")


def test_resized_label_maps_keep_their_labels(packs, tmp_path):
    out = tmp_path / "shards"
    pack_shards("infnet", "smoke", [str(packs)], out, overrides={"size": 40}, progress=False)
    root = unpack_shards(out)
    records = [r for r in read_ct_infection_records(packs) if r.mask_kind == "multiclass"]
    mine = [r for r in read_ct_infection_records(root) if r.mask_kind == "multiclass"]
    before = stack_resized([r.mask for r in records], 40, multiclass=True)
    assert np.array_equal(before, stack_resized([r.mask for r in mine], 40, multiclass=True))
    assert set(np.unique(before)) <= {0, 1, 2} and load_gray(mine[0].image).shape == (40, 40)


def gpu_section() -> str:
    return (REPO / "README.md").read_text().split("## Training on a GPU machine", 1)[1].split("\n## ", 1)[0]


def test_the_ct_lungs_recipe_trains_from_shards_as_from_the_folder(packs, tmp_path):
    """The README's GPU steps on the CPU with the smoke profile: pack, train from the shards, export, check hashes."""
    shards = tmp_path / "shards"
    assert training_main(["pack-shards", "ct-lungs", "--profile", "smoke", "--data", str(packs), "--out", str(shards),
                          "--max-mib", "0.05"]) == 0
    logs, weights = {}, {}
    for name, data in (("folder", packs), ("shards", shards)):
        run = tmp_path / f"run-{name}"
        export = ["--export", str(tmp_path / "weights")] if name == "shards" else []
        training_main(["--threads", "1", "ct-lungs", "--profile", "smoke", "--data", str(data), "--out", str(run), *export])
        logs[name] = _rows(run / "segmenter" / "log.csv")
        weights[name] = torch.load(run / "segmenter" / "best.pt", weights_only=True)
    assert all(torch.equal(weights["folder"][key], weights["shards"][key]) for key in weights["folder"])
    assert len(logs["folder"]) == 1  # one smoke epoch: same training loss and validation Dice to the last digit
    for key in ("train_loss", "val_dice"):
        column = next(c for c in logs["folder"][0] if key in c)
        assert logs["shards"][0][column] == logs["folder"][0][column], column
    check = re.search(r'python -c "([^"]+)"', gpu_section()).group(1)  # the README's hash check, as written
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "2 files match the manifest"  # ct-lungs-resunet .pt + .onnx


def test_a_corrupt_or_missing_shard_is_refused(packs, tmp_path):
    out = tmp_path / "shards"
    index = pack_shards("multisource-ct", "smoke", [str(packs)], out, 0.03, progress=False)
    assert index["size"] is None and index["files"]["resized"] == 0  # native: crops are taken at each slice's size
    last = out / index["shards"][-1]["file"]
    data = bytearray(last.read_bytes())
    data[700] ^= 1
    last.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="SHA-256"):
        unpack_shards(out)
    last.unlink()
    with pytest.raises(ShardError, match="missing"):
        unpack_shards(out)


def test_unsupported_recipes_and_oversized_files_are_named(packs, tmp_path, capsys):
    assert training_main(["pack-shards", "dual-sampling", "--out", str(tmp_path / "x")]) == 2
    message = capsys.readouterr().err
    assert "dual-sampling" in message and "manet" in message and "ct-lungs" in message
    with pytest.raises(ShardError, match="does not fit"):
        pack_shards("manet", "smoke", [str(packs)], tmp_path / "tiny", max_mib=0.001, progress=False)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="not empty"):
        pack_shards("manet", "smoke", [str(packs)], tmp_path / "used", progress=False)


def test_readme_gpu_section_commands_exist(capsys):
    """Every ``python -m training`` line of the README's GPU section names a real subcommand and real flags."""
    lines = re.findall(r"python -m training[^\n`|]*", gpu_section())
    assert len(lines) >= 3
    for line in lines:
        words = line.split("#")[0].split()[3:]
        words = [w for w in words if w != "--threads" and not w.isdigit()]
        with pytest.raises(SystemExit):
            training_main([words[0], "--help"])
        helptext = capsys.readouterr().out
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in helptext, (line, flag)


def test_the_manet_smoke_run_from_shards_trains_its_segmenter_as_from_the_folder(packs, tmp_path):
    """X-ray path (adapters): stage 1 is identical; stage 2 reads the 32 px files where the folder has 96 px ones."""
    shards = tmp_path / "shards"
    pack_shards("manet", "smoke", [str(packs)], shards, 0.05, progress=False)
    runs = {}
    for name, data in (("folder", packs), ("shards", shards)):
        runs[name] = tmp_path / f"run-{name}"
        training_main(["--threads", "1", "manet", "--profile", "smoke", "--data", str(data), "--out", str(runs[name]),
                       "--set", "classifiers=(('resnet34', 'mask'),)", "--set", "seeds=(0,)"])
    timing = {"seconds", "train_images_per_s"}  # wall-clock figures differ from run to run
    logs = {name: [{k: v for k, v in row.items() if k not in timing} for row in _rows(run / "segmenter" / "log.csv")]
            for name, run in runs.items()}
    assert logs["shards"] == logs["folder"] and "train_loss" in logs["folder"][0]
    folder, mine = (torch.load(runs[n] / "segmenter" / "best.pt", weights_only=True) for n in ("folder", "shards"))
    assert all(torch.equal(folder[key], mine[key]) for key in folder)
    assert (runs["shards"] / "classifiers" / "resnet34-mask" / "seed0" / "test.json").is_file()
