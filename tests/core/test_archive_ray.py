"""``python -m core predict --engine ray``: the local engine's rows, a killed worker retried, a killed driver resumed.

A real Ray cluster is started on this machine (``ray start --head --block``; drivers join it at 127.0.0.1:PORT)
for the module and stopped by signalling the process group this module started. The drivers run as subprocesses
(one is killed with SIGKILL).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.__main__ import main as core_main
from core.archive import ArchiveOutput, resume_key, worker_layout
from core.errors import ArchiveError
from core.phantoms import make_phantom

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
RAY = Path(PYTHON).with_name("ray")
LABELS = ("normal", "covid", "tb", "viral", "bacterial")
# The test cluster's own token (Ray 2.60 turns token authentication on by default; a shared ~/.ray token may differ).
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """``127.0.0.1:PORT`` of a 2-CPU head node started for this module."""
    pytest.importorskip("ray")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    process = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--num-gpus", "0", "--disable-usage-stats", "--include-dashboard", "false",
         "--temp-dir", temp_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **RAY_ENV})
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([str(RAY), "status", "--address", address], capture_output=True,
                            env={**os.environ, **RAY_ENV}).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)
            pytest.fail("the Ray head node did not start")
        time.sleep(1)
    yield address
    os.killpg(process.pid, signal.SIGTERM)  # ray start --block stops the node's processes when it is signalled
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:  # the node's processes share the group started above: nothing else is signalled
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Eight phantom X-rays and two inputs the guards refuse (a truncated PNG, an image too small)."""
    folder = tmp_path_factory.mktemp("archive")
    for index in range(8):
        pixels = make_phantom(LABELS[index % len(LABELS)], seed=index, size=160).pixels
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"xray_{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(folder / "tiny.png")
    return folder


@pytest.fixture(scope="module")
def local_rows(archive, tiny_registry_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "results.csv"
    assert core_main(["--weights", str(tiny_registry_dir), "predict", str(archive), "--out", str(out)]) == 0
    return _csv(out)


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _parquet(path: Path) -> tuple[list[str], list[dict]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.column_names, table.to_pylist()


def _driver(registry: Path, address: str, inputs: list[str], out: Path, *extra: str, env: dict | None = None):
    command = [PYTHON, "-m", "core", "--weights", str(registry), "predict", "--engine", "ray", "--address", address,
               *inputs, "--out", str(out), *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **RAY_ENV, **(env or {})})


def _run(*args, **kwargs) -> str:
    process = _driver(*args, **kwargs)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-3000:]
    return output


def _same_values(local: dict, other: dict) -> None:
    """Equal rows apart from ``seconds`` (timing); numbers compared as numbers (Parquet has no empty strings)."""
    for column, expected in local.items():
        if column == "seconds":
            continue
        value = other[column]
        if expected == "" or value in ("", None):
            assert expected == "" and value in ("", None), (column, expected, value)
        elif column in ("file", "status", "predicted_label", "model", "model_version", "message"):
            assert str(value) == expected, column
        else:
            assert float(value) == float(expected), (column, expected, value)


def test_ray_engine_gives_the_local_engines_rows(ray_cluster, archive, local_rows, tiny_registry_dir, tmp_path):
    columns, expected = local_rows
    out = tmp_path / "results.csv"
    output = _run(tiny_registry_dir, ray_cluster, [str(archive)], out)
    assert "wrote 10 rows" in output
    ray_columns, rows = _csv(out)
    assert ray_columns == columns  # the CSV columns are a contract: same names, same order
    assert sorted(r["file"] for r in rows) == sorted(r["file"] for r in expected)
    by_file = {r["file"]: r for r in rows}
    for row in expected:
        _same_values(row, by_file[row["file"]])
    refused = {Path(r["file"]).name for r in rows if r["status"] == "refused"}
    assert refused == {"broken.png", "tiny.png"}


def test_a_killed_worker_is_retried(ray_cluster, archive, local_rows, tiny_registry_dir, tmp_path):
    """The first actor call exits the process (the test hook); Ray restarts the actor and retries its batch."""
    columns, expected = local_rows
    marker, out, listing = tmp_path / "crashed", tmp_path / "results.parquet", tmp_path / "listing.txt"
    listing.write_text("\n".join(r["file"] for r in expected) + "\n")  # the listing-file way in
    _run(tiny_registry_dir, ray_cluster, [f"@{listing}"], out, "--batch-size", "2",
         env={"CHEST_ARCHIVE_TEST_CRASH_ONCE": str(marker)})
    assert marker.exists()  # a worker did die
    parquet_columns, rows = _parquet(out)
    assert parquet_columns == columns
    assert sorted(r["file"] for r in rows) == sorted(r["file"] for r in expected)  # each input exactly once
    by_file = {r["file"]: r for r in rows}
    for row in expected:
        _same_values(row, by_file[row["file"]])


def test_a_rerun_after_the_driver_is_killed_finishes_without_duplicates(ray_cluster, archive, tiny_registry_dir,
                                                                         tmp_path):
    out = tmp_path / "results.csv"
    done = out.with_name("results.csv.done")
    slow = _driver(tiny_registry_dir, ray_cluster, [str(archive)], out, "--batch-size", "1", "--chunk-rows", "2",
                   "--workers", "1", env={"CHEST_ARCHIVE_TEST_SLOW_S": "1.5"})
    deadline = time.monotonic() + 180
    while not (done.exists() and len(done.read_text().splitlines()) >= 2):  # header + one committed chunk
        assert slow.poll() is None and time.monotonic() < deadline, "the slow run ended before a chunk was committed"
        time.sleep(0.2)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    committed = sum(len(json.loads(line)["keys"]) for line in done.read_text().splitlines()[1:])
    assert 2 <= committed < 10 and not out.exists()
    output = _run(tiny_registry_dir, ray_cluster, [str(archive)], out)
    assert f"skipped {committed} inputs" in output
    _, rows = _csv(out)
    files = sorted(r["file"] for r in rows)
    assert files == sorted(str(p) for p in archive.iterdir()) and len(set(files)) == len(files) == 10


def test_an_interrupted_commit_leaves_no_half_rows(tmp_path):
    """A chunk renamed but never committed and a torn index line are dropped when the output is opened again."""
    out, columns = tmp_path / "results.csv", ["file", "status", "seconds"]
    first = ArchiveOutput(out, "cxr", columns)
    assert len(first.open()) == 0
    first.commit([{"file": "a.png", "status": "ok", "seconds": 0.1}], [resume_key("a.png", "1" * 64)])
    (first.parts / "part-000002.csv").write_text("b.png,ok,0.2\n")  # renamed, then killed before the commit
    with open(first.index, "a") as index:
        index.write('{"part": "part-000002.csv", "keys": ["ab')  # torn commit line
    again = ArchiveOutput(out, "cxr", columns)
    assert list(again.open()) == [resume_key("a.png", "1" * 64).encode()]
    assert not (again.parts / "part-000002.csv").exists()
    again.commit([{"file": "c.png", "status": "refused", "seconds": 0.3}], [resume_key("c.png", "2" * 64)])
    assert again.finish() == 2
    assert out.read_text().splitlines() == ["file,status,seconds", "a.png,ok,0.1", "c.png,refused,0.3"]
    with pytest.raises(ArchiveError, match="another task or other columns"):
        ArchiveOutput(out, "cxr", ["file", "status"]).open()


def test_gpu_actors_where_the_cluster_has_gpus():
    assert worker_layout({"CPU": 64.0, "GPU": 8.0}, None) == (8, {"num_gpus": 1, "num_cpus": 1})
    assert worker_layout({"CPU": 64.0, "GPU": 8.0}, None, actors_per_gpu=4) == (32, {"num_gpus": 0.25, "num_cpus": 1})
    assert worker_layout({"CPU": 2.0}, None) == (2, {"num_cpus": 1})
    assert worker_layout({"CPU": 16.0}, 3) == (3, {"num_cpus": 1})


def test_the_app_and_the_local_engine_never_import_ray():
    code = "import sys, core.archive, core.batch, core.__main__; assert 'ray' not in sys.modules"
    assert subprocess.run([PYTHON, "-c", code], cwd=REPO).returncode == 0
