"""Round four of "wrong answers are worse than errors": settings the schema accepted but the pipeline could not finish
with, YAML keys given twice, and model settings or user builders the registry could not build anything useful from.

Each case runs through the real `convbench` CLI in its own copy of a trained project (house style of
test_bad_inputs.py): one `convbench: error:` line naming the file or setting and the fix, a bounded exit, no
traceback, and nothing written. A few checks sit beside the module they concern (the grid loader, the training loop).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests import test_bad_inputs as bad_inputs
from tests.helpers import run, write_params
from tests.test_bad_inputs import TRAIN_CNN, Case, assert_one_error_line, snapshot

trained_project = bad_inputs.trained_project  # digits downloaded, prepared and cnn-s0 trained, once per module
project = bad_inputs.project  # a private copy of it per test

INF, NAN = float("inf"), float("nan")
PARAMS = ["convbench", "params"]
TRAIN_MINE = ["convbench", "train", "-m", "mine", "-s", "0"]


def settings(command: list[str], **overrides: Any) -> Callable[[Path], list[str]]:
    """Set dotted params (`train__lr` spelled with `__`) in the project's params.yaml, then run `command`."""

    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()}, edit_existing=True)
        return command

    return setup


def user_model(source: str, command: list[str] = TRAIN_CNN, **overrides: Any) -> Callable[[Path], list[str]]:
    """params.yaml compares the CNN with `mine`, built by um:build from `source` in the project folder."""

    def setup(root: Path) -> list[str]:
        (root / "um.py").write_text(source)
        values = {
            "models": ["cnn", "mine"],
            "model.mine": {"builder": "um:build"},
            **{k.replace("__", "."): v for k, v in overrides.items()},
        }
        write_params(root / "params.yaml", values, edit_existing=True)
        return command

    return setup


def params_text(edit: Callable[[str], str], command: list[str] = PARAMS) -> Callable[[Path], list[str]]:
    """Edit params.yaml as text (what a dict cannot hold: a key given twice), then run `command`."""

    def setup(root: Path) -> list[str]:
        path = root / "params.yaml"
        path.write_text(edit(path.read_text()))
        return command

    return setup


def tuned_recipe_text(recipe_lines: str) -> Callable[[Path], list[str]]:
    """tune.trials 2 and a tuned/digits/cnn.yaml that fits params and data, whose recipe block is `recipe_lines`."""

    def setup(root: Path) -> list[str]:
        from pipeline.core.recipes import fingerprint
        from pipeline.params import load_params

        tuning = {"models": ["cnn"], "tune.trials": 2, "tune.space.epochs": [1, 2]}  # one tuned file to forge
        write_params(root / "params.yaml", tuning, edit_existing=True)
        params = load_params(root / "params.yaml")
        sha256 = json.loads((root / "data" / "prepared" / "digits" / "manifest.json").read_text())["sha256"]
        head = {
            "model": "cnn",
            "tuned": True,
            "trials": 2,
            "fingerprint": fingerprint(params, "cnn"),
            "dataset": "digits",
            "dataset_sha256": sha256,
        }
        path = root / "tuned" / "digits" / "cnn.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(head, sort_keys=False) + "recipe:\n" + recipe_lines)
        return TRAIN_CNN

    return setup


def grid_file(text: str, *options: str) -> Callable[[Path], list[str]]:
    """A grid.yaml holding `text`, then `convbench sweep --grid grid.yaml`."""

    def setup(root: Path) -> list[str]:
        (root / "grid.yaml").write_text(text)
        return ["convbench", "sweep", "--grid", "grid.yaml", *options]

    return setup


RECIPE = "  lr: 0.003\n  weight_decay: 0.0001\n  label_smoothing: 0.1\n  batch_size: 128\n"
FINITE = ("not a finite number", ".inf and .nan")

EXIT_IN_BUILDER = "import sys\n\ndef build(input_shape, num_classes):\n    sys.exit(0)\n"
EXIT_ON_IMPORT = "import sys\n\nsys.exit(0)\n\ndef build(input_shape, num_classes):\n    pass\n"
EXIT_WITH_TEXT = "import sys\n\ndef build(input_shape, num_classes):\n    sys.exit('usage: um.py FILE')\n"
EXIT_IN_FORWARD = """
import sys
import torch

class Net(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.linear = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        sys.exit(3)

def build(input_shape, num_classes):
    return Net(num_classes)
"""
NO_PARAMETERS = """
import torch

class Constant(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return torch.zeros(x.shape[0], self.num_classes)

def build(input_shape, num_classes):
    return Constant(num_classes)
"""
FROZEN = """
import torch

def build(input_shape, num_classes):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
    net.requires_grad_(False)
    return net
"""
IGNORES_PARAMETERS = """
import torch

class Ignores(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.linear = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        return torch.zeros(x.shape[0], self.linear.out_features)

def build(input_shape, num_classes):
    return Ignores(num_classes)
"""
BATCH_NORM = """
from torch import nn

def build(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, num_classes))
"""
LINEAR = "from torch import nn\n\ndef build(input_shape, num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
DIGITS_TRAIN = 1257  # images in the prepared digits training split: 8 batches of 157 and a last batch of one


# a user's builder (or its module) calling sys.exit: it ended convbench with exit 0, silently
SYS_EXIT_CASES = [
    Case("builder-calls-sys-exit", user_model(EXIT_IN_BUILDER), 2, ("model.mine", "um:build", "sys.exit(0)")),
    Case("builder-module-exits-on-import", user_model(EXIT_ON_IMPORT), 2, ("model.mine.builder", "'um'", "sys.exit")),
    Case("builder-exits-with-a-message", user_model(EXIT_WITH_TEXT), 2, ("model.mine", "usage: um.py FILE")),
    Case("user-forward-calls-sys-exit", user_model(EXIT_IN_FORWARD), 2, ("model.mine", "sys.exit(3)")),
]


# infinities and NaN: settings the schema took and the pipeline could not finish with
NOT_FINITE_CASES = [
    Case(
        "bench-min-run-time-inf",
        settings(["convbench", "bench"], models=["cnn"], evaluate__min_run_time=INF),
        2,
        ("params.yaml: evaluate.min_run_time", *FINITE),
    ),
    Case(
        "bench-min-run-time-absurd",
        settings(["convbench", "bench"], models=["cnn"], evaluate__min_run_time=1e9),
        2,
        ("params.yaml: evaluate.min_run_time", "less than or equal to 60"),
    ),
    Case(
        "weight-decay-inf",
        settings(TRAIN_CNN, train__weight_decay=INF),
        2,
        ("params.yaml: train.weight_decay", *FINITE),
    ),
    Case(
        "weight-decay-times-lr-at-least-one",
        settings(TRAIN_CNN, train__weight_decay=1000.0),
        2,
        ("params.yaml: train.weight_decay", "lr × weight_decay", "below 1/lr"),
    ),
    Case("noise-std-inf", settings(PARAMS, evaluate__noise_std=[0.0, INF]), 2, ("evaluate.noise_std.1", *FINITE)),
    Case(
        "noise-std-absurd",
        settings(PARAMS, evaluate__noise_std=[0.0, 1e40]),
        2,
        ("evaluate.noise_std.1", "less than or equal to 100"),
    ),
    Case(
        "tune-space-weight-decay-inf",
        settings(
            PARAMS, tune__trials=2, tune__space__epochs=[1, 2], tune__space__weight_decay={"low": 0.00001, "high": INF}
        ),
        2,
        ("tune.space.weight_decay.high", *FINITE),
    ),
    Case(
        "tune-space-lr-beyond-train-lr",
        settings(PARAMS, tune__trials=2, tune__space__epochs=[1, 2], tune__space__lr={"low": 0.001, "high": 100.0}),
        2,
        ("tune.space.lr.high", "100.0", "train.lr", "less than or equal to 10"),
    ),
    Case(
        "tune-space-lr-times-weight-decay",
        settings(PARAMS, tune__trials=2, tune__space__epochs=[1, 2], tune__space__lr={"low": 0.001, "high": 5.0}),
        2,
        ("tune.space", "5.0", "0.3", "lr × weight_decay"),
    ),
    Case(
        "nan-names-finiteness-not-a-bound",
        settings(PARAMS, data__val_fraction=NAN),
        2,
        ("data.val_fraction", *FINITE),
    ),
    Case("model-setting-nan", settings(PARAMS, model__mlp__tolerance=NAN), 2, ("model.mlp.tolerance", *FINITE)),
]


# keys given twice: YAML keeps the last one silently
KEY_TWICE_CASES = [
    Case(
        "params-section-twice",
        params_text(lambda text: text + "train:\n  epochs: 30\n"),
        2,
        ("params.yaml", "line", "'train'", "twice", "first on line"),
    ),
    Case(
        "params-key-twice-in-a-section",
        params_text(lambda text: text.replace("train:\n", "train:\n  epochs: 30\n", 1)),
        2,
        ("params.yaml", "'train.epochs'", "twice", "first on line"),
    ),
    Case(
        "params-key-twice-in-a-flow-mapping",
        params_text(lambda text: text.replace("report: {}", "report: {confidence: 0.9, confidence: 0.99}")),
        2,
        ("params.yaml", "'report.confidence'", "twice"),
    ),
    Case(
        "tuned-recipe-key-twice",
        tuned_recipe_text(RECIPE + "  epochs: 2\n  epochs: 1\n"),
        1,
        ("tuned/digits/cnn.yaml", "line 13", "'recipe.epochs'", "twice", "first on line 12"),
    ),
    Case(
        "grid-key-twice",
        grid_file("train.epochs: [1]\ntrain.epochs: [0]\n"),
        2,
        ("grid.yaml", "line 2", "'train.epochs'", "twice", "first on line 1"),
    ),
    Case(
        "sweep-option-value-key-twice",
        lambda root: ["convbench", "sweep", "-S", "model.mlp={depth: 1, depth: 0}"],
        2,
        ("-S 'model.mlp=", "'depth'", "twice"),
    ),
]


# model settings the registry could not build, or built nothing useful from
UNBUILDABLE_CASES = [
    Case(
        "arch-and-builder-together",
        user_model(LINEAR.replace("num_classes)", "num_classes, **settings)", 1), model__mine__arch="mlp"),
        2,
        ("params.yaml: model.mine", "arch", "builder", "remove one"),
    ),
    Case(
        "geometry-typo",
        settings(TRAIN_CNN, models=["cnn", "lcn"], model__lcn={"geometry": "cnnn"}),
        2,
        ("params.yaml: model.lcn.geometry", "'cnnn'", "cnn"),
    ),
    Case(
        "settings-of-an-unregistered-alias",
        settings(PARAMS, model__cnnn={"hidden": [64]}),
        2,
        ("params.yaml: model.cnnn", "not a registered model", "arch"),
    ),
    Case(
        "arch-builder-without-a-builder",
        settings(PARAMS, models=["cnn", "mine"], model__mine={"arch": "builder"}),
        2,
        ("params.yaml: model.mine.arch", "'builder'", "not a registered model"),
    ),
    Case(
        "builder-without-parameters",
        user_model(NO_PARAMETERS, TRAIN_MINE),
        2,
        ("model.mine", "no trainable parameters", "um:build"),
    ),
    Case(
        "reference-without-parameters",
        user_model(
            NO_PARAMETERS, ["convbench", "train", "-m", "mlp", "-s", "0"], models=["mine", "mlp"], reference="mine"
        ),
        2,
        ("model.mine", "no trainable parameters"),
    ),
    Case("builder-all-frozen", user_model(FROZEN, TRAIN_MINE), 2, ("model.mine", "no trainable parameters")),
    Case(
        "output-ignores-parameters",
        user_model(IGNORES_PARAMETERS, TRAIN_MINE),
        2,
        ("model.mine", "does not depend on any trainable parameter"),
    ),
    Case(
        "batch-norm-with-batch-size-one",
        user_model(BATCH_NORM, TRAIN_MINE, train__batch_size=1),
        1,
        ("train.batch_size 1", "batch norm (BatchNorm1d)", "at least 2"),
    ),
]
CASES = [*SYS_EXIT_CASES, *NOT_FINITE_CASES, *KEY_TWICE_CASES, *UNBUILDABLE_CASES]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_params_fault_fails_with_one_clear_line_and_writes_nothing(project: Path, case: Case) -> None:
    args = case.setup(project)
    before = snapshot(project)

    result = run(args, project, timeout=90, **case.env)  # bounded: `.inf` ran bench past any limit

    assert_one_error_line(result, case.exit_code, case.expected, case.absent)
    after = snapshot(project)
    assert sorted(set(after) - set(before)) == [], "files written by a failing command"
    assert sorted(set(before) - set(after)) == [], "files removed by a failing command"
    assert {name for name in before if before[name] != after[name]} == set(), "files changed by a failing command"


def test_batch_norm_model_trains_when_the_last_batch_holds_one_image(project: Path) -> None:
    """A user model with BatchNorm1d and a training split of 8 x 157 + 1 images: the batch of one (which batch norm
    cannot train on) is dropped, as DataLoader(drop_last=True) would, and the cell trains."""
    assert DIGITS_TRAIN % 157 == 1
    user_model(BATCH_NORM, TRAIN_MINE, train__batch_size=157)(project)

    result = run(TRAIN_MINE, project, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr
    assert (project / "models" / "digits" / "mine-s0.pt").is_file()


def test_fit_drops_only_a_last_batch_of_one_and_only_for_batch_norm() -> None:
    """Beside the loop: a batch-norm model takes 2 steps on 2 x 4 + 1 images and scores the 8 it trained on; a model
    without batch norm still takes the last step of one image (its results stay what they were)."""
    from pipeline.core.data import Split, Splits
    from pipeline.core.runtime import execution_plan, fit
    from pipeline.params import TrainParams

    generator = torch.Generator().manual_seed(0)
    train = Split(torch.randn(9, 1, 4, 4, generator=generator), torch.arange(9) % 2)
    data = Splits(train, Split(train.x[:4], train.y[:4]), Split(train.x[:0], train.y[:0]))
    recipe = TrainParams(epochs=1, batch_size=4, seeds=[0], device="cpu", schedule="constant", threads=1)
    plan = execution_plan(recipe, torch.device("cpu"), (1, 4, 4))

    def steps(model: torch.nn.Module) -> int:
        counted = []
        model.register_forward_pre_hook(
            lambda module, inputs: counted.append(len(inputs[0])) if module.training else None
        )
        fit(model, data, recipe, 0, lambda _stats: None, plan)
        return len(counted)

    with_norm = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    assert steps(with_norm) == 2
    assert steps(plain) == 3


def test_grid_loader_refuses_a_key_given_twice(tmp_path: Path) -> None:
    """Beside the module: load_grid_file names the file, the line and the key, for nested mappings too."""
    from pipeline.errors import ParamsError
    from pipeline.ops.grid import load_grid_file

    path = tmp_path / "grid.yaml"
    path.write_text("model.cnn.conv:\n  - {channels: 8, kernel: 3, padding: 0, pool: 2, pool: 1}\n")
    with pytest.raises(ParamsError, match=r"grid.yaml: line 2: .*'model.cnn.conv.0.pool'.* twice"):
        load_grid_file(path)


def test_yaml_merge_keys_may_still_override(tmp_path: Path) -> None:
    """A `<<: *base` merge followed by a key of its own is YAML's way to override, not a key given twice."""
    from pipeline.params import load_yaml

    text = "base: &base {epochs: 1, lr: 0.01}\ntrain:\n  <<: *base\n  epochs: 3\n"
    assert load_yaml(text, "x.yaml")["train"] == {"epochs": 3, "lr": 0.01}
