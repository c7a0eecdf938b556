"""Command line: ``python -m training manet --profile bundled --data PATH --out runs/manet``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)
    manet = sub.add_parser("manet", help="MANet: ResUNet lung segmenter + mask-attention classifier")
    manet.add_argument("--data", help="data pack root (holds cxr/labels.csv); default $CHEST_DATA or ../shared/data")
    manet.add_argument("--profile", default="bundled")
    manet.add_argument("--out", default="runs/manet")
    manet.add_argument("--export", metavar="WEIGHTS_DIR", help="also export both models into this registry folder")
    export = sub.add_parser("export", help="export a finished MANet run folder into the app's model registry")
    export.add_argument("run", help="run folder written by `python -m training manet`")
    export.add_argument("--weights", default="weights", help="registry folder (holds manifest.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from training.data import resolve_data_root
    from training.export import export_manet
    from training.recipes import manet as recipe

    if args.command == "export":
        for card in export_manet(recipe.load_run(Path(args.run)), Path(args.run), Path(args.weights)):
            print(f"exported {card.name} {card.version} -> {args.weights}")
        return
    result = recipe.run(resolve_data_root(args.data), Path(args.out), args.profile)
    if args.export:
        export_manet(result, Path(args.out), Path(args.export))


if __name__ == "__main__":
    main()
