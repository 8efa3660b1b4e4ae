"""The one params schema: params.yaml is validated here, once, before any stage does work."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from pipeline.core.catalog import DATASET_NAMES
from pipeline.core.models import REGISTRY, Activation, arch_of, check_model_section, typed_settings
from pipeline.core.probes import PROBES
from pipeline.errors import NOT_FINITE, ConvbenchError, ParamsError, allowed_keys, plain_problem, redact

Fraction = Annotated[float, Field(gt=0.0, lt=0.5)]
PositiveInt = Annotated[int, Field(gt=0)]
SCHEDULING = {"seeds", "workers", "backend", "threads"}  # train knobs that say where and when cells run, not how
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


def _require_unique(values: list[Any], what: str) -> list[Any]:
    """`values` unchanged, or a ValueError naming the duplicates' list (seeds and probes must not repeat)."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be unique, got {values}")
    return values


class _Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable, numbers are finite.

    YAML spells infinity and NaN `.inf` and `.nan`; no setting means either (an infinite timing budget never ends,
    an infinite weight decay turns the weights into NaN), so every float of every section refuses them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataParams(_Section):
    """Which dataset, where its raw files live, and how it is split."""

    name: Annotated[str, Field(min_length=1)]  # a built-in dataset or an alias under `dataset` (checked in Params)
    root: Path = Path("data/raw")
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.2
    split_seed: Seed = 0
    verify_checksums: bool = True
    # The most a dataset may take as prepared uint8 images: 3 GiB fits a 24 GiB machine while training (training holds
    # up to 1.8x its float32 splits above the 0.81 GiB of imports: benchmarks/scale.py, docs/datasets.md).
    max_memory: ByteSize = ByteSize(3 * 2**30)


class UserDataset(_Section):
    """A dataset of the user's own, read where it lives: an image folder (ImageFolder layout) or an .npz file."""

    format: Literal["imagefolder", "npz"]
    path: Path  # the folder (one subfolder per class, or train/ val/ test/ of those), or the .npz file
    image_size: tuple[PositiveInt, PositiveInt] | None = None  # [H, W] every image is resized to; null: their own
    channels: Literal[1, 3] | None = None  # 1 (gray) or 3 (RGB) every image is converted to; null: their own
    resize: Literal["bilinear", "bicubic", "nearest", "box", "lanczos"] = "bilinear"  # Pillow's resampling
    layout: Literal["NHWC", "NCHW"] | None = None  # npz: how a 4-D x is laid out, where its shape does not say
    test_path: Path | None = None  # npz: a second file (x, y) holding the test split
    classes: Annotated[list[str], Field(min_length=2)] | None = None  # npz: names of labels 0..K-1
    mirrorable: bool = False  # a mirrored image keeps its class, so probes.augment.flips: auto flips it

    @model_validator(mode="after")
    def _npz_only(self) -> UserDataset:
        if self.format == "imagefolder":
            for key in ("layout", "test_path", "classes"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key} is for format npz; an image folder names its classes by subfolder and holds its "
                        f"test split in test/"
                    )
        return self


class TrainParams(_Section):
    """The one recipe every model is trained with (unless tuning gives a model its own)."""

    seeds: Annotated[list[Seed], Field(min_length=1)] = [0, 1, 2]
    epochs: PositiveInt = 12
    batch_size: PositiveInt = 128
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.003
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0001  # with lr: lr × weight_decay < 1 (see below)
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    workers: PositiveInt = 1  # cells trained at once: processes on this machine, or Ray tasks in flight
    backend: Literal["local", "ray"] = "local"
    threads: PositiveInt | None = None  # intra-op threads per cell; None: chosen from what the cell computes

    def recipe(self) -> dict[str, Any]:
        """What a model is trained with: the section without the seed list and the knobs that only schedule cells."""
        return self.model_dump(mode="json", exclude=SCHEDULING)

    @field_validator("weight_decay")
    @classmethod
    def _decay_below_one_per_step(cls, decay: float, info: ValidationInfo) -> float:
        """AdamW's decoupled decay multiplies every weight by 1 - lr x weight_decay each step (the schedules never
        exceed lr): at 1 or more that zeroes or flips the weights each step, past 2 it blows them up into NaN (and
        the run would stop blaming the learning rate)."""
        lr = info.data.get("lr")
        if lr is not None and lr * decay >= 1:
            raise ValueError(decay_problem(lr, decay, "train.lr"))
        return decay

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        return _require_unique(seeds, "seeds")


class EvaluateParams(_Section):
    """Batch sizes and timing budget of the evaluate and bench stages."""

    batch_size: PositiveInt = 256  # scoring the test split (a CNN scores ~3x faster on CPU than at 1024)
    throughput_batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1, 32, 256]
    # bench: seconds of timed calls per sample. At most a minute: torch.utils.benchmark's default sample is 0.2 s, and
    # bench takes (throughput_batch_sizes + 1) x models x (rounds + 1) samples, so at 60 s the default comparison already
    # times for over 30 minutes; a longer sample only waits longer (load and drift are what rounds are for).
    min_run_time: Annotated[float, Field(gt=0.0, le=60.0)] = 0.05
    rounds: Annotated[int, Field(ge=3)] = 7
    shifts: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0, 1, 2, 3, 4]
    # In units of the pixel range (1). At most 100: the image is then 1% of the noise and every model is at chance, and
    # far larger levels overflow float32 (and bf16) into infinite inputs, NaN logits and an accuracy that only says
    # which class argmax picks for NaN.
    noise_std: Annotated[list[Annotated[float, Field(ge=0.0, le=100.0)]], Field(min_length=1)] = [
        0.0,
        0.1,
        0.2,
        0.3,
        0.5,
    ]


class AugmentParams(_Section):
    """The augmentation probe: random translations of the training images, and horizontal flips where they fit."""

    shifts: Annotated[list[Annotated[int, Field(ge=0, le=32)]], Field(min_length=2)] = [0, 1, 2, 3]
    flips: Literal["auto", True, False] = "auto"  # auto: only for datasets whose classes survive a mirror (not digits)

    @field_validator("shifts")
    @classmethod
    def _baseline_included(cls, shifts: list[int]) -> list[int]:
        if 0 not in shifts:
            raise ValueError("must include 0 (the unaugmented baseline every other setting is compared with)")
        return sorted(_require_unique(shifts, "probes.augment.shifts"))


class ProbesParams(_Section):
    """Inductive-bias probes that retrain every model (translation and noise are measured by evaluate)."""

    run: list[str] = []  # names registered in core/probes.py
    permutation_seed: Seed = 0
    fractions: Annotated[list[Annotated[float, Field(gt=0.0, le=1.0)]], Field(min_length=1)] = [
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
    ]
    width_scales: Annotated[list[Annotated[float, Field(gt=0.0, le=16.0)]], Field(min_length=1)] = [0.25, 0.5, 1.0, 2.0]
    augment: AugmentParams = AugmentParams()
    activations: Annotated[list[Activation], Field(min_length=2)] = ["relu", "gelu", "tanh", "sigmoid"]

    @field_validator("activations")
    @classmethod
    def _unique_activations(cls, activations: list[str]) -> list[str]:
        return _require_unique(activations, "probes.activations")

    @field_validator("run")
    @classmethod
    def _registered_probes(cls, run: list[str]) -> list[str]:
        unknown = [name for name in run if name not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe {', '.join(map(repr, unknown))}; registered probes: {', '.join(PROBES)}")
        return _require_unique(run, "probes")


class PublishedParams(_Section):
    """Test accuracies a paper reports for these models, shown beside the measured ones."""

    dataset: str  # the dataset the table describes: a report on another one must not show it
    source: Annotated[str, Field(min_length=1)]
    accuracy: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]]
    permuted: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = {}


class ReportParams(_Section):
    """Statistics of the comparison: interval level and the paired bootstrap; optionally a published table."""

    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    bootstrap_resamples: Annotated[int, Field(ge=100)] = 10_000
    bootstrap_seed: Seed = 0
    published: PublishedParams | None = None


class SearchRange(_Section):
    """A continuous search range [low, high] of one recipe knob."""

    low: float
    high: float

    @field_validator("high")
    @classmethod
    def _not_empty(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and not low < high:
            raise ValueError(f"empty search range: low {low} is not below high {high}; make low smaller than high")
        return high


class LogRange(SearchRange):
    """A range searched log-uniformly, so both bounds must be positive."""

    low: Annotated[float, Field(gt=0.0)]


Choices = Annotated[list[PositiveInt], Field(min_length=1)]


class TuneSpace(_Section):
    """The search space of the recipe: null fixes a knob at the shared recipe's value."""

    lr: LogRange | None = LogRange(low=0.0003, high=0.03)
    weight_decay: LogRange | None = LogRange(low=0.00001, high=0.3)
    label_smoothing: SearchRange | None = SearchRange(low=0.0, high=0.3)
    epochs: Choices | None = [6, 12, 20, 30]
    batch_size: Choices | None = [32, 64, 128, 256]

    @field_validator("epochs", "batch_size")
    @classmethod
    def _unique_choices(cls, values: list[int] | None) -> list[int] | None:
        return None if values is None else _require_unique(values, "choices")

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_range(cls, value: SearchRange | None) -> SearchRange | None:
        if value is not None and not (0.0 <= value.low and value.high < 1.0):
            raise ValueError(
                f"label smoothing is searched within [0, 1), got [{value.low}, {value.high}]; pick bounds in [0, 1)"
            )
        return value


class TuneParams(_Section):
    """Per-model tuning: every model gets the same number of Optuna trials, scored on the validation split only."""

    trials: Annotated[int, Field(ge=0)] = 0  # per model; 0: no tuning, every model trains with the shared recipe
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]  # a trial's score: mean final val accuracy over these
    sampler_seed: Seed = 0
    startup_trials: Annotated[int, Field(ge=0)] = 5  # random trials before TPE models the results
    pruner: Literal["median", "none"] = "median"
    space: TuneSpace = TuneSpace()
    shape: dict[str, dict[str, Annotated[list[Any], Field(min_length=1)]]] = {}  # model alias -> setting -> choices

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return _require_unique(seeds, "seeds")


class TrackingParams(_Section):
    """Where MLflow runs go; uri null means $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""

    uri: str | None = None
    experiment_prefix: Annotated[str, Field(min_length=1)] = "convbench"
    log_model: bool = True
    required: bool = True
    tags: dict[str, str] = {}  # extra tags on every run; `convbench sweep` sets sweep and sweep_cell

    @field_serializer("uri")
    def _mask_password(self, uri: str | None) -> str | None:
        """Every dump (the report's params block, MLflow params) shows 'user:***@host', never the password."""
        return redact(uri) if uri else uri


ModelAlias = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")]
DatasetAlias = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]


class Params(_Section):
    """Everything in params.yaml, with the selected dataset's overrides already applied.

    `model` maps an alias to its settings; they are checked against the registered architecture's own
    schema (pipeline/core/models.py) by validate_params, so this schema stays free of model names.
    """

    data: DataParams
    dataset: dict[DatasetAlias, UserDataset] = {}  # the user's own datasets, selected by data.name as built-ins are
    models: Annotated[list[ModelAlias], Field(min_length=1)]
    reference: ModelAlias | None = None
    model: dict[ModelAlias, dict[str, Any]] = {}
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    probes: ProbesParams = ProbesParams()
    report: ReportParams = ReportParams()
    tune: TuneParams = TuneParams()
    tracking: TrackingParams = TrackingParams()
    overrides: dict[str, dict[str, Any]] = {}

    @field_validator("models")
    @classmethod
    def _unique_models(cls, names: list[str]) -> list[str]:
        return _require_unique(names, "models")

    @property
    def reference_model(self) -> str:
        """The model every other one is compared against (and size-matched to): `reference`, else models[0]."""
        return self.reference or self.models[0]


def load_params(path: Path = Path("params.yaml"), dataset: str | None = None) -> Params:
    """Read and validate params.yaml for one dataset of data.name (default: the first); one line per problem."""
    return validate_params(read_params(path), source=str(path), dataset=dataset)


def load_all(path: Path = Path("params.yaml")) -> list[Params]:
    """Read and validate params.yaml once per dataset data.name lists, in its order (each with its overrides)."""
    raw = read_params(path)
    return [validate_params(raw, source=str(path), dataset=name) for name in dataset_names(raw, str(path))]


def read_params(path: Path) -> Any:
    """params.yaml parsed, not yet validated; a missing, oversized, non-UTF-8 or invalid YAML file is one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if len(text) > MAX_PARAMS_BYTES:
            raise ParamsError(
                f"{path}: {len(text):,} bytes, more than a params file needs ({MAX_PARAMS_BYTES:,}); "
                f"check that this is the right file"
            )
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if _expanded_size(node) > MAX_VALUES:
            raise ParamsError(
                f"{path}: its YAML aliases (&name / *name) expand to more than {MAX_VALUES:,} values; "
                f"write the settings out without nested aliases"
            )
        refuse_duplicate_keys(node, str(path))
        raw = _construct(node)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; run from the project root or pass --params PATH") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return raw


def load_yaml(text: str, source: str, error: type[ConvbenchError] = ParamsError) -> Any:
    """`text` parsed as yaml.safe_load parses it, except that a key given twice in one mapping is `error`, naming
    `source`, the line and the key: YAML's loaders keep the last value silently, so `train:` twice would drop the
    first section's settings without a word. Every YAML file convbench reads (params.yaml, presets, -S values, sweep
    grids, tuned recipes) goes through here; invalid YAML still raises yaml.YAMLError."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    refuse_duplicate_keys(node, source, error)
    return _construct(node)


def _construct(node: yaml.Node | None) -> Any:
    """The Python values of a composed YAML document, as yaml.safe_load builds them."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base`: merged keys may be overridden by the mapping's own, as YAML says


def refuse_duplicate_keys(node: yaml.Node | None, source: str, error: type[ConvbenchError] = ParamsError) -> None:
    """`error` for the first key (in file order) given twice in one mapping of the composed document, with its dotted
    path and both lines. Each node is visited once, so aliases cost nothing more; keys compare as the values YAML
    makes of them (`1` and `0x1` are the same key)."""
    constructor = yaml.constructor.SafeConstructor()
    found: list[tuple[int, str]] = []
    visited: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [] if node is None else [(node, "")]
    while todo:
        current, path = todo.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            todo += [(item, _join(path, str(index))) for index, item in enumerate(current.value)]
        elif isinstance(current, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value_node in current.value:
                if key_node.tag == MERGE_TAG:
                    todo.append((value_node, path))
                    continue
                key = _key_of(constructor, key_node)
                todo.append((value_node, _join(path, str(key))))
                line = key_node.start_mark.line + 1
                if key is _UNKEYED:
                    continue
                if key in lines:
                    found.append(
                        (
                            line,
                            f"line {line}: key '{_join(path, str(key))}' is given twice (first on line {lines[key]})",
                        )
                    )
                else:
                    lines[key] = line
    if found:
        raise error(
            f"{source}: {min(found)[1]}; YAML would silently keep only the last value, so remove one or merge them"
        )


_UNKEYED = object()  # a key that is no plain value (a mapping or list as key): safe_load refuses it on its own


def _key_of(constructor: yaml.constructor.SafeConstructor, key_node: yaml.Node) -> Any:
    """The value YAML makes of a scalar key (what the mapping is keyed by), or _UNKEYED."""
    if not isinstance(key_node, yaml.ScalarNode):
        return _UNKEYED
    try:
        key = constructor.construct_object(key_node)
        hash(key)
    except (yaml.YAMLError, TypeError, ValueError):
        return _UNKEYED
    return key


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


MAX_PARAMS_BYTES = 1 << 20
MAX_VALUES = 100_000  # a params file holds a few hundred; aliases nested ten deep can make billions


def _expanded_size(node: yaml.Node | None, counted: dict[int, int] | None = None) -> int:
    """How many values the YAML node graph holds once its aliases are expanded (each shared node counted once
    per use, computed once): a bound checked before anything builds or copies the expanded data."""
    if node is None:
        return 0
    counted = {} if counted is None else counted
    if id(node) not in counted:
        counted[id(node)] = 0  # an alias cycle counts as nothing more
        if isinstance(node, yaml.SequenceNode):
            counted[id(node)] = 1 + sum(_expanded_size(item, counted) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            counted[id(node)] = 1 + sum(_expanded_size(k, counted) + _expanded_size(v, counted) for k, v in node.value)
        else:
            counted[id(node)] = 1
    return min(counted[id(node)], MAX_VALUES + 1)


def _shown(value: Any, limit: int = 80) -> str:
    """A value as an error line quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def dataset_names(raw: Any, source: str = "params.yaml") -> list[str]:
    """The datasets data.name lists: `[mnist5k]` (DVC fans its stages out over the list), `[mnist5k, digits]`, or a
    bare name, which convbench reads as a list of one."""
    data = raw.get("data") if isinstance(raw, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    names = [name] if isinstance(name, str) else name
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ParamsError(
            f"{source}: data.name: expected a list of dataset names such as [mnist5k] or [mnist5k, digits] "
            f"(got {_shown(name)})"
        )
    if len(set(names)) != len(names):
        raise ParamsError(f"{source}: data.name lists a dataset twice ({', '.join(names)}); list each once")
    return names


def validate_params(raw: Any, source: str = "params.yaml", dataset: str | None = None) -> Params:
    """Validate an already-parsed params mapping for one of the datasets data.name lists (default: the first);
    errors name `source` and the key path.

    `overrides.<dataset>` holds dotted keys (e.g. `train.epochs: 20`) applied on top of the other sections
    when the dataset is that one, so a dataset that needs a different recipe says so in params.yaml.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping with sections {', '.join(Params.model_fields)}")
    names = dataset_names(raw, source)
    chosen = names[0] if dataset is None else dataset
    if chosen not in names:
        raise ParamsError(
            f"--dataset {chosen}: not in data.name {names} of {source}; pick one of them or add it to data.name"
        )
    raw = {**raw, "data": {**raw["data"], "name": chosen}}
    effective = _with_overrides(raw, source)
    try:
        params = Params.model_validate(effective)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ParamsError(f"{source}: {problems}") from None
    check_dataset_names(params, source, names)
    check_model_section(params, source)
    published = params.report.published
    if published is not None and published.dataset not in names:
        raise ParamsError(
            f"{source}: report.published describes {published.dataset}, which data.name {names} does not list; "
            f"set report.published: null, or add {published.dataset} to data.name"
        )
    if published is not None and published.dataset != chosen:  # the table belongs to another listed dataset
        params = params.model_copy(update={"report": params.report.model_copy(update={"published": None})})
    check_tune_section(params, source)
    check_probes_section(params, source)
    return params


def check_probes_section(params: Params, source: str = "params.yaml") -> None:
    """Every probe of probes.run can run with these models (the activation probe needs one with an activation)."""
    for name in params.probes.run:
        check = PROBES[name].check
        if check is not None:
            check(params, source)


def check_dataset_names(params: Params, source: str = "params.yaml", listed: list[str] | None = None) -> None:
    """data.name (every dataset it lists), overrides and published tables name a built-in dataset or one declared
    under `dataset`."""
    shadowing = [alias for alias in params.dataset if alias in DATASET_NAMES]
    if shadowing:
        raise ParamsError(
            f"{source}: dataset.{shadowing[0]}: '{shadowing[0]}' is a built-in dataset's name; give yours another name"
        )
    known = [*DATASET_NAMES, *params.dataset]
    named = [("data.name", name) for name in listed or [params.data.name]]
    named += [(f"overrides.{name}", name) for name in params.overrides]
    if params.report.published is not None:
        named.append(("report.published.dataset", params.report.published.dataset))
    for key, name in named:
        if name not in known:
            raise ParamsError(
                f"{source}: {key}: unknown dataset '{name}'; built-in: {', '.join(DATASET_NAMES)}"
                + (f"; yours: {', '.join(params.dataset)}" if params.dataset else "")
                + f"; or declare your own as dataset.{name}: {{format: imagefolder, path: /your/images}}"
            )


RECIPE_KNOBS = ("lr", "weight_decay", "label_smoothing", "epochs", "batch_size")


def check_tune_section(params: Params, source: str = "params.yaml") -> None:
    """With tuning on, the space must hold the shared recipe (trial 0 of every study) and shape knobs must keep budgets.

    A shape knob (e.g. tune.shape.mlp.depth) is allowed only on a model whose width is matched to the reference's
    parameter count (`match: params`), so every value it takes still has the reference's parameter budget.
    """
    tune = params.tune
    if tune.trials == 0:
        return
    check_search_space(params, source)
    for knob in RECIPE_KNOBS:
        space, shared = getattr(tune.space, knob), getattr(params.train, knob)
        if isinstance(space, list) and shared not in space:
            raise ParamsError(
                f"{source}: tune.space.{knob}: the shared recipe's train.{knob} {shared} is not among the "
                f"choices {space}; add it (the shared recipe is trial 0 of every model's study)"
            )
        if isinstance(space, SearchRange) and not space.low <= shared <= space.high:
            raise ParamsError(
                f"{source}: tune.space.{knob}: the shared recipe's train.{knob} {shared} is outside "
                f"[{space.low}, {space.high}]; widen the range (the shared recipe is trial 0 of every "
                f"model's study)"
            )
    for alias, knobs in tune.shape.items():
        if alias not in params.models:
            continue  # like model.<alias>: settings of a model that is not compared now are kept, not used
        settings = typed_settings(params, alias, source)
        if settings.get("match") != "params" or alias == params.reference_model:
            raise ParamsError(
                f"{source}: tune.shape.{alias}: shape knobs must keep the parameter budget, so they are "
                f"allowed only on a model with match: params that is not the reference; remove "
                f"tune.shape.{alias} or set model.{alias}.match: params"
            )
        architecture = REGISTRY.get(arch_of(alias, dict(params.model.get(alias) or {})))
        shape = architecture.shape if architecture is not None else ()
        for key, choices in knobs.items():
            if key not in shape:
                raise ParamsError(
                    f"{source}: tune.shape.{alias}.{key}: not a shape setting of model.{alias}; "
                    f"allowed here: {', '.join(shape) or 'none'}"
                )
            if settings[key] not in choices:
                raise ParamsError(
                    f"{source}: tune.shape.{alias}.{key}: model.{alias}.{key} {settings[key]} is not "
                    f"among the choices {choices}; add it (the shared recipe is trial 0 of every study)"
                )
            for choice in choices:
                validate_model_choice(params, alias, key, choice, source)


def decay_problem(lr: float, decay: float, lr_name: str) -> str:
    """Why lr x weight_decay of 1 or more cannot train, and the fix (for train and for the search space)."""
    return (
        f"lr × weight_decay is {lr * decay:g} with {lr_name} {lr:g}: AdamW's decoupled decay multiplies every weight "
        f"by 1 - lr × weight_decay each step, so at 1 or more it zeroes, flips or blows up the weights; keep "
        f"weight_decay below 1/lr = {1 / lr:g} (typical values: 1e-5 to 0.1)"
    )


def check_search_space(params: Params, source: str = "params.yaml") -> None:
    """Every value a trial can draw from tune.space is one train accepts: each range's bounds are values of its knob,
    and the largest lr and weight_decay a trial can draw together keep lr x weight_decay below 1 (otherwise the
    best trial's recipe could be one train then refuses, after the whole tuning budget was spent)."""
    from pydantic import TypeAdapter

    space = params.tune.space
    for knob in ("lr", "weight_decay", "label_smoothing"):
        bounds = getattr(space, knob)
        if bounds is None:
            continue  # fixed at the shared recipe's value, which the train section checked
        field = TrainParams.model_fields[knob]
        knob_type: Any = Annotated[(field.annotation, *field.metadata)]  # the knob's type with its bounds
        check: TypeAdapter[float] = TypeAdapter(knob_type, config=ConfigDict(allow_inf_nan=False))
        for end in ("low", "high"):
            value = getattr(bounds, end)
            try:
                check.validate_python(value)
            except ValidationError as exc:
                raise ParamsError(
                    f"{source}: tune.space.{knob}.{end}: {value} is not a value train.{knob} can take "
                    f"({plain_problem(exc.errors()[0])}); keep the search range within train.{knob}'s"
                ) from None
    lr = space.lr.high if space.lr is not None else params.train.lr
    decay = space.weight_decay.high if space.weight_decay is not None else params.train.weight_decay
    if lr * decay >= 1:
        raise ParamsError(
            f"{source}: tune.space: a trial can draw lr {lr} with weight_decay {decay}: "
            f"{decay_problem(lr, decay, 'lr')}; lower tune.space.lr.high or tune.space.weight_decay.high"
        )


def validate_model_choice(params: Params, alias: str, key: str, value: Any, source: str) -> dict[str, Any]:
    """model.<alias> with `key` set to one of its tuning choices, checked against the architecture's schema."""
    section = {**params.model, alias: {**(params.model.get(alias) or {}), key: value}}
    try:
        return typed_settings(params.model_copy(update={"model": section}), alias, source)
    except ParamsError as exc:
        raise ParamsError(
            f"{source}: tune.shape.{alias}.{key}: the choice {value!r} is not a valid setting "
            f"({str(exc).removeprefix(source + ': ')})"
        ) from None


def _with_overrides(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """`raw` with overrides[data.name] applied; every override key must name an existing setting."""
    overrides = raw.get("overrides")
    dataset = raw.get("data", {}).get("name") if isinstance(raw.get("data"), dict) else None
    if not isinstance(overrides, dict) or not isinstance(overrides.get(dataset), dict):
        return raw
    for dotted in overrides[dataset]:
        if str(dotted).split(".")[0] in ("overrides", "data", "dataset"):
            raise ParamsError(
                f"{source}: overrides.{dataset}: '{dotted}' is not a setting that can be overridden; use a dotted "
                f"path to an existing key outside data and overrides, e.g. train.epochs"
            )
    return apply_settings(raw, overrides[dataset], f"{source}: overrides.{dataset}")


def schema_defaults() -> dict[str, Any]:
    """Every section's default values as params.yaml would spell them (what a key absent from the file means)."""
    defaults: dict[str, Any] = {}
    for name, field in Params.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, _Section):
            values = {k: f.get_default() for k, f in kind.model_fields.items() if not f.is_required()}
            defaults[name] = json.loads(json.dumps(values, default=_plain))
    return defaults


def _plain(value: Any) -> Any:
    """A default as YAML would hold it: sections as mappings, paths as strings."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of raw params with every setting the file leaves out filled in with its default."""

    def merge(defaults: Any, given: Any) -> Any:
        if isinstance(defaults, dict) and isinstance(given, dict):
            return {**defaults, **{k: merge(defaults.get(k), v) for k, v in given.items()}}
        return copy.deepcopy(given)

    return {**schema_defaults(), **{k: merge(schema_defaults().get(k), v) for k, v in raw.items()}}


def apply_settings(raw: dict[str, Any], settings: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of raw params with dotted keys (e.g. 'train.lr') set; each must name a setting of the schema (one
    the file leaves at its default included) or of a model under `model.<alias>`.

    New keys are allowed only under tracking.tags, which is a free-form mapping.
    """
    result = with_defaults(raw)
    for dotted, value in settings.items():
        *parents, last = str(dotted).split(".")
        node: Any = result
        for depth, key in enumerate(parents):
            if depth == 1 and parents[0] == "model" and isinstance(node, dict) and key not in node:
                node[key] = {}  # a model's settings the file leaves at the registry's defaults
            node = node.get(key) if isinstance(node, dict) else None
        if parents[:1] == ["model"] and len(parents) == 2 and isinstance(node, dict) and last not in node:
            node[last] = None  # a model setting: the registry's schema checks the name and the value
        free_form = parents == ["tracking", "tags"]
        if free_form and isinstance(result.get("tracking"), dict) and not isinstance(node, dict):
            node = result["tracking"].setdefault("tags", {})
        top_level = not parents and isinstance(node, dict) and last in node
        if not top_level and (not parents or not isinstance(node, dict) or (last not in node and not free_form)):
            raise ParamsError(
                f"{source}: '{dotted}' is not a setting that can be overridden; use a dotted path to an existing "
                f"key, e.g. train.epochs"
            )
        node[last] = value
    return result


def _describe(error: Any) -> str:
    """Turn one pydantic error into 'key.path: problem (got value)' with the allowed keys where useful."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = allowed_keys(loc[:-1], Params)
        return f"unknown key '{key}'; allowed keys here: {', '.join(allowed)}"
    if error["type"] == "missing" and loc[-1].isdigit():  # a fixed-length list, such as [H, W], cut short
        return f"{'.'.join(loc[:-1])}: too few values: item {int(loc[-1]) + 1} is missing"
    if error["type"] == "missing":
        return f"missing key '{key}'; add it (see `convbench params` and docs/params.md)"
    if error["type"] == "finite_number":
        return f"{key}: {NOT_FINITE} (got {_shown(error.get('input'))})"
    return f"{key}: {plain_problem(error)} (got {_shown(error.get('input'))})"
