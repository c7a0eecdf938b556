"""``python -m training ARGS`` as torchrun starts it, recording every file that a process other than rank 0
opens for writing under ``$DDP_AUDIT_ROOT``; the list goes to ``$DDP_AUDIT_OUT-rank<N>.json`` (outside that root).

Run by ``tests/training/test_ddp.py``: ``torchrun --standalone --nproc_per_node 2 tests/training/ddp_runner.py ct-lungs ...``.
"""

import json
import os
import sys

RANK = int(os.environ.get("RANK", 0))
ROOT = os.path.abspath(os.environ["DDP_AUDIT_ROOT"])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
writes: list[str] = []


def _opens_for_writing(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _record(path) -> None:
    full = os.path.abspath(os.fsdecode(path))
    if full.startswith(ROOT + os.sep):
        writes.append(full)


def _audit(event: str, args: tuple) -> None:
    if event != "open" or RANK == 0:
        return
    path, mode, flags = args
    if isinstance(path, (str, bytes, os.PathLike)) and _opens_for_writing(mode, flags):
        _record(path)


def _watch_torch_save() -> None:
    """``torch.save`` to a path writes through C++, past Python's ``open`` audit event: record those too."""
    import torch

    save = torch.save

    def recorded_save(obj, f, *args, **kwargs):
        if RANK != 0 and isinstance(f, (str, bytes, os.PathLike)):
            _record(f)
        return save(obj, f, *args, **kwargs)

    torch.save = recorded_save


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # torchrun runs this file as a script: the repository is the working directory
    sys.addaudithook(_audit)
    _watch_torch_save()
    from training.__main__ import main

    try:
        main(sys.argv[1:])
    finally:
        with open(f"{os.environ['DDP_AUDIT_OUT']}-rank{RANK}.json", "w") as handle:
            json.dump(writes, handle)
