"""The real `convbench` command: complete help, one-line errors with exit codes, one matrix cell."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import default_params, run, write_params

COMMANDS = ("download", "prepare", "train", "evaluate", "report")


def test_help_lists_every_stage_and_option(tmp_path: Path) -> None:
    result = run(["convbench", "--help"], tmp_path)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
        sub = run(["convbench", command, "--help"], tmp_path)
        assert sub.returncode == 0 and "--params" in sub.stdout
    train_help = run(["convbench", "train", "--help"], tmp_path).stdout
    assert "--model" in train_help and "--seed" in train_help and "cnn" in train_help


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["train"].update(epoch=3), "unknown key 'train.epoch'; allowed keys here: seeds, epochs"),
        (lambda p: p["train"].update(epochs=-1), "train.epochs: Input should be greater than 0 (got -1)"),
        (lambda p: p["data"].update(name="nope"), "data.name: Input should be 'mnist5k', 'digits', 'mnist'"),
    ],
)
@pytest.mark.parametrize("command", ["download", "train"])
def test_bad_params_exit_2_with_one_line(tmp_path: Path, edit, expected: str, command: str) -> None:
    params = default_params()
    edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(["convbench", command], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convbench: error: params.yaml: {expected}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "bad params must write nothing"


def test_offline_torchvision_download_fails_clearly(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {"data.name": "mnist"})
    result = run(["convbench", "download"], tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("convbench: error: dataset 'mnist' could not be downloaded")
    assert "data/raw/mnist/MNIST/raw/train-images-idx3-ubyte" in lines[0] and "mnist5k or digits" in lines[0]


def test_missing_inputs_point_to_the_stage_to_run(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {"data.name": "digits"})
    result = run(["convbench", "train"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "convbench: error: data/prepared/digits.pt is missing; run `convbench prepare` (or `dvc repro`) first"
    )


def test_one_cell_trains_alone_like_dvc_would(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {"data.name": "digits", "train.epochs": 2, "evaluate.min_run_time": 0.05})
    store = f"sqlite:///{tmp_path / 'store.db'}"
    for args in (["download"], ["prepare"], ["train", "--model", "cnn", "--seed", "0"], ["evaluate", "-m", "cnn", "-s", "0"]):
        result = run(["convbench", *args], tmp_path, MLFLOW_TRACKING_URI=store)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cnn-s0.pt"]
    assert sorted(p.name for p in (tmp_path / "metrics").glob("*.json")) == ["cnn-s0.json"]
    assert not (tmp_path / "mlflow.db").exists(), "MLFLOW_TRACKING_URI must win over the default store"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("convbench-digits")
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_name == "cnn-s0" and "test_accuracy" in only.data.metrics


def test_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    result = run(["convbench", "train", "--model", "vit"], tmp_path, COLUMNS="200")
    assert result.returncode == 2 and "'vit' is not one of 'cnn', 'mlp'" in result.stderr
