"""`convbench ui` on a finished pipeline's store, opened in headless Chromium the way a new user would look."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.ops import tracking
from tests.conftest import Workspace
from tests.helpers import (
    CHROMIUM_ARGS,
    NO_CHROMIUM,
    SCREENSHOTS,
    answers,
    chromium,
    env,
    free_port,
    wait_for_start,
    write_params,
)

CELLS = ("cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1")


@dataclass(frozen=True)
class Served:
    """A running `convbench ui`: its address, and the file holding what it printed (its stderr)."""

    address: str
    log: Path


@pytest.fixture
def ui(workspace: Workspace, tmp_path: Path) -> Iterator[Served]:
    """The real `convbench ui` on the workspace's store, on a free 127.0.0.1 port."""
    params = write_params(tmp_path / "params.yaml", {"tracking.uri": workspace.tracking_uri, "data.name": "digits"})
    for attempt in range(2):  # a free port can be taken by a server another test worker starts at the same moment
        port = free_port()
        log = tmp_path / f"ui-{attempt}.log"  # a file, not a pipe: the server's workers outlive it and keep pipes open
        with open(log, "w") as handle:
            server = subprocess.Popen(
                ["convbench", "ui", "--params", str(params), "--port", str(port), "--workers", "1"],
                cwd=tmp_path,
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=handle,
                start_new_session=True,
            )
        address = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while server.poll() is None and not answers(f"{address}/health") and time.monotonic() < deadline:
            time.sleep(0.5)
        if server.poll() is None and answers(f"{address}/health"):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    wait_for_start(server, lambda: answers(f"{address}/health"), log, "convbench ui")
    try:
        yield Served(address, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_ui_opens_on_training_runs_with_their_dataset_and_curves(workspace: Workspace, ui: Served) -> None:
    from playwright.sync_api import sync_playwright

    digest = json.loads((workspace.root / paths.prepared_manifest("digits")).read_text())["sha256"][:36]
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (cnn,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'cnn-s0'")
    url = tracking.training_runs_url(workspace.params.tracking, "digits", ui.address)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)  # a loaded 2-core machine renders slowly
            page.goto(url)
            page.get_by_text("comparison", exact=True).first.wait_for()
            opened_on, overview = page.url, page.inner_text("body")
            name_cell = page.locator("[role=gridcell]", has_text="comparison")
            name_cell.locator("button[data-component-id*=runnamecellrenderer]").click()  # expand the nested runs
            for cell in CELLS:
                page.get_by_role("link", name=cell, exact=True).wait_for()
            datasets = page.locator("[role=gridcell][col-id='attributes.`Dataset`']").all_inner_texts()
            page.screenshot(path=str(SCREENSHOTS / "mlflow-runs.png"))

            page.goto(
                f"{ui.address}/#/experiments/{experiment.experiment_id}/runs/{cnn.info.run_id}/model-metrics"
                f"?workflowType=machine_learning"
            )
            page.get_by_placeholder("Search metric charts").fill("val_accuracy")
            chart = page.locator("[data-testid=experiment-view-compare-runs-card]").filter(
                has=page.get_by_text("val_accuracy", exact=True)
            )
            chart.locator("path.js-line").first.wait_for()
            epochs_drawn = chart.locator("path.js-line").count()
            chart_text = chart.inner_text()
            page.screenshot(path=str(SCREENSHOTS / "mlflow-val-accuracy.png"))
        finally:
            browser.close()
    assert f"/experiments/{experiment.experiment_id}/runs" in opened_on, opened_on
    assert "Token usage" not in overview and "Traces\n0" not in overview, "not MLflow's empty GenAI overview"
    shown = [text for text in datasets if text.startswith(f"digits ({digest})")]
    assert len(shown) == len(CELLS) and all("Train" in text for text in shown), datasets
    assert epochs_drawn >= 1 and "cnn-s0 (val_accuracy)" in chart_text, chart_text
    assert (SCREENSHOTS / "mlflow-runs.png").stat().st_size > 20_000


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_printed_comparison_link_opens_the_run_on_the_training_pages(workspace: Workspace, ui: Served) -> None:
    """The link `convbench ui` prints opens the comparison run as a training run: its params, verdict and figures."""
    from playwright.sync_api import sync_playwright

    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'comparison'")
    (link,) = re.findall(r"^ui: the comparison run \(verdict, params, figures\) is at (\S+)$", ui.log.read_text(), re.M)
    assert (
        link
        == f"{ui.address}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})  # tall: description, metrics, params
            page.set_default_timeout(60_000)  # a loaded 2-core machine renders slowly
            page.goto(link)
            page.get_by_text(f"Parameters ({len(run.data.params)})", exact=True).wait_for()
            sidebar = page.locator("aside nav a").all_inner_texts()
            filed_under = page.get_by_test_id("experiment-observatory-link-runs").inner_text()
            title = page.locator("h2").all_inner_texts()
            body = page.inner_text("body")
            page.screenshot(path=str(SCREENSHOTS / "mlflow-comparison-run.png"))
        finally:
            browser.close()
    assert {"Runs", "Models", "Model registry"} <= set(sidebar), sidebar  # the training pages' sidebar
    assert not {"Overview", "Evaluation runs"} & set(sidebar), sidebar  # not the GenAI one
    assert filed_under == "Runs", "a GenAI page files a run without a logged model under 'Evaluations'"
    assert "comparison" in title, title
    verdict = run.data.tags["mlflow.note.content"].replace("`", "")  # rendered as Markdown: code loses its backticks
    assert verdict.split("\n\n")[0] in body, "the description shows the verdict"
    assert len(run.data.params) > 40 and "data.sha256" in body and "architecture.mlp.settings.width" in body
    mean = run.data.metrics["cnn_accuracy_mean"]
    assert re.search(rf"cnn_accuracy_mean\s+{re.escape(str(mean))}\s", body), mean
    digits = [len(figure.replace(".", "").lstrip("0")) for figure in re.findall(r"\d+\.\d+", body)]
    assert digits and max(digits) <= tracking.SIGNIFICANT_DIGITS, "rounded: no raw floats such as 0.9739999999999999"
    assert (SCREENSHOTS / "mlflow-comparison-run.png").stat().st_size > 20_000
