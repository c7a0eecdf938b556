"""Command line of the app's core.

    python -m core predict FILES_OR_FOLDERS --out results.csv   # batch analysis, one CSV row per image
    python -m core predict --task ct-slice FILES --out ct.csv [--masks DIR]   # CT slices (+ lung/infection PNGs)
    python -m core predict --task ct-volume PATHS --out vol.csv [--masks DIR]  # CT volumes: NIfTI files or DICOM series folders
    python -m core predict --engine ray [--address HOST:PORT] --task cxr DIR @listing.txt --out results.parquet
                                                                  # archive scoring on Ray (core.archive), resumable
    python -m core benchmark --runs 20                            # per-stage timings, PyTorch vs ONNX Runtime
    python -m core benchmark --only ct-volume [--no-large-volume]   # CT volumes: 138x256x256 and 512x512x300
    python -m core demo-cases OUT_DIR                             # write the synthetic demo cases (X-ray, CT slices, CT volumes)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Chest imaging review: command line")
    parser.add_argument("--weights", help="registry folder (default: bundled weights/ or $CHEST_WEIGHTS_DIR)")
    parser.add_argument("--classifier", help="registry name of the classifier (default: the registry's first)")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="classify images and folders into a CSV")
    predict.add_argument("--task", choices=("cxr", "ct-slice", "ct-volume"), default="cxr",
                         help="cxr: frontal chest X-rays (default); ct-slice: one axial CT slice per file; "
                              "ct-volume: one CT volume per NIfTI file or per folder holding one DICOM series")
    predict.add_argument("--masks", help="ct-slice: write <stem>_lungs.png and <stem>_infection.png (0/255) here; "
                                         "ct-volume: <name>_lungs.nii.gz and <name>_infection.nii.gz (uint8 0/1, "
                                         "the input's voxel grid and affine)")
    predict.add_argument("inputs", nargs="+", help="files, folders, or @FILE: a listing with one path per line")
    predict.add_argument("--out", default="results.csv", help="results.csv or results.parquet (the suffix picks the format)")
    predict.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process (default); ray: Ray Data actors, resumable (docs/ARCHIVE_SCORING.md)")
    predict.add_argument("--address", help="ray: the cluster to join (HOST:PORT); default: start Ray on this machine")
    predict.add_argument("--workers", type=int, help="ray: actors (default: one per GPU, else one per CPU)")
    predict.add_argument("--actors-per-gpu", type=int, default=1,
                         help="ray: actors sharing one GPU (each decodes on its own CPU); default 1 (num_gpus=1)")
    predict.add_argument("--batch-size", type=int, default=8, help="ray: inputs per actor call")
    predict.add_argument("--chunk-rows", type=int, default=2000, help="ray: rows per committed chunk of the output")
    predict.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    bench = sub.add_parser("benchmark", help="per-stage timings p50/p90")
    bench.add_argument("--runs", type=int, default=20)
    bench.add_argument("--size", type=int, default=1024, help="side of the synthetic test image")
    bench.add_argument("--only", choices=("cxr", "ct-slice", "ct-volume"), help="time one analysis only")
    bench.add_argument("--volume-runs", type=int, default=1, help="timed runs per CT volume (each takes seconds)")
    bench.add_argument("--no-large-volume", action="store_true", help="CT volume: skip the 512 x 512 x 300 case")
    demo = sub.add_parser("demo-cases", help="write the synthetic demo cases to a folder")
    demo.add_argument("out")
    args = parser.parse_args(argv)

    from .registry import Registry
    from .settings import weights_dir

    folder = Path(args.weights) if args.weights else weights_dir()
    if args.command == "predict":
        return _predict(args, Registry.open(folder), folder)
    elif args.command == "benchmark":
        _benchmark(args, Registry.open(folder))
    elif args.command == "demo-cases":
        from .ct_phantoms import write_ct_demo_cases
        from .ct_volume_phantoms import write_ct_volume_demo_cases
        from .phantoms import write_demo_cases

        out = Path(args.out)
        for path in [*write_demo_cases(out), *write_ct_demo_cases(out), *write_ct_volume_demo_cases(out)]:
            print(path)
    return 0


def _benchmark(args, registry) -> None:
    from . import benchmark

    has_ct = bool(registry.cards("ct-lung-segmentation") and registry.cards("ct-infection-segmentation"))
    if args.only in (None, "cxr"):
        benchmark.run_benchmark(registry, runs=args.runs, size=args.size, classifier=args.classifier)
    if args.only in (None, "ct-slice") and has_ct:
        benchmark.run_ct_slice_benchmark(registry, runs=args.runs)
    if args.only in (None, "ct-volume") and has_ct:
        benchmark.run_ct_volume_benchmark(registry, runs=args.volume_runs, large=not args.no_large_volume)
    if args.only in ("ct-slice", "ct-volume") and not has_ct:
        print("the registry has no CT lung and infection models", file=sys.stderr)


def _predict(args, registry, folder: Path) -> int:
    from .archive import expand_listings, write_rows
    from .batch import CT_SLICE_COLUMNS, cxr_columns, expand_inputs, predict_rows
    from .guard.image_kind import open_gate

    if args.masks and args.task not in ("ct-slice", "ct-volume"):
        print("--masks is for --task ct-slice or --task ct-volume", file=sys.stderr)
        return 2
    if args.engine == "ray":
        return _predict_on_ray(args, folder)
    args.inputs = expand_listings(args.inputs)
    if args.task == "ct-volume":
        return _predict_volumes(args, registry)
    files = expand_inputs(args.inputs)
    if not files:
        print("no input files found", file=sys.stderr)
        return 2
    if args.task == "cxr":
        from .pipelines.cxr import CxrPipeline

        pipeline = CxrPipeline(registry, backend=args.backend, classifier=args.classifier)
        columns, model = cxr_columns(pipeline.classes), pipeline.cls_card
    else:
        from .pipelines.ct_slice import CtSlicePipeline

        pipeline = CtSlicePipeline(registry, backend=args.backend)
        columns, model = CT_SLICE_COLUMNS, pipeline.cards.get("classifier", pipeline.cards["infection"])
    gate = open_gate(registry)
    if gate is None:
        print("warning: the registry has no image-kind gate; inputs are checked by metadata and pixel rules only", file=sys.stderr)
    rows = predict_rows(args.task, pipeline, files, gate, Path(args.masks) if args.masks else None)
    count = write_rows(rows, Path(args.out), columns)
    print(f"wrote {count} rows to {args.out} (model {model.name} {model.version}, {pipeline.backend})")
    if model.task in ("cxr-classification", "ct-classification"):
        from .calibration import probability_note

        print(f"probabilities: {probability_note(model)}")
    return 0


def _predict_volumes(args, registry) -> int:
    from .archive import write_rows
    from .batch import CT_VOLUME_COLUMNS, predict_rows, volume_cases, volume_model_id
    from .pipelines.ct_volume import NO_CLASSIFIER_WARNING, CtVolumePipeline

    cases = volume_cases(args.inputs)
    pipeline = CtVolumePipeline(registry, backend=args.backend)
    if not pipeline.classifiers:
        print(f"warning: {NO_CLASSIFIER_WARNING}", file=sys.stderr)
    rows = predict_rows("ct-volume", pipeline, cases, masks_dir=Path(args.masks) if args.masks else None)
    count = write_rows(rows, Path(args.out), CT_VOLUME_COLUMNS)
    model, version = volume_model_id(pipeline.cards)
    print(f"wrote {count} rows to {args.out} (model {model} {version}, {pipeline.backend})")
    return 0


def _predict_on_ray(args, folder: Path) -> int:
    from .archive import score_archive
    from .errors import ArchiveError

    if args.masks:
        print("--masks is for the local engine (workers on other machines cannot write to this folder)",
              file=sys.stderr)
        return 2
    try:
        counts = score_archive(args.task, args.inputs, Path(args.out), folder, address=args.address,
                               backend=args.backend, classifier=args.classifier, workers=args.workers,
                               batch_size=args.batch_size, chunk_rows=args.chunk_rows, actors_per_gpu=args.actors_per_gpu)
    except ArchiveError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {counts['written']} rows, skipped {counts['skipped']} inputs already scored; {args.out} holds "
          f"{counts['rows']} rows ({counts['workers']} {'GPU' if counts['gpu'] else 'CPU'} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
