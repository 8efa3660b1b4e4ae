"""Probe stage: retrain every model at each setting of one inductive-bias probe.

Translation and noise only change the test images, so the evaluate stage measures them for every
cell. Permutation, data fraction and size change what is trained, so `convbench sweep --probe NAME`
(a DVC matrix stage over probes.run) retrains every (setting, model, seed) and writes one JSON file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import atomic, models, tracking
from pipeline.bench import resolve_device
from pipeline.data import PreparedData, Split, Splits
from pipeline.params import Params, probe_fingerprint
from pipeline.runtime import accuracy, device_splits, execution_plan, fit, place_model
from pipeline.transforms import permutation, permute_pixels, stratified_subset

SCALED_KEYS = ("channels", "width")


def scaled(settings: Any, scale: float) -> Any:
    """Settings with every channel count, width and hidden width multiplied by `scale` (at least 1)."""
    if isinstance(settings, dict):
        out = {}
        for key, value in settings.items():
            if key in SCALED_KEYS and isinstance(value, int):
                out[key] = max(1, round(value * scale))
            elif key == "hidden":
                out[key] = [max(1, round(width * scale)) for width in value]
            else:
                out[key] = scaled(value, scale)
        return out
    if isinstance(settings, list):
        return [scaled(item, scale) for item in settings]
    return settings


def scaled_params(params: Params, scale: float) -> Params:
    """Params whose built-in models are all scaled by `scale`; match: params models are matched again.

    User builders keep their settings: convbench cannot know which of their keywords set a size.
    """
    model: dict[str, dict[str, Any]] = {}
    for alias in dict.fromkeys([*params.models, *params.model]):
        raw = dict(params.model.get(alias) or {})
        if "builder" in raw:
            model[alias] = raw
            continue
        arch = {"arch": raw["arch"]} if "arch" in raw else {}
        model[alias] = arch | scaled(models.typed_settings(params, alias), scale)
    return params.model_copy(update={"model": model})


@dataclass(frozen=True)
class Setting:
    """One point of a probe: its label and how it changes the data and the models."""

    label: str
    value: float
    transform: Callable[[Splits], Splits]
    params: Params


def settings(probe: str, params: Params, input_shape: tuple[int, ...]) -> list[Setting]:
    """Every setting of `probe`, the unchanged baseline included, so each probe file stands alone."""
    if probe == "permutation":
        order = permutation(tuple(input_shape[1:]), params.probes.permutation_seed)

        def permute(data: Splits) -> Splits:
            return Splits(*(Split(permute_pixels(split.x, order), split.y) for split in (data.train, data.val, data.test)))

        return [Setting("original", 0.0, lambda data: data, params), Setting("permuted", 1.0, permute, params)]
    if probe == "fraction":

        def subset(fraction: float) -> Callable[[Splits], Splits]:
            def take(data: Splits) -> Splits:
                keep = stratified_subset(data.train.y, fraction, params.data.split_seed).to(data.train.y.device)
                return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))

            return take

        return [Setting(f"{f:g}", f, subset(f), params) for f in params.probes.fractions]
    return [Setting(f"x{s:g}", s, lambda data: data, scaled_params(params, s)) for s in params.probes.width_scales]


def run_probe(params: Params, probe: str, prepared: PreparedData, output: Path,
              on_cell: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Train and test every model at every setting and seed of `probe`; write the rows to `output` as JSON."""
    device = resolve_device(params.train.device)
    plan = execution_plan(params.train, device, prepared.input_shape)
    base = device_splits(prepared, device, with_test=True)
    rows: list[dict[str, Any]] = []
    for setting in settings(probe, params, prepared.input_shape):
        data = setting.transform(base)
        configs = models.resolve(setting.params, prepared.input_shape, prepared.num_classes)
        for model_name, config in configs.items():
            for seed in params.train.seeds:
                torch.manual_seed(seed)
                model = place_model(models.build(config), plan)
                tags = {"convbench.kind": "probe", "convbench.probe": probe, "convbench.setting": setting.label,
                        "convbench.model": model_name, "convbench.seed": seed, "convbench.dataset": prepared.name}
                name = f"{model_name}-s{seed} {probe}={setting.label}"
                with tracking.run(params.tracking, prepared.name, name, tags) as logger:
                    logger.log_params({"probe": probe, "setting": setting.label, "architecture": config.to_dict(),
                                       "train_images": len(data.train)})
                    history, _seconds = fit(model, data, params.train, seed, lambda stats: logger.log_metrics(
                        {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}, step=stats.epoch,
                        synchronous=False), plan)
                    test_accuracy = accuracy(model, data.test, params.evaluate.batch_size, plan)
                    logger.log_metrics({"test_accuracy": test_accuracy})
                row = {"probe": probe, "setting": setting.label, "value": setting.value, "model": model_name,
                       "seed": seed, "params": models.count_params(model), "train_images": len(data.train),
                       "final_val_accuracy": history[-1].val_accuracy, "test_accuracy": test_accuracy}
                rows.append(row)
                on_cell(row)
    atomic.write_json(output, {"probe": probe, "dataset": prepared.name, "models": list(params.models),
                               "fingerprint": probe_fingerprint(params, probe, prepared.sha256), "rows": rows})
    return rows
