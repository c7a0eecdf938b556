"""Build ``demo_cases/`` (the app's real demo cases) from the shared data pack, reproducibly.

    .venv/bin/python scripts/make_demo_cases.py [--data ../shared/data] [--out demo_cases]

Rule (no look at any model's answer): only the pack's **test** split, only rows whose licence allows
redistribution with attribution (NIH public domain, NLM public, Kermany CC BY 4.0, Hannover CC BY 3.0,
Cohen entries marked CC BY / CC BY 3.0 / CC BY 4.0; ma2020 CT slices CC BY 4.0; never NC, ND, SA or
unstated licences). Within each class the candidates are ordered by SHA-256 of their pack path; the
first is taken, then the first from a different collection when one exists (else the next). Two per
X-ray class (normal, COVID-19, tuberculosis, bacterial, viral pneumonia) and two CT slices: 12 images.
Files are copied byte for byte (the pack's copies are already downsized, de-identified 8-bit JPEGs).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.demo_cases import ALLOWED_LICENCES, MANIFEST, MAX_CASES, MAX_TOTAL_BYTES

PER_CLASS = 2
CXR_CLASSES = ("normal", "covid", "tb", "bacterial", "viral")
CHANGES = "Changes: downsized and re-encoded as 8-bit greyscale JPEG by the data pack"

# Pack licence string -> (licence as the manifest spells it, attribution). Anything else is not bundled.
CXR_LICENCES = {
    "NIH ChestX-ray (public domain, cite Wang et al. 2017)": (
        "public domain", ("NIH Clinical Center ChestX-ray8. Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM: "
        "ChestX-ray8: hospital-scale chest X-ray database and benchmarks, CVPR 2017.")),
    "public (NLM; cite Jaeger et al. 2014)": (
        "public domain", ("U.S. National Library of Medicine (Shenzhen / Montgomery County sets). Jaeger S, Candemir S, "
        "Antani S, et al.: Two public chest X-ray datasets for computer-aided screening of pulmonary diseases, "
        "Quant Imaging Med Surg 2014;4(6):475-477.")),
    "CC BY 4.0 (Kermany et al. 2018)": (
        "CC BY 4.0", ("Kermany DS, Goldbaum M, et al.: Identifying medical diagnoses and treatable diseases by "
        "image-based deep learning, Cell 2018;172(5):1122-1131; data: Mendeley Data doi:10.17632/rscbjbr9sj.2.")),
}
HANNOVER = ("CC BY 3.0", ("Hannover Medical School COVID-19 Image Repository. Winther HB, Laser H, Gerbel S, et al., "
                          "2020, doi:10.25835/0090041."))
COHEN = "Cohen JP, Morrison P, Dao L, et al.: COVID-19 image data collection, arXiv:2006.11988 (image credited to its publication as listed there)."
COHEN_LICENCES = {"CC BY": "CC BY", "CC BY 3.0": "CC BY 3.0", "CC BY 4.0": "CC BY 4.0"}
MA2020 = ("CC BY 4.0", ("Ma J, Ge C, Wang Y, et al.: COVID-19 CT Lung and Infection Segmentation Dataset, Zenodo 2020, "
                        "doi:10.5281/zenodo.3757476. Changes: 256 x 256 CLAHE-enhanced 8-bit slice by the data pack"))


def licence_of(row: dict) -> tuple[str, str] | None:
    """(licence, attribution) of a pack X-ray row whose licence allows redistribution, else None."""
    if row["source"] == "hannover" and row["license"] == "CC BY 3.0":
        return HANNOVER
    if row["source"] == "cohen":
        licence = COHEN_LICENCES.get(row["license"])
        return (licence, COHEN) if licence else None
    return CXR_LICENCES.get(row["license"])


def collection(source: str) -> str:
    """kermany-test and kermany-train are one collection, as are nlm-shenzhen and nlm-montgomery."""
    return source.split("-")[0] if source.startswith(("kermany", "nlm")) else source


def pick(candidates: list[dict], key: str, count: int = PER_CLASS) -> list[dict]:
    """SHA-256 order of the pack path; the first, then preferably others from new collections."""
    ordered = sorted(candidates, key=lambda row: hashlib.sha256(row[key].encode()).hexdigest())
    chosen: list[dict] = []
    for row in ordered:
        if len(chosen) == count:
            break
        if all(collection(row["source"]) != collection(c["source"]) for c in chosen):
            chosen.append(row)
    for row in ordered:  # fewer collections than ``count``: fill in SHA-256 order
        if len(chosen) == count:
            break
        if row not in chosen:
            chosen.append(row)
    return chosen


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def build(data: Path, out: Path) -> list[dict]:
    cases: list[dict] = []
    cxr = [row for row in read_csv(data / "cxr" / "labels.csv") if row["split"] == "test" and licence_of(row)]
    for label in CXR_CLASSES:
        for row in pick([r for r in cxr if r["label"] == label], "image"):
            licence, attribution = licence_of(row)
            name = f"cxr_{label}_{Path(row['image']).name}"
            cases.append({"file": name, "task": "cxr", "label": label, "source": row["source"],
                          "source_file": row["source_file"], "licence": licence,
                          "attribution": f"{attribution} {CHANGES}.", "pack_image": f"cxr/{row['image']}"})
    ct = [row for row in read_csv(data / "ct_infection" / "labels.csv")
          if row["split"] == "test" and row["subset"] == "ma2020-slices"]
    for row in pick(ct, "image"):
        name = f"ct_covid_ma2020_{Path(row['image']).name}"
        cases.append({"file": name, "task": "ct-slice", "label": "covid", "source": row["source"],
                      "source_file": Path(row["image"]).name, "licence": MA2020[0],
                      "attribution": MA2020[1] + ".", "pack_image": f"ct_infection/{row['image']}"})
    assert len(cases) <= MAX_CASES and all(case["licence"] in ALLOWED_LICENCES for case in cases)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for case in cases:
        shutil.copyfile(data / case["pack_image"], out / case["file"])
    total = sum((out / case["file"]).stat().st_size for case in cases)
    assert total <= MAX_TOTAL_BYTES, f"{total} bytes is over the 5 MB budget"
    rule = __doc__.split("Rule", 1)[1].strip()
    (out / MANIFEST).write_text(json.dumps({"rule": "Rule " + rule, "cases": cases}, indent=2) + "\n", encoding="utf-8")
    (out / "CREDITS.md").write_text(credits(cases), encoding="utf-8")
    return cases


def credits(cases: list[dict]) -> str:
    lines = [
        "# Credits of the real demo cases",
        "",
        "De-identified public images from the test split of the project's shared data pack, redistributed",
        "under their licences with attribution (built by `scripts/make_demo_cases.py`; rule in `manifest.json`).",
        "Research use only. Not for clinical use.",
        "",
        "| file | task | true label | source collection | original file | licence | attribution |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        lines.append(f"| {case['file']} | {case['task']} | {case['label']} | {case['source']} | {case['source_file']} "
                     f"| {case['licence']} | {case['attribution']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data pack")
    parser.add_argument("--out", default=str(REPO / "demo_cases"))
    args = parser.parse_args(argv)
    cases = build(Path(args.data), Path(args.out))
    total = sum((Path(args.out) / c["file"]).stat().st_size for c in cases)
    for case in cases:
        print(f"{case['file']}: {case['label']} ({case['source']}, {case['licence']})")
    print(f"{len(cases)} demo cases, {total} bytes, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
