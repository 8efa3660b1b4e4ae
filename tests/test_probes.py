"""The probe stage on real digits, and the probe section's claims on synthetic numbers."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.core import models
from pipeline.core.probes import scaled_params
from pipeline.params import validate_params
from pipeline.reporting.probes import (
    Cast,
    advantage_by_setting,
    by_value,
    drop_claim,
    fraction_claim,
    interval_points,
    load_probes,
    permutation_claim,
    probe_section,
    robustness_table,
    size_claim,
)
from pipeline.reporting.render import Document, to_markdown
from pipeline.stages.report import load_metrics
from tests.conftest import Workspace
from tests.helpers import params_with


def test_size_scaling_scales_every_built_in_and_rematches() -> None:
    params = validate_params(params_with({"models": ["linear", "mlp", "lcn", "cnn"]}))
    doubled = scaled_params(params, 2.0)
    assert doubled.model["cnn"]["conv"][0]["channels"] == 64 and doubled.model["cnn"]["hidden"] == [256]
    assert doubled.model["cnn"]["conv"][0]["kernel"] == params.model["cnn"]["conv"][0]["kernel"]
    configs = models.resolve(doubled, (1, 28, 28), 10)
    counts = {m: models.count_params(models.build(c)) for m, c in configs.items()}
    assert abs(counts["mlp"] - counts["cnn"]) / counts["cnn"] <= 0.01, "the MLP is matched again at the new size"
    assert configs["lcn"].settings["conv"] == configs["cnn"].settings["conv"], "the LCN keeps the scaled CNN's geometry"
    assert counts["cnn"] > 2 * models.count_params(models.build(models.resolve(params, (1, 28, 28), 10)["cnn"]))


def test_permutation_sweep_writes_rows_and_tagged_runs(workspace: Workspace) -> None:
    content = json.loads((workspace.root / paths.probe("digits", "permutation")).read_text())
    rows = content["rows"]
    assert content["dataset"] == "digits"
    assert sorted((r["setting"], r["model"], r["seed"]) for r in rows) == sorted(
        (s, m, seed) for s in ("original", "permuted") for m in ("cnn", "mlp") for seed in (0, 1)
    )
    assert all(0 < r["test_accuracy"] <= 1 for r in rows)
    original_cnn = {r["seed"]: r["test_accuracy"] for r in rows if r["setting"] == "original" and r["model"] == "cnn"}
    for seed, accuracy in original_cnn.items():
        evaluated = json.loads((workspace.root / paths.metrics("digits", "cnn", seed)).read_text())["test_accuracy"]
        assert accuracy == pytest.approx(evaluated), "the unpermuted setting repeats the main cell exactly"
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.probe` = 'permutation'")
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["convbench.setting"] for r in runs} == {"original", "permuted"}


def test_robustness_at_zero_shift_and_noise_is_the_test_accuracy(workspace: Workspace) -> None:
    metrics = json.loads((workspace.root / paths.metrics("digits", "mlp", 0)).read_text())
    assert metrics["robustness"]["shift"]["0"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["robustness"]["noise"]["0"] == pytest.approx(metrics["test_accuracy"])
    assert set(metrics["robustness"]["shift"]) == {"0", "1", "2", "3", "4"}
    assert metrics["robustness"]["shift"]["4"] < metrics["robustness"]["shift"]["0"]


def test_report_states_each_claim_with_the_verdict_its_numbers_give(workspace: Workspace) -> None:
    text = (workspace.root / paths.report_markdown("digits")).read_text()
    assert "## Why does it win? Probes" in text
    cast = Cast(["cnn", "mlp"], {"cnn": "CNN", "mlp": "MLP"}, "cnn")
    with contextlib.chdir(workspace.root):
        metrics = load_metrics(["cnn", "mlp"], [0, 1], "digits")
        probes = load_probes(workspace.params, json.loads(paths.prepared_manifest("digits").read_text())["sha256"])
    expected = [
        drop_claim(
            robustness_table(metrics, "shift", 0.95, cast),
            "The CNN is more robust to translation",
            "shift",
            cast,
            "mlp",
        ),
        drop_claim(
            robustness_table(metrics, "noise", 0.95, cast),
            "The CNN is more robust to pixel noise",
            "noise std",
            cast,
            "mlp",
        ),
        permutation_claim(advantage_by_setting(probes["permutation"], 0.95, cast), cast, "mlp"),
    ]
    for claim in expected:
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim.claim}"))
        assert f"**{claim.held}**" in row and claim.evidence in row
    assert "](figures/robustness.png)" in text


def _synthetic_rows(probe: str, values: list[float], lead: list[float], params_per_value: bool = False) -> pd.DataFrame:
    """Rows of a probe file: the CNN `lead[i]` ahead of the MLP at setting i, three seeds with small jitter."""
    rows = []
    for value, gap in zip(values, lead):
        for seed, jitter in ((0, -0.002), (1, 0.0), (2, 0.002)):
            for model, accuracy in (("cnn", 0.8 + gap + jitter), ("mlp", 0.8 + jitter / 2)):
                rows.append(
                    {
                        "probe": probe,
                        "setting": f"{value:g}",
                        "value": value,
                        "model": model,
                        "seed": seed,
                        "params": int(1000 * value) if params_per_value else 1000,
                        "test_accuracy": accuracy,
                    }
                )
    return pd.DataFrame(rows)


def test_fraction_claim_follows_the_numbers() -> None:
    cast = Cast(["cnn", "mlp"], {"cnn": "CNN", "mlp": "MLP"}, "cnn")
    shrinking = advantage_by_setting(_synthetic_rows("fraction", [0.1, 0.5, 1.0], [0.10, 0.05, 0.02]), 0.95, cast)
    growing = advantage_by_setting(_synthetic_rows("fraction", [0.1, 0.5, 1.0], [0.01, 0.05, 0.08]), 0.95, cast)
    assert fraction_claim(shrinking, cast, "mlp").held == "held"
    assert fraction_claim(growing, cast, "mlp").held == "did not hold"
    assert "CNN − MLP shrinks from +10.00 [" in fraction_claim(shrinking, cast, "mlp").evidence
    assert "points at share 0.1 of the training set to +2.00 [" in fraction_claim(shrinking, cast, "mlp").evidence
    assert "CNN − MLP grows from +1.00 [" in fraction_claim(growing, cast, "mlp").evidence
    assert fraction_claim(growing, cast, "mlp").evidence.endswith("] at share 1")


def test_size_claim_counts_the_sizes_won() -> None:
    cast = Cast(["cnn", "mlp"], {"cnn": "CNN", "mlp": "MLP"}, "cnn")
    always = advantage_by_setting(_synthetic_rows("size", [0.5, 1.0, 2.0], [0.03, 0.04, 0.05], True), 0.95, cast)
    sometimes = advantage_by_setting(_synthetic_rows("size", [0.5, 1.0, 2.0], [-0.03, 0.04, 0.05], True), 0.95, cast)
    assert size_claim(always, cast, "mlp").held == "held"
    claim = size_claim(sometimes, cast, "mlp")
    assert claim.held == "partly held" and "ahead at 2 of 3 sizes (2 with an interval above zero)" in claim.evidence
    assert "from 500 to 2,000 parameters" in claim.evidence


def test_fraction_and_size_probes_reach_the_report_section_and_figures(tmp_path: Path) -> None:
    from pipeline.reporting import figures

    cast = Cast(["cnn", "mlp"], {"cnn": "CNN", "mlp": "MLP"}, "cnn")
    probes = {
        "fraction": _synthetic_rows("fraction", [0.1, 1.0], [0.1, 0.02]),
        "size": _synthetic_rows("size", [0.5, 2.0], [0.03, 0.05], True),
    }
    points = interval_points(advantage_by_setting(probes["fraction"], 0.95, cast), cast)
    figure = figures.fraction_curve(points, tmp_path / "data_efficiency.png")
    assert figure.read_bytes()[:4] == b"\x89PNG" and set(points["model"]) == {"CNN", "MLP"}
    section = probe_section(pd.DataFrame(), probes, 0.95, {"fraction": figure}, cast)
    text = to_markdown(Document("t", [section]), tmp_path)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "**held**" in rows["The CNN is more data-efficient than the MLP"]
    assert "**held**" in rows["At every size the CNN beats the MLP"]
    assert "Parameters (CNN / MLP)" in text and "](data_efficiency.png)" in text


def _augment_rows(gaps: dict[str, list[float]], values: list[int]) -> pd.DataFrame:
    """Augment-probe rows: the CNN at 0.9, each other model `gaps[model][i]` behind it at shift i, two seeds."""
    rows = []
    for index, value in enumerate(values):
        for seed, jitter in ((0, -0.002), (1, 0.002)):
            for model in ("cnn", *gaps):
                accuracy = 0.9 + jitter - (gaps[model][index] if model != "cnn" else 0.0)
                rows.append(
                    {
                        "probe": "augment",
                        "setting": f"±{value}" if value else "none",
                        "value": float(value),
                        "model": model,
                        "seed": seed,
                        "params": 1000,
                        "test_accuracy": accuracy,
                        "shifted": {"0": accuracy, "2": accuracy - 0.3 + 0.05 * value},
                    }
                )
    return pd.DataFrame(rows)


def test_augment_claim_says_whether_the_gap_closed() -> None:
    from pipeline.reporting.probes import augment_claim

    cast = Cast(["cnn", "lcn", "mlp"], {"cnn": "CNN", "lcn": "LCN", "mlp": "MLP"}, "cnn")
    rows = _augment_rows({"lcn": [0.05, 0.04, 0.04], "mlp": [0.08, 0.03, -0.01]}, [0, 1, 3])
    table = by_value(advantage_by_setting(rows, 0.95, cast))
    closed, partly = augment_claim(table, cast, "mlp"), augment_claim(table, cast, "lcn")
    assert closed.held == "held" and "with shifts ±3" in closed.evidence and "+8.00" in closed.evidence
    assert partly.held == "partly held" and "20% of it closed" in partly.evidence
    wider = advantage_by_setting(
        _augment_rows({"lcn": [0.05, 0.06, 0.07]}, [0, 1, 3]), 0.95, cast.__class__(["cnn", "lcn"], cast.labels, "cnn")
    )
    assert augment_claim(wider, Cast(["cnn", "lcn"], cast.labels, "cnn"), "lcn").held == "did not hold"


def test_augment_section_holds_the_table_figures_ladder_and_robustness(tmp_path: Path) -> None:
    from pipeline.core.models import Ladder
    from pipeline.reporting.probes import ProbeView, probe_figures

    cast = Cast(["mlp", "lcn", "cnn"], {"cnn": "CNN", "lcn": "LCN", "mlp": "MLP"}, "cnn")
    probes = {"augment": _augment_rows({"lcn": [0.05, 0.04], "mlp": [0.08, 0.03]}, [0, 2])}
    drawn = probe_figures([], probes, 0.95, cast, tmp_path)
    view = ProbeView(0.95, cast, Ladder("mlp", "lcn", "cnn"), tmp_path, tuned=True)
    text = to_markdown(Document("t", [probe_section([], probes, 0.95, drawn, cast, view)]), tmp_path)
    assert "](augment.png)" in text and "](augment_robustness.png)" in text
    assert (tmp_path / "augment_robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "| Augmentation closes the MLP's gap to the CNN | **partly held**" in text
    assert "Without augmentation locality +3.00 points and weight sharing +5.00 points" in text
    assert "with shifts ±2, locality -1.00 points and weight sharing +4.00 points" in text
    cells = " ".join(text.split())
    assert "| MLP | with shifts ±2 | 0.8700 [0.8446, 0.8954] | 0.6700" in cells and "| MLP | unaugmented |" in cells
    assert "searched on unaugmented images only" in text


def test_augment_probe_trains_on_digits_and_records_shifted_accuracy(workspace: Workspace, tmp_path: Path) -> None:
    from pipeline.stages.probe import probe

    params = workspace.params.model_copy(
        update={
            "train": workspace.params.train.model_copy(update={"seeds": [0], "epochs": 2}),
            "probes": workspace.params.probes.model_copy(
                update={
                    "run": ["augment"],
                    "augment": workspace.params.probes.augment.model_copy(update={"shifts": [0, 1]}),
                }
            ),
        }
    )
    with contextlib.chdir(workspace.root):
        try:
            result = probe(params, "augment", say=lambda line: None)
            manifest = json.loads(paths.prepared_manifest("digits").read_text())
            loaded = load_probes(params, manifest["sha256"])
        finally:
            paths.probe("digits", "augment").unlink(missing_ok=True)  # the shared workspace's other tests never see it
    assert {(r.setting, r.model) for r in result.rows} == {(s, m) for s in ("none", "±1") for m in ("cnn", "mlp")}
    assert all(set(r.shifted) == {str(k) for k in params.evaluate.shifts} for r in result.rows)
    unaugmented = [r for r in result.rows if r.setting == "none"]
    assert all(r.shifted["0"] == pytest.approx(r.test_accuracy) for r in unaugmented)
    assert "augment" in loaded and len(loaded["augment"]) == 4


def test_augment_settings_flip_only_datasets_whose_classes_survive_a_mirror() -> None:
    from types import SimpleNamespace

    from pipeline.core.probes import augment_settings

    params = validate_params(params_with({}))
    digits = SimpleNamespace(name="mnist5k", mean=(0.13,), std=(0.31,))
    photos = SimpleNamespace(name="cifar10", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    plain = augment_settings(params, digits)  # only name, mean and std are read
    assert [s.label for s in plain] == ["none", "±1", "±2", "±3"] and plain[0].augment is None
    assert plain[3].augment is not None and plain[3].augment.max_shift == 3 and not plain[3].augment.flip
    assert plain[3].augment.fill == pytest.approx((-0.13 / 0.31,)), "shifted-in pixels are zeros once normalised"
    mirrored = augment_settings(params, photos)  # only name, mean and std are read
    assert [s.label for s in mirrored][1:] == ["±1 + flips", "±2 + flips", "±3 + flips"]
    forced = validate_params(params_with({"probes.augment.flips": True}))
    assert all(s.augment.flip for s in augment_settings(forced, digits)[1:])
    yours = params_with({})
    yours["dataset"] = {"pets": {"format": "imagefolder", "path": "/datasets/pets", "mirrorable": True}}
    pets = SimpleNamespace(name="pets", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert all(s.augment.flip for s in augment_settings(validate_params(yours), pets)[1:]), "a user's photos say so"


def test_every_registered_probe_has_its_words_in_the_report() -> None:
    """A probe's section never falls back to generic text: its registration and its words come together."""
    from pipeline.core.probes import PROBES
    from pipeline.reporting.probes import WORDS

    assert set(PROBES) == set(WORDS)


def test_activation_settings_retrain_only_models_with_an_activation_and_each_uses_it() -> None:
    from types import SimpleNamespace

    from pipeline.core.layers import ACTIVATIONS
    from pipeline.core.probes import activation_settings

    params = validate_params(params_with({"models": ["linear", "mlp", "cnn"], "probes.run": ["activation"]}))
    settings = activation_settings(params, SimpleNamespace())  # the settings read params only
    assert [s.label for s in settings] == ["relu", "gelu", "tanh", "sigmoid"] and [s.value for s in settings] == [
        0.0,
        1.0,
        2.0,
        3.0,
    ]
    for setting in settings:
        assert setting.models == ("mlp", "cnn"), "the linear model has no activation to change"
        configs = models.resolve(setting.params, (1, 28, 28), 10)
        assert configs["linear"] == models.resolve(params, (1, 28, 28), 10)["linear"]
        for alias in setting.models:
            used = {type(m) for m in models.build(configs[alias]).modules() if type(m) in ACTIVATIONS.values()}
            assert used == {ACTIVATIONS[setting.label]}, f"{alias} trained with {setting.label}"
    matched = {
        s.label: models.count_params(models.build(models.resolve(s.params, (1, 28, 28), 10)["mlp"])) for s in settings
    }
    assert len(set(matched.values())) == 1, "the size-matched MLP keeps its width under every activation"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"models": ["linear"], "reference": "linear", "probes.run": ["activation"]},
            "params.yaml: probes.run: activation: no model of ['linear'] has an activation setting; add a model",
        ),
        ({"probes.activations": ["relu", "tanh", "relu"]}, "probes.activations must be unique"),
        ({"probes.activations": ["relu"]}, "probes.activations: expected at least 2 items, got 1"),
        ({"probes.activations": ["relu", "swish"]}, "probes.activations.1: Input should be 'relu'"),
    ],
)
def test_activation_probe_params_are_refused_with_one_line(overrides: dict[str, object], message: str) -> None:
    from pipeline.errors import ParamsError

    with pytest.raises(ParamsError) as caught:
        validate_params(params_with(overrides))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _activation_rows(losses: dict[str, list[float]], model: str = "mlp") -> pd.DataFrame:
    """Activation-probe rows of one model: `losses[activation]` its final training loss per seed, accuracy 1 - loss/4."""
    return pd.DataFrame(
        [
            {
                "probe": "activation",
                "setting": activation,
                "value": float(index),
                "model": model,
                "seed": seed,
                "params": 1000,
                "test_accuracy": 1 - loss / 4,
                "final_train_loss": loss,
            }
            for index, (activation, per_seed) in enumerate(losses.items())
            for seed, loss in enumerate(per_seed)
        ]
    )


def test_activation_claim_compares_each_groups_lowest_loss_paired_by_seed() -> None:
    from pipeline.artifacts.probe_record import ProbeRow
    from pipeline.reporting.probes import activation_claim, trained_by_activation

    cast = Cast(["mlp"], {"mlp": "MLP"}, "mlp")

    def verdict(losses: dict[str, list[float]]) -> tuple[str, str]:
        claim = activation_claim(trained_by_activation(_activation_rows(losses), 0.95, ["mlp"]), "mlp", 0.95, cast)
        assert claim.claim == "ReLU-family activations train the MLP best"
        return claim.held, claim.evidence

    held, evidence = verdict({"relu": [0.30, 0.32, 0.31], "gelu": [0.35, 0.36, 0.34], "tanh": [0.50, 0.51, 0.52]})
    assert held == "held" and "with relu (the family's lowest) against 0.5100" in evidence
    assert "tanh − relu = +0.2000 [+0.1752, +0.2248], paired by seed" in evidence
    assert "test accuracy 0.9225 [0.9163, 0.9287] with relu" in evidence and "(relu − tanh +5.00 [+4.38" in evidence
    assert verdict({"gelu": [0.30, 0.40, 0.30], "sigmoid": [0.36, 0.31, 0.36]})[0] == "partly held"
    assert verdict({"relu": [0.50, 0.51], "softplus": [0.40, 0.41], "tanh": [0.45, 0.44]})[0] == "did not hold"
    assert verdict({"relu": [0.3], "tanh": [0.4]})[0] == "partly held", "one seed gives no interval"
    assert verdict({"relu": [0.3, 0.3], "elu": [0.4, 0.4]}) == (
        "not tested",
        "only ReLU-family activations were tried (relu, elu)",
    )
    assert verdict({"tanh": [0.3, 0.3], "sigmoid": [0.4, 0.4]})[0] == "not tested"
    old = {"probe": "fraction", "setting": "1", "value": 1.0, "model": "mlp", "seed": 0, "params": 9}
    older = ProbeRow.model_validate(old | {"train_images": 9, "final_val_accuracy": 0.5, "test_accuracy": 0.5})
    assert older.final_train_loss is None, "a record written before the loss was kept still loads"


def test_activation_probe_trains_on_digits_and_reports_table_figure_and_claim(
    workspace: Workspace, tmp_path: Path
) -> None:
    from pipeline.reporting.probes import ProbeView, probe_figures
    from pipeline.stages.probe import probe

    params = workspace.params.model_copy(
        update={
            "models": ["linear", "mlp", "cnn"],
            "train": workspace.params.train.model_copy(update={"seeds": [0, 1], "epochs": 1}),
            "probes": workspace.params.probes.model_copy(
                update={"run": ["activation"], "activations": ["relu", "tanh"]}
            ),
        }
    )
    with contextlib.chdir(workspace.root):
        try:
            result = probe(params, "activation", say=lambda line: None)
            loaded = load_probes(params, json.loads(paths.prepared_manifest("digits").read_text())["sha256"])
        finally:
            paths.probe("digits", "activation").unlink(missing_ok=True)  # the shared workspace's tests never see it
    assert sorted((r.setting, r.model, r.seed) for r in result.rows) == sorted(
        (a, m, s) for a in ("relu", "tanh") for m in ("mlp", "cnn") for s in (0, 1)
    )
    assert all(r.final_train_loss is not None and 0 < r.final_train_loss < 3 for r in result.rows)
    cast = Cast(["linear", "mlp", "cnn"], {"linear": "Linear", "mlp": "MLP", "cnn": "CNN"}, "cnn")
    probes = {"activation": loaded["activation"]}
    drawn = probe_figures([], probes, 0.95, cast, tmp_path)
    view = ProbeView(0.95, cast, None, tmp_path)
    text = to_markdown(Document("t", [probe_section([], probes, 0.95, drawn, cast, view)]), tmp_path)
    assert (tmp_path / "activation.png").read_bytes()[:4] == b"\x89PNG" and "](activation.png)" in text
    assert "| Model | Activation | ReLU family | Final training loss | Test accuracy |" in " ".join(text.split())
    assert "Not retrained, as their settings name no activation: Linear." in text
    for model in ("MLP", "CNN"):
        row = next(
            line for line in text.splitlines() if line.startswith(f"| ReLU-family activations train the {model}")
        )
        assert any(f"**{verdict}**" in row for verdict in ("held", "partly held", "did not hold"))
        assert "tanh − relu =" in row or "relu − tanh" in row
