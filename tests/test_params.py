"""params.yaml validation: the default file is valid; every mistake names its key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.params import SCHEDULING, TrainParams, load_params, validate_params
from tests.helpers import ROOT, default_params, params_with


def test_default_params_file_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.name == "mnist5k"
    assert [b["channels"] for b in params.model["cnn"]["conv"]] == [32] and params.models == ["cnn", "mlp"]
    assert params.model["cnn"]["hidden"] == [128]
    assert params.train.seeds == [0, 1, 2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train.epochs": -1}, "train.epochs: Input should be greater than 0 (got -1)"),
        ({"train.batch_size": 0}, "train.batch_size: Input should be greater than 0"),
        ({"train.lr": 0}, "train.lr: Input should be greater than 0"),
        ({"train.seeds": []}, "train.seeds: List should have at least 1 item"),
        ({"train.seeds": [1, 1]}, "train.seeds: seeds must be unique"),
        ({"data.name": "nope"}, "data.name: unknown dataset 'nope'; built-in: mnist5k, digits"),
        ({"train.schedule": "linear"}, "train.schedule: Input should be 'onecycle', 'cosine' or 'constant'"),
        ({"train.epochs": "ten"}, "train.epochs: Input should be a valid integer"),
        ({"data.val_fraction": 0.7}, "data.val_fraction: Input should be less than 0.5"),
        (
            {"probes.augment.shifts": [1, 2]},
            "probes.augment.shifts: must include 0 (the unaugmented baseline every other setting is compared with) (got [1, 2])",
        ),
        ({"probes.augment.shifts": [0, 2, 2]}, "probes.augment.shifts: probes.augment.shifts must be unique"),
        (
            {"probes.augment.flips": "sometimes"},
            "probes.augment.flips: Input should be 'auto', True or False (got 'sometimes')",
        ),
    ],
)
def test_bad_values_name_key_and_allowed_values(overrides: dict, expected: str) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(params_with(overrides))
    message = str(caught.value)
    assert message.startswith("params.yaml: ")
    assert expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_unknown_key_lists_allowed_keys() -> None:
    raw = default_params()
    raw["train"]["epoch"] = 3
    with pytest.raises(ParamsError, match=r"unknown key 'train.epoch'; allowed keys here: seeds, epochs, batch_size"):
        validate_params(raw)


def test_unknown_key_inside_conv_block_lists_block_keys() -> None:
    raw = default_params()
    raw["model"]["cnn"]["conv"][0]["stride"] = 2
    with pytest.raises(
        ParamsError, match=r"'model.cnn.conv.0.stride'; allowed keys here: channels, kernel, padding, pool"
    ):
        validate_params(raw)


def test_unknown_section_and_missing_key() -> None:
    raw = default_params()
    raw["extra"] = {}
    del raw["train"]["epochs"]
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    assert (
        "unknown key 'extra'; allowed keys here: data, dataset, models, reference, model, train, evaluate, probes, report, tune, tracking"
        in str(caught.value)
    )
    assert "missing key 'train.epochs'" in str(caught.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found; run from the project root or pass --params PATH"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ParamsError, match=r"broken.yaml: line \d+ is not valid YAML"):
        load_params(broken)


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(
        ParamsError, match="expected a mapping with sections data, dataset, models, reference, model, train"
    ):
        load_params(path)


def test_dvc_tune_stage_tracks_every_recipe_key_but_the_scheduling_ones() -> None:
    """dvc.yaml lists tune's train params one by one (so adding a seed or a worker tunes nothing again); none may be
    forgotten.
    train and evaluate track the whole section: a new seed is a new cell, and the stage keeps the current ones."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    tracked = {p.removeprefix("train.") for p in stages["tune"]["params"] if p.startswith("train.")}
    assert tracked == set(TrainParams.model_fields) - SCHEDULING
    assert "train" in stages["train"]["params"] and "train" in stages["evaluate"]["params"]


def test_dataset_overrides_apply_only_to_their_dataset() -> None:
    default = validate_params(params_with({}))
    mnist1d = validate_params(params_with({"data.name": "mnist1d"}))
    assert default.train.epochs == 12 and len(default.model["cnn"]["conv"]) == 1
    assert mnist1d.train.epochs == 20 and [b["kernel"] for b in mnist1d.model["cnn"]["conv"]] == [5, 5]
    assert mnist1d.train.lr == default.train.lr


def test_override_of_a_missing_key_is_a_params_error() -> None:
    raw = params_with({"data.name": "mnist1d"})
    raw["overrides"]["mnist1d"]["train.epoch"] = 3
    with pytest.raises(ParamsError, match=r"overrides.mnist1d: 'train.epoch' is not a setting that can be overridden"):
        validate_params(raw)
    raw = params_with({"data.name": "mnist1d", "overrides.mnist1d": {"train.epochs": 0}})
    with pytest.raises(ParamsError, match=r"train.epochs: Input should be greater than 0"):
        validate_params(raw)


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda path: path.stem)
def test_presets_are_complete_valid_params_files(preset: Path) -> None:
    params = load_params(preset)
    assert set(params.model_dump()) == set(load_params(ROOT / "params.yaml").model_dump())
    assert params.reference_model in params.models
    published = params.report.published
    assert published is None or set(published.accuracy) <= set(params.models)


TUNING_ON = {"tune.trials": 5}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"tune.space.epochs": [6, 20]},
            "tune.space.epochs: the shared recipe's train.epochs 12 is not among the choices "
            "[6, 20]; add it (the shared recipe is trial 0 of every model's study)",
        ),
        (
            {"tune.space.lr": {"low": 0.01, "high": 0.1}},
            "tune.space.lr: the shared recipe's train.lr 0.003 is outside [0.01, 0.1]; widen the range",
        ),
        (
            {"tune.shape": {"cnn": {"hidden": [[64], [128]]}}},
            "tune.shape.cnn: shape knobs must keep the parameter "
            "budget, so they are allowed only on a model with match: params",
        ),
        ({"model.mlp.match": "none"}, "tune.shape.mlp: shape knobs must keep the parameter budget"),
        (
            {"tune.shape": {"mlp": {"width": [100, 200]}}},
            "tune.shape.mlp.width: not a shape setting of model.mlp; allowed here: depth",
        ),
        (
            {"tune.shape": {"mlp": {"depth": [2, 3]}}},
            "tune.shape.mlp.depth: model.mlp.depth 1 is not among the choices [2, 3]",
        ),
        (
            {"tune.shape": {"mlp": {"depth": [1, 0]}}},
            "tune.shape.mlp.depth: the choice 0 is not a valid setting "
            "(model.mlp.depth: Input should be greater than 0",
        ),
    ],
)
def test_tuning_space_must_hold_the_shared_recipe_and_shape_knobs_must_keep_the_budget(
    overrides: dict, expected: str
) -> None:
    validate_params(params_with({**overrides}))  # with tune.trials 0 the space is not used, so it is not held to this
    with pytest.raises(ParamsError) as caught:
        validate_params(params_with({**TUNING_ON, **overrides}))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"tune.space.weight_decay": {"low": 0.0, "high": 0.1}},
            "tune.space.weight_decay.low: Input should be greater than 0",
        ),
        (
            {"tune.space.label_smoothing": {"low": 0.2, "high": 0.1}},
            "tune.space.label_smoothing.high: empty search range",
        ),
        ({"tune.space.batch_size": [64, 64]}, "tune.space.batch_size: choices must be unique"),
        ({"tune.trials": -1}, "tune.trials: Input should be greater than or equal to 0"),
    ],
)
def test_bad_tuning_values_name_their_key(overrides: dict, expected: str) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(params_with(overrides))
    assert expected in str(caught.value)


def test_tuning_on_with_the_default_space_is_valid_on_every_offline_dataset() -> None:
    for dataset in ("mnist5k", "digits", "mnist1d"):
        params = validate_params(params_with({"data.name": dataset, "tune.trials": 20}))
        assert params.tune.shape == {"mlp": {"depth": [1, 2, 3]}}


def test_a_huge_bad_value_is_quoted_short() -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(params_with({"train.lr": "x" * 100_000}))
    assert "train.lr:" in str(caught.value) and len(str(caught.value)) < 400
