"""results/<dataset>/bench.json: every model timed side by side (the bench stage's record, read by the report).

The cases are keyed `inference_batch_<n>` and `training_step_batch_<n>` on disk, and a `BenchCase` in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.artifacts.records import Record


@dataclass(frozen=True, order=True)
class BenchCase:
    """What one bench case times: `inference` at a batch size, or one `training_step` at the recipe's batch."""

    kind: Literal["inference", "training_step"]
    batch: int

    @property
    def key(self) -> str:
        """The case's name in results/<dataset>/bench.json and in MLflow metric names."""
        return f"{self.kind}_batch_{self.batch}"

    @property
    def label(self) -> str:
        """How the report names it."""
        return f"{'Inference' if self.kind == 'inference' else 'Training step'} @ batch {self.batch}"

    @classmethod
    def from_key(cls, key: str) -> BenchCase:
        """The inverse of `key`."""
        kind, _, batch = key.rpartition("_batch_")
        if kind not in ("inference", "training_step") or not batch.isdigit():
            raise ValueError(f"not a bench case: {key!r}")
        return cls(kind, int(batch))  # type: ignore[arg-type]  # kind is one of the two, checked just above


class ModelSpeed(BaseModel):
    """One model in one case: median images/s over rounds, its relative IQR, ms per call, every round's images/s."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    images_per_second: float
    relative_iqr: float
    ms_per_call: float
    samples: list[float]
    threads: int = 0  # the intra-op threads its calls ran with (0: not recorded, in files older than the field)


class Ratio(BaseModel):
    """A model's speed over the reference's: the median of per-round ratios and its bootstrap interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    median: float
    low: float
    high: float


class CaseResult(BaseModel):
    """Every model timed in one case, round by round, with what shows interference and whether it was noisy."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    items: int
    interference: dict[str, float | None]  # run-queue wait share, CPU share, load: what shows other work
    models: dict[str, ModelSpeed]
    ratios: dict[str, Ratio]
    noisy: bool


class Mfu(BaseModel):
    """Model FLOP utilisation: achieved FLOP/s over the matmul peak, at the largest inference batch and in training."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inference: float
    train: float


class BenchResult(Record):
    """results/<dataset>/bench.json: every model timed side by side in one process (the bench stage)."""

    dataset: str
    models: list[str]
    reference: str
    rounds: int
    seconds_per_sample: float
    checkpoint_seed: int
    cases: dict[str, CaseResult]
    matmul_flops_per_second: float
    mfu: dict[str, Mfu]
    noisy: list[str]
    fix: str
    context: dict[str, Any]

    def by_case(self) -> dict[BenchCase, CaseResult]:
        """The cases in order: inference by batch size, then the training step."""
        return dict(sorted((BenchCase.from_key(key), case) for key, case in self.cases.items()))
