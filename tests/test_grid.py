"""The sweep grid: -S parsing, YAML grid files, expansion into validated, tagged cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ParamsError
from pipeline.ops.grid import combine_axes, expand, format_value, load_grid_file, parse_option
from tests.helpers import default_params


def test_option_values_are_yaml_and_brackets_keep_their_commas() -> None:
    assert parse_option("train.lr=0.001,0.003") == ("train.lr", [0.001, 0.003])
    assert parse_option("train.seeds=[0,1],[2]") == ("train.seeds", [[0, 1], [2]])
    assert parse_option("train.schedule=onecycle, cosine") == ("train.schedule", ["onecycle", "cosine"])
    assert parse_option("model.cnn.conv=[{channels: 8, kernel: 3, padding: 1, pool: 2}]")[1][0][0]["channels"] == 8
    for bad in ("train.lr", "=1", "train.lr=", "train.lr=1,,2"):
        with pytest.raises(ParamsError, match="-S"):
            parse_option(bad)


def test_values_round_trip_through_the_dvc_format() -> None:
    for value in (0.001, [0, 1], True, None, "cosine", {"a": 1}):
        assert parse_option(f"k={format_value(value)}")[1] == [value]


def test_grid_file_and_options_combine_with_options_winning(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("train.lr: [0.001, 0.003]\ntrain.epochs: 2\n")
    assert load_grid_file(grid) == {"train.lr": [0.001, 0.003], "train.epochs": [2]}
    assert combine_axes(grid, ["train.epochs=1,3"]) == {"train.lr": [0.001, 0.003], "train.epochs": [1, 3]}
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for path, message in ((tmp_path / "missing.yaml", "not found"), (tmp_path / "list.yaml", "mapping")):
        with pytest.raises(ParamsError, match=message):
            load_grid_file(path)
    with pytest.raises(ParamsError, match="no grid given"):
        combine_axes(None, [])


def test_expand_makes_every_combination_named_tagged_and_validated() -> None:
    cells = expand(
        default_params(), {"train.lr": [0.001, 0.003], "train.batch_size": [64, 128, 256]}, "s1", "params.yaml"
    )
    assert [cell.name for cell in cells] == [f"s1-{i}" for i in range(6)]
    assert {(c.params.train.lr, c.params.train.batch_size) for c in cells} == {
        (lr, bs) for lr in (0.001, 0.003) for bs in (64, 128, 256)
    }
    assert cells[4].params.tracking.tags == {"sweep": "s1", "sweep_cell": "s1-4"}
    assert cells[4].describe() == "train.lr=0.003 train.batch_size=128"
    assert default_params()["train"]["lr"] == 0.003, "the project's params are not touched"


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"train.learning_rate": [0.1]}, "'train.learning_rate' is not a setting"),
        ({"train.epochs": [1, 0]}, r"train.epochs=0: train.epochs: Input should be greater than 0"),
        ({"overrides.mnist1d": [{}]}, "cannot vary 'overrides.mnist1d'"),
        ({"data.name": ["mnist1d"], "train.epochs": [1, 2]}, "overrides.mnist1d.train.epochs replaces the swept"),
    ],
)
def test_a_bad_cell_stops_the_whole_sweep_before_it_starts(axes: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        expand(default_params(), axes, "s1", "params.yaml")
