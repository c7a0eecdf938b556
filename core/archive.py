"""Archive scoring: ``python -m core predict`` on a Ray cluster, resumable, CSV or Parquet out.

Usage::

    python -m core predict --engine ray --task cxr /archive/xrays --out results.parquet     # Ray on this machine
    python -m core predict --engine ray --address HEAD:6379 --task ct-slice @listing.txt --out ct.csv
    score_archive(task="cxr", inputs=["/archive/xrays"], out=Path("results.csv"), weights=Path("weights"))

Rows are the local engine's (``core.batch.image_row`` / ``volume_row`` run inside the actors), with the same
columns in the same order; only the row order differs (the order in which inputs finish). ``@FILE`` in the
inputs is a listing: one path per line, streamed by Ray Data (``ray.data.read_text``) rather than held by the
driver; relative paths are taken from the driver's working directory, like paths on the command line.

Actors: one per GPU when the cluster has GPUs (``num_gpus=1``; ``actors_per_gpu`` > 1 shares a GPU between
several actors so that decoding on their CPUs keeps it busy), else one per CPU; each loads the models once.
A worker that dies is restarted and its batch retried (``max_restarts`` / ``max_task_retries``).

Resume state, next to the output (``OUT`` = the ``--out`` path):

- ``OUT.parts/part-NNNNNN.csv|parquet``: committed chunks of rows, each written to a temporary name,
  fsync'ed, then renamed (a chunk is whole or absent);
- ``OUT.done``: one JSON line per committed chunk, ``{"part": name, "keys": [...]}``, appended and fsync'ed after
  the chunk's rename (the commit). The first line records the task and the columns. A key is the first 128
  bits of SHA-256(path, NUL, SHA-256 of the input's bytes) as hex: a rerun skips an input whose path and
  content already have a row; a changed file is scored again.

On start, parts not named in ``OUT.done`` (a run killed between rename and commit) are deleted and a torn
last line is cut off, so an interrupted run never leaves duplicate or half rows. At the end ``OUT`` is rebuilt
from the parts (temporary file + rename). Delete ``OUT.parts`` and ``OUT.done`` to start over.

Ray is imported only when a run starts: the app and the local engine never need it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import ArchiveError

OUTPUT_SUFFIXES = (".csv", ".parquet")
STRING_COLUMNS = {"file", "status", "predicted_label", "model", "model_version", "message", "size_group"}
KEY_BYTES = 16
DEFAULT_CHUNK_ROWS = 2000
DEFAULT_BATCH_SIZE = 8
TEST_HOOK_PREFIX = "CHEST_ARCHIVE_TEST_"  # set only by tests/core/test_archive_ray.py (crash a worker, slow it down)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Inputs and keys
# --------------------------------------------------------------------------------------------------

def is_listing(argument: str) -> bool:
    return argument.startswith("@") and len(argument) > 1


def listing_lines(listing: Path) -> Iterator[str]:
    """The paths of a listing file: one per line, blank lines skipped."""
    with open(listing, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\r\n")


def expand_listings(inputs: Iterable[str]) -> list[str]:
    """``@FILE`` arguments replaced by the file's lines (the local engine holds its inputs in memory anyway)."""
    expanded: list[str] = []
    for argument in inputs:
        expanded += list(listing_lines(Path(argument[1:]))) if is_listing(argument) else [argument]
    return expanded


def content_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes; of a folder (a DICOM series): of its files' relative names and bytes, sorted."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + bytes.fromhex(content_sha256(file)))
        return digest.hexdigest()
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def resume_key(file: str, content_hash: str) -> str:
    """The resume index's key of one input: path and content together (a copy elsewhere still gets its row)."""
    digest = hashlib.sha256(file.encode("utf-8", "surrogateescape") + b"\0" + content_hash.encode())
    return digest.hexdigest()[: 2 * KEY_BYTES]


# --------------------------------------------------------------------------------------------------
# Output: committed chunks, the resume index, the final file
# --------------------------------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parquet_table(rows: list[dict], columns: list[str]):
    """Rows as an Arrow table: text columns as strings, every other column float64 ("" -> null)."""
    import pyarrow as pa

    arrays = {}
    for column in columns:
        values = [row.get(column, "") for row in rows]
        if column in STRING_COLUMNS:
            arrays[column] = pa.array([None if v is None else str(v) for v in values], pa.string())
        else:
            arrays[column] = pa.array([None if v in ("", None) else float(v) for v in values], pa.float64())
    return pa.table(arrays)


class ArchiveOutput:
    """The output file plus its resume state (see the module docstring): ``done_keys()``, ``commit``, ``finish``."""

    def __init__(self, out: Path, task: str, columns: list[str]):
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ArchiveError(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)} (the suffix picks the format).")
        self.out, self.columns = out, columns
        self.format = out.suffix.lower()[1:]
        self.parts = out.with_name(out.name + ".parts")
        self.index = out.with_name(out.name + ".done")
        self.header = {"task": task, "columns": columns}
        self.committed: list[str] = []
        self._keys: list[str] = []

    def open(self) -> np.ndarray:
        """Load the committed state (creating it when absent) and return the done keys, sorted, as ``S32`` bytes."""
        self.parts.mkdir(parents=True, exist_ok=True)
        if not self.index.exists():
            self._append_line(self.header)
        self._read_index()
        for stray in self.parts.iterdir():  # a chunk renamed but never committed, or a temporary file
            if stray.name not in self.committed:
                stray.unlink()
        return np.sort(np.array(self._keys, dtype=f"S{2 * KEY_BYTES}"))

    def _read_index(self) -> None:
        data = self.index.read_bytes()
        good = 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1]):  # the last element follows the last newline: torn or empty
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if number == 0:
                if entry != self.header:
                    raise ArchiveError(f"{self.out.name} was started with another task or other columns "
                                       f"({entry.get('task')}); choose another --out or delete its .done and .parts.")
            else:
                if not (self.parts / entry["part"]).is_file():
                    raise ArchiveError(f"The resume state of {self.out.name} is damaged: a committed chunk is missing. "
                                       "Delete its .done and .parts to start over.")
                self.committed.append(entry["part"])
                self._keys += entry["keys"]
            good += len(line) + 1
        if good < len(data):  # cut a torn last line so the next commit starts on a line of its own
            with open(self.index, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
        if good == 0:  # killed while writing the first line: nothing was committed
            self._append_line(self.header)

    def _append_line(self, entry: dict) -> None:
        with open(self.index, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self, rows: list[dict], keys: list[str]) -> None:
        """Write one chunk (temporary name, fsync, rename), then record it in the index (the commit)."""
        if not rows:
            return
        name = f"part-{len(self.committed) + 1:06d}.{self.format}"
        temporary = self.parts / f".{name}.tmp"
        if self.format == "csv":
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                csv.DictWriter(handle, fieldnames=self.columns, restval="", extrasaction="ignore").writerows(rows)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            import pyarrow.parquet as pq

            pq.write_table(parquet_table(rows, self.columns), temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, self.parts / name)
        _fsync_dir(self.parts)
        self._append_line({"part": name, "keys": keys})
        self.committed.append(name)

    def finish(self) -> int:
        """Rebuild the output from every committed chunk (temporary file + rename); the number of rows."""
        temporary = self.out.with_name(f".{self.out.name}.tmp")
        count = 0
        if self.format == "csv":
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.columns)
                for name in self.committed:
                    with open(self.parts / name, newline="", encoding="utf-8") as part:
                        handle.write(part.read())
                handle.flush()
                os.fsync(handle.fileno())
            count = _csv_row_count(temporary)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(temporary, parquet_table([], self.columns).schema) as writer:
                for name in self.committed:
                    table = pq.read_table(self.parts / name)
                    writer.write_table(table)
                    count += table.num_rows
        os.replace(temporary, self.out)
        _fsync_dir(self.out.parent)
        return count


def _csv_row_count(path: Path) -> int:
    """Rows, not lines: a message may hold a newline inside quotes."""
    with open(path, newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def write_rows(rows: Iterable[dict], out: Path, columns: list[str]) -> int:
    """The local engine's writer: CSV (``core.batch.write_csv``) or, for a ``.parquet`` path, Parquet."""
    from .batch import write_csv

    if out.suffix.lower() != ".parquet":
        return write_csv(rows, out, columns)
    import pyarrow.parquet as pq

    table = parquet_table(list(rows), columns)
    pq.write_table(table, out)
    return table.num_rows


# --------------------------------------------------------------------------------------------------
# The Ray side
# --------------------------------------------------------------------------------------------------

def _test_hooks(paths: list[str]) -> None:
    """Failure injection for the tests only: never set in normal use."""
    marker = os.environ.get(TEST_HOOK_PREFIX + "CRASH_ONCE")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(1)  # the actor process dies mid-batch, as an out-of-memory kill would
    delay = float(os.environ.get(TEST_HOOK_PREFIX + "SLOW_S", "0"))
    if delay:
        time.sleep(delay * len(paths))


class ScoringActor:
    """One Ray actor: the task's pipeline loaded once; scores a batch of paths, skipping those already done."""

    def __init__(self, task: str, weights: str, backend: str, classifier: str | None, done, workdir: str):
        import ray

        from .registry import Registry

        self.task, self.workdir = task, Path(workdir)
        self.done = ray.get(done) if isinstance(done, ray.ObjectRef) else done
        registry = Registry.open(Path(weights))
        self.pipeline, self.gate = build_pipeline(task, registry, backend, classifier)

    def __call__(self, batch):
        import pyarrow as pa

        from .batch import image_row, volume_row

        paths = batch.column(batch.column_names[0]).to_pylist()
        _test_hooks(paths)
        keys, rows = [], []
        for given in paths:
            path = self.workdir / given
            try:
                key = resume_key(given, content_sha256(path))
            except OSError:
                key = resume_key(given, "unreadable")  # scored below as refused, like the local engine does
            if self._is_done(key):
                keys.append(key), rows.append("")
                continue
            if self.task == "ct-volume":
                row = volume_row(self.pipeline, path)
            else:
                row = image_row(self.task, self.pipeline, path, self.gate)
            row.pop("logits", None)
            row["file"] = given
            keys.append(key), rows.append(json.dumps(row))
        return pa.table({"key": pa.array(keys, pa.string()), "row": pa.array(rows, pa.string())})

    def _is_done(self, key: str) -> bool:
        if not len(self.done):
            return False
        needle = np.array(key, dtype=self.done.dtype)
        at = int(np.searchsorted(self.done, needle))
        return at < len(self.done) and self.done[at] == needle


def build_pipeline(task: str, registry, backend: str = "auto", classifier: str | None = None):
    """(pipeline, image-kind gate or None) for ``task``, as the local engine builds them."""
    from .guard.image_kind import open_gate

    if task == "cxr":
        from .pipelines.cxr import CxrPipeline

        return CxrPipeline(registry, backend=backend, classifier=classifier), open_gate(registry)
    if task == "ct-slice":
        from .pipelines.ct_slice import CtSlicePipeline

        return CtSlicePipeline(registry, backend=backend), open_gate(registry)
    from .pipelines.ct_volume import CtVolumePipeline

    return CtVolumePipeline(registry, backend=backend), None


def columns_for(task: str, pipeline) -> list[str]:
    from .batch import CT_SLICE_COLUMNS, CT_VOLUME_COLUMNS, cxr_columns

    return {"cxr": lambda: cxr_columns(pipeline.classes), "ct-slice": lambda: CT_SLICE_COLUMNS,
            "ct-volume": lambda: CT_VOLUME_COLUMNS}[task]()


def start_ray(address: str | None) -> None:
    """Connect to the cluster at ``address``, or start Ray on this machine only (127.0.0.1, no dashboard)."""
    try:
        import ray
    except ImportError as error:
        raise ArchiveError("--engine ray needs Ray: pip install -c constraints.txt -r requirements.txt") from error
    # Workers import this project from the same path on every node (a shared file system or the same image).
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    env |= {name: value for name, value in os.environ.items() if name.startswith(TEST_HOOK_PREFIX)}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env={"env_vars": env})


def _input_dataset(task: str, inputs: list[str]):
    """(Ray dataset with one path per row, number of inputs): listings streamed, folders expanded here."""
    import ray

    from .batch import expand_inputs, volume_cases

    listed, given = [a for a in inputs if is_listing(a)], [a for a in inputs if not is_listing(a)]
    datasets, total = [], 0
    if given:
        paths = volume_cases(given) if task == "ct-volume" else expand_inputs(given)
        datasets.append(ray.data.from_items([{"text": str(p)} for p in paths]))  # read_text's column name
        total += len(paths)
    for listing in listed:
        listing_path = Path(listing[1:]).resolve()
        if not listing_path.is_file():
            raise ArchiveError(f"The listing {listing} is not a file.")
        # num_cpus=0: the read is light, and the actors may hold every CPU (column "text": the actors take the
        # first column, whatever its name, because a rename would be one more operator waiting for a free CPU).
        datasets.append(ray.data.read_text(str(listing_path), num_cpus=0))
        total += sum(1 for _ in listing_lines(listing_path))
    dataset = datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])
    return dataset, total


def worker_layout(resources: dict, workers: int | None, actors_per_gpu: int = 1) -> tuple[int, dict]:
    """(actor count, resources per actor): ``actors_per_gpu`` actors per GPU when the cluster has GPUs (each with
    ``num_gpus=1/actors_per_gpu`` and one CPU for decoding and guards), else one actor per CPU."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus * actors_per_gpu, {"num_gpus": 1 / actors_per_gpu, "num_cpus": 1}
    return workers or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}


def score_archive(task: str, inputs: list[str], out: Path, weights: Path, *, address: str | None = None,
                  backend: str = "auto", classifier: str | None = None, workers: int | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, chunk_rows: int = DEFAULT_CHUNK_ROWS, max_retries: int = 3,
                  actors_per_gpu: int = 1, progress: bool = True) -> dict:
    """Score ``inputs`` on Ray into ``out``; returns the counts ``written`` (this run), ``skipped`` and ``rows``
    (in ``out``), the number of ``workers`` and whether they are on GPUs (``gpu``)."""
    from .progress import progress_bar
    from .registry import Registry

    for field, value in (("--workers", workers or 1), ("--batch-size", batch_size), ("--chunk-rows", chunk_rows),
                         ("--actors-per-gpu", actors_per_gpu)):
        if value < 1:
            raise ArchiveError(f"{field} must be at least 1 (got {value}).")
    weights = weights.resolve()
    pipeline, _ = build_pipeline(task, Registry.open(weights), backend, classifier)  # fails here, not in every actor
    output = ArchiveOutput(out, task, columns_for(task, pipeline))
    del pipeline
    done = output.open()
    start_ray(address)
    import ray

    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # one bar: ours, with the input count
        dataset, total = _input_dataset(task, inputs)
        done_ref = ray.put(done)  # held until the run ends: restarted actors read it again
        count, per_actor = worker_layout(ray.cluster_resources(), workers, actors_per_gpu)
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing max_restarts / max_task_retries this way but names no replacement; its
            # default (-1: retry for ever) would loop on an input that crashes the worker process every time.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            scored = dataset.map_batches(
                ScoringActor, batch_size=batch_size, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=count),
                fn_constructor_kwargs={"task": task, "weights": str(weights), "backend": backend,
                                       "classifier": classifier, "done": done_ref, "workdir": os.getcwd()},
                max_restarts=max_retries, max_task_retries=max_retries, **per_actor)
        try:
            written, skipped = _drain(scored, output, total, chunk_rows, progress_bar, progress)
        except Exception as error:  # Ray's errors (a worker failing past its retries, a lost cluster): say how to go on
            # The error's text is left to Ray's logs: it may quote an input's path.
            message = (f"The run stopped ({type(error).__name__}; details in Ray's logs). "
                       f"{len(output.committed)} chunks are committed: run the same command again to resume.")
            raise ArchiveError(message) from error
    finally:
        ray.shutdown()
    rows = output.finish()
    return {"written": written, "skipped": skipped, "rows": rows, "workers": count,
            "gpu": "num_gpus" in per_actor}


def _drain(scored, output: ArchiveOutput, total: int, chunk_rows: int, progress_bar, progress: bool) -> tuple[int, int]:
    """Stream the actors' rows into committed chunks of ``chunk_rows``."""
    rows, keys, written, skipped = [], [], 0, 0
    with progress_bar(total=total, desc="archive", unit="input", disable=not progress, file=sys.stderr) as bar:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            for key, row in zip(batch.column("key").to_pylist(), batch.column("row").to_pylist()):
                if row:
                    rows.append(json.loads(row)), keys.append(key)
                else:
                    skipped += 1
                bar.update(1)
                if len(rows) >= chunk_rows:
                    output.commit(rows, keys)
                    written, rows, keys = written + len(rows), [], []
        output.commit(rows, keys)
    return written + len(rows), skipped
