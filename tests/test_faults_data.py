"""Wrong answers are worse than errors (round four): data that reads back as something else, and files the report
reads without checking. Each case runs the real `convbench` CLI in its own project folder (or, where only the
module can reach the condition, calls the module beside it) and must give the right answer or one clear line.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.helpers import OFFLINE, run, write_params
from tests.image_files import pattern_images, write_image_folder
from tests.test_bad_inputs import (  # noqa: F401 - tmpfs is a fixture used by name
    MLFLOW_STORE,
    assert_one_error_line,
    assert_unchanged,
    fast_params,
    snapshot,
    tmpfs,
)
from tests.torchvision_files import make_cifar10

USER = "pets"
QUICKER = {  # fast_params plus the short timings of tests/helpers.py QUICK, no probes
    "evaluate.rounds": 3,
    "evaluate.throughput_batch_sizes": [32],
    "evaluate.shifts": [0, 2],
    "evaluate.noise_std": [0.0, 0.3],
    "report.bootstrap_resamples": 1000,
    "probes.run": [],
}


def project_with(root: Path, **overrides: Any) -> Path:
    """A project folder holding only params.yaml: fast settings, the MLflow store inside it, plus `overrides`."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root / "params.yaml", {**fast_params(root), **QUICKER, **overrides})
    return root


def user_folder(root: Path, folder: Path, **declared: Any) -> Path:
    """A project whose data.name is the image folder `folder`, declared as dataset.pets."""
    entry = {"format": "imagefolder", "path": str(folder), **declared}
    return project_with(root, **{"data.name": USER, "dataset": {USER: entry}})


def ok(args: list[str], root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = run(args, root, timeout=300, **{**OFFLINE, **env})
    assert result.returncode == 0, f"`{' '.join(args)}` failed:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


# --- class names that pandas or MLflow would read as something else -----------------------------------------------------


def test_classes_named_none_na_01_and_1_are_counted_by_their_names(tmp_path: Path) -> None:
    """pandas' defaults read a class named None or NA as NaN (never equal to itself: always wrong) and 01 and 1 as
    the same number 1 (a confusion counted right). The report's paired lead must be the accuracies' difference."""
    names = ["01", "1", "NA", "None"]
    root = user_folder(tmp_path / "project", write_image_folder(tmp_path / "images", names, 15, 8, channels=1))
    ok(["convbench", "run"], root)

    frame = pd.read_csv(root / "results" / USER / "predictions" / "cnn-s0.csv", dtype=str, keep_default_na=False)
    assert set(frame["label"]) == set(names)
    cells = {m: json.loads((root / "results" / USER / "cells" / f"{m}-s0.json").read_text()) for m in ("cnn", "mlp")}
    summary = json.loads((root / "metrics" / USER / "summary.json").read_text())
    assert summary["accuracy"] == {m: round(c["test_accuracy"], 4) for m, c in cells.items()}
    lead = cells["cnn"]["test_accuracy"] - cells["mlp"]["test_accuracy"]
    assert summary["lead"]["mlp"] == pytest.approx(lead, abs=1e-4)
    right = {m: _right(root / "results" / USER / "predictions" / f"{m}-s0.csv") for m in ("cnn", "mlp")}
    only_cnn, only_mlp = int((right["cnn"] & ~right["mlp"]).sum()), int((~right["cnn"] & right["mlp"]).sum())
    assert f"{only_cnn}/{only_mlp}, p" in (root / "reports" / USER / "comparison.md").read_text()


def _right(path: Path) -> np.ndarray:
    """Which test images a predictions CSV got right, its names read as the text they are."""
    frame = pd.read_csv(path, dtype=str, na_filter=False)
    return (frame["label"] == frame["prediction"]).to_numpy()


def test_predictions_read_back_as_the_class_names_they_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the module: every spelling pandas would take for missing, or for a number, stays the class name."""
    from pipeline.artifacts import paths
    from pipeline.stages.report import correctness, load_predictions

    classes = ("None", "NA", "null", "nan", "N/A", "", "#N/A", "01", "1", "1.0", "True")
    monkeypatch.chdir(tmp_path)
    path = paths.predictions("x", "cnn", 0)
    path.parent.mkdir(parents=True)
    frame = pd.DataFrame({"label": classes, "prediction": classes[1:] + classes[:1]})
    frame.loc[:5, "prediction"] = frame.loc[:5, "label"]  # the first six right, the rest confused with a neighbour
    path.write_text(frame.to_csv(index_label="index"))

    read = load_predictions("x", ["cnn"], [0])[("cnn", 0)]
    assert read["label"].tolist() == list(classes)
    assert correctness({("cnn", 0): read}, ["cnn"], [0])["cnn"].tolist() == [[True] * 6 + [False] * 5]


def test_class_names_mlflow_refuses_as_metric_names_are_logged_under_safe_names(tmp_path: Path) -> None:
    """Class folders as real datasets name them: evaluate used to stop on the metric test_accuracy_class_<name>,
    saying to run the stage again (which can never help)."""
    names = ["(background)", "bags & belts", "men's"]
    root = user_folder(tmp_path / "project", write_image_folder(tmp_path / "images", names, 10, 8, channels=1))
    write_params(root / "params.yaml", {"models": ["cnn"]}, edit_existing=True)
    for stage in ("download", "prepare", "train", "evaluate"):
        ok(["convbench", stage], root)

    cell = json.loads((root / "results" / USER / "cells" / "cnn-s0.json").read_text())
    assert sorted(cell["per_class_accuracy"]) == names  # the record keeps the names as they are
    client = MlflowClient(f"sqlite:///{root / MLFLOW_STORE}")
    (experiment,) = [e for e in client.search_experiments() if e.name.endswith(USER)]
    (logged,) = client.search_runs([experiment.experiment_id])
    per_class = sorted(k for k in logged.data.metrics if k.startswith("test_accuracy_class_"))
    assert len(per_class) == 3 and logged.info.status == "FINISHED"
    for name, key in zip(["_background_", "bags _ belts", "men_s"], per_class):
        assert key.startswith(f"test_accuracy_class_{name}-")


def test_metric_names_built_from_user_strings_always_suit_mlflow() -> None:
    from mlflow.utils.validation import _validate_metric_name

    from pipeline.ops.tracking import metric_key

    assert metric_key("robustness.noise.0.3") == "robustness.noise.0.3"  # a valid name is never changed
    keys = [f"test_accuracy_class_{c}" for c in ("men's", "men_s", "a:b", "x/../y", "/etc", "z" * 300, "é")]
    made = [metric_key(k) for k in keys]
    for key in made:
        _validate_metric_name(key)
        assert len(key) <= 250
    assert len(set(made)) == len(made), "names that differ only in a replaced character stay apart"


@pytest.mark.parametrize(
    ("declared", "stored", "expected"),
    [
        ({"classes": ["cat", "cat"]}, None, "dataset.pets.classes names 'cat' more than once"),
        ({}, np.array(["cat", "cat"]), "names 'cat' more than once"),
    ],
    ids=["declared", "in-the-file"],
)
def test_two_classes_of_one_name_are_refused(tmp_path: Path, declared: dict, stored: Any, expected: str) -> None:
    """The per-class accuracies are keyed by name: two classes called cat would share one (the last) accuracy."""
    x, y = pattern_images(classes=2, per_class=10, size=6, channels=1)
    path = tmp_path / "pets.npz"
    np.savez(path, x=x, y=y, **({} if stored is None else {"classes": stored}))
    root = project_with(
        tmp_path / "project", **{"data.name": USER, "dataset": {USER: {"format": "npz", "path": str(path), **declared}}}
    )
    ok(["convbench", "download"], root)
    before = snapshot(root)
    result = run(["convbench", "prepare"], root, timeout=120)
    assert_one_error_line(result, 1, (expected, "give every class its own name"))
    assert_unchanged(before, root)


def test_class_names_stored_as_bytes_are_read_as_text(tmp_path: Path) -> None:
    x, y = pattern_images(classes=2, per_class=10, size=6, channels=1)
    np.savez(tmp_path / "pets.npz", x=x, y=y, classes=np.array([b"cat", b"dog"]))
    root = project_with(
        tmp_path / "project",
        **{"data.name": USER, "dataset": {USER: {"format": "npz", "path": str(tmp_path / "pets.npz")}}},
    )
    ok(["convbench", "download"], root)
    ok(["convbench", "prepare"], root)
    assert json.loads((root / "data" / "prepared" / USER / "manifest.json").read_text())["classes"] == ["cat", "dog"]


# --- the test split lacks a class -----------------------------------------------------------------------------------


def test_a_class_without_test_images_has_no_accuracy_not_zero(tmp_path: Path) -> None:
    """test/ lacks one of train/'s classes: its accuracy is undefined, so the report says so instead of 0.000, and
    the metrics record and MLflow carry no number for it."""
    images = write_image_folder(
        tmp_path / "images", ["bird", "cat", "dog"], 0, 8, channels=1, splits={"train": 12, "val": 3, "test": 4}
    )
    shutil.rmtree(images / "test" / "bird")
    root = user_folder(tmp_path / "project", images)
    ok(["convbench", "run"], root)

    cell = json.loads((root / "results" / USER / "cells" / "cnn-s0.json").read_text())
    assert sorted(cell["per_class_accuracy"]) == ["cat", "dog"]
    (row,) = [line for line in (root / "reports" / USER / "comparison.md").read_text().splitlines() if "| bird" in line]
    assert row.count("no test images") == 2 and "0.000" not in row, row


# --- folders that cannot be read ------------------------------------------------------------------------------------


def test_dangling_symlinked_class_folder_stops_with_one_line(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", ["cat", "dog"], 5, 8, channels=1)
    (images / "fox").symlink_to(tmp_path / "moved-away")
    root = user_folder(tmp_path / "project", images)
    before = snapshot(root)
    result = run(["convbench", "download"], root, timeout=120)
    assert_one_error_line(
        result, 1, (f"{images / 'fox'} is a symbolic link to {tmp_path / 'moved-away'}, which does not exist",)
    )
    assert_unchanged(before, root)


def test_dangling_symlink_inside_a_class_folder_stops_with_one_line(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", ["cat", "dog"], 5, 8, channels=1)
    (images / "cat" / "more").symlink_to(tmp_path / "unmounted-disk")
    root = user_folder(tmp_path / "project", images)
    result = run(["convbench", "prepare"], root, timeout=120)
    assert_one_error_line(result, 1, (f"{images / 'cat' / 'more'} is a symbolic link", "which does not exist"))
    assert not (root / "data" / "prepared").exists()


def test_a_symlink_loop_in_a_class_folder_stops_in_bounded_time(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", ["cat", "dog"], 5, 8, channels=1)
    (images / "cat" / "again").symlink_to(images / "cat")
    root = user_folder(tmp_path / "project", images)
    result = run(["convbench", "prepare"], root, timeout=120)
    assert_one_error_line(result, 1, (f"{images / 'cat' / 'again'} is a symbolic link", "a folder already read"))


def test_an_unreadable_subfolder_of_a_class_stops_with_one_line(tmp_path: Path) -> None:
    """chmod 000 on a subfolder of a class folder: os.walk skipped it without a word (60 of 65 images prepared).

    Root reads it anyway, so as root the CLI runs as the unprivileged user `nobody` (setpriv), in a folder it can
    use: the permission check the kernel makes is the real one either way."""
    base = Path(os.environ.get("CONVBENCH_TEST_SHARED_TMP", "/tmp")) / f"convbench-unreadable-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o777)
    try:
        images = write_image_folder(base / "images", ["cat", "dog"], 5, 8, channels=1)
        write_image_folder(images / "cat" / "2019", ["x"], 5, 8, channels=1)  # cat/2019/x/*.png
        root = user_folder(base / "project", images)
        for path in [base, *base.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        (images / "cat" / "2019").chmod(0)
        prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.fail("running as root needs setpriv to drop to an unprivileged user")
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
        result = run([*prefix, "convbench", "download"], root, timeout=120, HOME=str(base))
        assert_one_error_line(
            result, 1, (f"the folder {images / 'cat' / '2019'} cannot be read (Permission denied)", "chmod -R u+rX")
        )
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o777)
        shutil.rmtree(base, ignore_errors=True)


# --- photos as they are shown ---------------------------------------------------------------------------------------


def test_jpeg_exif_orientation_is_applied_before_training(tmp_path: Path) -> None:
    """A phone stores a portrait photo sideways with an EXIF orientation tag; viewers (and people) see it upright."""
    from PIL import Image, ImageOps

    images = write_image_folder(tmp_path / "images", ["cat", "dog"], 6, 8, channels=1, suffix=".jpg")
    for path in sorted((images / "cat").glob("*.jpg"))[:3]:
        with Image.open(path) as stored:
            exif = stored.getexif()
            exif[0x0112] = 6  # shown rotated 90° clockwise
            stored.convert("L").rotate(90).save(path, exif=exif, quality=95)  # the pixels as the sensor kept them
    shown = sorted(
        np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("L")).tobytes() for p in images.rglob("*.jpg")
    )
    root = user_folder(tmp_path / "project", images)
    ok(["convbench", "download"], root)
    ok(["convbench", "prepare"], root)

    tensors = torch.load(root / "data" / "prepared" / USER / "splits.pt", weights_only=True)
    prepared = sorted(x[0].numpy().tobytes() for split in ("train", "val", "test") for x in tensors[f"{split}_x"])
    assert prepared == shown


# --- ~ in path settings ---------------------------------------------------------------------------------------------


def test_tilde_in_data_root_is_the_home_folder_not_a_folder_named_tilde(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    root = project_with(tmp_path / "project", **{"data.root": "~/raw"})
    ok(["convbench", "download"], root, HOME=str(home))
    ok(["convbench", "prepare"], root, HOME=str(home))
    assert (home / "raw" / "digits" / "images.npz").is_file()
    assert not (root / "~").exists()


def test_tilde_in_a_dataset_path_is_the_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_image_folder(home / "images", ["cat", "dog"], 10, 8, channels=1)
    root = user_folder(tmp_path / "project", Path("~/images"))
    ok(["convbench", "download"], root, HOME=str(home))
    ok(["convbench", "prepare"], root, HOME=str(home))
    listed = json.loads((root / "data" / "raw" / USER / "source.json").read_text())
    assert listed["source"] == str(home / "images") and len(listed["files"]) == 20


def test_tilde_in_an_npz_test_path_is_the_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    x, y = pattern_images(classes=2, per_class=10, size=6, channels=1)
    np.savez(home / "train.npz", x=x, y=y)
    np.savez(home / "test.npz", x=x[::2], y=y[::2])
    root = project_with(
        tmp_path / "project",
        **{"data.name": USER, "dataset": {USER: {"format": "npz", "path": "~/train.npz", "test_path": "~/test.npz"}}},
    )
    ok(["convbench", "download"], root, HOME=str(home))
    ok(["convbench", "prepare"], root, HOME=str(home))
    manifest = json.loads((root / "data" / "prepared" / USER / "manifest.json").read_text())
    assert manifest["sizes"]["test"] == 10


def test_paths_handed_to_workers_expand_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the module: sweeps and worker processes get absolute paths; ~ is the home folder there too."""
    from pipeline.ops.uris import absolute_data, absolute_path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    raw = {"data": {"root": "~/raw"}, "dataset": {"x": {"path": "~/images", "test_path": None}}}
    made = absolute_data(raw, tmp_path / "project")
    assert made["data"]["root"] == str(tmp_path / "home" / "raw")
    assert made["dataset"]["x"]["path"] == str(tmp_path / "home" / "images")
    assert absolute_path("~", tmp_path) == str(tmp_path / "home")


def test_tilde_of_an_unknown_user_is_one_line(tmp_path: Path) -> None:
    root = project_with(tmp_path / "project", **{"data.root": "~no-such-user-here/raw"})
    before = snapshot(root)
    result = run(["convbench", "download"], root, timeout=120)
    assert_one_error_line(result, 1, ("data.root: ~no-such-user-here/raw: cannot expand '~no-such-user-here'",))
    assert_unchanged(before, root)


# --- files the report reads back ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits project where `convbench run` trained (2 epochs), evaluated, benched and reported cnn and mlp."""
    root = project_with(tmp_path_factory.mktemp("reported"), **{"train.epochs": 2})
    ok(["convbench", "run"], root)
    return root


@pytest.fixture
def reported_copy(reported: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(reported, root)
    write_params(root / "params.yaml", {"tracking.uri": f"sqlite:///{root / MLFLOW_STORE}"}, edit_existing=True)
    return root


def cut_mid_row(text: str) -> str:
    return text[: text.rstrip("\n").rfind("\n") + 6]  # the last row cut after its first five characters


def edit_csv(relative: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / relative
        path.write_text(change(path.read_text()))

    return damage


def every_predictions(change: Callable[[str], str]) -> Callable[[Path], None]:
    """The same edit in every cell's predictions (so they still agree with each other)."""

    def damage(root: Path) -> None:
        for path in sorted((root / "results" / "digits" / "predictions").glob("*.csv")):
            path.write_text(change(path.read_text()))

    return damage


def drop_last_rows(text: str) -> str:
    return "".join(text.splitlines(keepends=True)[:-5])


def with_unknown_prediction(text: str) -> str:
    lines = text.splitlines(keepends=True)
    index, label, _ = lines[1].rstrip("\n").split(",")
    lines[1] = f"{index},{label},11\n"
    return "".join(lines)


def with_text_in_curve(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[1] = lines[1].replace(lines[1].split(",")[4], "n/a", 1)
    return "".join(lines)


CURVES, PREDICTIONS = "results/digits/curves/cnn-s0.csv", "results/digits/predictions/mlp-s0.csv"
REDO_TRAIN = "run `convbench train --dataset digits --model cnn --seed 0` to write it again"
REDO_EVALUATE = "run `convbench evaluate --dataset digits --model mlp --seed 0` to write it again"
REPORT_CASES = {
    "curves-cut-mid-row": (edit_csv(CURVES, cut_mid_row), (CURVES, "where a number belongs", REDO_TRAIN)),
    "curves-missing-last-epoch": (
        edit_csv(CURVES, lambda t: "".join(t.splitlines(keepends=True)[:-1])),
        (CURVES, "has 1 row(s) with epochs 1, not one row for each of the 2 epochs", REDO_TRAIN),
    ),
    "curves-text-value": (edit_csv(CURVES, with_text_in_curve), (CURVES, "has 'n/a' as", REDO_TRAIN)),
    "curves-empty": (edit_csv(CURVES, lambda t: ""), (CURVES, "is not a readable CSV file", REDO_TRAIN)),
    "predictions-cut-mid-row": (
        edit_csv(PREDICTIONS, cut_mid_row),
        (PREDICTIONS, "is not one of the dataset's 10 classes", REDO_EVALUATE),
    ),
    "predictions-fewer-rows-in-every-cell": (
        every_predictions(drop_last_rows),
        ("results/digits/predictions/cnn-s0.csv has 355 row(s) for the 360 test images", "--model cnn"),
    ),
    "predictions-label-not-a-class": (
        edit_csv(PREDICTIONS, with_unknown_prediction),
        (PREDICTIONS, "has prediction '11', which is not one of the dataset's 10 classes", REDO_EVALUATE),
    ),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_damaged_files_the_report_reads_are_one_line_naming_the_file(reported_copy: Path, case: str) -> None:
    damage, expected = REPORT_CASES[case]
    damage(reported_copy)
    before = snapshot(reported_copy)
    result = run(["convbench", "report"], reported_copy, timeout=300)
    assert_one_error_line(result, 1, expected)
    assert_unchanged(before, reported_copy)


def test_read_only_curves_folder_names_the_real_file(reported_copy: Path, tmpfs: Callable[..., Path]) -> None:  # noqa: F811
    """Retraining into a read-only results/<ds>/curves/ named a temporary file that never existed."""
    write_params(reported_copy / "params.yaml", {"train.epochs": 1}, edit_existing=True)
    tmpfs(reported_copy / "results" / "digits" / "curves", read_only=True)
    result = run(["convbench", "train", "-m", "cnn", "-s", "0"], reported_copy, timeout=300)
    line = assert_one_error_line(result, 1, ("results/digits/curves/cnn-s0.csv: the filesystem is read-only",))
    assert ".tmp" not in line


# --- CIFAR batch files ----------------------------------------------------------------------------------------------


CIFAR = Path("data/raw/cifar10/cifar-10-batches-py")  # as the error lines name it: data.root is relative


def cifar_project(tmp_path: Path, verify: bool) -> Path:
    root = project_with(tmp_path / "project", **{"data.name": "cifar10", "data.verify_checksums": verify})
    make_cifar10(root / "data" / "raw" / "cifar10", per_batch=10)
    return root


def rewrite_batch(path: Path, change: Callable[[dict], dict]) -> None:
    path.write_bytes(pickle.dumps(change(pickle.loads(path.read_bytes())), protocol=2))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: {**b, "data": b["data"].reshape(-1, 32, 32, 3)[:, :16]}, "data is uint8 of shape (10, 16, 32, 3)"),
        (lambda b: {k: v for k, v in b.items() if k != "labels"}, "no 'labels' among its keys"),
        (lambda b: {**b, "labels": b["labels"][:-1]}, "10 images but labels of shape (9,)"),
    ],
    ids=["wrong-shape", "no-labels", "fewer-labels"],
)
def test_malformed_cifar_batch_is_one_line_naming_it(tmp_path: Path, change: Callable, expected: str) -> None:
    root = cifar_project(tmp_path, verify=False)
    rewrite_batch(root / CIFAR / "data_batch_2", change)
    before = snapshot(root)
    result = run(["convbench", "prepare"], root, timeout=120, **OFFLINE)
    assert_one_error_line(
        result, 1, (f"{CIFAR / 'data_batch_2'} is not a valid CIFAR batch ({expected}", "run `convbench download`")
    )
    assert_unchanged(before, root)


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_cifar_file_failing_its_md5_is_called_corrupt_not_missing(tmp_path: Path, command: str) -> None:
    root = cifar_project(tmp_path, verify=True)
    (root / CIFAR / "test_batch").unlink()
    result = run(["convbench", command], root, timeout=120, **OFFLINE)
    line = assert_one_error_line(result, 1, (f"{CIFAR / 'test_batch'} is missing; ", "are corrupt (failing checksum"))
    corrupt = line.split(" is missing; ")[1].split(" are corrupt")[0]
    assert str(CIFAR / "data_batch_1") in corrupt and "test_batch" not in corrupt
