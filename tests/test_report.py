"""Report stage: the table follows the metrics files, the verdict follows the numbers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.artifacts.bench_record import BenchCase
from pipeline.artifacts.records import CellMetrics
from pipeline.core.probes import PROBES
from pipeline.core.stats import t_interval
from pipeline.errors import ConvbenchError
from pipeline.params import ReportParams
from pipeline.reporting.accuracy import accuracy_frame, pairs_frame
from pipeline.reporting.comparison import Comparison, SpeedCase, compare
from pipeline.reporting.cost import axes_frame
from pipeline.reporting.verdict import verdict
from pipeline.stages.report import load_metrics
from tests.conftest import Workspace

SETTINGS = ReportParams(confidence=0.95, bootstrap_resamples=1000, bootstrap_seed=0)
LABELS = {"cnn": "CNN", "mlp": "MLP"}


def _speed(cnn_speed: float = 1000.0, noisy: bool = False) -> list[SpeedCase]:
    """Bench cases: seven interleaved rounds, each model within ±0.3% of its speed; the MLP at 4,000 img/s."""
    jitter = [-0.003, -0.002, -0.001, 0.0, 0.001, 0.002, 0.003]
    cases = []
    for case, scale in ((BenchCase("inference", 256), 1.0), (BenchCase("training_step", 128), 0.25)):
        samples = {
            "cnn": [cnn_speed * scale * (1 + j) for j in jitter],
            "mlp": [4000.0 * scale * (1 - j) for j in jitter],
        }
        cases.append(
            SpeedCase(
                case, {m: float(np.median(v)) for m, v in samples.items()}, {"cnn": 0.003, "mlp": 0.003}, samples, noisy
            )
        )
    return cases


def duel(metrics: list[CellMetrics], correctness: dict[str, np.ndarray], speed: list[SpeedCase] | None = None):
    return compare(metrics, correctness, SETTINGS, ["cnn", "mlp"], "cnn", LABELS, _speed() if speed is None else speed)


def test_tables_show_intervals_paired_test_and_every_axis(workspace: Workspace) -> None:
    text = (workspace.root / paths.report_markdown("digits")).read_text()
    for model, label in (("cnn", "CNN"), ("mlp", "MLP")):
        accuracies = [
            json.loads((workspace.root / paths.metrics("digits", model, s)).read_text())["test_accuracy"]
            for s in (0, 1)
        ]
        interval = t_interval(accuracies, 0.95)
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
        assert (
            f"{interval.mean:.4f} ± {interval.std:.4f}" in row and f"[{interval.low:.4f}, {interval.high:.4f}]" in row
        )
    assert "The verdicts follow the exact McNemar test, run per seed" in text and "paired-bootstrap CI" in text
    for axis in (
        "Forward FLOPs / image (MFLOP)",
        "Inference @ batch 1 (img/s)",
        "Inference @ batch 256 (img/s)",
        "Latency @ batch 1 (ms)",
        "Training step @ batch 128 (img/s)",
        "Peak memory, training step (MiB)",
    ):
        assert f"| {axis}" in text
    assert "| Parameters " in text and "tie (within 1%)" in text
    for figure in ("learning_curves", "confusion_matrices", "throughput_vs_batch", "filters", "misclassified"):
        assert f"](figures/{figure}.png)" in text
        assert (workspace.root / paths.figures_dir("digits") / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    # The flowcharts: Mermaid in the Markdown (GitHub draws it), a drawn figure in the HTML (which runs no scripts).
    page = (workspace.root / paths.report_html("digits")).read_text()
    assert (
        "](figures/architectures.png)" not in text
        and (workspace.root / paths.figures_dir("digits") / "architectures.png").is_file()
    )
    assert "graph TD" not in page and "--&gt;" not in page and 'alt="Every architecture as a flowchart' in page
    # Matched sizes: accuracy against parameters would be two points at one x, so it is left out.
    assert (
        "accuracy_vs_cost" not in text
        and not (workspace.root / paths.figures_dir("digits") / "accuracy_vs_cost.png").exists()
    )
    assert "```mermaid\ngraph TD" in text and "| Linear(5408->128)" not in text  # digits are 8x8: 32*3*3 features
    assert "| Linear(288->128)" in text
    assert "`digits`" in text and "with the same recipe, as each checkpoint records it" in text
    assert text.count("favours whichever model") == 1, "the shared-recipe caveat is said once, in the verdict"
    assert "## What each inductive bias buys" not in text, "no ladder without an LCN"


def test_learning_curves_draw_one_series_per_model(tmp_path) -> None:
    from matplotlib.image import imread

    from pipeline.reporting import figures

    curves = pd.DataFrame(
        [
            {
                "model": model,
                "seed": 0,
                "epoch": epoch,
                "train_loss": 1 / epoch,
                "val_loss": 1 / epoch,
                "train_accuracy": 0.5,
                "val_accuracy": 0.5,
            }
            for model in ("A", "B", "C")
            for epoch in (1, 2)
        ]
    )
    assert figures.palette(["A", "B", "C", "A"]) == {"A": "C0", "B": "C1", "C": "C2"}
    picture = imread(figures.learning_curves(curves, tmp_path / "curves.png"))
    colours = {tuple(np.round(pixel[:3], 2)) for pixel in picture.reshape(-1, picture.shape[-1])}
    tab10 = {"C0": (0.12, 0.47, 0.71), "C1": (1.0, 0.5, 0.05), "C2": (0.17, 0.63, 0.17)}
    assert all(any(np.allclose(colour, c, atol=0.02) for c in colours) for colour in tab10.values()), "a line per model"


def test_tuning_progress_draws_best_so_far_per_model(tmp_path) -> None:
    from matplotlib.image import imread

    from pipeline.reporting import figures

    trials = pd.DataFrame(
        [
            {"model": model, "trial": trial, "val_accuracy": score, "best_so_far": best}
            for model, rows in (
                ("A", [(0.5, 0.5), (None, 0.5), (0.7, 0.7)]),
                ("B", [(0.6, 0.6), (0.4, 0.6), (0.8, 0.8)]),
            )
            for trial, (score, best) in enumerate(rows)
        ]
    )
    picture = imread(figures.tuning_progress(trials, tmp_path / "tuning.png"))
    colours = {tuple(np.round(pixel[:3], 2)) for pixel in picture.reshape(-1, picture.shape[-1])}
    for colour in ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05)):
        assert any(np.allclose(colour, c, atol=0.02) for c in colours), "a line per model"


def test_comparison_run_carries_the_report(workspace: Workspace) -> None:
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'comparison'")
    assert run.info.run_name == "comparison" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/comparison.md", "report/comparison.html"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "report/figures")}
    assert "report/figures/confusion_matrices.png" in figures and "report/figures/filters.png" in figures
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(child.info.run_name for child in children) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    assert (
        run.data.metrics["cnn_parameters"]
        == json.loads((workspace.root / paths.metrics("digits", "cnn", 0)).read_text())["params"]
    )
    assert 0 <= run.data.metrics["mlp_mcnemar_p_holm"] <= 1
    assert run.data.metrics["mlp_lead_of_reference_ci_low"] <= run.data.metrics["mlp_lead_of_reference"]


def _cell(model: str, seed: int, accuracy: float, **values: Any) -> CellMetrics:
    """A synthetic metrics record: every field the evaluate stage writes, `values` overriding the defaults."""
    fields: dict[str, Any] = {
        "model": model,
        "seed": seed,
        "dataset": "digits",
        "arch": model,
        "test_accuracy": accuracy,
        "test_loss": 0.1,
        "test_size": 1000,
        "final_val_accuracy": accuracy,
        "epochs": 3,
        "params": 1000,
        "trainable_params": 1000,
        "flops_forward_per_image": 1e6,
        "flops_train_step_per_image": 9e6,
        "train_images_per_second": 1000.0,
        "train_seconds": 10.0,
        "seconds_to_final_accuracy": 10.0,
        "train_batch_size": 128,
        "peak_memory_mb": {"inference": 5.0, "train_step": 10.0},
        "robustness": {"shift": {}, "noise": {}},
        "per_class_accuracy": {},
        "confusion_matrix": [],
        "context": {},
        "units": {},
        "source": {"checkpoint_sha256": "", "dataset_sha256": "", "code_sha256": "", "settings_sha256": ""},
    }
    return CellMetrics.model_validate(fields | values)


def _metrics(cnn_accuracy: float, mlp_accuracy: float) -> list[CellMetrics]:
    """Three seeds each; the CNN spends 3x the MLP's forward FLOPs at the same parameter count."""
    return [
        _cell(
            model,
            seed,
            accuracy + jitter,
            flops_forward_per_image=3e6 if model == "cnn" else 1e6,
            seconds_to_final_accuracy=10.0 + seed,
            peak_memory_mb={"inference": 5.0, "train_step": 10.0 + seed},
        )
        for model, accuracy in (("cnn", cnn_accuracy), ("mlp", mlp_accuracy))
        for seed, jitter in ((0, -0.001), (1, 0.001), (2, 0.0))
    ]


def _renamed(metrics: list[CellMetrics], model: str, alias: str) -> list[CellMetrics]:
    """`model`'s records as if they were another model's."""
    return [m.model_copy(update={"model": alias}) for m in metrics if m.model == model]


def _correctness(cnn_right: int, mlp_right: int, items: int = 1000) -> dict[str, np.ndarray]:
    """Three seeds; the models agree on most items, the first `right` items are the ones each gets right."""
    index = np.arange(items)
    return {"cnn": np.stack([index < cnn_right] * 3), "mlp": np.stack([index < mlp_right] * 3)}


def said(comparison: Comparison) -> str:
    """The verdict's paragraphs as one text."""
    return "\n\n".join(verdict(comparison))


def test_verdict_follows_the_numbers() -> None:
    comparison = duel(_metrics(0.97, 0.95), _correctness(970, 950))
    cnn_ahead = said(comparison)
    mlp_ahead = said(duel(_metrics(0.95, 0.97), _correctness(950, 970)))
    lead = comparison.pairs["mlp"].difference
    assert cnn_ahead.startswith(
        "The CNN is more accurate than the MLP by 2.00 percentage points (CNN 97.00% vs MLP 95.00%; McNemar's test, "
        f"Holm-adjusted p < 0.001; 95% paired-bootstrap CI of the lead [{lead.low * 100:+.2f}, {lead.high * 100:+.2f}] "
        "points)."
    ), "the verdict names the test it follows, with p below 0.001 said so, not as 'p = 0'"
    assert mlp_ahead.startswith("The MLP is more accurate than the CNN by 2.00 percentage points")
    assert f"CI of the lead [{lead.low * 100:+.2f}, " in mlp_ahead, "the interval is of the winner's lead, positive"
    assert "the same parameter budget" in cnn_ahead and "3.00x the MLP's FLOPs per image" in cnn_ahead
    assert "it runs inference at 0.25x the MLP's speed (batch 256)" in cnn_ahead
    assert "bought with compute" in cnn_ahead and "both more accurate and faster" in mlp_ahead
    assert "p = 0" not in cnn_ahead and "disagree" not in cnn_ahead


def test_verdict_says_when_accuracy_is_indistinguishable() -> None:
    tied = duel(_metrics(0.951, 0.950), _correctness(951, 950))
    assert not tied.significant("mlp") and tied.pairs["mlp"].p_holm == pytest.approx(1.0)  # 1 discordant image per seed
    assert said(tied).startswith(
        "The CNN and the MLP do not differ significantly in accuracy by McNemar's test (CNN 95.10% vs MLP 95.00%, "
        "Holm-adjusted p = 1); the 95% paired-bootstrap CI of the CNN's lead"
    )
    assert pairs_frame(tied)["Verdict (McNemar)"].tolist() == ["not significant"]


def test_verdict_states_no_speed_ratio_the_table_does_not_back() -> None:
    metrics = _metrics(0.97, 0.95)
    comparison = duel(metrics, _correctness(970, 950), _speed(cnn_speed=4001.0))  # per-round ratios straddle 1
    better = axes_frame(comparison).set_index("Axis")["Better"]
    assert better["Inference @ batch 256 (img/s)"].startswith("neither (per-round ratio 1.00")
    text = said(comparison)
    assert "runs inference at" not in text and "trains at" not in text and "x the MLP's speed" not in text
    assert "its inference speed (batch 256) does not differ measurably from the MLP's" in text


def test_noisy_timing_names_no_faster_model_and_says_how_to_fix_it() -> None:
    metrics = _metrics(0.97, 0.95)
    comparison = duel(metrics, _correctness(970, 950), _speed(noisy=True))  # 4x apart, but timed under load
    better = axes_frame(comparison).set_index("Axis")["Better"]
    assert better["Inference @ batch 256 (img/s)"] == "noisy: not compared"  # the note above the table says why
    text = said(comparison)
    assert "x the MLP's speed" not in text and "trains at" not in text and "bought with compute" not in text
    assert text.endswith(
        "No speed is compared for the training step or inference at batch 256: other work competed for the cores "
        "while they were timed (see Cost and speed)."
    )


def test_mcnemar_is_per_seed_and_holm_corrected_across_pairs() -> None:
    three = _metrics(0.97, 0.95) + _renamed(_metrics(0.97, 0.96), "mlp", "lcn")
    index = np.arange(1000)
    correctness = {
        "cnn": np.stack([index < 970] * 3),
        "mlp": np.stack([index < 950] * 3),
        "lcn": np.stack([index < 962, index < 968, index < 975]),
    }  # one seed beats the CNN
    comparison = compare(three, correctness, SETTINGS, ["cnn", "mlp", "lcn"], "cnn", {**LABELS, "lcn": "LCN"})
    mlp, lcn = comparison.pairs["mlp"], comparison.pairs["lcn"]
    assert [t.only_a_correct for t in mlp.per_seed] == [20, 20, 20] and len(lcn.per_seed) == 3
    assert lcn.p_value == max(t.p_value for t in lcn.per_seed) and lcn.p_value > 0.05
    assert mlp.p_holm == pytest.approx(2 * mlp.p_value) and lcn.p_holm == pytest.approx(lcn.p_value)  # Holm step-down
    assert comparison.significant("mlp") and not comparison.significant("lcn")
    table = axes_frame(comparison)
    assert list(table.columns) == ["Axis", "CNN", "MLP", "LCN", "Best"]


def test_axes_name_the_better_model_only_when_significant() -> None:
    comparison = duel(_metrics(0.97, 0.95), _correctness(970, 950))
    assert comparison.axis("parameters").winner == "tie"
    flops = comparison.axis("forward_flops_image")
    assert flops.winner == "mlp" and flops.ratio == 3.0 and flops.means == {"cnn": 3e6, "mlp": 1e6}
    assert comparison.axis("training_step_flops_image").winner == "tie"
    assert comparison.axis("time_to_final_accuracy").winner == "not significant"  # identical per-seed values
    memory = comparison.axis("peak_memory_training_step")
    assert memory.winner == "not significant" and memory.means["cnn"] == 11.0 and memory.spread["cnn"] == 1.0
    better = axes_frame(comparison).set_index("Axis")["Better"]
    assert (
        better["Parameters"] == "tie (within 1%)" and better["Forward FLOPs / image (MFLOP)"] == "**MLP** (3.00x lower)"
    )
    assert better["Inference @ batch 256 (img/s)"].startswith("**MLP** (4.00x faster, per-round [")  # side by side


def test_metrics_of_another_dataset_are_refused(workspace: Workspace, tmp_path) -> None:
    import shutil

    shutil.copytree(workspace.root / paths.cells_dir("digits"), tmp_path / paths.cells_dir("mnist5k"))  # misplaced
    with contextlib.chdir(tmp_path), pytest.raises(ConvbenchError) as caught:
        load_metrics(["cnn", "mlp"], [0, 1], "mnist5k")
    assert "metrics of cnn-s0 (digits), cnn-s1 (digits)" in str(caught.value)
    assert str(caught.value).endswith("are not for dataset 'mnist5k'; run `dvc repro` (or train and evaluate)")


def test_missing_cell_names_the_command_to_run(workspace: Workspace) -> None:
    with (
        contextlib.chdir(workspace.root),
        pytest.raises(
            ConvbenchError,
            match=r"results/digits/cells/cnn-s7.json is missing; run `convbench evaluate --dataset digits --model cnn "
            r"--seed 7` first",
        ),
    ):
        load_metrics(["cnn"], [7], "digits")


def test_ladder_splits_the_lead_into_locality_and_weight_sharing(tmp_path) -> None:
    from pipeline.core.models import Ladder
    from pipeline.reporting.comparison import comparison_metrics, ladder_steps
    from pipeline.reporting.ladder import ladder_blocks, ladder_sentence

    index = np.arange(1000)
    correctness = {
        "mlp": np.stack([index < 950] * 3),
        "lcn": np.stack([index < 955] * 3),
        "cnn": np.stack([index < 975] * 3),
    }
    rungs = Ladder("mlp", "lcn", "cnn")
    ladder = ladder_steps(rungs, correctness, SETTINGS)
    assert [(s.name, round(s.gain.difference, 3)) for s in ladder.steps] == [
        ("locality", 0.005),
        ("weight sharing", 0.02),
    ]
    assert ladder.contrast.difference == pytest.approx(0.015) and ladder.contrast.low > 0
    labels = {"mlp": "MLP", "lcn": "LCN", "cnn": "CNN"}
    sentence = ladder_sentence(ladder, labels)
    assert sentence.startswith("Of the CNN's +2.50-point lead over the MLP, locality (LCN − MLP) +0.50 points")
    assert "Weight sharing buys more than locality" in sentence
    even = {"mlp": correctness["mlp"], "lcn": np.stack([index < 962] * 3), "cnn": np.stack([index < 975] * 3)}
    assert "cannot be told from these numbers" in ladder_sentence(ladder_steps(rungs, even, SETTINGS), labels)
    metrics = _metrics(0.975, 0.95) + _renamed(_metrics(0.955, 0.95), "cnn", "lcn")
    comparison = compare(metrics, correctness, SETTINGS, ["mlp", "lcn", "cnn"], "cnn", labels, rungs=rungs)
    assert comparison.ladder == ladder
    figure = tmp_path / "ladder.png"
    figure.write_bytes(b"\x89PNG")
    table = ladder_blocks(ladder, comparison, figure)[1].frame
    assert table["Models"].tolist() == ["LCN − MLP", "CNN − LCN"] and table["Share of the total"].tolist() == [
        "20%",
        "80%",
    ]
    logged = comparison_metrics(comparison)
    assert logged["ladder_weight_sharing"] == pytest.approx(0.02) and "ladder_sharing_minus_locality" in logged


def _beyond_inputs(models: list[str], right: dict[str, np.ndarray], rungs: Any = None) -> Any:
    """The comparison of `models` (each right on the items of its mask, every seed alike), as a section reads it."""
    from types import SimpleNamespace

    from pipeline.core.models import REGISTRY

    correctness = {m: np.stack([right[m]] * 3) for m in models}
    metrics = [
        _cell(m, s, float(right[m].mean()), params=1000 * (i + 1)) for i, m in enumerate(models) for s in range(3)
    ]
    labels = {m: REGISTRY[m].label for m in models}
    roles = {m: REGISTRY[m].role for m in models}
    comparison = compare(metrics, correctness, SETTINGS, models, models[0], labels, rungs=rungs, roles=roles)
    return SimpleNamespace(comparison=comparison, figures_dir=None)


BEYOND_RIGHT = {  # 1,000 test images: each model right on the first n, the ViT as often as the CNN on other ones
    "mlp": np.arange(1000) < 950,
    "mixer": np.arange(1000) < 960,
    "cnn": np.arange(1000) < 975,
    "resnet": np.arange(1000) < 965,
    "vit": (np.arange(1000) < 970) | ((np.arange(1000) >= 980) & (np.arange(1000) < 985)),
    "lcn": np.arange(1000) < 955,
}


def test_beyond_the_ladder_pairs_new_models_by_role_in_a_stable_order() -> None:
    from pipeline.reporting.comparison import comparison_metrics

    expected = [
        ("global, learned mixing", "mixer", "mlp", 0.01, 1),
        ("global mixing by attention", "vit", "mlp", 0.025, 1),
        ("locality and sharing over mixing", "cnn", "mixer", 0.015, 1),
        ("locality and sharing over attention", "cnn", "vit", 0.0, 0),
        ("residual depth", "resnet", "cnn", -0.01, -1),
    ]
    for models in (["mlp", "cnn", "resnet", "mixer", "vit"], ["vit", "mixer", "resnet", "cnn", "mlp"]):
        steps = _beyond_inputs(models, BEYOND_RIGHT).comparison.beyond
        found = [(s.name, s.upper, s.lower, round(s.gain.difference, 3)) for s in steps]
        assert found == [row[:4] for row in expected], models
        signs = [1 if s.gain.low > 0 else -1 if s.gain.high < 0 else 0 for s in steps]
        assert signs == [row[4] for row in expected]
    comparison = _beyond_inputs(["mlp", "cnn", "resnet", "mixer", "vit"], BEYOND_RIGHT).comparison
    residual = comparison.beyond[-1]
    assert (residual.upper_params, residual.lower_params) == (3000, 2000)
    logged = comparison_metrics(comparison)
    assert logged["beyond_resnet_minus_cnn"] == pytest.approx(-0.01)
    assert logged["beyond_cnn_minus_vit_ci_low"] < 0 < logged["beyond_cnn_minus_vit_ci_high"]
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", key) for key in logged), "valid MLflow metric names"


def test_beyond_the_ladder_prefers_the_ladders_rungs_then_the_reference() -> None:
    from pipeline.core.models import Ladder
    from pipeline.reporting.comparison import beyond_pairs

    roles = {"mlp": "dense", "wide": "shared", "lcn": "local", "cnn": "shared", "vit": "attention", "gru": "recurrent"}
    models = list(roles)

    def pairs(reference: str, rungs: Ladder | None) -> list[tuple[str, str, str]]:
        return [(kind.name, lower, upper) for kind, lower, upper in beyond_pairs(roles, models, reference, rungs)]

    assert pairs("wide", Ladder("mlp", "lcn", "cnn")) == [
        ("global mixing by attention", "mlp", "vit"),
        ("locality and sharing over attention", "vit", "cnn"),
        ("recurrence", "mlp", "gru"),
    ]
    assert pairs("wide", None)[1] == ("locality and sharing over attention", "vit", "wide")
    assert pairs("mlp", None)[1] == ("locality and sharing over attention", "vit", "wide"), "else the first"
    assert beyond_pairs({"cnn": "shared", "mlp": "dense", "lcn": "local"}, ["cnn", "mlp", "lcn"], "cnn", None) == []
    assert beyond_pairs({"vit": "attention", "cnn": "shared"}, ["vit"], "vit", None) == [], "both must be compared"


def test_beyond_the_ladder_is_said_as_strongly_as_each_interval_allows() -> None:
    from pipeline.reporting import ladder as section
    from pipeline.reporting.render import Paragraph, Table

    intro, table, *sentences = section.blocks(_beyond_inputs(["mlp", "cnn", "resnet", "mixer", "vit"], BEYOND_RIGHT))
    assert isinstance(intro, Paragraph) and intro.text.startswith("Each model of a newer inductive bias is paired")
    assert isinstance(table, Table) and table.frame["Models"].tolist() == [
        "MLP-Mixer − MLP",
        "ViT − MLP",
        "CNN − MLP-Mixer",
        "CNN − ViT",
        "ResNet − CNN",
    ]
    assert table.frame["Accuracy gain (points)"].tolist()[-1] == "-1.00"
    assert table.frame["Parameters (first vs second)"].tolist()[-1] == "3,000 vs 2,000"
    assert [type(s) for s in sentences] == [Paragraph] * 5
    mixing, _, _, attention, residual = (s.text for s in sentences if isinstance(s, Paragraph))
    assert mixing.startswith(
        "**Global, learned mixing** (MLP-Mixer − MLP): the MLP-Mixer is 1.00 points more accurate than the MLP "
        "(95% CI [+0.40, +1.70]), a gain for "
    )
    assert attention.startswith("**Locality and sharing over attention** (CNN − ViT): the CNN and the ViT differ by ")
    assert (
        "that includes zero: no gain or loss from locality and weight sharing over attention can be told" in attention
    )
    assert "the ResNet is 1.00 points less accurate than the CNN" in residual and "a cost of residual depth" in residual


def test_without_new_models_the_ladder_section_is_as_before() -> None:
    from pipeline.core.models import Ladder
    from pipeline.reporting import ladder as section
    from pipeline.reporting.comparison import comparison_metrics

    assert section.blocks(_beyond_inputs(["cnn", "mlp"], BEYOND_RIGHT)) is None
    rungs = Ladder("mlp", "lcn", "cnn")
    classic = _beyond_inputs(["mlp", "lcn", "cnn"], BEYOND_RIGHT, rungs).comparison
    assert classic.ladder is not None and classic.beyond == []
    assert not any(key.startswith("beyond_") for key in comparison_metrics(classic))
    with_vit = _beyond_inputs(["mlp", "lcn", "cnn", "vit"], BEYOND_RIGHT, rungs).comparison
    assert with_vit.ladder == classic.ladder, "the ladder's numbers do not move with the new models"
    blocks = section.beyond_blocks(with_vit.beyond, with_vit)
    assert blocks[0].text.startswith("Beyond the ladder, each model")


def test_every_registered_probe_has_words_in_the_report() -> None:
    from pipeline.reporting.probes import WORDS

    assert set(WORDS) == set(PROBES), "a probe of core/probes.py needs its entry in reporting/probes.py WORDS"


def test_a_section_is_one_entry_and_a_model_without_convolution_is_said_so(workspace: Workspace, tmp_path) -> None:
    from pipeline.reporting.architecture import filter_blocks
    from pipeline.reporting.render import Paragraph
    from pipeline.reporting.sections import SECTIONS, SectionSpec, build_document, figures_of
    from pipeline.stages.report import gather

    with contextlib.chdir(workspace.root):
        inputs = gather(workspace.params, tmp_path)
        extra = SectionSpec("Extra", lambda given: [Paragraph(f"{len(given.metrics)} cells")])
        document = build_document(inputs, [SECTIONS[0], extra, SectionSpec("Nothing", lambda given: None)])
        assert [s.title for s in document.sections] == ["", "Extra"] and figures_of(document) == []
        assert document.sections[1].blocks == [Paragraph("4 cells")]
        only_mlp = dataclasses.replace(inputs, comparison=dataclasses.replace(inputs.comparison, models=["mlp"]))
        (said,) = filter_blocks(only_mlp)
    assert said == Paragraph("No model compared here (MLP) has a convolution, so there are no filters to show.")
    assert not (tmp_path / "filters.png").exists()


def test_probe_results_are_checked_records(workspace: Workspace, tmp_path) -> None:
    import shutil

    from pipeline.reporting.probes import load_probes

    project = tmp_path / "project"
    shutil.copytree(workspace.root, project)
    sha256 = json.loads((project / paths.prepared_manifest("digits")).read_text())["sha256"]
    with contextlib.chdir(project):
        assert list(load_probes(workspace.params, sha256)) == ["permutation"]
        assert load_probes(workspace.params, sha256)["permutation"]["setting"].unique().tolist() == [
            "original",
            "permuted",
        ]
        with pytest.raises(
            ConvbenchError, match=r"was made with other params or data; run `convbench probe permutation`"
        ):
            load_probes(workspace.params, "0" * 64)
        paths.probe("digits", "permutation").write_text("[]\n")
        with pytest.raises(
            ConvbenchError,
            match=r"permutation.json holds a JSON list, not a ProbeResult record; run "
            r"`convbench probe permutation` again",
        ):
            load_probes(workspace.params, sha256)
        paths.probe("digits", "permutation").unlink()
        with pytest.raises(ConvbenchError, match=r"permutation.json is missing; run `convbench probe permutation`"):
            load_probes(workspace.params, sha256)


def test_a_report_that_fails_leaves_the_previous_report_as_it_was(workspace: Workspace, tmp_path) -> None:
    """With the tracking server unreachable, the report stage fails after drawing and rendering, before any rename."""
    import hashlib
    import shutil

    from pipeline.stages.report import report

    project = tmp_path / "project"
    shutil.copytree(workspace.root, project)
    params = workspace.params.model_copy(
        update={"tracking": workspace.params.tracking.model_copy(update={"uri": "http://127.0.0.1:9"})}
    )

    def state() -> dict[str, str]:
        files = [
            paths.report_markdown("digits"),
            paths.report_html("digits"),
            paths.summary("digits"),
            *sorted(paths.figures_dir("digits").iterdir()),
            *sorted(paths.learning_curves_plot("digits").iterdir()),
        ]
        return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    with contextlib.chdir(project):
        before = state()
        with pytest.raises(ConvbenchError, match="is unreachable"):
            report(params)
        assert state() == before, "the previous report set is untouched"
        assert [p.name for p in paths.report_markdown("digits").parent.iterdir() if p.name.startswith(".")] == [], (
            "no staging left"
        )


def test_a_report_over_one_model_says_there_is_nothing_to_compare_it_with() -> None:
    alone = [m for m in _metrics(0.97, 0.95) if m.model == "cnn"]
    speed = [
        dataclasses.replace(
            case, values={"cnn": case.values["cnn"]}, spread={"cnn": 0.003}, samples={"cnn": case.samples["cnn"]}
        )
        for case in _speed()
    ]
    comparison = compare(alone, {"cnn": _correctness(970, 950)["cnn"]}, SETTINGS, ["cnn"], "cnn", LABELS, speed)
    (alone_said,) = verdict(comparison)
    assert alone_said.startswith(
        "Only the CNN is in `models`, so there is nothing to compare it with: it scores 97.00%"
    )
    assert "nan" not in alone_said and not comparison.pairs
    one_seed = compare(
        [m for m in alone if m.seed == 0],
        {"cnn": _correctness(970, 950)["cnn"][:1]},
        SETTINGS,
        ["cnn"],
        "cnn",
        LABELS,
        speed,
    )
    table = accuracy_frame(one_seed, [m for m in alone if m.seed == 0])
    assert table["Test accuracy (mean ± std)"].tolist() == ["0.9690"], "one seed: no '± nan'"


def test_every_model_gets_its_own_colour_however_many_there_are() -> None:
    from pipeline.reporting.figures import palette

    for count in (2, 10, 12, 20, 33):
        colours = palette([f"model{i}" for i in range(count)])
        assert len(set(colours.values())) == count, count
    assert palette(["cnn", "mlp"]) == {"cnn": "C0", "mlp": "C1"}, "up to ten models keep matplotlib's tab10 order"


def test_beyond_ten_models_markers_tell_neighbouring_hues_apart() -> None:
    from pipeline.reporting.figures import markers, palette

    names = [f"model{i}" for i in range(33)]
    style = {name: (palette(names)[name], markers(names)[name]) for name in names}
    assert len(set(markers(names).values())) > 1 and len(set(style.values())) == 33
    neighbours = [(markers(names)[a], markers(names)[b]) for a, b in zip(names, names[1:])]
    assert all(left != right for left, right in neighbours), "adjacent hues never share a marker"
    assert set(markers(["cnn", "mlp"]).values()) == {"o"}, "up to ten models keep their circles"


def _one_seed(only_reference: int, only_model: int, items: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """One seed's correctness: both right on the first 300 images, then the discordant ones, then both wrong."""
    reference, model = np.zeros(items, bool), np.zeros(items, bool)
    reference[:300] = model[:300] = True
    reference[300 : 300 + only_reference] = True
    model[300 + only_reference : 300 + only_reference + only_model] = True
    return reference, model


def _seeds(*discordant: tuple[int, int]) -> dict[str, np.ndarray]:
    """The reference ("cnn") and "mine" over as many seeds as (only reference right, only mine right) pairs given."""
    pairs = [_one_seed(a, b) for a, b in discordant]
    return {"cnn": np.stack([a for a, _ in pairs]), "mine": np.stack([b for _, b in pairs])}


def _records(correctness: dict[str, np.ndarray]) -> tuple[list[CellMetrics], list[str]]:
    """Each model's records, one per seed, scoring what its correctness rows score; the models in order."""
    metrics = [
        _cell(model, seed, float(right.mean()))
        for model, rows in correctness.items()
        for seed, right in enumerate(rows)
    ]
    return metrics, list(correctness)


def _pair(correctness: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """compare()'s arguments up to the labels: records matching `correctness`, the settings, models, reference."""
    metrics, models = _records(correctness)
    return metrics, correctness, SETTINGS, models, "cnn"


def test_a_user_model_is_named_by_its_alias_without_an_article() -> None:
    correctness = _seeds((50, 6))
    comparison = compare(*_pair(correctness), {"cnn": "CNN", "mine": "mine"})
    text = said(comparison)
    assert text.startswith(
        "The CNN is more accurate than `mine` by 12.22 percentage points (CNN 97.22% vs `mine` 85.00%"
    )
    assert "the mine" not in text and "`mine`'s FLOPs per image" in text
    assert comparison.cast.the("mine", start=True) == "`mine`" and comparison.cast.the("cnn", start=True) == "The CNN"
    assert pairs_frame(comparison)["Model"].tolist() == ["mine"], "tables keep the plain alias"


def test_one_seed_where_the_tests_disagree_says_which_the_verdict_follows_and_why() -> None:
    """The issue's case: McNemar not significant, the paired-bootstrap interval excluding zero, one seed."""
    comparison = compare(*_pair(_seeds((7, 17))), {"cnn": "CNN", "mine": "mine"})
    test = comparison.pairs["mine"]
    assert test.p_holm > 0.05 and test.difference.high < 0, "the two tests disagree on this pair"
    (paragraph,) = [p for p in verdict(comparison) if "McNemar" in p]
    assert paragraph.startswith(
        "The CNN and `mine` do not differ significantly in accuracy by McNemar's test, which the verdict follows "
        f"(CNN 85.28% vs `mine` 88.06%, Holm-adjusted p = {test.p_holm:.2g}), although the 95% paired-bootstrap CI "
        "of the CNN's lead, ["
    )
    assert (
        "excludes zero. The two disagree because with one seed both read the same predictions, and McNemar's "
        "exact test on the 24 images where the two models disagree is stricter than the percentile-bootstrap "
        "interval, whose 95% coverage is only approximate." in paragraph
    )
    assert "statistically indistinguishable" not in paragraph
    assert pairs_frame(comparison)["Verdict (McNemar)"].tolist() == [
        "not significant; the bootstrap CI excludes 0 (see Verdict)"
    ]


def test_disagreement_from_holms_correction_or_from_one_seed_of_several_is_explained_by_it() -> None:
    correctness = _seeds((6, 17))  # McNemar p 0.035 for each of two alike models, raised to 0.069 by Holm's correction
    correctness["yours"] = correctness["mine"]
    holm = compare(*_pair(correctness), {"cnn": "CNN", "mine": "mine", "yours": "yours"})
    assert all(t.p_value < 0.05 <= t.p_holm and t.interval_excludes_zero for t in holm.pairs.values())
    text = said(holm)
    mine = holm.pairs["mine"]
    assert (
        f"The two disagree because Holm's correction for the 2 pairs compared raises McNemar's p from "
        f"{mine.p_value:.2g} to {mine.p_holm:.2g}, and the bootstrap interval is not corrected for them." in text
    )
    seeds = compare(*_pair(_seeds((5, 20), (5, 20), (8, 12))), {"cnn": "CNN", "mine": "mine"})
    assert not seeds.significant("mine") and seeds.pairs["mine"].interval_excludes_zero
    assert (
        "The two disagree because McNemar's test counts a difference only when every seed shows it on its own (2 of "
        "3 seeds do; the largest p is 0.5), while the bootstrap pools the seeds" in said(seeds)
    )


def test_a_caveat_shared_by_every_pair_is_said_once() -> None:
    three = (
        _metrics(0.97, 0.95)
        + _renamed(_metrics(0.97, 0.96), "mlp", "lcn")
        + _renamed(_metrics(0.9, 0.9), "mlp", "mine")
    )
    index = np.arange(1000)
    correctness = {
        m: np.stack([index < right] * 3) for m, right in (("cnn", 970), ("mlp", 950), ("lcn", 960), ("mine", 900))
    }
    speed = [
        dataclasses.replace(
            case,
            values={**case.values, "lcn": case.values["mlp"], "mine": case.values["mlp"]},
            spread={**case.spread, "lcn": 0.003, "mine": 0.003},
            samples={**case.samples, "lcn": case.samples["mlp"], "mine": case.samples["mlp"]},
        )
        for case in _speed(noisy=True)
    ]
    labels = {**LABELS, "lcn": "LCN", "mine": "mine"}
    comparison = compare(three, correctness, SETTINGS, ["cnn", "mlp", "lcn", "mine"], "cnn", labels, speed)
    paragraphs = verdict(comparison)
    text = "\n\n".join(paragraphs)
    assert len(paragraphs) == 4, "a paragraph per pair, then the note"
    assert text.count("competed for the cores") == 1 and text.count("could not be measured") == 0
    assert text.count("McNemar") == 3, "each pair's verdict names its test"


def test_p_values_below_a_thousandth_are_not_rounded_to_zero() -> None:
    from pipeline.reporting.comparison import p_text, p_value

    assert p_text(0.0) == "p < 0.001" and p_text(3e-33) == "p < 0.001" and p_value(0.0) == "< 0.001"
    assert p_text(0.052) == "p = 0.052" and p_text(0.0032) == "p = 0.0032" and p_text(1.0) == "p = 1"
    assert p_value(0.0496) == "0.0496", "a significant p is not shown as 0.05"
    assert p_value(float("nan")) == "n/a"
    comparison = duel(_metrics(0.97, 0.95), _correctness(970, 950))
    table = pairs_frame(comparison)
    assert table["p (Holm)"].tolist() == ["< 0.001"] and "p < 0.001" in table.iloc[0, 3]
    memory = axes_frame(comparison).set_index("Axis")["Better"]
    assert all("p = 0 " not in cell and not cell.endswith("p = 0)") for cell in memory)


def _drawn(monkeypatch: pytest.MonkeyPatch, draw: Any, *args: Any) -> Any:
    """The matplotlib figure a drawing function makes, laid out, instead of its PNG."""
    from pipeline.reporting import figures

    caught = []
    monkeypatch.setattr(figures, "save", lambda figure, target: caught.append(figure) or target)
    draw(*args)
    (figure,) = caught
    figure.canvas.draw()
    return figure


def test_learning_curves_label_both_axes_and_count_epochs_in_whole_numbers(monkeypatch, tmp_path) -> None:
    from pipeline.reporting import figures

    curves = pd.DataFrame(
        [
            {
                "model": m,
                "seed": s,
                "epoch": e,
                "train_loss": 1 / e,
                "val_loss": 1 / e,
                "train_accuracy": 0.5 + e / 10,
                "val_accuracy": 0.5,
            }
            for m in ("CNN", "mine")
            for s in (0, 1)
            for e in (1, 2)
        ]
    )
    figure = _drawn(monkeypatch, figures.learning_curves, curves, tmp_path / "c.png")
    axes = figure.axes
    assert [axis.get_ylabel() for axis in axes[::2]] == ["loss (cross-entropy)", "accuracy"]
    for axis in axes:
        low, high = axis.get_xlim()
        assert [tick for tick in axis.get_xticks() if low <= tick <= high] == [1, 2], "two epochs: ticks 1 and 2 only"
    assert [axis.get_xlabel() for axis in axes[2:]] == ["epoch", "epoch"]
    assert figure.get_figwidth() <= figures.WIDTH and figures.smallest_text(figure) >= figures.SMALLEST


def test_filters_share_a_colour_scale_shown_with_its_bar_and_zero_maps_are_counted(monkeypatch, tmp_path) -> None:
    from pipeline.reporting import figures

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 1, 3, 3))
    maps = np.maximum(rng.normal(size=(4, 6, 6)), 0)
    maps[2] = 0.0  # a filter the ReLU silences on this image
    figure = _drawn(
        monkeypatch, figures.filters_and_feature_maps, weights, rng.normal(size=(1, 8, 8)), maps, tmp_path / "f.png"
    )
    bars = {axis.get_ylabel() for axis in figure.axes if axis.get_label() == "<colorbar>"}
    assert bars == {"weight", "activation"}
    titles = [axis.get_title() for axis in figure.axes]
    assert "4 filters (3×3)" in titles and "their feature maps after ReLU (1 of 4 zero everywhere)" in titles
    images = [image for axis in figure.axes for image in axis.get_images()]
    limits = sorted(image.get_clim() for image in images if image.get_cmap().name != "gray")
    assert limits[0] == (-np.abs(weights).max(), np.abs(weights).max()) and limits[1] == (0.0, maps.max())
    assert figure.get_figwidth() <= figures.WIDTH and figures.smallest_text(figure) >= figures.SMALLEST


def test_every_report_figure_fits_the_page_width_with_text_no_smaller_than_the_floor(workspace: Workspace) -> None:
    from PIL import Image

    from pipeline.reporting import figures

    for path in sorted((workspace.root / paths.figures_dir("digits")).glob("*.png")):
        with Image.open(path) as image:
            dpi = image.info["dpi"][0]
            assert image.width / dpi <= figures.WIDTH + 0.01, (path.name, image.width / dpi)
            assert float(image.info[figures.SMALLEST_KEY]) >= figures.SMALLEST, path.name
