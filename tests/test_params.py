"""params.yaml validation: the default file is valid; every mistake names its key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.core.models import typed_settings
from pipeline.errors import ParamsError
from pipeline.params import Params, load_all, load_params, validate_params
from tests.helpers import ROOT, default_params, params_with


def test_default_params_file_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.name == "mnist5k"
    assert [b["channels"] for b in params.model["cnn"]["conv"]] == [32] and params.models == ["cnn", "mlp"]
    assert typed_settings(params, "cnn")["hidden"] == [128], "the textbook CNN's head is the registry's default"
    assert params.train.seeds == [0, 1, 2]
    assert params.evaluate.rounds == 7 and params.tracking.uri is None, "sections left out take the schema's defaults"


def test_data_name_lists_the_datasets_each_validated_with_its_own_overrides(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_with({"data.name": ["digits", "mnist1d"]})))
    both = load_all(path)
    assert [p.data.name for p in both] == ["digits", "mnist1d"]
    assert [p.train.epochs for p in both] == [12, 20], "overrides.mnist1d applies to mnist1d alone"
    assert load_params(path, "mnist1d").train.epochs == 20 and load_params(path).data.name == "digits"
    assert validate_params(params_with({"data.name": "digits"})).data.name == "digits", "a bare name is a list of one"
    with pytest.raises(ParamsError, match=r"--dataset mnist5k: not in data.name \['digits', 'mnist1d'\]"):
        load_params(path, "mnist5k")
    for bad, expected in (
        ([], "data.name: expected a list of dataset names such as [mnist5k]"),
        (["digits", "digits"], "data.name lists a dataset twice (digits, digits); list each once"),
        (["digits", "nope"], "data.name: unknown dataset 'nope'"),
    ):
        with pytest.raises(ParamsError) as caught:
            validate_params(params_with({"data.name": bad}))
        assert expected in str(caught.value)


def test_a_published_table_applies_to_its_own_dataset_only() -> None:
    table = {"dataset": "mnist1d", "source": "a paper", "accuracy": {"cnn": 0.9}}
    raw = params_with({"data.name": ["digits", "mnist1d"], "report.published": table})
    assert validate_params(raw, dataset="mnist1d").report.published is not None
    assert validate_params(raw, dataset="digits").report.published is None
    with pytest.raises(ParamsError, match="report.published describes mnist1d, which data.name \\['digits'\\] does"):
        validate_params(params_with({"data.name": ["digits"], "report.published": table}))


def test_settings_left_out_of_params_yaml_can_still_be_overridden() -> None:
    """overrides.<dataset> and sweeps name settings by dotted key; one at its default (absent from the file) too."""
    raw = params_with({"overrides.digits": {"evaluate.rounds": 3, "model.mlp.depth": 2}, "data.name": ["digits"]})
    params = validate_params(raw)
    assert params.evaluate.rounds == 3 and params.model["mlp"]["depth"] == 2
    with pytest.raises(ParamsError, match="'evaluate.round' is not a setting that can be overridden"):
        validate_params(params_with({"overrides.digits": {"evaluate.round": 3}, "data.name": ["digits"]}))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train.epochs": -1}, "train.epochs: Input should be greater than 0 (got -1)"),
        ({"train.batch_size": 0}, "train.batch_size: Input should be greater than 0"),
        ({"train.lr": 0}, "train.lr: Input should be greater than 0"),
        ({"train.seeds": []}, "train.seeds: expected at least 1 item, got 0"),
        ({"train.seeds": [1, 1]}, "train.seeds: seeds must be unique"),
        ({"data.name": "nope"}, "data.name: unknown dataset 'nope'; built-in: mnist5k, digits"),
        ({"train.schedule": "linear"}, "train.schedule: Input should be 'onecycle', 'cosine' or 'constant'"),
        ({"train.epochs": "ten"}, "train.epochs: expected a whole number"),
        ({"train.seeds": 0}, "train.seeds: expected a list such as [0, 1] (got 0)"),
        (
            {"dataset": {"pets": {"format": "imagefolder", "path": "/x", "image_size": 64}}, "data.name": "pets"},
            "dataset.pets.image_size: expected a list such as [64, 64] (got 64)",
        ),
        (
            {"dataset": {"pets": {"format": "imagefolder", "path": "/x", "image_size": [64]}}, "data.name": "pets"},
            "dataset.pets.image_size: too few values: item 2 is missing",
        ),
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
    del raw["models"]
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    assert (
        "unknown key 'extra'; allowed keys here: data, dataset, models, reference, model, train, evaluate, probes, report, tune, tracking"
        in str(caught.value)
    )
    assert "missing key 'models'" in str(caught.value)


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


def test_dvc_stages_track_whole_sections_that_every_params_file_holds() -> None:
    """DVC refuses a stage whose params name a key the file lacks, and a key left at its default is absent: so
    dvc.yaml names whole sections, and params.yaml and every preset hold each of them (empty is fine)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    tracked = {key for stage in stages.values() for key in stage.get("do", stage).get("params", [])}
    assert tracked <= set(Params.model_fields), f"whole sections only: {sorted(tracked - set(Params.model_fields))}"
    for path in [ROOT / "params.yaml", *sorted((ROOT / "presets").glob("*.yaml"))]:
        held = yaml.safe_load(path.read_text())
        assert tracked <= set(held), f"{path.name} lacks {sorted(tracked - set(held))}"
        assert isinstance(held["data"]["name"], list), f"{path.name}: DVC fans out over data.name, so it is a list"


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
        (
            {"model.mlp.match": "none", "tune.shape": {"mlp": {"depth": [1, 2]}}},
            "tune.shape.mlp: shape knobs must keep the parameter budget",
        ),
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
        assert params.tune.shape == {}, "no shape knob is searched unless tune.shape names one"
        shaped = validate_params(params_with({"data.name": dataset, "tune.trials": 20, "tune.shape.mlp.depth": [1, 2]}))
        assert shaped.tune.shape == {"mlp": {"depth": [1, 2]}}


def test_a_huge_bad_value_is_quoted_short() -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(params_with({"train.lr": "x" * 100_000}))
    assert "train.lr:" in str(caught.value) and len(str(caught.value)) < 400
