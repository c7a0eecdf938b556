"""Real demo cases bundled with the app: a few de-identified images whose licences allow redistribution.

The synthetic phantoms (``core.phantoms``, ``core.ct_phantoms``) are out of distribution for the
bundled models, so a demonstration on them shows wrong answers. ``demo_cases/`` holds at most 12
real images taken only from the test split of the shared data pack (never seen in training or model
selection), chosen by ``scripts/make_demo_cases.py`` by a fixed rule (SHA-256 order of the pack path,
not by what the models answer), with ``manifest.json`` (one entry per image: task, true label,
source collection, original file name, licence, attribution) and ``CREDITS.md``.

``demo_cases(task)`` lists the cases of a page (``cxr`` or ``ct-slice``); ``DemoCase.read_bytes()``
gives the file, which the pages decode and guard exactly like an upload. The phantoms stay as the
clearly labelled synthetic fallback and as test fixtures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .classes import class_title
from .errors import ChestReviewError
from .settings import REPO_ROOT

DEMO_DIR = REPO_ROOT / "demo_cases"
MANIFEST = "manifest.json"
TASKS = ("cxr", "ct-slice")
MAX_CASES = 12
MAX_TOTAL_BYTES = 5 * 1024 * 1024
# Licences that allow redistribution with attribution (no NC, ND or SA terms), as the manifest spells them.
ALLOWED_LICENCES = ("public domain", "CC BY", "CC BY 3.0", "CC BY 4.0")


class DemoCaseError(ChestReviewError):
    """The bundled demo cases are missing or their manifest is malformed."""


@dataclass(frozen=True)
class DemoCase:
    file: str  # relative to the demo folder
    task: str  # "cxr" or "ct-slice"
    label: str  # the true label, in the app's class names (covid, normal, tb, bacterial, viral)
    source: str  # source collection in the data pack (nih, kermany-test, hannover, ...)
    source_file: str  # the image's file name in its original collection
    licence: str  # one of ALLOWED_LICENCES
    attribution: str  # who to credit, with the citation
    pack_image: str  # the pack path (cxr/... or ct_infection/...) it was copied from
    folder: Path = DEMO_DIR

    @property
    def path(self) -> Path:
        return self.folder / self.file

    @property
    def title(self) -> str:
        """What the case selector shows: the true label, source and file (so the choice never hides the answer)."""
        return f"{class_title(self.label)} — {self.source} ({Path(self.file).name})"

    @property
    def credit(self) -> str:
        return f"{self.source_file} from {self.source}, {self.licence}. {self.attribution}"

    def read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise DemoCaseError(f"The demo case {self.file} is missing from {self.folder} ({error.strerror}).") from error


def demo_cases(task: str | None = None, folder: Path | None = None) -> list[DemoCase]:
    """The bundled real demo cases (of ``task`` when given), in manifest order; [] when none are bundled."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    folder = Path(folder) if folder is not None else DEMO_DIR
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["cases"]
        cases = [DemoCase(**entry, folder=folder) for entry in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise DemoCaseError(f"The demo case manifest {manifest} is malformed: {error}.") from error
    return [case for case in cases if task is None or case.task == task]
