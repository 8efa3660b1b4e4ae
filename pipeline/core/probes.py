"""The retraining probes, one registry entry each: a name and the settings it trains every model at.

Translation and noise only change the test images, so the evaluate stage measures them for every cell.
A probe here changes what is trained (the images, how many of them, how each batch is augmented, the models'
sizes or activations), so the probe stage retrains every (setting, model, seed), or only the setting's own models.
Its words (table, claim, figure) live in reporting/probes.py under the same name. Importing this module loads no
torch, so params validation can list the names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core import models
from pipeline.core.catalog import mirrorable
from pipeline.core.data import Split, Splits
from pipeline.errors import ParamsError

if TYPE_CHECKING:
    from pipeline.core.data import PreparedData
    from pipeline.core.transforms import Augment
    from pipeline.params import Params


@dataclass(frozen=True)
class Setting:
    """One point of a probe: its label and how it changes the data, the training batches and the models."""

    label: str
    value: float
    transform: Callable[[Splits], Splits]
    params: Params
    augment: Augment | None = None  # applied to every training batch (never to validation or test images)
    models: tuple[str, ...] | None = None  # the models this setting retrains; None: every model of params.models


SettingsOf = Callable[["Params", "PreparedData"], list[Setting]]
CheckOf = Callable[["Params", str], object]  # (params, source): a ParamsError when the probe cannot run with them


@dataclass(frozen=True)
class Probe:
    """A registered probe: its name, every setting it trains at (the unchanged baseline included), and whether
    each cell's test accuracy is also measured under the evaluate stage's shifts (evaluate.shifts); `check` refuses,
    when params are validated, params the probe cannot run with (so `dvc repro` stops before any stage trains)."""

    name: str
    settings: SettingsOf
    shifted: bool = False
    check: CheckOf | None = None


PROBES: dict[str, Probe] = {}


def register(name: str, shifted: bool = False, check: CheckOf | None = None) -> Callable[[SettingsOf], SettingsOf]:
    """Decorator: register `settings(params, prepared) -> [Setting, ...]` as the probe `name`."""

    def wrap(settings: SettingsOf) -> SettingsOf:
        PROBES[name] = Probe(name, settings, shifted, check)
        return settings

    return wrap


def unchanged(data: Splits) -> Splits:
    """The baseline: the prepared splits as they are."""
    return data


@register("permutation")
def permutation_settings(params: Params, prepared: PreparedData) -> list[Setting]:
    """The original images and the same images under one fixed pixel permutation (train, val and test alike)."""
    from pipeline.core.transforms import permutation, permute_pixels  # torch loads when a probe runs, not with params

    order = permutation(tuple(prepared.input_shape[1:]), params.probes.permutation_seed)

    def permute(data: Splits) -> Splits:
        return Splits(*(Split(permute_pixels(split.x, order), split.y) for split in (data.train, data.val, data.test)))

    return [Setting("original", 0.0, unchanged, params), Setting("permuted", 1.0, permute, params)]


@register("fraction")
def fraction_settings(params: Params, prepared: PreparedData) -> list[Setting]:
    """A stratified share of the training split at each of probes.fractions (validation and test unchanged)."""
    from pipeline.core.transforms import stratified_subset  # torch loads when a probe runs, not with params

    def subset(fraction: float) -> Callable[[Splits], Splits]:
        def take(data: Splits) -> Splits:
            keep = stratified_subset(data.train.y, fraction, params.data.split_seed).to(data.train.y.device)
            return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))

        return take

    return [Setting(f"{f:g}", f, subset(f), params) for f in params.probes.fractions]


@register("size")
def size_settings(params: Params, prepared: PreparedData) -> list[Setting]:
    """Every built-in model scaled by each of probes.width_scales; size-matched models matched again."""
    return [Setting(f"x{s:g}", s, unchanged, scaled_params(params, s)) for s in params.probes.width_scales]


@register("augment", shifted=True)
def augment_settings(params: Params, prepared: PreparedData) -> list[Setting]:
    """Training batches randomly translated by up to each of probes.augment.shifts pixels (0: unaugmented),
    and mirrored too where probes.augment.flips (auto: the dataset's classes survive a mirror) says so."""
    from pipeline.core.transforms import Augment  # torch loads when a probe runs, not with params

    flips = params.probes.augment.flips
    flip = mirrorable(prepared.name, params.dataset) if flips == "auto" else flips is True
    fill = tuple(-mean / std for mean, std in zip(prepared.mean, prepared.std))  # a zero pixel, normalised
    return [
        Setting(
            f"±{k}" + (" + flips" if flip else "") if k else "none",
            float(k),
            unchanged,
            params,
            Augment(k, flip, fill) if k else None,
        )
        for k in params.probes.augment.shifts
    ]


def activation_models(params: Params, source: str = "params.yaml") -> tuple[str, ...]:
    """The models of params.models whose architecture has an `activation` setting; none at all is a ParamsError."""
    retrained = tuple(alias for alias in params.models if _has_activation(params, alias))
    if not retrained:
        having = ", ".join(name for name, arch in models.REGISTRY.items() if arch.has_activation)
        raise ParamsError(
            f"{source}: probes.run: activation: no model of {params.models} has an activation setting; add a model "
            f"whose architecture has one ({having}) or remove activation from probes.run"
        )
    return retrained


def _has_activation(params: Params, alias: str) -> bool:
    """Whether the alias is a registered architecture with an `activation` setting (a user builder is not)."""
    arch = models.REGISTRY.get(models.arch_of(alias, dict(params.model.get(alias) or {})))
    return arch is not None and arch.has_activation


def with_activation(params: Params, aliases: tuple[str, ...], activation: str) -> Params:
    """Params whose models `aliases` all use `activation`; every other model keeps its settings."""
    model = dict(params.model)
    for alias in aliases:
        model[alias] = dict(model.get(alias) or {}) | {"activation": activation}
    return params.model_copy(update={"model": model})


@register("activation", check=activation_models)
def activation_settings(params: Params, prepared: PreparedData) -> list[Setting]:
    """Every model whose settings name an activation retrained with each of probes.activations; the others are left
    out, as their activation is no setting convbench can change."""
    retrained = activation_models(params)
    return [
        Setting(name, float(index), unchanged, with_activation(params, retrained, name), models=retrained)
        for index, name in enumerate(params.probes.activations)
    ]


def scaled(settings: Any, scale: float, keys: tuple[str, ...]) -> Any:
    """Settings with every int (or list of ints) under one of `keys`, at any depth, multiplied by `scale` (at least 1)."""
    if isinstance(settings, dict):
        out: dict[str, Any] = {}
        for key, value in settings.items():
            if key in keys and isinstance(value, int):
                out[key] = max(1, round(value * scale))
            elif key in keys and isinstance(value, list):
                out[key] = [max(1, round(width * scale)) for width in value]
            else:
                out[key] = scaled(value, scale, keys)
        return out
    if isinstance(settings, list):
        return [scaled(item, scale, keys) for item in settings]
    return settings


def scaled_params(params: Params, scale: float) -> Params:
    """Params whose built-in models are all scaled by `scale`; match: params models are matched again.

    Each architecture declares its size knobs (models.Architecture.scalable). User builders keep their settings:
    convbench cannot know which of their keywords set a size.
    """
    model: dict[str, dict[str, Any]] = {}
    for alias in dict.fromkeys([*params.models, *params.model]):
        raw = dict(params.model.get(alias) or {})
        arch = models.REGISTRY.get(models.arch_of(alias, raw))
        if arch is None:
            model[alias] = raw
            continue
        named = {"arch": raw["arch"]} if "arch" in raw else {}
        model[alias] = named | scaled(models.typed_settings(params, alias), scale, arch.scalable)
    return params.model_copy(update={"model": model})


def probe_fingerprint(params: Params, probe: str, dataset_sha256: str) -> str:
    """A hash of everything a probe's numbers depend on, so the report never shows a stale sweep."""
    relevant = {
        "probe": probe,
        "data": dataset_sha256,
        "models": params.models,
        "reference": params.reference_model,
        "model": params.model,
        "train": params.train.model_dump(),
        "evaluate_batch": params.evaluate.batch_size,
        "probes": params.probes.model_dump(exclude={"run"}),
    }
    if probe in PROBES and PROBES[probe].shifted:
        relevant["evaluate_shifts"] = params.evaluate.shifts
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()
