"""A sweep's grid: axes from `-S key=v1,v2` options or a YAML file, expanded into validated cells.

Every cell is checked against the params schema before any backend starts, so a typo in a key or
a bad value stops the sweep with one line instead of failing N trials later.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params import Params, apply_settings, dataset_names, load_yaml, validate_params

SWEEP_TAG = "sweep"
CELL_TAG = "sweep_cell"


@dataclass(frozen=True)
class SweepCell:
    """One point of the grid: its name, the settings that define it, and the params it runs with."""

    name: str
    settings: dict[str, Any]
    raw_params: dict[str, Any] = field(repr=False)
    params: Params = field(repr=False)

    def describe(self) -> str:
        """'train.lr=0.001 train.epochs=2', the cell's settings as the user would type them."""
        return " ".join(f"{key}={format_value(value)}" for key, value in self.settings.items())


def parse_option(option: str) -> tuple[str, list[Any]]:
    """'train.lr=0.001,0.003' -> ('train.lr', [0.001, 0.003]); values are YAML, commas inside [] or {} kept."""
    key, sep, values = option.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ParamsError(f"-S '{option}': expected KEY=VALUE[,VALUE...], e.g. -S train.lr=0.001,0.003")
    return key, [_parse_value(part, option) for part in _split_top_level(values)]


def load_grid_file(path: Path) -> dict[str, list[Any]]:
    """Read a YAML grid: a mapping of dotted keys to lists of values (a single value is a one-item axis)."""
    try:
        raw = load_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: grid file not found; pass an existing YAML file to --grid") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: not a valid YAML grid ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(
            f"{path}: expected a mapping of dotted keys to lists of values, e.g. 'train.lr: [0.001, 0.003]'"
        )
    axes: dict[str, list[Any]] = {}
    for key, values in raw.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ParamsError(f"{path}: '{key}' has no values; give it a list with at least one")
        axes[str(key)] = values
    return axes


def combine_axes(grid_file: Path | None, options: list[str]) -> dict[str, list[Any]]:
    """Axes from the grid file, then from -S options (an option replaces a file axis of the same key)."""
    axes = load_grid_file(grid_file) if grid_file else {}
    for option in options:
        key, values = parse_option(option)
        axes[key] = values
    if not axes:
        raise ParamsError("sweep: no grid given; pass -S KEY=V1,V2 (repeatable) or --grid FILE.yaml")
    return axes


def expand(raw_params: dict[str, Any], axes: dict[str, list[Any]], sweep_name: str, source: str) -> list[SweepCell]:
    """Every combination of the axes as a named, validated cell tagged with the sweep and cell names."""
    for key in axes:
        if key.split(".")[0] == "overrides" or key.startswith("tracking.tags"):
            raise ParamsError(f"-S {key}: the sweep cannot vary '{key}'; sweep the setting itself, e.g. train.epochs")
    cells = []
    for index, combination in enumerate(itertools.product(*axes.values())):
        settings = dict(zip(axes, combination))
        if isinstance(settings.get("data.name"), str):  # DVC fans its stages out over a list: one dataset is [name]
            settings["data.name"] = [settings["data.name"]]
        name = f"{sweep_name}-{index}"
        tags = {f"tracking.tags.{SWEEP_TAG}": sweep_name, f"tracking.tags.{CELL_TAG}": name}
        raw = apply_settings(raw_params, {**settings, **tags}, f"{source}: sweep")
        _refuse_shadowed(raw, settings, source)
        params = validate_params(
            raw, source=f"{source} with {' '.join(f'{k}={format_value(v)}' for k, v in settings.items())}"
        )
        cells.append(SweepCell(name, settings, raw, params))
    return cells


def _refuse_shadowed(raw: dict[str, Any], settings: dict[str, Any], source: str) -> None:
    """A swept key that overrides.<dataset> also sets would silently have no effect; say so instead."""
    for dataset in dataset_names(raw, source):
        shadowing = (raw.get("overrides") or {}).get(dataset) or {}
        for key in settings:
            if key in shadowing:
                raise ParamsError(
                    f"{source}: overrides.{dataset}.{key} replaces the swept '{key}' for {dataset}, so the sweep would "
                    f"not change it; remove it from overrides.{dataset} to sweep it"
                )


def format_value(value: Any) -> str:
    """A value as one -S token: plain strings as-is, lists of names as [a,b], everything else as compact JSON
    ([0,1], true, 0.001)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and NAME.fullmatch(v) for v in value):
        return f"[{','.join(value)}]"
    return json.dumps(value, separators=(",", ":"))


NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, braces or quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _parse_value(text: str, option: str) -> Any:
    if not text:
        raise ParamsError(f"-S '{option}': empty value; separate values with single commas")
    try:
        return load_yaml(text, f"-S '{option}'")
    except yaml.YAMLError:
        raise ParamsError(f"-S '{option}': '{text}' is not a valid YAML value") from None
