"""One recipe per paper (``manet``, ``hrnet_unet``, ``covid_cxnet``); each writes ``config.json`` in its run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path


def _as_tuples(value):
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list) else value


def load_profile(run_dir: Path, profile_cls) -> tuple[str, object]:
    """(profile name, profile) of a finished run, rebuilt from its ``config.json`` (JSON lists back to tuples)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    name = config.pop("profile")
    recipe = config.pop("recipe", None)
    unknown = sorted(set(config) - {f.name for f in fields(profile_cls)})
    if unknown:
        raise ValueError(f"{run_dir} was written by another version of the {recipe or 'manet'} recipe "
                         f"(unknown settings: {', '.join(unknown)}); re-run the recipe to export it")
    return name, profile_cls(**{key: _as_tuples(value) for key, value in config.items()})


def start_run(recipe: str, profiles: dict, profile_name: str, out_dir: Path, overrides: dict) -> tuple[object, Path]:
    """The profile with ``overrides`` applied, and the run folder with its ``config.json`` (written by rank 0 only)."""
    from training.engine import is_main_process
    from training.reports import write_json

    profile = replace(profiles[profile_name], **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_json(out_dir / "config.json", {"recipe": recipe, "profile": profile_name, **asdict(profile)})
    return profile, out_dir
