"""A folder of N distinct PNG chest X-rays for timing the two predict engines (docs/ARCHIVE_SCORING.md).

    python scripts/make_archive_benchmark.py OUT_DIR [--count 2000] [--sources 500]

The first ``--sources`` test-split X-rays of the shared data pack (``$CHEST_DATA`` or ../shared/data, cxr/labels.csv,
sorted by path) are written ``count / sources`` times each; copy k > 0 has k grey levels added to its top-left
4 x 4 pixels, so every file has its own bytes (its own content hash) while the analysis does the same work.
The files are not data of the project: keep OUT_DIR out of the repository.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--sources", type=int, default=500)
    args = parser.parse_args()
    data = Path(os.environ.get("CHEST_DATA", REPO.parent / "shared" / "data")) / "cxr"
    with open(data / "labels.csv", newline="") as handle:
        images = sorted(row["image"] for row in csv.DictReader(handle) if row["split"] == "test")[: args.sources]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in range(args.count):
        source, copy = images[index % len(images)], index // len(images)
        pixels = np.asarray(Image.open(data / source).convert("L"), dtype=np.int16).copy()
        pixels[:4, :4] = (pixels[:4, :4] + copy) % 256
        Image.fromarray(pixels.astype(np.uint8)).save(out / f"xray_{index:05d}.png")
    print(f"wrote {args.count} PNGs from {len(images)} test-split X-rays to {out}")


if __name__ == "__main__":
    main()
