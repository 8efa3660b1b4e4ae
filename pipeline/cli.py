"""convbench's command line: one command per pipeline stage, exactly what dvc.yaml runs.

Each command validates params.yaml first, then calls one stage function. Known failures print
one line and exit non-zero (2 for bad params); nothing is half-written.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, get_args

import typer

from pipeline import paths
from pipeline.errors import ConvbenchError
from pipeline.params import ModelParams, Params, ProbeName, load_params

if TYPE_CHECKING:
    from pipeline.prepare import PreparedData

app = typer.Typer(
    name="convbench",
    help="Benchmark a CNN against a size-matched MLP: download, prepare, train, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelName = Enum("ModelName", {name: name for name in ModelParams.model_fields}, type=str)  # type: ignore[misc]

ParamsPath = Annotated[
    Path, typer.Option("--params", "-p", help="params file to validate and use.", dir_okay=False)
]
ModelOption = Annotated[
    Optional[ModelName], typer.Option("--model", "-m", help="Only this model (default: every model).")
]
SeedOption = Annotated[
    Optional[int], typer.Option("--seed", "-s", min=0, help="Only this seed (default: every seed in train.seeds).")
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print ConvbenchError/interrupts as one line on stderr and exit with their code, no traceback."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    except ConvbenchError as exc:
        typer.echo(f"convbench: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("convbench: interrupted; no partial outputs were written", err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cells(params: Params, model: Optional[ModelName], seed: Optional[int]) -> list[tuple[str, int]]:
    models = [model.value] if model else list(ModelParams.model_fields)
    seeds = [seed] if seed is not None else list(params.train.seeds)
    return [(m, s) for m in models for s in seeds]


def _each_cell(
    params: Params,
    model: Optional[ModelName],
    seed: Optional[int],
    action: Callable[[Params, str, int, PreparedData], str],
) -> None:
    """Load the prepared split once, then run `action` on each selected (model, seed) cell."""
    from pipeline.prepare import load_prepared

    name = params.data.name
    prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))
    for model_name, cell_seed in _cells(params, model, seed):
        typer.echo(action(params, model_name, cell_seed, prepared))


def _stage(run: Callable[[Params], None], params_path: Path) -> None:
    with _user_errors():
        params = load_params(params_path)
        run(params)


@app.command()
def download(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Put data.name's raw files under data.root/<name>/ (network only if files are missing)."""

    def run(params: Params) -> None:
        from pipeline.download import download as run_download

        result = run_download(params.data, paths.raw_dir(params.data.root, params.data.name))
        state = "downloaded" if result.fetched else "already present"
        typer.echo(f"download: {result.dataset} {state} in {result.folder}")

    _stage(run, params_path)


@app.command()
def prepare(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Split the raw dataset stratified into train/val/test uint8 tensors plus a JSON manifest."""

    def run(params: Params) -> None:
        from pipeline.prepare import prepare as run_prepare

        name = params.data.name
        result = run_prepare(
            params.data, paths.raw_dir(params.data.root, name), paths.prepared_tensors(name), paths.prepared_manifest(name)
        )
        sizes = ", ".join(f"{k} {v:,}" for k, v in result.sizes.items())
        typer.echo(f"prepare: {name} -> {result.tensors_path} ({sizes}; sha256 {result.sha256[:12]})")

    _stage(run, params_path)


@app.command()
def train(params_path: ParamsPath = Path("params.yaml"), model: ModelOption = None, seed: SeedOption = None) -> None:
    """Train (model, seed) cells with the shared recipe; --model and --seed pick one cell of the matrix."""

    def one_cell(params: Params, model_name: str, cell_seed: int, prepared: PreparedData) -> str:
        from pipeline.train import train_cell

        result = train_cell(
            params, model_name, cell_seed, prepared,
            paths.checkpoint(model_name, cell_seed), paths.curves(model_name, cell_seed),
        )
        return (
            f"train: {paths.cell(model_name, cell_seed)} val_accuracy {result.history[-1].val_accuracy:.4f} "
            f"({result.train_images_per_second:,.0f} img/s) -> {result.checkpoint}"
        )

    _stage(lambda params: _each_cell(params, model, seed, one_cell), params_path)


@app.command()
def evaluate(params_path: ParamsPath = Path("params.yaml"), model: ModelOption = None, seed: SeedOption = None) -> None:
    """Score trained cells on the test split and time their inference; writes metrics/<model>-s<seed>.json."""

    def one_cell(params: Params, model_name: str, cell_seed: int, prepared: PreparedData) -> str:
        from pipeline.evaluate import evaluate_cell

        metrics = evaluate_cell(
            params, model_name, cell_seed, prepared,
            paths.checkpoint(model_name, cell_seed), paths.metrics(model_name, cell_seed),
        ).metrics
        return (
            f"evaluate: {paths.cell(model_name, cell_seed)} test_accuracy {metrics['test_accuracy']:.4f} "
            f"params {metrics['params']:,} forward {metrics['flops_forward_per_image'] / 1e6:.2f} MFLOP/image "
            f"inference {_largest_batch_speed(metrics)} latency {metrics['latency']['median_ms']:.3f} ms"
        )

    _stage(lambda params: _each_cell(params, model, seed, one_cell), params_path)


def _largest_batch_speed(metrics: dict) -> str:
    timing = max(metrics["inference"].values(), key=lambda t: t["batch_size"])
    return f"{timing['images_per_second']:,.0f} img/s @ batch {timing['batch_size']}"


ProbeChoice = Enum("ProbeChoice", {name: name for name in get_args(ProbeName)}, type=str)  # type: ignore[misc]


@app.command()
def sweep(
    probe: Annotated[ProbeChoice, typer.Option("--probe", help="Which retraining probe to run.")],
    params_path: ParamsPath = Path("params.yaml"),
) -> None:
    """Retrain both models at every setting of one probe (permutation, fraction, size); writes metrics/probes/<probe>.json."""

    def run(params: Params) -> None:
        from pipeline.prepare import load_prepared
        from pipeline.probes import run_probe

        name = params.data.name
        prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))

        def show(row: dict) -> None:
            typer.echo(f"sweep: {row['probe']}={row['setting']} {row['model']}-s{row['seed']} "
                       f"test_accuracy {row['test_accuracy']:.4f}")

        run_probe(params, probe.value, prepared, paths.probe(probe.value), show)
        typer.echo(f"sweep: {paths.probe(probe.value)}")

    _stage(run, params_path)


@app.command()
def report(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Compare the models over seeds: reports/comparison.{md,html}, figures, and an MLflow comparison run."""

    def run(params: Params) -> None:
        from pipeline.report import report as run_report

        result = run_report(params, paths.report_markdown(), paths.figures_dir(), paths.report_html())
        typer.echo(f"report: {result.markdown} and {paths.report_html()}")

    _stage(run, params_path)


@app.command()
def ui(
    params_path: ParamsPath = Path("params.yaml"),
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 5000,
) -> None:
    """Open the MLflow UI on the store convbench logs to (tracking.uri, $MLFLOW_TRACKING_URI or mlflow.db)."""

    def run(params: Params) -> None:
        from pipeline.tracking import tracking_uri

        uri = tracking_uri(params.tracking)
        typer.echo(f"ui: serving {uri} at http://{host}:{port}", err=True)
        os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)])

    _stage(run, params_path)


def main() -> None:
    """Entry point for `python -m pipeline`."""
    app(prog_name="convbench")
