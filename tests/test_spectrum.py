"""The rest of the spectrum end to end: the ladder, a residual CNN, an MLP-Mixer and a ViT through `dvc repro` on digits,
with the data-fraction probe, and the report's steps beyond the ladder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.artifacts import paths
from tests.helpers import copy_project, run

SPECTRUM = ["linear", "mlp", "lcn", "cnn", "resnet", "mixer", "vit"]


def test_seven_models_run_through_dvc_repro_and_the_report_places_each_bias(tmp_path: Path) -> None:
    project = copy_project(
        tmp_path / "spectrum",
        **{
            "data.name": "digits",
            "models": SPECTRUM,
            "train.seeds": [0, 1],
            "probes.run": ["fraction"],
            "probes.fractions": [0.5, 1.0],
        },
    )
    done = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((project / paths.summary("digits")).read_text())
    assert list(summary["accuracy"]) == SPECTRUM
    counts = summary["params"]
    for matched in ("mlp", "mixer", "vit"):  # size-matched to the reference CNN within 1%
        assert abs(counts[matched] - counts["cnn"]) / counts["cnn"] <= 0.01, (matched, counts)
    assert all(0.0 < accuracy <= 1.0 for accuracy in summary["accuracy"].values())

    report = (project / paths.report_markdown("digits")).read_text()
    for step in (
        "LCN − MLP",
        "CNN − LCN",
        "MLP-Mixer − MLP",
        "ViT − MLP",
        "CNN − MLP-Mixer",
        "CNN − ViT",
        "ResNet − CNN",
    ):
        assert f"| {step}" in report, step
    for other in ("Linear", "MLP", "LCN", "ResNet", "MLP-Mixer", "ViT"):  # the data-fraction probe, per pair
        assert re.search(rf"CNN − {re.escape(other)} (shrinks|grows|stays)", report), other
    assert "4 x EncoderBlock(attention 4 heads" in report and "4 x MixerBlock(token MLP" in report
