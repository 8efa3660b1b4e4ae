"""The shared training runtime: how a recipe runs on a device, normalisation, the training loop, prediction.

Splits sit on the device as normalised float tensors; batches are index slices of them, so the hot
loop runs no per-sample Python and no host-device copies. Train, tune and the probes train with this one
loop (`fit`); evaluate, bench and the probes score with `predict_logits` and the timed calls built here, so
every number convbench reports comes from the same code path.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from pipeline.core.data import PreparedData, Split, Splits
from pipeline.core.measure import Stopwatch, count_flops
from pipeline.errors import ConvbenchError, TrainingDiverged
from pipeline.params import TrainParams

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # a training batch -> its augmented copy


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
class ExecutionPlan:
    """How a recipe runs on a device: optimizer kernel, autocast dtype, memory layout, compilation."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    fused_optimizer: bool
    compile: bool
    threads: Threads | None = None  # intra-op threads on CPU; None: chosen by `fit` from what the model computes

    @property
    def dtype_name(self) -> str:
        """'bfloat16 autocast' or 'float32', as recorded next to every timing."""
        return "bfloat16 autocast" if self.autocast_dtype is not None else "float32"

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes (a no-op when running in float32)."""
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        )


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


FLOPS_PER_THREAD = 50e6  # below this many FLOPs of a training step per thread, threads wait on each other more than
# they compute: on 2 cores a second thread gains nothing at 8-19 MFLOP (MNIST-1D) and 1.5x at 360-630 (mnist5k)


@dataclass(frozen=True)
class Threads:
    """How many intra-op threads a cell trains with, and why (recorded in its device context)."""

    count: int
    reason: str


def choose_threads(
    model: nn.Module, sample: torch.Tensor, labels: torch.Tensor, batch_size: int, override: int | None
) -> Threads:
    """train.threads when set; otherwise one thread per FLOPS_PER_THREAD of a training step, within this process's
    share of the cores (torch's thread count: OMP_NUM_THREADS, or what a worker was given)."""
    if override is not None:
        return Threads(override, "train.threads")
    with torch.random.fork_rng(devices=[]):  # a dropout in the counted pass must not move the training's RNG
        step = count_flops(model, sample, labels).train_step * batch_size
    return threads_for(step, "training step")


def threads_for(flops: float, what: str, override: int | None = None) -> Threads:
    """One intra-op thread per FLOPS_PER_THREAD of one call's work (`what`), within this process's share of the cores
    (or train.threads, `override`, when set): the rule training, scoring (evaluate, probes) and timing (bench) follow."""
    if override is not None:
        return Threads(override, "train.threads")
    budget = torch.get_num_threads()
    count = max(1, min(budget, int(flops // FLOPS_PER_THREAD)))
    return Threads(count, f"auto: {flops / 1e6:,.0f} MFLOP per {what}, {budget} core(s) available")


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the block (unchanged when None), restored after it."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    return Distributed(
        int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    )


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


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> torch.Tensor:
    """uint8 (N, C, ...) -> float32 on `device`, scaled to [0, 1] and standardised per channel."""
    shape = (1, len(mean)) + (1,) * (images.dim() - 2)
    x = images.to(device).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return x.sub_(mean_t).div_(std_t)


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int, plan: ExecutionPlan | None = None
) -> torch.Tensor:
    """Float32 logits for every row of `x`, computed in eval mode in slices of `batch_size`."""
    model.eval()
    autocast = plan.autocast() if plan is not None else contextlib.nullcontext()
    with autocast:
        return torch.cat([model(x[start : start + batch_size]).float() for start in range(0, len(x), batch_size)])


def repeat_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Exactly `size` rows of `x` (repeated if `x` is shorter): a fixed batch to time or measure a model on."""
    repeats = -(-size // len(x))
    return x.repeat((repeats,) + (1,) * (x.dim() - 1))[:size].contiguous()


def inference_call(model: nn.Module, batch: torch.Tensor, plan: ExecutionPlan) -> Callable[[], object]:
    """One eval-mode forward of `batch` without autograd, as the plan runs it."""
    model.eval()

    def call() -> object:
        with torch.inference_mode(), plan.autocast():
            return model(batch)

    return call


def train_step_call(
    model: nn.Module, batch: torch.Tensor, labels: torch.Tensor, plan: ExecutionPlan
) -> Callable[[], object]:
    """One forward/backward/AdamW step on a copy of `model` (made now), so the trained weights stay untouched."""
    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trainee.parameters(), fused=plan.fused_optimizer or None)

    def step() -> object:
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(trainee(batch).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainParams, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle, cosine or constant learning-rate schedule, stepped once per batch."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps)
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


@dataclass(frozen=True)
class TrainState:
    """Everything needed to continue training after `epoch`, bit for bit on CPU (what a resume file holds)."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    history: list[EpochStats]
    train_seconds: float
    augment_generator: torch.Tensor | None = None  # the augmentation's draws so far, when the run augments


@dataclass
class _Run:
    """What one training run steps: the optimizer, its schedule, the objective, the shuffling generator and the
    batch augmentation with its own generator (on the data's device), when there is one."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    generator: torch.Generator
    step_model: nn.Module
    augment: Augmentation | None = None
    augment_generator: torch.Generator | None = None

    def state(self, epoch: int, model: nn.Module, history: list[EpochStats], train_seconds: float) -> TrainState:
        """Everything needed to continue after `epoch`."""
        return TrainState(
            epoch,
            model.state_dict(),
            self.optimizer.state_dict(),
            self.scheduler.state_dict(),
            self.generator.get_state(),
            list(history),
            train_seconds,
            self.augment_generator.get_state() if self.augment_generator is not None else None,
        )

    def restore(self, model: nn.Module, resume: TrainState) -> list[EpochStats]:
        """Continue from a saved state; returns the history so far."""
        model.load_state_dict(resume.model)
        self.optimizer.load_state_dict(resume.optimizer)
        self.scheduler.load_state_dict(resume.scheduler)
        self.generator.set_state(resume.generator)
        if self.augment_generator is not None and resume.augment_generator is not None:
            self.augment_generator.set_state(resume.augment_generator)
        return list(resume.history)


def _start(  # 7 parameters: fit's arguments that build one run's optimizer, schedule and wrappers
    model: nn.Module,
    recipe: TrainParams,
    seed: int,
    plan: ExecutionPlan,
    total_steps: int,
    dist: Distributed,
    augment: Augmentation | None = None,
) -> _Run:
    """AdamW with the recipe's schedule and label-smoothed objective; compiled or DDP-wrapped as the plan says."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=plan.fused_optimizer or None
    )
    scheduler = make_scheduler(optimizer, recipe, total_steps)
    step_model = torch.compile(model) if plan.compile else model
    if dist.world_size > 1:
        device_ids = [dist.local_rank] if plan.device.type == "cuda" else None
        step_model = nn.parallel.DistributedDataParallel(step_model, device_ids=device_ids)
    return _Run(
        optimizer,
        scheduler,
        nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        torch.Generator().manual_seed(seed),
        step_model,  # type: ignore[arg-type]  # torch.compile's wrapper is still the module it compiled
        augment,
        torch.Generator(device=plan.device).manual_seed(seed) if augment is not None else None,
    )


def smallest_batch(model: nn.Module, dist: Distributed) -> int:
    """The fewest images a training batch can have: one per rank, or two per rank for a model with batch norm, which
    cannot train on a single image (its batch statistics need two)."""
    return dist.world_size * (2 if batch_norm_layer(model) is not None else 1)


def batch_norm_layer(model: nn.Module) -> nn.Module | None:
    """The model's first batch-norm layer (BatchNorm1d/2d/3d, SyncBatchNorm, their lazy forms), or None."""
    return next((m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)


def batches_per_epoch(n_train: int, batch_size: int, smallest: int) -> int:
    """How many batches an epoch trains on: every batch but a last one smaller than `smallest` (drop_last for it)."""
    full, last = divmod(n_train, batch_size)
    return full + (1 if last >= smallest else 0)


def check_batches(model: nn.Module, n_train: int, recipe: TrainParams, dist: Distributed) -> None:
    """An epoch must train on at least one batch. A last batch smaller than `smallest_batch` is dropped, so a batch
    size (or a training split) smaller than that would train nothing and report the untrained model as trained."""
    smallest = smallest_batch(model, dist)
    if min(recipe.batch_size, n_train) >= smallest:
        return
    layer = batch_norm_layer(model)
    processes = f" on each of {dist.world_size} processes" if dist.world_size > 1 else ""
    need = (
        f"the model holds batch norm ({type(layer).__name__}), which cannot train on fewer than 2 images per "
        f"batch{processes}"
        if layer is not None
        else f"each of the {dist.world_size} processes needs at least one image of every batch"
    )
    if recipe.batch_size < smallest:
        raise ConvbenchError(
            f"train.batch_size {recipe.batch_size}: {need}; set train.batch_size to at least {smallest}"
            + (" or use a model without batch norm" if layer is not None else "")
        )
    raise ConvbenchError(
        f"the training split holds {n_train} image(s), and {need}; use more training images (data.val_fraction "
        f"and data.test_fraction take theirs from the same images)"
    )


def _train_epoch(
    run: _Run, data: Split, batch_size: int, plan: ExecutionPlan, dist: Distributed, smallest: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over the shuffled training split in index-slice batches; the summed loss, correct count and number
    of images trained on (a last batch smaller than `smallest` is skipped)."""
    n_train = len(data)
    device = data.x.device
    order = torch.randperm(n_train, generator=run.generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for start in range(0, n_train, batch_size):
        if min(batch_size, n_train - start) < smallest:
            # a last batch too small to give every rank an image (with batch norm: two, as it cannot train on one) is
            # skipped by all ranks alike, as DataLoader(drop_last=True) would; check_batches ensures others remain
            continue
        seen += min(batch_size, n_train - start)
        index = order[start : start + batch_size][dist.rank :: dist.world_size]
        xb, yb = data.x[index], data.y[index]
        if run.augment is not None and run.augment_generator is not None:
            xb = run.augment(xb, run.augment_generator)
        with plan.autocast():
            logits = run.step_model(xb)
            loss = run.loss_fn(logits.float(), yb)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    if dist.world_size > 1:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(correct)
    return loss_sum, correct, seen


def fit(  # 10 parameters: the loop's four inputs and its optional hooks, each defaulted
    model: nn.Module,
    data: Splits,
    recipe: TrainParams,
    seed: int,
    on_epoch: Callable[[EpochStats], None],
    plan: ExecutionPlan | None = None,
    save_state: Callable[[TrainState], None] | None = None,
    resume: TrainState | None = None,
    dist: Distributed | None = None,
    augment: Augmentation | None = None,
) -> tuple[list[EpochStats], float]:
    """Train with AdamW for recipe.epochs; returns the per-epoch history and the seconds spent training.

    Batches are index slices of tensors already on the device; the only host syncs are once per epoch.
    After each epoch `save_state` gets everything needed to continue (weights, optimizer, schedule,
    shuffling generator, history); passing that back as `resume` continues bit for bit on CPU.
    A non-finite training loss stops with TrainingDiverged naming the epoch. Under torchrun each rank
    takes its share of every global batch (batch_size stays the global batch) and DDP averages gradients.
    `augment(batch, generator)` changes each training batch (never the validation or test images), drawing
    from a generator of its own seeded with `seed`.
    """
    dist = dist or Distributed(0, 1, 0)
    check_batches(model, len(data.train), recipe, dist)
    plan = plan or execution_plan(recipe, data.train.x.device, tuple(data.train.x.shape[1:]))
    plan = with_threads(plan, model, data.train, recipe)
    with intra_op_threads(plan.threads.count if plan.threads else None):
        return _fit(model, data, recipe, seed, on_epoch, plan, save_state, resume, dist, augment)


def with_threads(plan: ExecutionPlan, model: nn.Module, train: Split, recipe: TrainParams) -> ExecutionPlan:
    """The plan with its CPU thread count chosen (kept when already set; other devices keep torch's setting)."""
    if plan.threads is not None or plan.device.type != "cpu":
        return plan
    sample = train.x[:2]
    return replace(plan, threads=choose_threads(model, sample, train.y[:2], recipe.batch_size, recipe.threads))


def _fit(  # 10 parameters: fit's arguments with its plan and threads settled
    model: nn.Module,
    data: Splits,
    recipe: TrainParams,
    seed: int,
    on_epoch: Callable[[EpochStats], None],
    plan: ExecutionPlan,
    save_state: Callable[[TrainState], None] | None,
    resume: TrainState | None,
    dist: Distributed,
    augment: Augmentation | None,
) -> tuple[list[EpochStats], float]:
    """`fit` with its plan and threads settled."""
    n_train = len(data.train)
    smallest = smallest_batch(model, dist)
    steps = recipe.epochs * batches_per_epoch(n_train, recipe.batch_size, smallest)
    run = _start(model, recipe, seed, plan, steps, dist, augment)
    plain_loss = nn.CrossEntropyLoss()  # reported for validation, like the test loss
    stopwatch = Stopwatch(data.train.x.device)
    history: list[EpochStats] = []
    first_epoch, already = 1, 0.0
    if resume is not None:
        history = run.restore(model, resume)
        stopwatch.elapsed = resume.train_seconds
        first_epoch, already = resume.epoch + 1, history[-1].elapsed_seconds
    started = time.perf_counter() - already
    for epoch in range(first_epoch, recipe.epochs + 1):
        model.train()
        stopwatch.start()
        loss_sum, correct, seen = _train_epoch(run, data.train, recipe.batch_size, plan, dist, smallest)
        seconds = stopwatch.stop()
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training diverged: the training loss became {train_loss} in epoch {epoch}; "
                f"lower train.lr (now {recipe.lr}) and run `convbench train` again"
            )
        val_logits = predict_logits(run.step_model, data.val.x, recipe.batch_size, plan)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct.item() / seen,
            val_loss=plain_loss(val_logits, data.val.y).item(),
            val_accuracy=(val_logits.argmax(1) == data.val.y).float().mean().item(),
            lr=run.optimizer.param_groups[0]["lr"],
            seconds=seconds,
            elapsed_seconds=time.perf_counter() - started,
        )
        history.append(stats)
        if save_state is not None and epoch < recipe.epochs:  # first: a stop between the two cannot log an epoch
            save_state(run.state(epoch, model, history, stopwatch.elapsed))  # twice (a resume replays unlogged ones)
        on_epoch(stats)
    return history, stopwatch.elapsed


def seconds_to_final_accuracy(history: list[EpochStats]) -> float:
    """Wall seconds (training and validation) until the first epoch whose val accuracy reached the final one."""
    final = history[-1].val_accuracy
    return next(stats.elapsed_seconds for stats in history if stats.val_accuracy >= final)


def device_splits(prepared: PreparedData, device: torch.device, with_test: bool = False) -> Splits:
    """The prepared splits normalised on `device`; the test split only when asked (training never reads it)."""

    def move(split: Split) -> Split:
        return Split(normalize(split.x, prepared.mean, prepared.std, device), split.y.to(device))

    empty = Split(prepared.splits.test.x[:0].float().to(device), prepared.splits.test.y[:0].to(device))
    return Splits(
        move(prepared.splits.train), move(prepared.splits.val), move(prepared.splits.test) if with_test else empty
    )


def zero_pixel(prepared: PreparedData) -> torch.Tensor:
    """What a black (0) pixel becomes once normalised on the CPU, per channel: the fill of shifted copies of the
    normalised test images, which are then the normalised shifted raw images to the bit (the same elementwise
    arithmetic per pixel) without normalising every copy again."""
    zero = torch.zeros((1, len(prepared.mean)) + (1,) * (prepared.splits.test.x.dim() - 2), dtype=torch.uint8)
    return normalize(zero, prepared.mean, prepared.std, torch.device("cpu")).flatten()


def test_scorer(
    model: nn.Module, prepared: PreparedData, batch_size: int, plan: ExecutionPlan
) -> Callable[[torch.Tensor], float]:
    """Accuracy on the test labels of normalised CPU images shaped like the test split (say, shifted copies of it)."""
    labels = prepared.splits.test.y.to(plan.device)

    def score(images: torch.Tensor) -> float:
        logits = predict_logits(model, images.to(plan.device), batch_size, plan)
        return (logits.argmax(1) == labels).double().mean().item()

    return score


def accuracy(model: nn.Module, split: Split, batch_size: int, plan: ExecutionPlan | None = None) -> float:
    """Share of `split` that `model` classifies correctly."""
    logits = predict_logits(model, split.x, batch_size, plan)
    return (logits.argmax(1) == split.y).double().mean().item()
