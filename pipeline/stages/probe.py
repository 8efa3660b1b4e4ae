"""Probe stage: retrain every model at each setting of one registered probe (core/probes.py) and record the rows.

`convbench probe NAME` runs one; `dvc repro` runs each of probes.run as an entry of a DVC matrix stage.
Every (setting, model, seed) is one MLflow run tagged with the probe and setting; the rows go to
results/<dataset>/probes/<probe>.json with the fingerprint of the params and data they came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.artifacts import paths, records
from pipeline.artifacts.code import source_sha256
from pipeline.artifacts.probe_record import ProbeResult, ProbeRow
from pipeline.core import cell as cells
from pipeline.core import models
from pipeline.core.cell import Cell
from pipeline.core.data import PreparedData, Splits
from pipeline.core.measure import count_flops, resolve_device
from pipeline.core.probes import PROBES, Setting, probe_fingerprint
from pipeline.core.runtime import (
    accuracy,
    device_splits,
    fit,
    intra_op_threads,
    normalize,
    place_model,
    test_scorer,
    threads_for,
    zero_pixel,
)
from pipeline.core.transforms import shift_accuracies
from pipeline.errors import ConvbenchError
from pipeline.ops import tracking
from pipeline.params import Params


def probe(params: Params, name: str, say: Callable[[str], None] = print) -> ProbeResult:
    """Train and test every model (or the setting's own models) at every setting and seed of probe `name`; write
    results/<dataset>/probes/<name>.json.

    A result computed from exactly these params, data and code is kept (`dvc repro` after an edit elsewhere in
    the stages reruns nothing here).
    """
    prepared = cells.prepared_data(params)
    path = paths.probe(prepared.name, name)
    fingerprint = probe_fingerprint(params, name, prepared.sha256)
    kept = current(path, fingerprint)
    if kept is not None:
        say(f"probe: {name} on {prepared.name} is current (same params, data and code): kept {path}")
        return kept
    base = device_splits(prepared, _device(params), with_test=True)
    rows: list[ProbeRow] = []
    shifts = params.evaluate.shifts if PROBES[name].shifted else []
    for setting in PROBES[name].settings(params, prepared):
        data = setting.transform(base)
        retrained = list(setting.models) if setting.models is not None else None
        for cell in cells.resolve(setting.params, prepared, retrained, tuned=False):
            row = probe_cell(cell, name, setting, data, prepared, shifts)
            rows.append(row)
            say(f"probe: {name}={row.setting} {cell.name} test_accuracy {row.test_accuracy:.4f}")
    result = ProbeResult(
        probe=name,
        dataset=prepared.name,
        models=list(params.models),
        fingerprint=fingerprint,
        rows=rows,
        code_sha256=source_sha256("probe"),
    )
    records.save_json(path, result)
    say(f"probe: {path}")
    return result


def current(path: Path, fingerprint: str) -> ProbeResult | None:
    """The result at `path` when it was made from this fingerprint by this code; None when missing or stale."""
    try:
        result = records.load_json(ProbeResult, path, "")
    except ConvbenchError:
        return None
    return result if (result.fingerprint, result.code_sha256) == (fingerprint, source_sha256("probe")) else None


def _device(params: Params) -> torch.device:
    return resolve_device(params.train.device)


def probe_cell(
    cell: Cell, name: str, setting: Setting, data: Splits, prepared: PreparedData, shifts: list[int] | None = None
) -> ProbeRow:
    """One (setting, model, seed): trained from its seed on the setting's data (its batches augmented when the
    setting says so), tested (also under each of `shifts` pixels of translation), logged as one MLflow run."""
    recipe = cell.params.train
    plan = cell.plan(data.train.x.device, prepared.input_shape)
    torch.manual_seed(cell.seed)
    model = place_model(models.build(cell.config), plan)
    tags = {
        "convbench.kind": "probe",
        "convbench.probe": name,
        "convbench.setting": setting.label,
        "convbench.model": cell.model,
        "convbench.seed": cell.seed,
        "convbench.dataset": prepared.name,
    }
    with tracking.run(cell.params.tracking, prepared.name, f"{cell.name} {name}={setting.label}", tags) as logger:
        logger.log_params(
            {
                "probe": name,
                "setting": setting.label,
                "architecture": cell.config.to_dict(),
                "train_images": len(data.train),
            }
        )
        history, _seconds = fit(
            model,
            data,
            recipe,
            cell.seed,
            lambda stats: logger.log_metrics(
                {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"},
                step=stats.epoch,
                synchronous=False,
            ),
            plan,
            augment=setting.augment,
        )
        batch = cell.params.evaluate.batch_size
        per_image = count_flops(model, data.test.x[:8], data.test.y[:8]).forward
        threads = threads_for(per_image * batch, "scoring batch", recipe.threads)
        with intra_op_threads(threads.count if plan.device.type == "cpu" else None):
            test_accuracy = accuracy(model, data.test, batch, plan)
            shifted = {}
            if shifts:  # the untransformed test images, as evaluate shifts them
                clean = normalize(prepared.splits.test.x, prepared.mean, prepared.std, torch.device("cpu"))
                score = test_scorer(model, prepared, batch, plan)
                shifted = shift_accuracies(score, clean, shifts, fill=zero_pixel(prepared))
        logger.log_metrics({"test_accuracy": test_accuracy} | {f"robustness.shift.{k}": v for k, v in shifted.items()})
    return ProbeRow(
        probe=name,
        setting=setting.label,
        value=setting.value,
        model=cell.model,
        seed=cell.seed,
        params=models.count_params(model),
        train_images=len(data.train),
        final_val_accuracy=history[-1].val_accuracy,
        final_train_loss=history[-1].train_loss,
        test_accuracy=test_accuracy,
        shifted=shifted,
    )
