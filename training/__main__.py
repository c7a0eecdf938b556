"""Command line: ``python -m training <recipe> --profile P --data PATH --out runs/NAME``.

Recipes: ``manet``, ``hrnet-unet``, ``covid-cxnet``, ..., ``dual-sampling`` (one per paper); ``export`` turns a finished run
folder into an entry of the app's model registry; ``served-accuracy`` scores a registry classifier
through the app's own pipeline; ``external-eval`` does the same on any folder with a ``labels.csv``
(accuracy, AUC, per-class recall, calibration, per source); ``calibrate`` fits a served classifier's
temperature on val through the app's pipeline and writes it, with ECE before/after on test, on its card; ``faithfulness`` scores an
X-ray classifier's Grad-CAM or the CT slice classifier's heat map on test (deletion score, in-lung share per class) and writes that on its card. ``--data`` takes one or more folders in any layout
``training.adapters`` reads (the shared pack, Montgomery/Shenzhen, Cohen, Kermany); without it the
shared pack is found through ``$CHEST_DATA`` or ``../shared/data``. Multi-GPU:
``torchrun --nproc_per_node 4 -m training manet --profile gpu ...``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import torch

RECIPES = {  # command -> (module in training.recipes, help)
    "manet": ("manet", "MANet: ResUNet lungs, then ResNet/VGG/Inception plain, with mask attention, with CBAM"),
    "hrnet-unet": ("hrnet_unet", "UNet + HRNet: UNet lungs (10-fold), HRNet COVID classifier and baselines (10-fold)"),
    "covid-cxnet": ("covid_cxnet", "COVID-CXNet: CLAHE/BEASF inputs, base model, DenseNet-121; binary, flat, hierarchical"),
    "ct-lungs": ("ct_lungs", "CT lungs: ResUNet on the pack's ma2020 CT slices with lung masks"),
    "infnet": ("infnet", "Inf-Net: CT infection segmentation, Semi-Inf-Net pseudo-label loop, multi-class GGO/consolidation"),
    "image-kind": ("image_kind", "Image-kind gate: chest radiograph / axial chest CT slice / other (the app's pixel check)"),
    "multisource-ct": ("multisource_ct", "Multi-source attention (paper 002): global, heat-map, infected, fusion branches on CT slices"),
    "dual-sampling": ("dual_sampling", "Dual-sampling attention 3D ResNet34 (paper 004): COVID-19 vs CAP on CT volumes"),
}


def recipe_module(name: str):
    return importlib.import_module(f"training.recipes.{RECIPES[name][0]}")


def parse_overrides(pairs: list[str]) -> dict:
    """``--set cls_epochs=40 --set seeds=(0,)`` -> profile field overrides (Python literals)."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def load_records(paths: list[str] | None):
    from training.adapters import read_records
    from training.data import resolve_data_root

    return read_records([resolve_data_root(None)] if not paths else paths)


def run_recipe(module, paths: list[str] | None, out: Path, profile: str, overrides: dict) -> None:
    """CT recipes read the pack themselves (``read_records(root)``) and get its root; X-ray recipes get adapter records.
    Volume recipes read a folder with a labels.csv (``read_volume_records``), or generate volumes without ``--data``."""
    if getattr(module, "DATA_LAYOUT", None) == "volumes":
        from training.volume_data import read_volume_records

        root = Path(paths[0]) if paths else None
        module.run(read_volume_records(root) if root else None, out, profile, data_root=root, **overrides)
    elif hasattr(module, "read_records"):
        from training.data import resolve_data_root

        root = resolve_data_root(paths[0] if paths else None, module.DATA_COLLECTIONS)
        module.run(module.read_records(root), out, profile, data_root=root, **overrides)
    else:
        module.run(load_records(paths), out, profile, **overrides)


def main(argv=None) -> int | None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, summary) in RECIPES.items():
        recipe = sub.add_parser(name, help=summary)
        recipe.add_argument("--data", nargs="+", help="data folder(s); default $CHEST_DATA or ../shared/data")
        recipe.add_argument("--profile", default="cpu-quick", help="paper, gpu, cpu-quick, ... (see the recipe)")
        recipe.add_argument("--out", help="run folder (default runs/<recipe>-<profile>)")
        recipe.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a profile field")
        recipe.add_argument("--tensorboard", action="store_true", help="also write a TensorBoard log per model")
        recipe.add_argument("--export", metavar="WEIGHTS_DIR", help="also export the selected models into this registry folder")
    from training.shards import add_parser as add_shards_parser

    add_shards_parser(sub, RECIPES)  # pack-shards: a recipe's data as <= 60 MiB shards for a GPU machine
    export = sub.add_parser("export", help="export a finished run folder into the app's model registry")
    export.add_argument("run", help="run folder written by a recipe")
    export.add_argument("--weights", default="weights", help="registry folder (holds manifest.json)")
    export.add_argument("--version", default="1.0.0", help="the models' version on their cards (new weights: a new version)")
    served = sub.add_parser("served-accuracy", help="score a registry classifier through the app's pipeline on a split")
    served.add_argument("--weights", default="weights", help="registry folder (holds manifest.json)")
    served.add_argument("--classifier", help="card name (default: the registry's first classifier)")
    served.add_argument("--data", nargs="+", help="data folder(s); default $CHEST_DATA or ../shared/data")
    served.add_argument("--split", default="test")
    external = sub.add_parser("external-eval", help="score a registry classifier through the app's pipeline on a folder "
                                                    "with labels.csv (image,label[,source]): accuracy, AUC, recall, calibration")
    external.add_argument("--weights", default="weights", help="registry folder (holds manifest.json)")
    external.add_argument("--classifier", help="card name (default: the registry's first classifier)")
    external.add_argument("--data", required=True, help="folder holding labels.csv and the images it names")
    external.add_argument("--out", help="also write one CSV row per image here")
    external.add_argument("--skip-unknown-labels", action="store_true",
                          help="leave out images whose label the classifier has no class for (default: stop and name them)")
    external.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    calibrate = sub.add_parser("calibrate", help="fit a served classifier's temperature on val through the app's "
                                                 "pipeline; ECE before/after on test; written on its model card")
    calibrate.add_argument("--weights", default="weights", help="registry folder (holds manifest.json; rewritten)")
    calibrate.add_argument("--classifier", required=True, help="card name (an X-ray or the CT slice classifier)")
    calibrate.add_argument("--data", help="data pack root (cxr/ or ct_slices/ with labels.csv); default $CHEST_DATA or ../shared/data")
    calibrate.add_argument("--dry-run", action="store_true", help="print the figures, leave the manifest as it is")
    holdout = sub.add_parser("source-holdout", help="leave one COVID-19 source out: choose the X-ray classifier's "
                                                    "anti-shortcut settings by COVID-19 AUC on sources it never saw")
    holdout.add_argument("--data", nargs="+", help="data folder(s); default $CHEST_DATA or ../shared/data")
    holdout.add_argument("--profile", default="cpu-quick", help="cpu-quick, gpu or smoke (training.source_holdout)")
    holdout.add_argument("--out", default="runs/source-holdout", help="study folder")
    holdout.add_argument("--candidates", nargs="+", help="candidate names (default: all of training.source_holdout.CANDIDATES)")
    holdout.add_argument("--sources", nargs="+", help="sources to hold out (default: every source with COVID-19 images)")
    faith = sub.add_parser("faithfulness", help="score an X-ray classifier's Grad-CAM or the CT slice classifier's heat map "
                                                "on test through the app's pipeline "
                                                "(deletion score, in-lung share per class); written on its model card")
    faith.add_argument("--weights", default="weights", help="registry folder (holds manifest.json; rewritten)")
    faith.add_argument("--classifier", required=True, help="card name of an X-ray or the CT slice classifier")
    faith.add_argument("--data", help="data pack root (cxr/ with labels.csv); default $CHEST_DATA or ../shared/data")
    faith.add_argument("--limit", type=int, help="at most this many test images per class")
    faith.add_argument("--dry-run", action="store_true", help="print the figures, leave the manifest as it is")
    views = sub.add_parser("infection-views", help="choose the served CT infection model's test-time views (sizes, "
                                                  "mirroring) on val through the app's maths; written on its model card")
    views.add_argument("--weights", default="weights", help="registry folder (holds manifest.json; rewritten)")
    views.add_argument("--data", help="data pack root (ct_infection/); default $CHEST_DATA or ../shared/data")
    views.add_argument("--dry-run", action="store_true", help="print the figures, leave the manifest as it is")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from training.export import export_run

    if args.command == "pack-shards":
        from training.shards import command as pack_shards_command

        return pack_shards_command(args)
    if args.command == "external-eval":
        return _external_eval(args)
    if args.command == "calibrate":
        return _calibrate(args)
    if args.command == "faithfulness":
        return _faithfulness(args)
    if args.command == "infection-views":
        return _infection_views(args)
    if args.command == "source-holdout":
        from training.source_holdout import study

        summary = study(load_records(args.data), Path(args.out), args.profile, args.candidates, args.sources)
        print(f"winner: {summary['winner']} (report: {args.out}/report.md)")
        return
    if args.command == "served-accuracy":
        return _served_accuracy(args)
    if args.command == "export":
        for card in export_run(Path(args.run), Path(args.weights), args.version):
            print(f"exported {card.name} {card.version} -> {args.weights}")
        return
    module = recipe_module(args.command)
    if args.profile not in module.PROFILES:
        parser.error(f"{args.command} has no profile {args.profile!r}; choose from {', '.join(module.PROFILES)}")
    overrides = parse_overrides(args.set)
    if args.tensorboard:
        overrides["tensorboard"] = True
    out = Path(args.out or f"runs/{args.command}-{args.profile}")
    run_recipe(module, args.data, out, args.profile, overrides)
    if args.export:
        for card in export_run(out, Path(args.export)):
            print(f"exported {card.name} {card.version} -> {args.export}")


def _served_accuracy(args) -> int:
    import sys

    from core.errors import ChestReviewError
    from core.registry import Registry
    from training.served import served_accuracy, served_ct_slice_scores, served_infection_dice

    try:
        card = Registry.open(Path(args.weights)).card(args.classifier) if args.classifier else None
        if card is not None and card.task == "ct-infection-segmentation":
            return _print_infection_dice(served_infection_dice(Path(args.weights), card.name,
                                                               args.data[0] if args.data else None, args.split), args.split)
        if card is not None and card.task == "ct-classification":
            result = served_ct_slice_scores(Path(args.weights), card.name, args.data[0] if args.data else None, args.split)
        else:
            result = served_accuracy(Path(args.weights), args.classifier, load_records(args.data), args.split)
    except (ChestReviewError, FileNotFoundError) as error:  # no such classifier or data pack, a broken registry
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result['classifier']}: served accuracy {result['served_accuracy']:.4f} on {result['n']} {args.split} images "
          f"({result['refused']} refused); model card's test accuracy: {result['card_accuracy']:.4f}")
    if "auc" in result:
        print(f"  AUC {result['auc']:.4f}; per source: " + ", ".join(
            f"{source} n={v['n']} accuracy {v['accuracy']:.4f} AUC {v['auc']:.4f}" for source, v in result["per_source"].items()))
    return 0


def _print_infection_dice(result: dict, split: str) -> int:
    print(f"{result['model']}: mean Dice of the app's infection mask (regions touching the lungs) {result['app']:.4f}, "
          f"without the lung rule {result['unrestricted']:.4f}, on {result['n']} {split} slices ({result['refused']} refused)")
    for subset, values in result["per_subset"].items():
        print(f"  {subset}: n={values['n']} app {values['app']:.4f}, unrestricted {values['unrestricted']:.4f}")
    from training.metrics import INFNET_TABLE_COLUMNS

    protocol = result["protocol"]
    for name, values in [("all", protocol), *protocol.get("per_group", {}).items()]:
        print(f"  Inf-Net protocol on the served probability, {name} (n={values['n']}): "
              + ", ".join(f"{column} {values[column]:.4f}" for column in INFNET_TABLE_COLUMNS))
    multiclass = result["multiclass"]
    if multiclass:
        print(f"  {multiclass['model']} as served, {multiclass['n']} {split} slices: " + ", ".join(
            f"{name} Dice {multiclass[name]['mean']:.4f} (pooled {multiclass[name]['pooled']:.4f})"
            for name in ("ggo", "consolidation")))
    return 0


def _external_eval(args) -> int:
    import sys

    from core.errors import ChestReviewError
    from training.external_eval import external_eval, format_report, write_per_image

    try:
        result = external_eval(Path(args.weights), args.classifier, Path(args.data), args.skip_unknown_labels, args.backend)
    except ChestReviewError as error:  # no labels.csv, unknown labels, no such classifier, a broken registry
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.out:
        write_per_image(result, Path(args.out))
        print(f"wrote {len(result.rows)} rows to {args.out}")
    return 0


def _infection_views(args) -> int:
    import sys

    from core.errors import ChestReviewError
    from training.infection_views import chosen, score_views, write_views

    try:
        scores = score_views(Path(args.weights), args.data, "val")
    except (ChestReviewError, FileNotFoundError) as error:  # no infection model or data pack, a broken registry
        print(f"error: {error}", file=sys.stderr)
        return 2
    for candidate in scores["candidates"]:
        print(f"{scores['model']} {scores['version']}: views {candidate['views']}: val Dice {candidate['dice']:.4f} "
              f"({scores['n']} slices)")
    views = chosen(scores) if args.dry_run else write_views(Path(args.weights), scores)
    print(f"chosen: {views.as_config()}" + (" (dry run: manifest unchanged)" if args.dry_run else
                                           f", written on {scores['model']}'s card in {args.weights}/manifest.json"))
    return 0


def _calibrate(args) -> int:
    import sys

    from core.errors import ChestReviewError
    from training.calibration import calibrate, format_calibration

    try:
        entry = calibrate(Path(args.weights), args.classifier, args.data, write=not args.dry_run)
    except (ChestReviewError, FileNotFoundError) as error:  # no such classifier or task, no data pack, a broken registry
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_calibration(args.classifier, entry))
    print("dry run: manifest unchanged" if args.dry_run else f"wrote the calibration of {args.classifier} into {args.weights}/manifest.json")
    return 0


def _faithfulness(args) -> int:
    import sys

    from core.errors import ChestReviewError
    from training.faithfulness import faithfulness, format_faithfulness

    try:
        entry = faithfulness(Path(args.weights), args.classifier, args.data, args.limit, write=not args.dry_run)
    except (ChestReviewError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_faithfulness(args.classifier, entry))
    print("dry run: manifest unchanged" if args.dry_run else f"wrote the faithfulness of {args.classifier} into {args.weights}/manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
