"""A user's own data: image folders and .npz arrays outside the project, read in place, through every stage."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.artifacts import paths
from pipeline.core import sources
from pipeline.core.data import PreparedData, load_prepared
from pipeline.errors import DataError
from pipeline.params import Params, UserDataset, validate_params
from pipeline.stages.download import download
from pipeline.stages.prepare import prepare
from tests.helpers import OFFLINE, copy_project, params_with, run
from tests.image_files import pattern_images, write_image_folder

TEN = [f"shape-{i}" for i in range(10)]


def declared(alias: str, tmp_path: Path, **entry: object) -> Params:
    """Default params with `dataset.<alias>` declared and chosen, and raw files under tmp_path."""
    raw = params_with({"data.name": alias, "data.root": str(tmp_path / "raw")})
    raw["dataset"] = {alias: entry}
    return validate_params(raw)


def prepared_in(project: Path, params: Params) -> PreparedData:
    """Run the real download and prepare stages in `project`; the prepared data they wrote."""
    project.mkdir(exist_ok=True)
    with contextlib.chdir(project):
        download(params)
        prepare(params)
        name = params.data.name
        return load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))


def test_a_flat_image_folder_is_split_by_the_fractions_with_its_class_names(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "shapes", ["circle", "bar", "cross"], 20, 12)
    (folder / "bar" / "nested").mkdir()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "bar" / "nested" / "extra.png")
    (folder / "circle" / ".cache").mkdir()
    (folder / "circle" / ".cache" / "x.txt").write_text("ignored, as a hidden folder")
    prepared = prepared_in(tmp_path / "project", declared("shapes", tmp_path, format="imagefolder", path=str(folder)))
    assert prepared.classes == ("bar", "circle", "cross"), "sorted folder names, as torchvision's ImageFolder"
    assert prepared.input_shape == (3, 12, 12)
    sizes = {name: len(getattr(prepared.splits, name)) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == 61 and sizes["test"] == 13, "20% of 61 held out for test, nested image included"
    listed = json.loads((tmp_path / "project" / paths.source_manifest("shapes")).read_text())
    assert listed["source"] == str(folder) and "bar/nested/extra.png" in listed["files"]
    assert not any("DS_Store" in f or "Thumbs" in f or ".cache" in f for f in listed["files"]), "stray files ignored"


def test_a_presplit_folder_keeps_its_own_val_and_test_images(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "pets", ["cat", "dog"], 0, 10, splits={"train": 6, "val": 2, "test": 3})
    prepared = prepared_in(tmp_path / "project", declared("pets", tmp_path, format="imagefolder", path=str(folder)))
    assert [len(getattr(prepared.splits, n)) for n in ("train", "val", "test")] == [12, 4, 6]
    test_images = np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "test" / "dog").glob("*.png"))])
    assert np.array_equal(prepared.splits.test.x[3:].numpy().transpose(0, 2, 3, 1), test_images), "test/ kept as is"
    assert prepared.splits.test.y.tolist() == [0, 0, 0, 1, 1, 1] and prepared.splits.val.y.tolist() == [0, 0, 1, 1]


def test_a_presplit_folder_may_call_its_validation_split_valid_but_holds_nothing_else(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "pets", ["cat", "dog"], 0, 10, splits={"train": 6, "valid": 2, "test": 3})
    prepared = prepared_in(tmp_path / "project", declared("pets", tmp_path, format="imagefolder", path=str(folder)))
    assert prepared.classes == ("cat", "dog") and len(prepared.splits.val) == 4, "valid/ is the validation split"
    (folder / "extras" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has folder\(s\) extras beside its split folders"):
        prepared_in(tmp_path / "project", declared("pets", tmp_path, format="imagefolder", path=str(folder)))


def test_images_are_resized_and_converted_as_declared_the_way_pillow_does(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "mixed", ["a", "b"], 12, 20)
    gradient = np.stack([*np.meshgrid(np.arange(17) * 15, np.arange(31) * 8), np.full((31, 17), 90)], axis=-1)
    Image.fromarray(gradient.astype(np.uint8)).save(folder / "a" / "odd-size.bmp")
    params = declared(
        "mixed", tmp_path, format="imagefolder", path=str(folder), image_size=[8, 6], channels=1, resize="bicubic"
    )
    prepared = prepared_in(tmp_path / "project", params)
    assert prepared.input_shape == (1, 8, 6)
    every = np.concatenate([getattr(prepared.splits, n).x.numpy() for n in ("train", "val", "test")])
    expected = np.asarray(
        Image.open(folder / "a" / "odd-size.bmp").convert("L").resize((6, 8), Image.Resampling.BICUBIC)
    )
    assert any(np.array_equal(image[0], expected) for image in every), "the BMP, converted and resized by Pillow"


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits_not_clipped(tmp_path: Path) -> None:
    """Microscopy and medical PNGs are often 16-bit; Pillow's convert("L") would turn most of them white."""
    folder = tmp_path / "deep"
    for label, level in (("dark", 1000), ("bright", 60000)):
        (folder / label).mkdir(parents=True)
        for index in range(10):
            Image.fromarray(np.full((6, 6), level + index, np.uint16)).save(folder / label / f"{index}.png")
    assert Image.open(folder / "dark" / "0.png").mode.startswith("I;16"), "the files really are 16-bit"
    prepared = prepared_in(tmp_path / "project", declared("deep", tmp_path, format="imagefolder", path=str(folder)))
    every = np.concatenate([getattr(prepared.splits, n).x.numpy() for n in ("train", "val", "test")])
    assert sorted(np.unique(every).tolist()) == [4, 233], "1000..1009 and 60000..60009, divided by 257"


def test_decoding_in_worker_processes_gives_the_same_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_image_folder(tmp_path / "many", ["a", "b", "c"], 300, 9)
    files = sources.list_folder(UserDataset(format="imagefolder", path=folder), "many").files()
    decoding = sources.Decoding(None, None, "bilinear")
    serial = sources.decode(files, decoding, "many", processes=1)
    monkeypatch.setattr(sources, "SERIAL_BELOW", 0)
    monkeypatch.setattr(sources, "CHUNK", 64)
    assert np.array_equal(sources.decode(files, decoding, "many", processes=2), serial)
    assert serial.shape == (900, 3, 9, 9)


@pytest.mark.parametrize(
    ("shape", "layout", "nhwc"),
    [
        ((40, 8, 8), None, False),
        ((40, 8, 8, 3), None, True),
        ((40, 3, 8, 8), None, False),
        ((40, 3, 8, 3), "NHWC", True),
        ((40, 16), None, False),  # 1-D signals, as MNIST-1D
    ],
)
def test_npz_layouts_become_uint8_channels_first(
    tmp_path: Path, shape: tuple[int, ...], layout: str | None, nhwc: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)  # floats in 0..1, as many pipelines save them
    y = np.arange(40) % 4
    np.savez(tmp_path / "arrays.npz", x=x, y=y, x_test=x[:8], y_test=y[:8], classes=np.array(["a", "b", "c", "d"]))
    entry = {"format": "npz", "path": str(tmp_path / "arrays.npz")} | ({"layout": layout} if layout else {})
    prepared = prepared_in(tmp_path / "project", declared("arrays", tmp_path, **entry))
    channels_first = x.transpose(0, 3, 1, 2) if nhwc else x
    expected = np.rint(channels_first[:8].astype(np.float64) * 255).astype(np.uint8).reshape(8, -1)
    assert np.array_equal(prepared.splits.test.x.numpy().reshape(8, -1), expected), "x_test kept, scaled to 0..255"
    assert prepared.classes == ("a", "b", "c", "d") and len(prepared.splits.train) + len(prepared.splits.val) == 40
    assert prepared.splits.test.y.tolist() == y[:8].tolist(), "y_test stays with x_test"


def test_npz_colour_converted_to_gray_equals_pillows_and_labels_may_be_a_column(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=rgb, y=(np.arange(30) % 3)[:, None])  # labels as a (N, 1) column
    prepared = prepared_in(
        tmp_path / "project", declared("rgb", tmp_path, format="npz", path=str(tmp_path / "rgb.npz"), channels=1)
    )
    every = {tuple(image.ravel()) for n in ("train", "val", "test") for image in getattr(prepared.splits, n).x.numpy()}
    assert every == {tuple(np.asarray(Image.fromarray(image).convert("L")).ravel()) for image in rgb}


def test_an_npz_test_file_without_x_is_one_line_not_a_silently_smaller_train_split(tmp_path: Path) -> None:
    x, y = pattern_images(3, 10, 8, 1)
    np.savez(tmp_path / "main.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x_test=x[:3], y_test=y[:3])
    params = declared(
        "cells", tmp_path, format="npz", path=str(tmp_path / "main.npz"), test_path=str(tmp_path / "test.npz")
    )
    with pytest.raises(DataError, match=r"test.npz has no x \(it holds x_test, y_test\)"):
        prepared_in(tmp_path / "project", params)


def test_a_dataset_moved_away_after_download_is_named_at_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_image_folder(tmp_path / "pets", ["cat", "dog"], 10, 8)
    params = declared("pets", tmp_path, format="imagefolder", path=str(folder))
    prepared_in(tmp_path / "project", params)
    folder.rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(DataError, match=rf"dataset.pets.path: {folder} does not exist; point it at your image folder"):
        prepare(params)


def pipeline_run(project: Path, *targets: str) -> set[str]:
    """`dvc repro` (of `targets`, if given); the stages it ran, without their '@dataset' (one dataset here)."""
    result = run(["dvc", "repro", *targets], project, MLFLOW_TRACKING_URI="", **OFFLINE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name.split("@")[0] for name in re.findall(r"Running stage '([^']+)'", result.stdout)}


def dataset_inputs(project: Path, alias: str) -> list[tuple[str, str, str]]:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"convbench-{alias}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")
    return [
        (used.dataset.name, used.dataset.digest, json.loads(used.dataset.source)["uri"])
        for r in runs
        for used in r.inputs.dataset_inputs
    ]


def test_dvc_repro_on_the_explainers_64x64_colour_images_in_a_folder_outside_the_project(tmp_path: Path) -> None:
    """The seed's Keras CNN at its own input (64x64x3, 10 classes): 3,938,570 parameters, beside its matched MLP."""
    folder = write_image_folder(tmp_path / "datasets" / "shapes", TEN, 0, 64, splits={"train": 6, "val": 2, "test": 2})
    entry = {"format": "imagefolder", "path": str(folder)}
    project = copy_project(tmp_path / "project", **{"data.name": "shapes", "dataset": {"shapes": entry}})

    assert pipeline_run(project) == {"download", "prepare", "tune", "train", "evaluate", "bench", "report", "overview"}
    report = (project / paths.report_markdown("shapes")).read_text()
    assert "3,938,570" in report, "the seed's model at 64x64x3 with a 10-class head"
    assert all(f"| {name} " in report for name in TEN), "class names in the per-class table"
    for model in ("cnn", "mlp"):
        metrics = json.loads((project / paths.metrics("shapes", model, 0)).read_text())
        assert len(metrics["confusion_matrix"]) == 10 and sum(map(sum, metrics["confusion_matrix"])) == 20
    sha256 = json.loads((project / paths.prepared_manifest("shapes")).read_text())["sha256"]
    assert dataset_inputs(project, "shapes") == [("shapes", sha256[:36], str(folder))] * 2

    assert pipeline_run(project) == {"download"}, "the same files: only the list is made again"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "train" / TEN[3] / "00031.png")
    assert pipeline_run(project, "prepare") == {"download", "prepare"}
    assert json.loads((project / paths.prepared_manifest("shapes")).read_text())["sha256"] != sha256


def test_dvc_repro_on_npz_arrays_outside_the_project_with_their_own_test_split(tmp_path: Path) -> None:
    x, y = pattern_images(3, 30, 12, 1)
    x_test, y_test = pattern_images(3, 6, 12, 1, seed=1)
    arrays = tmp_path / "datasets" / "cells.npz"
    arrays.parent.mkdir()
    np.savez(arrays, x=x[..., 0], y=y)  # (N, H, W) grayscale
    np.savez(arrays.with_name("cells-test.npz"), x=x_test[..., 0], y=y_test)
    entry = {"format": "npz", "path": str(arrays), "test_path": str(arrays.with_name("cells-test.npz"))}
    entry["classes"] = ["round", "long", "branched"]
    project = copy_project(tmp_path / "project", **{"data.name": "cells", "dataset": {"cells": entry}})

    assert "report" in pipeline_run(project)
    manifest = json.loads((project / paths.prepared_manifest("cells")).read_text())
    assert manifest["sizes"]["test"] == 18 and manifest["official_test_split"] is True
    assert "| branched " in (project / paths.report_markdown("cells")).read_text()
    assert dataset_inputs(project, "cells") == [("cells", manifest["sha256"][:36], str(arrays))] * 2

    np.savez(arrays, x=x[::-1, ..., 0], y=y[::-1])  # the same images in another order
    assert pipeline_run(project, "prepare") == {"download", "prepare"}
