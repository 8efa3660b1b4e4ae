"""A catalogue of bad inputs, each run through the real `convbench` CLI in its own project folder.

Every case must fail the same way: a non-zero exit (2 for params errors), exactly one stderr line
`convbench: error: ...` naming the problem and the fix, no traceback, and no file written or changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import OFFLINE, env, free_port, run, write_params
from tests.image_files import pattern_images, write_image_folder
from tests.torchvision_files import make_cifar10, make_mnist_family, write_idx

TRAIN_CNN = ["convbench", "train", "-m", "cnn", "-s", "0"]
EVALUATE_CNN = ["convbench", "evaluate", "-m", "cnn", "-s", "0"]
PREPARE = ["convbench", "prepare"]
MLFLOW_STORE = "mlflow.db"  # excluded from snapshots: opening the store may touch it


def fast_params(root: Path) -> dict[str, Any]:
    """Overrides that keep every real run short, with the MLflow store inside `root`."""
    return {
        "data.name": "digits",
        "data.root": "data/raw",
        "train.epochs": 1,
        "train.seeds": [0],
        "train.device": "cpu",
        "evaluate.min_run_time": 0.05,
        "tracking.uri": f"sqlite:///{root / MLFLOW_STORE}",
        "tracking.log_model": False,
    }


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder where the real CLI downloaded and prepared digits and trained the cnn-s0 cell."""
    root = tmp_path_factory.mktemp("trained")
    write_params(root / "params.yaml", fast_params(root))
    for args in (["convbench", "download"], PREPARE, TRAIN_CNN):
        result = run(args, root, timeout=300)
        assert result.returncode == 0, f"setup `{' '.join(args)}` failed:\n{result.stderr}"
    assert (root / "models" / "digits" / "cnn-s0.pt").is_file()
    return root


@pytest.fixture
def project(trained_project: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project whose params point at the copy's own MLflow store."""
    root = tmp_path / "project"
    shutil.copytree(trained_project, root)
    write_params(root / "params.yaml", {"tracking.uri": f"sqlite:///{root / MLFLOW_STORE}"}, edit_existing=True)
    return root


# --- setups: each edits the project copy and returns the command that must fail -------------


def edit_params(**overrides: Any) -> Callable[[Path], list[str]]:
    """Set dotted keys (`train__epochs` spelled with `__`) in the project's params, then train one cell."""

    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()}, edit_existing=True)
        return TRAIN_CNN

    return setup


def corrupt_prepared_tensors(root: Path) -> list[str]:
    """Flip bytes inside the split tensors (not the zip header), keeping the manifest's sha256."""
    path = root / "data" / "prepared" / "digits" / "splits.pt"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, middle + 16):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return TRAIN_CNN


def mnist_files(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """Place tiny IDX files in torchvision's layout for `mnist`, damage the training images, prepare."""

    def setup(root: Path) -> list[str]:
        raw = make_mnist_family(root / "data" / "raw" / "mnist", "mnist")
        damage(raw / "train-images-idx3-ubyte")
        write_params(root / "params.yaml", {"data.name": "mnist"}, edit_existing=True)
        return PREPARE

    return setup


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: 16 + 28 * 28 * 10 + 100])  # header + 10.1 of the 60 images


def wrong_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:4] = struct.pack(">BBBB", 0x1F, 0x8B, 0x08, 0x03)  # gzip's magic, not IDX's (0, 0, 0x08, ndim)
    path.write_bytes(bytes(data))


def checkpoint_with_config(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[str]]:
    """Forge models/digits/cnn-s0.pt's resolved config (its weights stay those of the trained architecture)."""

    def setup(root: Path) -> list[str]:
        path = root / "models" / "digits" / "cnn-s0.pt"
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        edit(checkpoint["config"])
        torch.save(checkpoint, path)
        return EVALUATE_CNN

    return setup


def sixteen_channels(config: dict[str, Any]) -> None:
    config["settings"]["conv"][0]["channels"] = 16


def params_now_other_recipe(root: Path) -> list[str]:
    """The checkpoint was trained 1 epoch at lr 0.003; params.yaml now says 30 epochs at lr 0.01 (issue 15's case 3)."""
    write_params(root / "params.yaml", {"train.epochs": 30, "train.lr": 0.01}, edit_existing=True)
    return EVALUATE_CNN


def params_now_other_architecture(root: Path) -> list[str]:
    """The checkpoint was trained with the 32-channel CNN; params.yaml now asks for 16 channels."""
    write_params(
        root / "params.yaml",
        {"model.cnn.conv": [{"channels": 16, "kernel": 3, "padding": 0, "pool": 2}]},
        edit_existing=True,
    )
    return EVALUATE_CNN


def cifar_bad_checksum(root: Path) -> list[str]:
    """CIFAR-10 batches in torchvision's layout whose md5s are not torchvision's; one would run code if unpickled."""
    base = make_cifar10(root / "data" / "raw" / "cifar10")
    marker = root / "UNPICKLED"
    # A pickle that, if anything unpickled it with plain pickle, would create `marker`.
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (base / "data_batch_1").write_bytes(payload)
    write_params(root / "params.yaml", {"data.name": "cifar10", "data.verify_checksums": True}, edit_existing=True)
    return PREPARE


USER_MODELS = """
import torch

def raises(input_shape, num_classes, width=3):
    raise ValueError("width must be even")

def wrong_input(input_shape, num_classes):
    return torch.nn.Linear(10, num_classes)

class Net(torch.nn.Module):  # a class named as the builder, its own signature
    def __init__(self, channels=4):
        super().__init__()
"""


def user_model(builder: str) -> Callable[[Path], list[str]]:
    """params.yaml compares the CNN with `mine`, built by `builder` from a module in the project folder."""

    def setup(root: Path) -> list[str]:
        (root / "user_models.py").write_text(USER_MODELS)
        write_params(
            root / "params.yaml", {"models": ["cnn", "mine"], "model.mine": {"builder": builder}}, edit_existing=True
        )
        return TRAIN_CNN

    return setup


def sweep(*args: str, grid: str | None = None) -> Callable[[Path], list[str]]:
    """A `convbench sweep` with these options (and a grid.yaml holding `grid`, when given)."""

    def setup(root: Path) -> list[str]:
        if grid is not None:
            (root / "grid.yaml").write_text(grid)
        return ["convbench", "sweep", *args]

    return setup


def tune_on(options: list[str]) -> Callable[[Path], list[str]]:
    """Tuning on (2 trials of 1-2 epochs), then `convbench tune` with these options."""

    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", {"tune.trials": 2, "tune.space.epochs": [1, 2]}, edit_existing=True)
        return ["convbench", "tune", *options]

    return setup


def with_file(relative: str, content: str, args: list[str], **overrides: Any) -> Callable[[Path], list[str]]:
    """Write `content` to `relative` in the project (and set dotted params `overrides`), then run `args`."""

    def setup(root: Path) -> list[str]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if overrides:
            write_params(root / "params.yaml", overrides, edit_existing=True)
        return args

    return setup


def with_folder(relative: str, args: list[str]) -> Callable[[Path], list[str]]:
    """Make a folder at `relative` where convbench expects a file, then run `args`."""

    def setup(root: Path) -> list[str]:
        (root / relative).mkdir(parents=True)
        return args

    return setup


def ui_with(**overrides: Any) -> Callable[[Path], list[str]]:
    """Set dotted params, then `convbench ui` on a free port."""

    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()}, edit_existing=True)
        return ["convbench", "ui", "--port", str(free_port())]

    return setup


def mnist_labels(split: str, labels: list[int] | None = None, count: int | None = None) -> Callable[[Path], list[str]]:
    """torchvision-layout MNIST (60 train, 20 test images) whose `split` label file holds other labels, then prepare."""

    def setup(root: Path) -> list[str]:
        raw = make_mnist_family(root / "data" / "raw" / "mnist", "mnist")
        size = {"train": 60, "t10k": 20}[split]
        values = np.array(labels if labels is not None else np.arange(count or size) % 10, dtype=np.uint8)
        write_idx(raw / f"{split}-labels-idx1-ubyte", values)
        write_params(root / "params.yaml", {"data.name": "mnist"}, edit_existing=True)
        return PREPARE

    return setup


def tuned_without_recipe(root: Path) -> list[str]:
    """tune.trials 2 and a tuned/digits/cnn.yaml that fits params and data in every way but holds no recipe."""
    from pipeline.core.recipes import fingerprint
    from pipeline.params import load_params

    write_params(root / "params.yaml", {"tune.trials": 2, "tune.space.epochs": [1, 2]}, edit_existing=True)
    params = load_params(root / "params.yaml")
    sha256 = json.loads((root / "data" / "prepared" / "digits" / "manifest.json").read_text())["sha256"]
    (root / "tuned" / "digits").mkdir(parents=True, exist_ok=True)
    content = {
        "model": "cnn",
        "tuned": True,
        "trials": 2,
        "fingerprint": fingerprint(params, "cnn"),
        "dataset": "digits",
        "dataset_sha256": sha256,
    }
    (root / "tuned" / "digits" / "cnn.yaml").write_text(yaml.safe_dump(content))
    return TRAIN_CNN


ALIAS_BOMB = (
    "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 10) if prev else ', '.join(['x'] * 10)}]\n"
        for prev, name in zip(["", *"abcdefgh"], "abcdefghi")
    )
    + "data: *i\n"
)


# --- the user's own data (issue 20): declared as dataset.pets, kept beside the project folder, never inside it ---

DOWNLOAD = ["convbench", "download"]
USER = "pets"  # the alias every user-data case declares under `dataset` and selects with data.name


def user_data(
    make: Callable[[Path], Path], args: list[str], settings: dict[str, Any] | None = None, **declared: Any
) -> Callable[[Path], list[str]]:
    """Make the user's data with `make` in a folder beside the project, declare it as dataset.pets (its path plus
    `declared`, format imagefolder unless given), select it (plus dotted `settings`), then run `args`."""

    def setup(root: Path) -> list[str]:
        path = make(root.parent / "user-data")
        entry = {"format": "imagefolder", "path": str(path), **declared}
        overrides = {"data.name": USER, "dataset": {USER: entry}, **(settings or {})}
        write_params(root / "params.yaml", overrides, edit_existing=True)
        return args

    return setup


def user_data_prepared(make: Callable[[Path], Path], args: list[str], **declared: Any) -> Callable[[Path], list[str]]:
    """As user_data, but `convbench download` and `convbench prepare` run first and must succeed."""
    declare = user_data(make, args, **declared)

    def setup(root: Path) -> list[str]:
        command = declare(root)
        for stage in (DOWNLOAD, PREPARE):
            result = run(stage, root, timeout=300, **OFFLINE)
            assert result.returncode == 0, f"setup `{' '.join(stage)}` failed:\n{result.stderr}"
        return command

    return setup


def save_png(path: Path, size: int, channels: int) -> None:
    """One plain PNG of `size`x`size` pixels, gray (channels 1) or RGB."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L" if channels == 1 else "RGB", (size, size), 128).save(path)


def image_folder(
    *damage: Callable[[Path], None], names: tuple[str, ...] = ("cat", "dog"), per_class: int = 3, size: int = 8
) -> Callable[[Path], Path]:
    """A tiny grayscale ImageFolder (`<folder>/<class>/<i>.png`, with a .DS_Store and Thumbs.db), then `damage`."""

    def make(base: Path) -> Path:
        folder = write_image_folder(base / USER, list(names), per_class, size, channels=1)
        for step in damage:
            step(folder)
        return folder

    return make


def cut_in_half(relative: str) -> Callable[[Path], None]:
    """Keep only the first half of the image at `relative` (its header reads, its pixels do not)."""

    def damage(folder: Path) -> None:
        path = folder / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def put(relative: str, content: bytes | None = None, size: int = 8, channels: int = 1) -> Callable[[Path], None]:
    """Write `content` at `relative`, or a PNG of `size` and `channels` when no content is given."""

    def damage(folder: Path) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            save_png(path, size, channels)
        else:
            path.write_bytes(content)

    return damage


def empty_folder(relative: str) -> Callable[[Path], None]:
    """Make an empty folder at `relative` (a class folder whose images were never copied in)."""

    def damage(folder: Path) -> None:
        (folder / relative).mkdir(parents=True)

    return damage


def no_such_path(base: Path) -> Path:
    """Make nothing: dataset.pets.path names a folder that is not there."""
    return base / "no-such-folder"


NPZ_X, NPZ_Y = pattern_images(classes=2, per_class=3, size=6, channels=1)  # (6, 6, 6, 1): NHWC by its shape


def npz_file(**arrays: np.ndarray) -> Callable[[Path], Path]:
    """`<base>/pets.npz` holding exactly `arrays`."""

    def make(base: Path) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        np.savez(base / f"{USER}.npz", **arrays)
        return base / f"{USER}.npz"

    return make


SECRET = "s3cr3t-pw"
REPORT = ["convbench", "report"]
REDO_EVALUATE = "run `convbench evaluate --dataset digits --model cnn --seed 0` to write it again"


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the exit code, and what the one stderr line must say."""

    id: str
    setup: Callable[[Path], list[str]]
    exit_code: int
    expected: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = (SECRET,)  # never in stdout or stderr


CASES = [
    Case(
        "unknown-key",
        edit_params(train__learning_rate=0.01),
        2,
        ("params.yaml: unknown key 'train.learning_rate'", "allowed keys here: seeds, epochs, batch_size, lr"),
    ),
    Case(
        "wrong-type",
        edit_params(train__epochs="ten"),
        2,
        ("train.epochs: expected a whole number", "(got 'ten')"),
    ),
    Case("zero-epochs", edit_params(train__epochs=0), 2, ("train.epochs: Input should be greater than 0 (got 0)",)),
    Case(
        "negative-batch-size",
        edit_params(train__batch_size=-8),
        2,
        ("train.batch_size: Input should be greater than 0 (got -8)",),
    ),
    Case(
        "zero-learning-rate", edit_params(train__lr=0.0), 2, ("train.lr: Input should be greater than 0", "(got 0.0)")
    ),
    Case("empty-seeds", edit_params(train__seeds=[]), 2, ("train.seeds: expected at least 1 item, got 0",)),
    Case(
        "unknown-dataset",
        edit_params(data__name="imagenet"),
        2,
        ("data.name: unknown dataset 'imagenet'; built-in: mnist5k, digits", "declare your own as dataset.imagenet:"),
    ),
    Case(
        "image-smaller-than-receptive-field",
        edit_params(model__cnn__conv=[{"channels": 8, "kernel": 9, "padding": 0, "pool": 1}]),
        2,
        ("model.cnn.conv.0: input of size 8x8 is too small", "use smaller kernels, padding"),
    ),
    Case(
        "mlp-match-impossible",
        edit_params(
            model__cnn__conv=[{"channels": 1, "kernel": 3, "padding": 0, "pool": 1}],
            model__cnn__hidden=[],
            model__mlp__tolerance=0.01,
        ),
        2,
        ("model.mlp: cannot match the reference cnn's 380 parameters within 1.0%", "set model.mlp.match: none"),
    ),
    Case(
        "corrupted-prepared-tensors",
        corrupt_prepared_tensors,
        1,
        (
            "data/prepared/digits/splits.pt does not match the sha256 in data/prepared/digits/manifest.json",
            "run `convbench prepare` again",
        ),
    ),
    Case(
        "truncated-idx",
        mnist_files(truncate),
        1,
        ("MNIST/raw/train-images-idx3-ubyte is not a valid IDX file", "delete it and run `convbench download`"),
        OFFLINE,
    ),
    Case(
        "wrong-magic-idx",
        mnist_files(wrong_magic),
        1,
        (
            "MNIST/raw/train-images-idx3-ubyte is not a valid IDX file",
            "bad magic number",
            "delete it and run `convbench download`",
        ),
        OFFLINE,
    ),
    Case(
        "checkpoint-config-forged",
        checkpoint_with_config(sixteen_channels),
        1,
        (
            "models/digits/cnn-s0.pt holds a different cnn than params.yaml's model section",
            "`convbench train --model cnn",
        ),
    ),
    Case(
        "checkpoint-trained-with-another-recipe-than-params",
        params_now_other_recipe,
        1,
        (
            "models/digits/cnn-s0.pt was trained with another recipe than params.yaml now gives (train.epochs 1 -> 30, "
            "train.lr 0.003 -> 0.01)",
            "run `convbench train --model cnn --seed 0`",
        ),
    ),
    Case(
        "checkpoint-from-other-architecture-than-params",
        params_now_other_architecture,
        1,
        (
            "models/digits/cnn-s0.pt holds a different cnn than params.yaml's model section",
            "run `convbench train --model cnn --seed 0`",
        ),
    ),
    Case(
        "cifar-batch-checksum-mismatch",
        cifar_bad_checksum,
        1,
        (
            "dataset 'cifar10' is incomplete",
            "failing checksum",
            "cifar-10-batches-py/data_batch_1",
            "run `convbench download`",
        ),
        OFFLINE,
    ),
    Case(
        "model-not-registered",
        edit_params(models=["cnn", "densenet"]),
        2,
        ("models: 'densenet' is not a registered model (linear, mlp, cnn, lcn", "model.densenet: {builder:"),
    ),
    Case(
        "reference-not-in-models",
        edit_params(reference="lcn"),
        2,
        ("reference: 'lcn' is not in models ['cnn', 'mlp']",),
    ),
    Case(
        "builder-module-missing",
        user_model("no_such_module:build"),
        2,
        ("model.mine.builder: cannot import 'no_such_module' (ModuleNotFoundError", "put the module on PYTHONPATH"),
    ),
    Case(
        "builder-raises",
        user_model("user_models:raises"),
        2,
        (
            "model.mine: user_models:raises raised ValueError: width must be even",
            "fix the builder or those settings",
        ),
    ),
    Case(
        "builder-with-another-signature",
        user_model("user_models:Net"),
        2,
        (
            "model.mine: user_models:Net raised TypeError: Net.__init__() got an unexpected keyword argument "
            "'input_shape'; convbench calls it as f(input_shape, num_classes, **settings), here "
            "user_models:Net(input_shape=(1, 8, 8), num_classes=10)",
        ),
    ),
    Case(
        "builder-rejects-the-input-shape",
        user_model("user_models:wrong_input"),
        2,
        (
            "model.mine: the module from user_models:wrong_input fails on an input of shape (1, 1, 8, 8)",
            "make it accept (batch, 1, 8, 8)",
        ),
    ),
    Case(
        "sweep-unknown-key",
        sweep("-S", "train.lr=0.001,0.003", "-S", "train.learning_rate=1"),
        2,
        ("params.yaml: sweep: 'train.learning_rate' is not a setting", "use a dotted path to an existing key"),
    ),
    Case(
        "sweep-bad-value-in-one-cell",
        sweep("-S", "train.epochs=2,0"),
        2,
        ("with train.epochs=0: train.epochs: Input should be greater than 0 (got 0)",),
    ),
    Case(
        "sweep-ray-cluster-unreachable",
        sweep("--backend", "ray", "--ray-address", "127.0.0.1:9", "-S", "train.lr=0.001"),
        1,
        ("no Ray cluster answers at 127.0.0.1:9 (Connection refused)", "`ray start --head`"),
    ),
    Case(
        "tune-unknown-key",
        edit_params(tune__space__momentum=[0.9]),
        2,
        (
            "params.yaml: unknown key 'tune.space.momentum'",
            "allowed keys here: lr, weight_decay, label_smoothing, epochs, batch_size",
        ),
    ),
    Case(
        "tune-empty-search-range",
        edit_params(tune__space__lr={"low": 0.01, "high": 0.001}),
        2,
        ("tune.space.lr.high: empty search range: low 0.01 is not below high 0.001; make low smaller than high",),
    ),
    Case(
        "tune-ray-cluster-unreachable",
        tune_on(["--backend", "ray", "--ray-address", "127.0.0.1:9"]),
        1,
        ("no Ray cluster answers at 127.0.0.1:9 (Connection refused)", "`ray start --head`"),
    ),
    Case(
        "train-before-tune",
        edit_params(tune__trials=2, tune__space__epochs=[1, 2]),
        1,
        ("tuned/digits/cnn.yaml is missing; run `convbench tune --model cnn` (or `dvc repro`) first",),
    ),
    Case(
        "sweep-grid-not-a-mapping",
        sweep("--grid", "grid.yaml", grid="- 0.001\n- 0.003\n"),
        2,
        ("grid.yaml: expected a mapping of dotted keys to lists of values",),
    ),
    # --- the second catalogue (issue 15): stores, URIs, secrets, system errors, damaged outputs ----------------
    Case(
        "tracking-uri-sqlite-without-file",
        edit_params(tracking__uri=None),
        1,
        ("tracking URI 'sqlite:///' names no database file", "sqlite:///mlflow.db"),
        {"MLFLOW_TRACKING_URI": "sqlite:///"},
    ),
    Case(
        "mlflow-db-damaged",
        with_file(MLFLOW_STORE, "this is not a database\n" * 400, TRAIN_CNN),
        1,
        ("mlflow.db is damaged (file is not a database)", "move it aside", "tracking.uri"),
    ),
    Case(
        "tracking-uri-not-a-url",
        edit_params(tracking__uri="http://[::1"),
        1,
        ("tracking URI 'http://[::1' is not a valid URL (Invalid IPv6 URL)", "fix tracking.uri"),
    ),
    Case(
        "tracking-uri-port-not-a-number",
        edit_params(tracking__uri="http://127.0.0.1:port"),
        1,
        ("tracking URI 'http://127.0.0.1:port' is not a valid URL", "fix tracking.uri"),
    ),
    Case(
        "tracking-password-in-unreachable-server",
        edit_params(tracking__uri=f"http://alice:{SECRET}@127.0.0.1:9"),
        1,
        ("MLflow tracking server 'http://alice:***@127.0.0.1:9' is unreachable", "`make server`"),
    ),
    Case(
        "tracking-database-driver-missing-or-down",
        edit_params(tracking__uri=f"postgresql://alice:{SECRET}@127.0.0.1:9/mlflow"),
        1,
        ("'postgresql://alice:***@127.0.0.1:9/mlflow'", "tracking.uri"),
    ),
    Case(
        "data-root-is-a-file",
        with_file("not-a-folder", "a file\n", ["convbench", "download"], **{"data.root": "not-a-folder"}),
        1,
        (
            "not-a-folder/digits: part of this path is a file, not a folder",
            "data.root in params.yaml is 'not-a-folder'",
        ),
    ),
    Case(
        "metrics-json-garbage",
        with_file("results/digits/cells/cnn-s0.json", "{not json", REPORT),
        1,
        (
            "results/digits/cells/cnn-s0.json is not valid JSON (Expecting property name enclosed in double quotes at line 1)",
            REDO_EVALUATE,
        ),
    ),
    Case(
        "metrics-json-empty-object",
        with_file("results/digits/cells/cnn-s0.json", "{}\n", REPORT),
        1,
        ("results/digits/cells/cnn-s0.json lacks 'model', 'seed', 'dataset', 'test_accuracy'", REDO_EVALUATE),
    ),
    Case(
        "metrics-json-not-an-object",
        with_file("results/digits/cells/cnn-s0.json", "[0.98]\n", REPORT),
        1,
        ("results/digits/cells/cnn-s0.json holds a JSON list", REDO_EVALUATE),
    ),
    Case(
        "cell-lock-is-a-folder",
        with_folder("models/digits/cnn-s0.lock", TRAIN_CNN),
        1,
        ("models/digits/cnn-s0.lock: this is a folder where a file is expected",),
    ),
    Case(
        "ui-on-a-tracking-server",
        ui_with(tracking__uri=f"http://alice:{SECRET}@127.0.0.1:9"),
        1,
        (
            "runs go to the tracking server 'http://alice:***@127.0.0.1:9', which serves its own UI: open "
            "http://127.0.0.1:9 in a browser",
        ),
    ),
    Case(
        "ui-on-sqlite-without-file",
        ui_with(tracking__uri="sqlite:///"),
        1,
        ("tracking URI 'sqlite:///' names no database file",),
    ),
    # --- the third catalogue (issue 23): what used to give a wrong answer, a hang or a catch-all line -------
    Case(
        "idx-fewer-labels-than-images",
        mnist_labels("train", count=50),
        1,
        ("mnist: 60 training images but 50 training labels", "delete them and run `convbench download`"),
        OFFLINE,
    ),
    Case(
        "idx-test-split-fewer-labels",
        mnist_labels("t10k", count=15),
        1,
        ("mnist: 20 test images but 15 test labels",),
        OFFLINE,
    ),
    Case(
        "idx-label-out-of-range",
        mnist_labels("train", labels=[200] + [i % 10 for i in range(59)]),
        1,
        ("mnist: training label 200 is outside the 10 classes (0..9)",),
        OFFLINE,
    ),
    Case(
        "tuned-recipe-removed",
        tuned_without_recipe,
        1,
        (
            "tuned/digits/cnn.yaml: recipe lacks lr, weight_decay, label_smoothing, epochs, batch_size",
            "run `convbench tune --model cnn`",
        ),
    ),
    Case(
        "published-table-of-another-dataset",
        edit_params(report__published={"dataset": "mnist1d", "source": "a paper", "accuracy": {"cnn": 0.94}}),
        2,
        ("report.published describes mnist1d, which data.name ['digits'] does not list", "set report.published: null"),
    ),
    Case(
        "seed-not-in-train-seeds",
        lambda root: ["convbench", "train", "-m", "cnn", "-s", "7"],
        2,
        ("--seed 7: not in train.seeds [0] of params.yaml",),
    ),
    Case(
        "yaml-alias-bomb",
        with_file("params.yaml", ALIAS_BOMB, TRAIN_CNN),
        2,
        ("params.yaml: its YAML aliases (&name / *name) expand to more than 100,000 values",),
    ),
    Case(
        "token-in-the-tracking-query-string",
        edit_params(tracking__uri=f"http://127.0.0.1:9/?token={SECRET}"),
        1,
        ("MLflow tracking server 'http://127.0.0.1:9/?token=***' is unreachable",),
    ),
    Case(
        "password-without-a-user-name",
        edit_params(tracking__uri=f"http://:{SECRET}@127.0.0.1:9"),
        1,
        ("MLflow tracking server 'http://:***@127.0.0.1:9' is unreachable",),
    ),
    Case(
        "password-in-the-study-storage-query",
        tune_on(["--storage", f"postgresql://127.0.0.1:9/db?password={SECRET}"]),
        1,
        ("?password=***",),
    ),
    # --- the fourth catalogue (issue 20): the user's own data, in a folder outside the project -----------------
    Case(
        "user-image-truncated",
        user_data(image_folder(cut_in_half("dog/00004.png")), PREPARE),
        1,
        ("user-data/pets/dog/00004.png cannot be read as an image", "replace or delete it"),
        OFFLINE,
    ),
    Case(
        "user-class-folder-empty",
        user_data(image_folder(empty_folder("fish")), DOWNLOAD),
        1,
        ("dataset.pets: the class folder", "user-data/pets/fish holds no images", "add images or remove the folder"),
        OFFLINE,
    ),
    Case(
        "user-single-class-folder",
        user_data(image_folder(names=("cat",)), DOWNLOAD),
        1,
        ("dataset.pets:", "user-data/pets has one class (cat)", "a classifier needs at least two class folders"),
        OFFLINE,
    ),
    Case(
        "user-file-not-an-image",
        user_data(image_folder(put("cat/notes.txt", b"label me later\n")), DOWNLOAD),
        1,
        ("dataset.pets:", "user-data/pets/cat/notes.txt is not an image", "move it out of the class folders"),
        OFFLINE,
    ),
    Case(
        "user-png-that-is-text",
        user_data(image_folder(put("dog/zz-readme.png", b"not a picture at all\n")), PREPARE),
        1,
        (
            "user-data/pets/dog/zz-readme.png cannot be read as an image (not in a format Pillow reads)",
            "replace or delete it",
        ),
        OFFLINE,
    ),
    Case(
        "user-npz-label-outside-declared-classes",
        user_data(npz_file(x=NPZ_X, y=np.array([0, 0, 1, 1, 5, 1])), PREPARE, format="npz", classes=["a", "b"]),
        1,
        ("pets: training label 5 is outside the 2 classes (0..1)", "fix the labels in", "user-data/pets.npz"),
        OFFLINE,
    ),
    Case(
        "user-npz-labels-wrong-length",
        user_data(npz_file(x=NPZ_X, y=NPZ_Y[:5]), PREPARE, format="npz"),
        1,
        ("dataset.pets:", "user-data/pets.npz (y) holds labels of shape (5,) for 6 images", "one integer label per"),
        OFFLINE,
    ),
    Case(
        "user-npz-without-x",
        user_data(npz_file(images=NPZ_X, y=NPZ_Y), PREPARE, format="npz"),
        1,
        ("dataset.pets.path:", "user-data/pets.npz has arrays images, y but no x", "save the images as x"),
        OFFLINE,
    ),
    Case(
        "user-mixed-channel-counts",
        user_data(image_folder(put("dog/zz-colour.png", channels=3)), PREPARE),
        1,
        (
            "dataset.pets:",
            "user-data/pets/dog/zz-colour.png is colour but the first image is grayscale",
            "set dataset.pets.channels: 1 or 3",
        ),
        OFFLINE,
    ),
    Case(
        "user-mixed-image-sizes",
        user_data(image_folder(put("dog/zz-small.png", size=6)), PREPARE),
        1,
        (
            "dataset.pets:",
            "user-data/pets/dog/zz-small.png is 6x6 but the first image is 8x8",
            "set dataset.pets.image_size: [H, W]",
        ),
        OFFLINE,
    ),
    Case(
        "user-folder-over-max-memory-before-decoding",
        user_data(
            image_folder(put("dog/zz-broken.png", b"\x89PNG\r\n\x1a\n broken")),  # would fail once decoded
            PREPARE,
            {"data.max_memory": 1000},
            channels=3,
        ),
        1,
        ("dataset.pets: 7 images of 3x8x8", "more than data.max_memory", "raise data.max_memory"),
        OFFLINE,
        absent=(SECRET, "cannot be read"),
    ),
    Case(
        "user-images-smaller-than-the-cnn-takes",
        user_data_prepared(image_folder(per_class=10, size=2), TRAIN_CNN),
        2,
        (
            "model.cnn.conv.0: input of size 2x2 is too small for the conv blocks (kernel 3, pool 2)",
            "or larger images (dataset.<name>.image_size for your own data)",
        ),
        OFFLINE,
    ),
    Case(
        "user-path-does-not-exist",
        user_data(no_such_path, DOWNLOAD),
        1,
        ("dataset.pets.path:", "user-data/no-such-folder does not exist", "point it at your image folder"),
        OFFLINE,
    ),
    Case(
        "user-npz-ambiguous-layout",
        user_data(npz_file(x=np.zeros((4, 3, 5, 3), np.uint8), y=np.array([0, 1, 0, 1])), PREPARE, format="npz"),
        1,
        ("dataset.pets:", "(x) has shape (4, 3, 5, 3)", "set dataset.pets.layout: NHWC or NCHW"),
        OFFLINE,
    ),
    Case(
        "user-alias-shadows-a-built-in",
        edit_params(dataset={"mnist": {"format": "imagefolder", "path": "/datasets/mnist"}}),
        2,
        ("dataset.mnist: 'mnist' is a built-in dataset's name", "give yours another name"),
    ),
]


def test_stray_files_beside_user_images_are_ignored(project: Path) -> None:
    """What file managers and tools leave in an image folder (.DS_Store, Thumbs.db, hidden folders) is not data."""
    folder = write_image_folder(project.parent / "user-data" / USER, ["cat", "dog"], per_class=10, size=4, channels=1)
    for stray in (".cache/thumbnails/00000.png", "dog/.cache/index.bin", "dog/.DS_Store", "dog/Thumbs.db"):
        (folder / stray).parent.mkdir(parents=True, exist_ok=True)
        (folder / stray).write_bytes(b"\0not an image")
    entry = {"format": "imagefolder", "path": str(folder)}
    write_params(project / "params.yaml", {"data.name": USER, "dataset": {USER: entry}}, edit_existing=True)

    for stage in (DOWNLOAD, PREPARE):
        result = run(stage, project, timeout=300, **OFFLINE)
        assert result.returncode == 0, f"`{' '.join(stage)}` failed:\n{result.stderr}"

    listed = json.loads((project / "data" / "raw" / USER / "source.json").read_text())["files"]
    assert sorted(listed) == [
        f"{name}/{index:05d}.png" for name, first in (("cat", 0), ("dog", 10)) for index in range(first, first + 10)
    ]
    manifest = json.loads((project / "data" / "prepared" / USER / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"]
    assert manifest["input_shape"] == [1, 4, 4]
    assert sum(manifest["sizes"].values()) == 20


def snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every file and folder under `root` (except the MLflow store) with kind, size, mtime and sha256."""
    state: dict[str, tuple[str, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(MLFLOW_STORE):
            continue
        if path.is_dir():
            state[relative] = ("dir", 0, 0, "")
        else:
            stat = path.stat()
            state[relative] = ("file", stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(project: Path, case: Case) -> None:
    args = case.setup(project)
    before = snapshot(project)

    result = run(args, project, timeout=300, **case.env)

    assert_one_error_line(result, case.exit_code, case.expected, case.absent)
    after = snapshot(project)
    assert sorted(set(after) - set(before)) == [], "files written by a failing command"
    assert sorted(set(before) - set(after)) == [], "files removed by a failing command"
    assert [name for name in before if before[name] != after[name]] == [], "files changed by a failing command"


def assert_one_error_line(
    result: subprocess.CompletedProcess[str],
    exit_code: int,
    expected: tuple[str, ...],
    absent: tuple[str, ...] = (SECRET,),
) -> str:
    """Exit `exit_code`, stderr exactly one `convbench: error:` line holding every `expected` part, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("convbench: error: "), line
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    for secret in absent:
        assert secret not in result.stdout + result.stderr, "a secret was printed"
    return line


def assert_unchanged(before: dict, project: Path, but: tuple[str, ...] = ()) -> None:
    after = snapshot(project)
    changed = {name: after.get(name) for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert {name: state for name, state in changed.items() if name not in but} == {}


def test_locked_mlflow_store_is_one_line_after_the_busy_timeout(project: Path) -> None:
    """Another process holds the SQLite store's write lock for the whole run (a real lock, in this process)."""
    before = snapshot(project)
    holder = sqlite3.connect(project / MLFLOW_STORE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(TRAIN_CNN, project, timeout=120)
    finally:
        holder.close()
    assert_one_error_line(
        result,
        1,
        (
            f"MLflow store {project / MLFLOW_STORE} is locked by another process (database is locked)",
            "wait for that process to finish",
        ),
    )
    assert_unchanged(before, project)


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount a real, tiny tmpfs (`size`, `ro`) on a folder; skipped where mounting is not allowed (not root)."""
    mounted: list[Path] = []

    def mount(target: Path, size: str = "64k", read_only: bool = False) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], capture_output=True)  # a test may have unmounted it already


def test_read_only_data_root_names_the_setting(project: Path, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    read_only = tmpfs(tmp_path / "read-only", read_only=True)
    write_params(project / "params.yaml", {"data.root": str(read_only / "raw")}, edit_existing=True)
    before = snapshot(project)
    result = run(["convbench", "download"], project, timeout=120)
    assert_one_error_line(
        result,
        1,
        (f"{read_only / 'raw'}: the filesystem is read-only", f"(data.root in params.yaml is '{read_only / 'raw'}')"),
    )
    assert_unchanged(before, project)


def test_full_disk_while_saving_the_checkpoint_says_so(project: Path, tmpfs: Callable[..., Path]) -> None:
    """torch.save on a full disk says only "unexpected pos"; the line must say the disk is full, and where."""
    before = snapshot(project)
    models = tmpfs(project / "models" / "digits", size="64k")  # hides the trained checkpoint until unmounted
    result = run(TRAIN_CNN, project, timeout=300)
    assert_one_error_line(result, 1, ("models/digits/cnn-s0.pt: no space left on the device", "free space on it"))
    assert sorted(p.name for p in models.iterdir()) == [], "no temporary file or lock left on the full disk"
    subprocess.run(["umount", str(models)], check=True)
    # train.py writes the curves before the checkpoint, so the curves are already replaced when the checkpoint
    # fails; the trained checkpoint itself is untouched.
    assert_unchanged(before, project, but=("results/digits/curves/cnn-s0.csv",))


def test_second_training_of_the_same_cell_refuses_at_once(project: Path) -> None:
    write_params(project / "params.yaml", {"train.epochs": 500}, edit_existing=True)
    first = subprocess.Popen(
        TRAIN_CNN, cwd=project, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        lock = project / "models" / "digits" / "cnn-s0.lock"
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.exists(), "the first training never took its lock"
        started = time.monotonic()
        second = run(TRAIN_CNN, project, timeout=120)
        assert time.monotonic() - started < 60
        assert_one_error_line(
            second,
            1,
            (
                f"models/digits/cnn-s0.pt: cell cnn-s0 is being trained by another process (pid {first.pid})",
                "wait for it to finish (or stop it)",
                "`convbench train --dataset digits --model cnn --seed 0`",
            ),
        )
        assert first.poll() is None, "the first training goes on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert not (project / "models" / "digits" / "cnn-s0.lock").exists(), "the lock file goes with its holder"


def test_unexpected_error_is_one_line_with_a_log_of_the_traceback(project: Path, tmp_path: Path) -> None:
    """A path with a NUL byte makes os calls raise ValueError, which convbench does not anticipate."""
    write_params(project / "params.yaml", {"data.root": "data/raw\0x"}, edit_existing=True)
    before = snapshot(project)
    logs = tmp_path / "logs"
    result = run(["convbench", "download"], project, timeout=120, CONVBENCH_LOG_DIR=str(logs))
    line = assert_one_error_line(
        result, 1, ("unexpected ValueError: embedded null byte; the traceback is in ", "please report it")
    )
    (log,) = logs.iterdir()
    assert str(log) in line
    assert "Traceback (most recent call last)" in log.read_text() and "embedded null byte" in log.read_text()
    assert_unchanged(before, project)
