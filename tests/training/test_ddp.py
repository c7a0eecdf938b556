"""Data-parallel training that has actually run: two CPU processes (gloo) under torchrun against one process.

1. The engine alone (a least-squares fit: no batch norm, no augmentation): the two-process run ends with the
   one-process run's weights and logs the same losses (all-reduced gradients over equal halves of each batch).
2. A recipe's smoke profile (ct-lungs, ResUNet): the loss curve matches the one-process run's within a tolerance
   (batch norm sees half batches per process and each process draws its own augmentation), and only rank 0 writes
   files: every file opened for writing by rank 1 under the test's folder is recorded (``ddp_runner.py``).
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed

from tests.training.ct_pack import write_ct_pack

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="this torch build has no gloo process group")


def _run(script: Path, args: list[str], processes: int, env: dict | None = None) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(key, None)
    done = subprocess.run([sys.executable, *launcher, str(script), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(log: Path) -> list[float]:
    with open(log, newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


def test_two_processes_end_with_the_one_process_weights(tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    _run(HERE / "ddp_engine_worker.py", [str(single)], 1)
    _run(HERE / "ddp_engine_worker.py", [str(double)], 2)
    one = torch.load(single / "last.pt", weights_only=False)["model"]
    two = torch.load(double / "last.pt", weights_only=False)["model"]
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    assert _losses(double / "log.csv") == pytest.approx(_losses(single / "log.csv"), rel=1e-5)
    assert len(_losses(double / "log.csv")) == 4  # one row per epoch: rank 1 wrote no second log


def test_recipe_smoke_profile_under_torchrun_matches_and_only_rank_0_writes(tmp_path):
    pack = write_ct_pack(tmp_path / "pack")
    args = ["ct-lungs", "--profile", "smoke", "--data", str(pack), "--set", "seg_epochs=4", "--set", "max_steps_per_epoch=None"]
    audit = {"DDP_AUDIT_ROOT": str(tmp_path / "work")}
    for name, processes in (("one", 1), ("two", 2)):
        work = tmp_path / "work" / name
        _run(HERE / "ddp_runner.py", [*args, "--out", str(work / "run")], processes,
             {**audit, "CHEST_CACHE": str(work / "cache"), "DDP_AUDIT_OUT": str(tmp_path / f"audit-{name}")})
    import json

    assert json.loads((tmp_path / "audit-two-rank1.json").read_text()) == []  # rank 1 wrote nothing
    assert json.loads((tmp_path / "audit-two-rank0.json").read_text()) == []  # the hook records ranks > 0 only
    for name in ("log.csv", "best.pt", "last.pt"):
        assert (tmp_path / "work" / "two" / "run" / "segmenter" / name).is_file(), name
    assert (tmp_path / "work" / "two" / "run" / "report.md").is_file()
    one = _losses(tmp_path / "work" / "one" / "run" / "segmenter" / "log.csv")
    two = _losses(tmp_path / "work" / "two" / "run" / "segmenter" / "log.csv")
    assert len(one) == len(two) == 4
    # Batch norm on half batches and per-process augmentation draws: close, not equal (measured in the note).
    assert two == pytest.approx(one, rel=0.05), (one, two)  # measured: at most 2.2 % apart
