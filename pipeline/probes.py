"""Inductive-bias probes: the transforms behind them, and the sweep that retrains both models per setting.

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

import numpy as np
import torch

from pipeline import atomic, models, tracking
from pipeline.bench import resolve_device
from pipeline.params import ModelParams, Params
from pipeline.prepare import PreparedData


def shift(images: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """Move (N, C, *spatial) images by `offsets` pixels per spatial axis, filling with zeros (no wrap-around)."""
    shifted = torch.zeros_like(images)
    source: list[slice] = [slice(None), slice(None)]
    target: list[slice] = [slice(None), slice(None)]
    for offset, size in zip(offsets, images.shape[2:]):
        if abs(offset) >= size:
            return shifted
        source.append(slice(max(0, -offset), size - max(0, offset)))
        target.append(slice(max(0, offset), size - max(0, -offset)))
    shifted[tuple(target)] = images[tuple(source)]
    return shifted


def shift_directions(pixels: int, spatial_dims: int) -> list[tuple[int, ...]]:
    """The 2 (1-D) or 4 (2-D) axis-aligned moves by `pixels`; the probe averages accuracy over them."""
    if pixels == 0:
        return [(0,) * spatial_dims]
    moves = []
    for axis in range(spatial_dims):
        for sign in (1, -1):
            offset = [0] * spatial_dims
            offset[axis] = sign * pixels
            moves.append(tuple(offset))
    return moves


def permutation(spatial_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One fixed shuffle of the spatial positions, the same for every image and channel."""
    size = int(np.prod(spatial_shape))
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def permute_pixels(images: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply a spatial permutation to (N, C, *spatial) images; `invert_permutation(order)` undoes it."""
    flat = images.reshape(images.shape[0], images.shape[1], -1)
    return flat[:, :, order].reshape(images.shape)


def invert_permutation(order: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes `order`."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return inverse


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a `fraction` of the rows, drawn per class so every class keeps its share (at least one)."""
    if fraction >= 1.0:
        return torch.arange(len(labels))
    rng = np.random.default_rng(seed)
    values = labels.numpy()
    chosen = [rng.permutation(np.flatnonzero(values == c))[: max(1, round(fraction * int((values == c).sum())))]
              for c in np.unique(values)]
    return torch.as_tensor(np.sort(np.concatenate(chosen)))


def scaled_model_params(model: ModelParams, scale: float) -> ModelParams:
    """The CNN with every conv's channels and every hidden width multiplied by `scale` (at least 1)."""
    conv = [block.model_copy(update={"channels": max(1, round(block.channels * scale))}) for block in model.cnn.conv]
    hidden = [max(1, round(width * scale)) for width in model.cnn.hidden]
    return model.model_copy(update={"cnn": model.cnn.model_copy(update={"conv": conv, "hidden": hidden})})


@dataclass(frozen=True)
class Setting:
    """One point of a probe: its label and how it changes the data and the models."""

    label: str
    value: float
    transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    model_params: ModelParams


def settings(probe: str, params: Params, input_shape: tuple[int, ...]) -> list[Setting]:
    """Every setting of `probe`, the unchanged baseline included, so each probe file stands alone."""
    same = params.model
    if probe == "permutation":
        order = permutation(tuple(input_shape[1:]), params.probes.permutation_seed)

        def permute(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: permute_pixels(v, order) if k.endswith("_x") else v for k, v in data.items()}

        return [Setting("original", 0.0, lambda data: data, same), Setting("permuted", 1.0, permute, same)]
    if probe == "fraction":

        def subset(fraction: float) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
            def take(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                keep = stratified_subset(data["train_y"], fraction, params.data.split_seed)
                return data | {"train_x": data["train_x"][keep], "train_y": data["train_y"][keep]}

            return take

        return [Setting(f"{f:g}", f, subset(f), same) for f in params.probes.fractions]
    return [Setting(f"x{s:g}", s, lambda data: data, scaled_model_params(same, s)) for s in params.probes.width_scales]


def run_probe(params: Params, probe: str, prepared: PreparedData, output: Path,
              on_cell: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Train and test both models at every setting and seed of `probe`; write the rows to `output` as JSON."""
    from pipeline.train import execution_plan, fit, normalize, place_model, predict_logits

    device = resolve_device(params.train.device)
    plan = execution_plan(params.train, device, prepared.input_shape)
    base = {k: normalize(v, prepared.mean, prepared.std, device) if k.endswith("_x") else v.to(device)
            for k, v in prepared.tensors.items()}
    rows: list[dict[str, Any]] = []
    for setting in settings(probe, params, prepared.input_shape):
        data = setting.transform(base)
        configs = models.resolve(setting.model_params, prepared.input_shape, prepared.num_classes)
        for model_name, config in configs.items():
            for seed in params.train.seeds:
                torch.manual_seed(seed)
                model = place_model(models.build(config), plan)
                tags = {"convbench.kind": "probe", "convbench.probe": probe, "convbench.setting": setting.label,
                        "convbench.model": model_name, "convbench.seed": seed, "convbench.dataset": prepared.name}
                name = f"{model_name}-s{seed} {probe}={setting.label}"
                with tracking.run(params.tracking, prepared.name, name, tags) as logger:
                    logger.log_params({"probe": probe, "setting": setting.label, "architecture": config,
                                       "train_images": len(data["train_y"])})
                    history, _seconds = fit(model, data, params.train, seed, lambda stats: logger.log_metrics(
                        {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}, step=stats.epoch,
                        synchronous=False), plan)
                    logits = predict_logits(model, data["test_x"], params.evaluate.batch_size, plan)
                    accuracy = (logits.argmax(1) == data["test_y"]).double().mean().item()
                    logger.log_metrics({"test_accuracy": accuracy})
                row = {"probe": probe, "setting": setting.label, "value": setting.value, "model": model_name,
                       "seed": seed, "params": models.count_params(model), "train_images": len(data["train_y"]),
                       "final_val_accuracy": history[-1].val_accuracy, "test_accuracy": accuracy}
                rows.append(row)
                on_cell(row)
    atomic.write_json(output, {"probe": probe, "dataset": prepared.name,
                               "fingerprint": fingerprint(params, probe, prepared.sha256), "rows": rows})
    return rows


def fingerprint(params: Params, probe: str, dataset_sha256: str) -> str:
    """A hash of everything a probe's numbers depend on, so the report never shows a stale sweep."""
    import hashlib
    import json

    relevant = {"probe": probe, "data": dataset_sha256, "model": params.model.model_dump(),
                "train": params.train.model_dump(), "evaluate_batch": params.evaluate.batch_size,
                "probes": params.probes.model_dump(exclude={"run"})}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()

