"""The typed records stages hand each other: cell metrics, a tuned recipe, a dataset's summary (bench_record.py
and probe_record.py hold the bench's and the probes' records, outside the identity of the cells they do not touch).

Each record carries a format version and has one save and one load; a load that finds a missing, unreadable,
foreign or older file fails with one line naming the file and the command that writes it again, as
checkpoint.py does for weights. Consumers read attributes, never key strings. The JSON files keep the metric
names `dvc metrics show/diff` and `dvc exp show` read (the bench cases are keyed `inference_batch_<n>` and
`training_step_batch_<n>` on disk, and a `BenchCase` in code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.artifacts import atomic
from pipeline.errors import ConvbenchError


class Record(BaseModel):
    """Base of every record: immutable, unknown keys refused, a format version checked on load."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    FORMAT: ClassVar[int] = 1
    format: int = Field(default=1)


R = TypeVar("R", bound=Record)


def save_json(path: Path, record: Record) -> Path:
    """Write `record` atomically as indented, key-sorted JSON (stable diffs for DVC)."""
    return atomic.write_json(path, record.model_dump(mode="json"))


def load_json(kind: type[R], path: Path, redo: str) -> R:
    """Read one record; a missing or bad file is one line naming it and `redo`, the command that writes it again."""
    path = Path(path)
    if not path.is_file():
        raise ConvbenchError(f"{path} is missing; {redo}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConvbenchError(f"{path} is not UTF-8 text; {redo}") from None
    except json.JSONDecodeError as exc:
        raise ConvbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {redo}") from None
    return parse(kind, content, path, redo)


def parse(kind: type[R], content: Any, path: Path, redo: str) -> R:
    """Validate already-read content as a `kind` record of the current format."""
    if not isinstance(content, dict):
        raise ConvbenchError(f"{path} holds a JSON {type(content).__name__}, not a {kind.__name__} record; {redo}")
    if content.get("format", 1) != kind.FORMAT:
        raise ConvbenchError(
            f"{path} is a {kind.__name__} of format {content.get('format')}, not {kind.FORMAT}; {redo}"
        )
    try:
        return kind.model_validate(content)
    except ValidationError as exc:
        missing = [".".join(map(str, error["loc"])) for error in exc.errors() if error["type"] == "missing"]
        order = list(dict.fromkeys([*vars(kind).get("__annotations__", {}), *kind.model_fields]))  # own fields first
        missing.sort(key=lambda key: order.index(key.split(".")[0]) if key.split(".")[0] in order else len(order))
        if missing:
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise ConvbenchError(
                f"{path} lacks {', '.join(map(repr, missing[:4]))}{more}, so it is not a "
                f"{kind.__name__} record convbench wrote; {redo}"
            ) from None
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the top level"
        raise ConvbenchError(
            f"{path} is not a {kind.__name__} record ({where}: {error['msg'].lower()}); {redo}"
        ) from None


# --- a cell's metrics (the evaluate stage) ------------------------------------------------------------------------------


class PeakMemory(BaseModel):
    """MiB of tensor memory at the peak of one inference call and one training step."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inference: float
    train_step: float


class Robustness(BaseModel):
    """Test accuracy per shift (pixels) and per noise level (std), keyed as params.yaml writes them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    shift: dict[str, float]
    noise: dict[str, float]

    def levels(self, kind: Literal["shift", "noise"]) -> dict[str, float]:
        """The accuracies of one probe by level."""
        return self.shift if kind == "shift" else self.noise


class Source(BaseModel):
    """What a cell's metrics were computed from: if all four match, the metrics are current."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    checkpoint_sha256: str
    dataset_sha256: str
    code_sha256: str
    settings_sha256: str


class TrainSpeed(BaseModel):
    """How fast one cell trained, in its own process: declared here once, carried by the checkpoint's TrainInfo and
    the cell's metrics, logged to MLflow under these names."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    train_images_per_second: float
    train_seconds: float
    seconds_to_final_accuracy: float
    UNITS: ClassVar[dict[str, str]] = {
        "train_images_per_second": "images/s over whole epochs (in the training process; see "
        "results/<dataset>/bench.json)",
        "train_seconds": "s (training steps only)",
        "seconds_to_final_accuracy": "s wall (training + validation)",
    }

    def speed(self) -> TrainSpeed:
        """Just these three fields (of a record that extends this one)."""
        return TrainSpeed(**{field: getattr(self, field) for field in TrainSpeed.model_fields})


class CellCost(TrainSpeed):
    """What one trained cell costs: its size, FLOPs and peak memory (measured by evaluate) and its training speed
    (as training recorded it in the checkpoint)."""

    params: int
    trainable_params: int
    flops_forward_per_image: float
    flops_train_step_per_image: float
    train_batch_size: int
    peak_memory_mb: PeakMemory


class CellMetrics(CellCost, Record):
    """results/<dataset>/cells/<cell>.json: one trained cell scored on the test split, with its cost and robustness."""

    model: str
    seed: int
    dataset: str
    test_accuracy: float
    arch: str
    test_loss: float
    test_size: int
    final_val_accuracy: float
    epochs: int
    robustness: Robustness
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]]
    context: dict[str, Any]
    units: dict[str, str]
    source: Source

    def scalars(self) -> dict[str, float]:
        """Every number as a flat MLflow metric ('peak_memory_mb.inference', 'robustness.shift.1', per class)."""
        values = {
            key: float(getattr(self, key))
            for key in (
                "test_accuracy",
                "test_loss",
                "test_size",
                "final_val_accuracy",
                "epochs",
                "params",
                "trainable_params",
                "flops_forward_per_image",
                "flops_train_step_per_image",
                *TrainSpeed.model_fields,
                "train_batch_size",
            )
        }
        values |= {f"peak_memory_mb.{k}": float(v) for k, v in self.peak_memory_mb.model_dump().items()}
        values |= {
            f"robustness.{kind}.{level}": accuracy
            for kind in ("shift", "noise")
            for level, accuracy in self.robustness.levels(kind).items()
        }
        return values | {f"test_accuracy_class_{c}": a for c, a in self.per_class_accuracy.items()}


# --- a tuned recipe ---------------------------------------------------------------------------------------------------------


class TrialRow(BaseModel):
    """One finished trial of a study, in trial order."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    trial: int
    number: int
    state: str
    val_accuracy: float | None
    best_so_far: float | None
    params: dict[str, Any]


class Scored(BaseModel):
    """Which trial and its validation score (None when that trial was pruned)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    trial: int | None
    val_accuracy: float | None


class TunedRecipe(Record):
    """tuned/<dataset>/<model>.yaml: the model's best recipe after its tuning budget, or a note that it was not tuned."""

    HEADER: ClassVar[str] = (
        "# written by `convbench tune`: this model's best recipe after its tuning budget (validation split only)\n"
    )
    model: str
    tuned: bool
    trials: int
    note: str = ""
    fingerprint: str = ""
    dataset: str = ""
    dataset_sha256: str = ""
    study: dict[str, str] = {}
    scored_on: dict[str, Any] = {}
    counts: dict[str, int] = {}
    best: Scored | None = None
    baseline: Scored | None = None
    recipe: dict[str, Any] = {}
    model_settings: dict[str, Any] = {}
    architecture: dict[str, Any] = {}
    history: list[TrialRow] = []

    def save(self, path: Path) -> Path:
        """Write it atomically as YAML under a header that says what wrote it."""
        content = self.model_dump(mode="json", exclude_defaults=True) | {
            "model": self.model,
            "tuned": self.tuned,
            "trials": self.trials,
        }
        return atomic.write_text(path, self.HEADER + yaml.safe_dump(content, sort_keys=False))

    @classmethod
    def load(cls, path: Path, model: str) -> TunedRecipe:
        """tuned/<dataset>/<model>.yaml; a missing, unreadable or foreign file names the command that writes it."""
        redo = f"run `convbench tune --model {model}` (or `dvc repro`)"
        if not Path(path).is_file():
            raise ConvbenchError(f"{path} is missing; {redo} first")
        from pipeline.params import load_yaml  # a key given twice is refused, as in params.yaml

        try:
            content = load_yaml(Path(path).read_text(encoding="utf-8"), str(path), ConvbenchError)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConvbenchError(f"{path} is not readable YAML ({type(exc).__name__}); {redo} again") from None
        if not isinstance(content, dict) or content.get("model") != model:
            raise ConvbenchError(f"{path} is not convbench's tuned recipe of '{model}'; {redo} again")
        return parse(cls, content, Path(path), f"{redo} again")


# --- a dataset's summary (the report stage; what DVC shows) -------------------------------------------------------------


class Summary(BaseModel):
    """metrics/<dataset>/summary.json: per model, the few numbers a reader compares, and the only DVC metrics file.

    Numbers only, grouped by measure so `dvc exp show` lists every model's accuracy first and `--keep accuracy`
    selects them. Fractions, not percentages; `lead*` is the reference's test accuracy minus the model's on the
    same images (pooled over seeds), so the reference has none; `accuracy_ci` is absent with a single seed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    accuracy: dict[str, float]  # mean test accuracy over seeds
    accuracy_ci: dict[str, float] = {}  # half-width of its t-interval over seeds at report.confidence (2+ seeds)
    lead: dict[str, float] = {}  # the reference's lead in test accuracy, paired on the same test images
    lead_low: dict[str, float] = {}  # its paired bootstrap interval at report.confidence
    lead_high: dict[str, float] = {}
    params: dict[str, int]
    mflops: dict[str, float]  # forward MFLOP per image
    train_img_s: dict[str, float] = {}  # training-step images/s, every model timed side by side (the bench stage)

    def save(self, path: Path) -> Path:
        """Write it atomically, in field order (not sorted), so accuracy comes first in DVC's table."""
        return atomic.write_text(path, json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, dataset: str) -> Summary:
        """A dataset's summary; a missing or foreign file names the command that writes it."""
        redo = f"run `convbench report --dataset {dataset}` (or `dvc repro`)"
        if not Path(path).is_file():
            raise ConvbenchError(f"{path} is missing; {redo}")
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.model_validate(content)
        except (UnicodeDecodeError, json.JSONDecodeError, ValidationError):
            raise ConvbenchError(f"{path} is not a summary convbench wrote; {redo} again") from None
