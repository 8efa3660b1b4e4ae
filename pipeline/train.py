"""Train stage: one (model, seed) cell, the same recipe for every architecture.

The split sits on the device as normalised float tensors; batches are index slices of it, so the
hot loop runs no per-sample Python and no host-device copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from pipeline import atomic, models, paths, tracking
from pipeline.bench import Stopwatch, device_context, resolve_device
from pipeline.errors import ConvbenchError
from pipeline.params import Params, TrainParams
from pipeline.prepare import PreparedData

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochStats:
    """Loss and accuracy of one epoch on the training and validation splits."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    elapsed_seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What one cell's training produced."""

    model: str
    seed: int
    checkpoint: Path
    curves: Path
    run_id: str | None
    history: list[EpochStats]
    train_images_per_second: float
    train_seconds: float
    seconds_to_final_accuracy: float


@dataclass(frozen=True)
class ExecutionPlan:
    """How a recipe runs on a device: optimizer kernel, autocast dtype, memory layout, compilation."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    fused_optimizer: bool
    compile: bool

    @property
    def dtype_name(self) -> str:
        """'bfloat16 autocast' or 'float32', as recorded next to every timing."""
        return "bfloat16 autocast" if self.autocast_dtype is not None else "float32"

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes (a no-op when running in float32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)


def execution_plan(recipe: TrainParams, device: torch.device, input_shape: tuple[int, ...]) -> ExecutionPlan:
    """Pick the fast paths that measurably help on `device` (see benchmarks/README.md).

    bf16 autocast on CUDA unless precision is fp32; channels_last for 2-D convolutions; the fused
    AdamW kernel on CPU and CUDA; torch.compile only when train.compile asks for it.
    """
    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and device.type == "cuda")
    return ExecutionPlan(
        device=device,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        channels_last=len(input_shape) == 3,
        fused_optimizer=device.type in ("cpu", "cuda"),
        compile=recipe.compile,
    )


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world_size 1 when run alone)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow and writes files."""
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a plain `convbench train` is a world of one."""
    return Distributed(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                       int(os.environ.get("LOCAL_RANK", "0")))


def start_distributed(dist: Distributed, device: torch.device) -> torch.device:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) and return this rank's device."""
    if dist.world_size == 1:
        return device
    if device.type == "cuda":
        torch.cuda.set_device(dist.local_rank)
        device = torch.device("cuda", dist.local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def place_model(model: nn.Module, plan: ExecutionPlan) -> nn.Module:
    """Move `model` to the plan's device and memory layout (parameters stay float32)."""
    model = model.to(plan.device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """uint8 (N, C, ...) -> float32 on `device`, scaled to [0, 1] and standardised per channel."""
    shape = (1, len(mean)) + (1,) * (images.dim() - 2)
    x = images.to(device).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return x.sub_(mean_t).div_(std_t)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, plan: ExecutionPlan | None = None) -> torch.Tensor:
    """Float32 logits for every row of `x`, computed in eval mode in slices of `batch_size`."""
    model.eval()
    autocast = plan.autocast() if plan is not None else contextlib.nullcontext()
    with autocast:
        return torch.cat([model(x[start : start + batch_size]).float() for start in range(0, len(x), batch_size)])


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainParams, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle or cosine learning-rate schedule, stepped once per batch."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def fit(
    model: nn.Module,
    data: dict[str, torch.Tensor],
    recipe: TrainParams,
    seed: int,
    on_epoch: Callable[[EpochStats], None],
    plan: ExecutionPlan | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    dist: Distributed | None = None,
) -> tuple[list[EpochStats], float]:
    """Train with AdamW for recipe.epochs; returns the per-epoch history and the seconds spent training.

    Batches are index slices of tensors already on the device; the only host syncs are once per epoch.
    After each epoch `save_state` gets everything needed to continue (weights, optimizer, schedule,
    shuffling generator, history); passing that back as `resume` continues bit for bit on CPU.
    A non-finite training loss stops with a ConvbenchError naming the epoch. Under torchrun each rank
    takes its share of every global batch (batch_size stays the global batch) and DDP averages gradients.
    """
    dist = dist or Distributed(0, 1, 0)
    device = data["train_x"].device
    plan = plan or execution_plan(recipe, device, tuple(data["train_x"].shape[1:]))
    n_train = len(data["train_y"])
    steps_per_epoch = -(-n_train // recipe.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=plan.fused_optimizer or None
    )
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)  # the objective
    plain_loss = nn.CrossEntropyLoss()  # reported for validation, like the test loss
    step_model = torch.compile(model) if plan.compile else model
    if dist.world_size > 1:
        step_model = nn.parallel.DistributedDataParallel(step_model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    generator = torch.Generator().manual_seed(seed)
    stopwatch = Stopwatch(device)
    history: list[EpochStats] = []
    first_epoch, already = 1, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        history = [EpochStats(**stats) for stats in resume["history"]]
        stopwatch.elapsed = resume["train_seconds"]
        first_epoch, already = resume["epoch"] + 1, history[-1].elapsed_seconds
    started = time.perf_counter() - already
    for epoch in range(first_epoch, recipe.epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        stopwatch.start()
        for start in range(0, n_train, recipe.batch_size):
            if min(recipe.batch_size, n_train - start) < dist.world_size:
                continue  # a last batch too small to give every rank a sample is skipped by all ranks alike
            index = order[start : start + recipe.batch_size][dist.rank :: dist.world_size]
            xb, yb = data["train_x"][index], data["train_y"][index]
            with plan.autocast():
                logits = step_model(xb)
                loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        if dist.world_size > 1:
            torch.distributed.all_reduce(loss_sum)
            torch.distributed.all_reduce(correct)
        seconds = stopwatch.stop()
        train_loss = loss_sum.item() / n_train
        if not math.isfinite(train_loss):
            raise ConvbenchError(
                f"training diverged: the training loss became {train_loss} in epoch {epoch}; "
                f"lower train.lr (now {recipe.lr}) and run `convbench train` again"
            )
        val_logits = predict_logits(step_model, data["val_x"], recipe.batch_size, plan)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct.item() / n_train,
            val_loss=plain_loss(val_logits, data["val_y"]).item(),
            val_accuracy=(val_logits.argmax(1) == data["val_y"]).float().mean().item(),
            lr=optimizer.param_groups[0]["lr"],
            seconds=seconds,
            elapsed_seconds=time.perf_counter() - started,
        )
        history.append(stats)
        on_epoch(stats)
        if save_state is not None and epoch < recipe.epochs:
            save_state({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "history": [dataclasses.asdict(s) for s in history], "train_seconds": stopwatch.elapsed})
    return history, stopwatch.elapsed


def seconds_to_final_accuracy(history: list[EpochStats]) -> float:
    """Wall seconds (training and validation) until the first epoch whose val accuracy reached the final one."""
    final = history[-1].val_accuracy
    return next(stats.elapsed_seconds for stats in history if stats.val_accuracy >= final)


def train_cell(
    params: Params,
    model_name: str,
    seed: int,
    prepared: PreparedData,
    checkpoint_path: Path,
    curves_path: Path,
) -> TrainResult:
    """Train one (model, seed) cell; log it to MLflow; write its checkpoint and curves atomically."""
    dist = distributed_from_env()
    device = start_distributed(dist, resolve_device(params.train.device))
    config = models.resolve(params.model, prepared.input_shape, prepared.num_classes)[model_name]
    plan = execution_plan(params.train, device, prepared.input_shape)
    torch.manual_seed(seed)
    model = place_model(models.build(config), plan)
    data = {key: normalize(value, prepared.mean, prepared.std, device) if key.endswith("_x") else value.to(device)
            for key, value in prepared.tensors.items() if not key.startswith("test")}
    cell = paths.cell(model_name, seed)
    resume_path = paths.resume_state(model_name, seed)
    identity = {"config": config, "dataset_sha256": prepared.sha256, "seed": seed,
                "recipe": params.train.model_dump(mode="json", exclude={"seeds"})}
    resume = load_resume_state(resume_path, identity)
    tags = {
        "convbench.kind": "train",
        "convbench.model": model_name,
        "convbench.seed": seed,
        "convbench.dataset": prepared.name,
        "convbench.dataset_sha256": prepared.sha256,
        **{f"convbench.context.{key}": value for key, value in device_context(device, plan.dtype_name).items()},
    }
    resume_run = resume["mlflow_run_id"] if resume else None
    opened = (tracking.run(params.tracking, prepared.name, cell, tags, resume_run) if dist.is_main
              else contextlib.nullcontext(tracking.UntrackedLogger()))
    with opened as logger:
        if resume is None or logger.run_id != resume_run:
            logger.log_params(
                {
                    "model": model_name,
                    "seed": seed,
                    "params": models.count_params(model),
                    "architecture": config,
                    "train": params.train.model_dump(exclude={"seeds"}),
                    "data": params.data.model_dump(mode="json"),
                }
            )
            logger.log_dataset(prepared.name, prepared.sha256, str(paths.prepared_tensors(prepared.name)), "train")

        if resume is not None and dist.is_main:  # epochs queued but never written when the process was killed
            logged = logger.logged_steps("val_accuracy")
            for stats in resume["history"]:
                if stats["epoch"] not in logged:
                    logger.log_metrics({k: v for k, v in stats.items() if k != "epoch"}, step=stats["epoch"])

        def save_state(state: dict[str, Any]) -> None:
            full = state | identity | {"format": CHECKPOINT_FORMAT, "mlflow_run_id": logger.run_id}
            atomic.write_with(resume_path, lambda tmp: torch.save(full, tmp))

        progress = EpochProgress(cell, params.train.epochs, done=resume["epoch"] if resume else 0, quiet=not dist.is_main)
        with progress as advance:

            def on_epoch(stats: EpochStats) -> None:
                epoch_metrics = {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}
                logger.log_metrics(epoch_metrics, step=stats.epoch, synchronous=False)
                advance(stats)

            history, train_seconds = fit(model, data, params.train, seed, on_epoch, plan,
                                         save_state if dist.is_main else None, resume, dist)
        images_per_second = params.train.epochs * len(data["train_y"]) / train_seconds
        to_final = seconds_to_final_accuracy(history)
        logger.log_metrics(
            {"train_images_per_second": images_per_second, "train_seconds": train_seconds,
             "seconds_to_final_accuracy": to_final}
        )
        model = model.cpu().to(memory_format=torch.contiguous_format)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": model.state_dict(),
            "config": config,
            "dataset": prepared.name,
            "dataset_sha256": prepared.sha256,
            "seed": seed,
            "mlflow_run_id": logger.run_id,
            "train": {
                "epochs": params.train.epochs,
                "device": str(device),
                "world_size": dist.world_size,
                "train_images_per_second": images_per_second,
                "train_seconds": train_seconds,
                "seconds_to_final_accuracy": to_final,
                "final_val_accuracy": history[-1].val_accuracy,
                "dtype": plan.dtype_name,
                "batch_size": params.train.batch_size,
            },
        }
        if not dist.is_main:  # only rank 0 writes files and logs
            return TrainResult(model_name, seed, checkpoint_path, curves_path, None, history, images_per_second,
                               train_seconds, to_final)
        atomic.write_text(curves_path, pd.DataFrame([dataclasses.asdict(s) for s in history]).to_csv(index=False))
        atomic.write_with(checkpoint_path, lambda tmp: torch.save(checkpoint, tmp))
        if params.tracking.log_model:
            example = data["val_x"][:2].cpu().numpy()
            logger.log_model(model, example)
        logger.log_artifact(curves_path, "curves")
        logger.log_artifact(checkpoint_path, "checkpoint")
        run_id = logger.run_id
    resume_path.unlink(missing_ok=True)
    return TrainResult(
        model_name, seed, checkpoint_path, curves_path, run_id, history, images_per_second, train_seconds, to_final
    )


def load_resume_state(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The state an interrupted run of this exact cell left behind, or None (a stale or unreadable one is ignored)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - an unreadable resume file only costs a fresh start
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        return None
    if any(state.get(key) != value for key, value in identity.items()):
        return None
    return state


class EpochProgress:
    """A rich progress bar over epochs that shows the latest validation accuracy."""

    def __init__(self, cell: str, epochs: int, done: int = 0, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            disable=quiet,
        )
        status = f"resumed after epoch {done}" if done else ""
        self.task = self.progress.add_task(f"train {cell}", total=epochs, completed=done, status=status)

    def __enter__(self) -> Callable[[EpochStats], None]:
        self.progress.start()

        def advance(stats: EpochStats) -> None:
            status = f"loss {stats.train_loss:.3f} val_acc {stats.val_accuracy:.4f}"
            self.progress.update(self.task, advance=1, status=status)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
