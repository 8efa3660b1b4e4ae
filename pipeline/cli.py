"""convbench's command line: one command per pipeline stage, exactly what dvc.yaml runs.

Each command validates params.yaml first, then calls one stage function. Known failures print
one line and exit non-zero (2 for bad params); nothing is half-written. Failures of the system
(a full or read-only disk, a path under a file) print one line naming the path and the fix; anything
unexpected prints one line and the path of a log holding its traceback. Each command imports its stage (and
with it torch, MLflow or Ray) only when it runs, so `--help` and a bad params.yaml answer at once.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from pipeline.artifacts import paths
from pipeline.core.probes import PROBES
from pipeline.errors import (
    ConvbenchError,
    ParamsError,
    clear_stop,
    note_stop,
    os_error_line,
    out_of_memory_line,
    redact,
    stop_requested,
    unexpected_line,
    without_credentials,
)
from pipeline.ops import pool as pools
from pipeline.params import Params, load_all, load_params

if TYPE_CHECKING:
    from pipeline.ops.sweep import CellOutcome

app = typer.Typer(
    name="convbench",
    help="What does a convolution buy over a fully-connected net? Any list of models, trained side by side: "
    "download, prepare, tune, train, evaluate, bench, probe, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsPath = Annotated[Path, typer.Option("--params", "-p", help="params file to validate and use.", dir_okay=False)]
ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Only this model, one of `models` in params.yaml (default: every model)."),
]
SeedOption = Annotated[
    Optional[int], typer.Option("--seed", "-s", min=0, help="Only this seed (default: every seed in train.seeds).")
]
DatasetOption = Annotated[
    Optional[str],
    typer.Option("--dataset", "-d", help="Only this dataset, one of data.name (default: each of them in turn)."),
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print any failure as one line on stderr and exit non-zero, no traceback.

    ConvbenchError and interrupts keep their own message and code; OSError (full or read-only disk, a path
    under a file, no permission) names the path and the fix; anything else names a log with the traceback.
    Every line is redacted, so a password in a tracking URI never reaches the terminal.
    """
    # a kill, a closed terminal, and Ctrl-C even when the launching process left SIGINT ignored (as pytest-xdist does)
    stops = [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    clear_stop()
    previous = {stop: signal.signal(stop, _raise_interrupt) for stop in stops}
    try:
        yield
        if stop_requested():  # a library swallowed the interrupt (or made it an error that was caught): still a stop
            raise KeyboardInterrupt
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _interrupted()
    except ConvbenchError as exc:
        if stop_requested():  # an interrupt a library turned into an error of its own
            _interrupted()
        typer.echo(f"convbench: error: {redact(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        if stop_requested():
            _interrupted()
        root = _active_params.data.root if _active_params is not None else None
        line = out_of_memory_line(exc) if exc.errno == errno.ENOMEM else None  # ENOMEM names no path worth showing
        typer.echo(f"convbench: error: {redact(line or os_error_line(exc, root))}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, the traceback kept in a log
        if stop_requested():
            _interrupted()
        typer.echo(f"convbench: error: {out_of_memory_line(exc) or unexpected_line(exc)}", err=True)
        raise typer.Exit(1) from None
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _interrupted() -> NoReturn:
    """The interrupt's line (what the stage kept and how to go on) and exit status 130."""
    typer.echo(f"convbench: interrupted; {INTERRUPTED.get(_active_stage, INTERRUPTED[''])}", err=True)
    raise typer.Exit(130) from None


_active_params: Optional[Params] = None  # the params of the running command, to name the setting behind a path
_active_stage = ""  # the running command's stage, to say what an interruption kept
INTERRUPTED = {  # what each stage keeps when it is stopped, and how to go on
    "train": "finished cells are kept, and the interrupted cell saved its last completed epoch: run the same "
    "command (or `dvc repro`) again to resume it",
    "tune": "every finished trial is kept in its model's study: run the same command (or `dvc repro`) again to "
    "resume tuning",
    "evaluate": "cells already scored are kept: run the same command (or `dvc repro`) again to score the rest",
    "run": "finished stages and cells are kept: run `convbench run` again to go on from there",
    "sweep": "the sweep's cells were taken out of DVC's queue (none runs later unasked) and the queue workers it "
    "started were stopped: run the same command again to sweep afresh",
    "": "nothing half-written was left: run the same command again",
}


def _raise_interrupt(signum: int, frame: object) -> None:
    note_stop(signum)  # kept even if a library swallows the KeyboardInterrupt or turns it into an error
    raise KeyboardInterrupt


def _stage(run: Callable[[Params], None], params_path: Path, dataset: Optional[str] = None, stage: str = "") -> None:
    """Validate params, then run the stage in the project folder (the one holding the params file) for `dataset`,
    or for each dataset data.name lists, in order."""
    global _active_params, _active_stage
    _active_stage = stage
    with _user_errors():
        plan = [load_params(params_path, dataset)] if dataset else load_all(params_path)
        _enter_project(params_path, warn_legacy=stage in LEGACY_WARNED)
        for params in plan:
            if len(plan) > 1 and stage:
                typer.echo(f"{stage}: dataset {params.data.name}")
            _active_params = params
            run(params)


LEGACY_WARNED = {"download", "run", "overview"}  # the first and last commands of a pipeline run, not every stage


def _enter_project(params_path: Path, warn_legacy: bool = False) -> None:
    """Work in the folder of the params file, and say if it still holds files of the old layout."""
    project = Path(params_path).resolve().parent
    if project != Path.cwd().resolve():
        os.chdir(project)  # `-p ../params.yaml` from a subfolder writes into the project, not into the subfolder
    legacy = paths.legacy_files() if warn_legacy else []
    if legacy:
        shown = " ".join(str(p) for p in legacy[:4]) + (f" and {len(legacy) - 4} more" if len(legacy) > 4 else "")
        typer.echo(
            f"convbench: warning: {shown} come from before results were kept per dataset (models/<dataset>/, "
            f"results/<dataset>/, reports/<dataset>/) and are no longer read or updated; delete them "
            f"(`git rm -r --cached` first where git tracks them)",
            err=True,
        )


@app.command()
def download(params_path: ParamsPath = Path("params.yaml"), dataset: DatasetOption = None) -> None:
    """Put each dataset's raw files under data.root/<name>/ (network only if files are missing) and list them."""
    _stage(_download, params_path, dataset, "download")


def _download(params: Params) -> None:
    from pipeline.stages.download import download as run_download

    result = run_download(params)
    state = "written" if result.fetched else "present"
    typer.echo(
        f"download: {result.dataset}: {result.files:,} file(s) {state} in {result.folder}, "
        f"listed in {paths.source_manifest(result.dataset)}"
    )


@app.command()
def prepare(params_path: ParamsPath = Path("params.yaml"), dataset: DatasetOption = None) -> None:
    """Split each raw dataset stratified into train/val/test uint8 tensors plus a JSON manifest."""
    _stage(_prepare, params_path, dataset, "prepare")


def _prepare(params: Params) -> None:
    from pipeline.stages.prepare import prepare as run_prepare

    name = params.data.name
    result = run_prepare(params)
    sizes = ", ".join(f"{k} {v:,}" for k, v in result.sizes.items())
    typer.echo(f"prepare: {name} -> {result.tensors_path} ({sizes}; sha256 {result.sha256[:12]})")


class TuneBackend(str, Enum):
    """Where tuning trials run."""

    local = "local"
    ray = "ray"


@app.command()
def tune(  # 8 parameters: one parameter per command-line option: Typer reads them off the signature
    params_path: ParamsPath = Path("params.yaml"),
    dataset: DatasetOption = None,
    model: ModelOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Optuna workers sharing the study (processes here, or Ray tasks).")
    ] = 1,
    backend: Annotated[TuneBackend, typer.Option(help="local: this machine; ray: a Ray cluster.")] = TuneBackend.local,
    ray_address: Annotated[
        Optional[str], typer.Option(help="ray backend: cluster address (default $RAY_ADDRESS).")
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(min=0.0, help="ray backend: CPUs each worker reserves.")] = 1.0,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="Optuna study storage URL (default sqlite:///tuned/<dataset>/<model>.study.db; a database every worker reaches "
            "for a cluster)."
        ),
    ] = None,
) -> None:
    """Give every model the same tune.trials Optuna trials (scored on validation only); writes tuned/<dataset>/<model>.yaml.

    A killed run resumes from its study storage without repeating finished trials. With tune.trials 0 it only
    writes a note that the model was not tuned, and every model trains with the shared recipe.
    """
    _stage(
        lambda params: _tune(params, model, workers, backend, ray_address, cpus_per_worker, storage),
        params_path,
        dataset,
        "tune",
    )


def _tune(  # 7 parameters: the tune command's options, passed on as given
    params: Params,
    model: Optional[str] = None,
    workers: int = 1,
    backend: TuneBackend = TuneBackend.local,
    ray_address: Optional[str] = None,
    cpus_per_worker: float = 1.0,
    storage: Optional[str] = None,
) -> None:
    from pipeline.core.recipes import write_not_tuned

    if model is not None and model not in params.models:
        raise ParamsError(f"--model {model}: not in models {params.models} of params.yaml; pick one of them or add it")
    if params.tune.trials == 0 and backend is TuneBackend.local:  # a note per model; torch and Optuna stay unloaded
        for name in [model] if model else params.models:
            write_not_tuned(name, paths.tuned_recipe(params.data.name, name))
            typer.echo(_not_tuned(name, paths.tuned_recipe(params.data.name, name)))
        return
    from pipeline.ops import fanout
    from pipeline.ops.studies import Workers
    from pipeline.stages.tune import tune as run_tune

    address = fanout.ray_address(ray_address) if backend is TuneBackend.ray else None
    run_tune(params, model, Workers(workers, address, cpus_per_worker, storage), typer.echo)


def _not_tuned(model: str, path: Path) -> str:
    return f"tune: {model} not tuned (tune.trials is 0: the shared recipe) -> {path}"


WorkersOption = Annotated[
    Optional[int],
    typer.Option(
        min=1, help="Cells at once: worker processes here, each with its share of the cores (default: train.workers)."
    ),
]
BackendOption = Annotated[
    Optional[TuneBackend],
    typer.Option(help="local: this machine; ray: one Ray task per cell (default: train.backend)."),
]
RayAddressOption = Annotated[Optional[str], typer.Option(help="ray backend: cluster address (default $RAY_ADDRESS).")]


def _scheduled(params: Params, workers: Optional[int], backend: Optional[TuneBackend]) -> Params:
    """params with --workers and --backend in place of train.workers and train.backend (neither is in any identity)."""
    update = {k: v for k, v in (("workers", workers), ("backend", backend and backend.value)) if v is not None}
    return params.model_copy(update={"train": params.train.model_copy(update=update)}) if update else params


@app.command()
def train(  # 7 parameters: one parameter per command-line option: Typer reads them off the signature
    params_path: ParamsPath = Path("params.yaml"),
    dataset: DatasetOption = None,
    model: ModelOption = None,
    seed: SeedOption = None,
    workers: WorkersOption = None,
    backend: BackendOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Train every (model, seed) cell whose checkpoint is missing or stale (what `dvc repro` runs).

    A cell trained from exactly the data, model and recipe params.yaml now gives is kept; cells params.yaml no
    longer lists are removed. --model and --seed pick cells and train them again, current or not. With
    train.workers > 1 (or --workers) cells train in parallel processes; with --backend ray, as Ray tasks.
    """
    _stage(
        lambda params: _train(_scheduled(params, workers, backend), model, seed, ray_address),
        params_path,
        dataset,
        "train",
    )


def _train(params: Params, model: Optional[str], seed: Optional[int], ray_address: Optional[str] = None) -> None:
    with pools.warm(params.train.workers, params.train.backend == "local", "pipeline.stages.train"):
        from pipeline.stages.train import train as run_train

        run_train(params, model, seed, typer.echo, ray_address or os.environ.get("RAY_ADDRESS"))


@app.command()
def evaluate(  # 7 parameters: one parameter per command-line option: Typer reads them off the signature
    params_path: ParamsPath = Path("params.yaml"),
    dataset: DatasetOption = None,
    model: ModelOption = None,
    seed: SeedOption = None,
    workers: WorkersOption = None,
    backend: BackendOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Score every trained cell whose metrics are missing or stale on the test split; writes results/<dataset>/cells/<cell>.json.

    Metrics computed from the cell's current checkpoint with the current evaluate settings are kept; cells
    params.yaml no longer lists are removed. --model and --seed pick cells and score them again.
    """
    _stage(
        lambda params: _evaluate(_scheduled(params, workers, backend), model, seed, ray_address),
        params_path,
        dataset,
        "evaluate",
    )


def _evaluate(params: Params, model: Optional[str], seed: Optional[int], ray_address: Optional[str] = None) -> None:
    with pools.warm(params.train.workers, params.train.backend == "local", "pipeline.stages.evaluate"):
        from pipeline.stages.evaluate import evaluate as run_evaluate

        run_evaluate(params, model, seed, typer.echo, ray_address or os.environ.get("RAY_ADDRESS"))


@app.command(name="bench")
def bench_command(params_path: ParamsPath = Path("params.yaml"), dataset: DatasetOption = None) -> None:
    """Time every model side by side, round by round (needs trained checkpoints); writes results/<dataset>/bench.json."""
    _stage(_bench, params_path, dataset, "bench")


def _bench(params: Params) -> None:
    from pipeline.stages.bench import bench

    result = bench(params, typer.echo)
    if result.noisy:
        typer.echo(
            f"convbench: warning: noisy timing ({', '.join(result.noisy)}): other work competed for the "
            f"cores; {result.fix}",
            err=True,
        )


@app.command(name="probe")
def probe_command(
    name: Annotated[str, typer.Argument(help=f"The probe to run: {', '.join(PROBES)}.", show_default=False)],
    params_path: ParamsPath = Path("params.yaml"),
    dataset: DatasetOption = None,
) -> None:
    """Retrain every model at every setting of one probe; writes results/<dataset>/probes/<probe>.json."""
    if name not in PROBES:
        with _user_errors():
            raise ParamsError(f"unknown probe '{name}'; the probes are {', '.join(PROBES)}")
    _stage(lambda params: _probe(params, name), params_path, dataset, "probe")


def _probe(params: Params, name: str) -> None:
    from pipeline.stages.probe import probe

    probe(params, name, typer.echo)


class Backend(str, Enum):
    """Where a grid sweep runs."""

    dvc = "dvc"
    ray = "ray"


@app.command()
def sweep(  # 9 parameters: one parameter per command-line option: Typer reads them off the signature
    settings: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set", "-S", help="Grid axis KEY=V1,V2 (repeatable; values are YAML), e.g. -S train.lr=0.001,0.003."
        ),
    ] = None,
    grid: Annotated[
        Optional[Path], typer.Option(help="YAML grid: dotted keys mapped to lists of values.", dir_okay=False)
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="dvc: DVC's experiment queue here; ray: a Ray cluster.")
    ] = Backend.dvc,
    jobs: Annotated[int, typer.Option(min=1, help="dvc backend: queue workers running at once.")] = 1,
    ray_address: Annotated[
        Optional[str], typer.Option(help="ray backend: cluster address (default $RAY_ADDRESS).")
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.0, help="ray backend: CPUs each trial reserves.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0.0, help="ray backend: GPUs each trial reserves.")] = 0.0,
    name: Annotated[
        Optional[str], typer.Option(help="Sweep name, the prefix of every cell (default: sweep-<time>).")
    ] = None,
    params_path: ParamsPath = Path("params.yaml"),
) -> None:
    """Run a grid of params (-S/--grid) on DVC's queue or Ray, one full pipeline per cell.

    Every cell logs to the tracking server tagged sweep=<name> and sweep_cell=<name>-<i>. Failed cells
    are listed at the end (exit 1); the others run to completion.
    """
    global _active_stage
    _active_stage = "sweep"
    with _user_errors():
        outcomes = _grid_sweep(
            settings or [], grid, backend, jobs, ray_address, cpus_per_trial, gpus_per_trial, name, params_path
        )
    failed = [outcome for outcome in outcomes if outcome.status != "success"]
    for outcome in outcomes:
        scores = " ".join(f"{cell} {value:.4f}" for cell, value in sorted(outcome.accuracy.items()))
        typer.echo(f"sweep: {outcome.cell} [{outcome.settings}] {outcome.status}: {scores or outcome.detail}")
    if failed:
        typer.echo(
            f"convbench: error: {len(failed)} of {len(outcomes)} sweep cells failed: "
            f"{', '.join(outcome.cell for outcome in failed)}",
            err=True,
        )
        raise typer.Exit(1)


def _grid_sweep(  # 9 parameters: the sweep command's options, passed on as given
    settings: list[str],
    grid: Optional[Path],
    backend: Backend,
    jobs: int,
    ray_address: Optional[str],
    cpus_per_trial: float,
    gpus_per_trial: float,
    name: Optional[str],
    params_path: Path,
) -> list[CellOutcome]:
    """Validate params and every grid cell, then hand the cells to the chosen backend."""
    import time

    import yaml

    from pipeline.ops import grid as grids
    from pipeline.ops import sweep as sweeps
    from pipeline.ops.cluster import is_local_address
    from pipeline.ops.tracking import check_reachable, tracking_uri
    from pipeline.ops.uris import absolute_sqlite

    params = load_params(params_path)
    sweep_name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,62}", sweep_name):
        raise ParamsError(
            f"--name '{sweep_name}': use a letter, then letters, digits, '-' or '_' (it names DVC experiments)"
        )
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    cells = grids.expand(raw, grids.combine_axes(grid, settings), sweep_name, str(params_path))
    project = Path(params_path).resolve().parent
    uri = absolute_sqlite(tracking_uri(params.tracking, project), project)
    check_reachable(uri)  # before any cell starts, not once per failed cell
    typer.echo(f"sweep: {sweep_name}: {len(cells)} cell(s) on {backend.value}, tracking to {redact(uri)}")
    if backend is Backend.dvc:
        return sweeps.run_on_dvc_queue(cells, project, jobs, uri, typer.echo)
    if not uri.startswith(("http://", "https://")) and not is_local_address(ray_address):
        typer.echo(
            f"convbench: warning: trials on other Ray nodes cannot reach {redact(uri)}; for a cluster, "
            "point MLFLOW_TRACKING_URI at a tracking server (`make server`)",
            err=True,
        )
    cells = [sweeps.trial_params(cell, project) for cell in cells]
    return sweeps.run_on_ray(cells, project, ray_address, cpus_per_trial, gpus_per_trial, typer.echo, uri)


@app.command()
def report(params_path: ParamsPath = Path("params.yaml"), dataset: DatasetOption = None) -> None:
    """Compare the models over seeds: reports/<dataset>/comparison.{md,html}, figures, metrics/<dataset>/summary.json
    (what `dvc exp show` lists) and an MLflow comparison run."""
    _stage(_report, params_path, dataset, "report")


def _report(params: Params) -> None:
    from pipeline.ops.comparison_run import link_words
    from pipeline.stages.report import report as run_report

    result = run_report(params)
    typer.echo(
        f"report: {result.html} (and {result.markdown.name}); summary for DVC in {result.summary}{link_words(params)}"
    )


@app.command()
def overview(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Every dataset's headline and whether the reference's lead held across them: reports/index.{md,html}."""

    def run(all_params: list[Params]) -> None:
        from pipeline.stages.overview import overview as run_overview

        result = run_overview(all_params)
        typer.echo(f"overview: {result.html} (and {result.markdown.name}): open this first")

    with _user_errors():
        plan = load_all(params_path)
        _enter_project(params_path, warn_legacy=True)
        run(plan)


@app.command(name="params")
def params_command(params_path: ParamsPath = Path("params.yaml"), dataset: DatasetOption = None) -> None:
    """Print every setting in effect, the defaults params.yaml leaves out and each dataset's overrides included."""

    def run(params: Params) -> None:
        import yaml

        from pipeline.core.models import typed_settings

        class Dumper(yaml.SafeDumper):
            """Lists of plain values on one line, as params.yaml writes them; mappings as blocks."""

        def flow_list(dumper: yaml.SafeDumper, values: list) -> yaml.Node:
            flow = all(not isinstance(v, (dict, list)) for v in values)
            return dumper.represent_sequence("tag:yaml.org,2002:seq", values, flow_style=flow)

        Dumper.add_representer(list, flow_list)
        shown = params.model_dump(mode="json")
        shown["model"] = {m: typed_settings(params, m) for m in dict.fromkeys([*params.models, *shown["model"]])}
        text = yaml.dump(shown, Dumper=Dumper, sort_keys=False, width=120).rstrip()
        typer.echo(f"# {params_path} with every default, dataset {params.data.name}\n{text}")

    _stage(run, params_path, dataset)


@app.command(name="run")
def run_all(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Every stage in order in this folder, without DVC's caching: what a Ray sweep trial runs on a worker."""

    def run(params: Params) -> None:
        _download(params)
        _prepare(params)
        _tune(params)
        _train(params, None, None)
        _evaluate(params, None, None)
        _bench(params)
        for probe in params.probes.run:
            _probe(params, probe)
        _report(params)

    _stage(run, params_path, None, "run")
    overview(params_path)


@app.command()
def ui(
    params_path: ParamsPath = Path("params.yaml"),
    host: Annotated[
        str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to share it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (MLflow's default is 4).")] = 4,
) -> None:
    """Open the MLflow UI on the store convbench logs to (tracking.uri, $MLFLOW_TRACKING_URI or mlflow.db)."""

    def run(params: Params) -> None:
        from pipeline.ops.tracking import check_reachable, comparison_run_url, tracking_uri, training_runs_url

        uri = tracking_uri(params.tracking)
        if uri.startswith(("http://", "https://")):
            public = without_credentials(uri)
            raise ConvbenchError(
                f"runs go to the tracking server '{redact(uri)}', which serves its own UI: open {public} "
                f"in a browser (`convbench ui` serves local stores such as sqlite:///mlflow.db)"
            )
        check_reachable(uri)  # rejects a SQLite URI without a file
        _check_bindable(host, port)  # MLflow's server would only log its failure to bind, and exit 0
        address = f"http://{host}:{port}"
        page = training_runs_url(params.tracking, params.data.name, address)
        typer.echo(f"ui: serving {redact(uri)}; the training runs of {params.data.name} are at {page}", err=True)
        comparison = comparison_run_url(params.tracking, params.data.name, address)
        if comparison:
            typer.echo(f"ui: the comparison run (verdict, params, figures) is at {comparison}", err=True)
        typer.echo(  # MLflow's own run links drop the query that keeps its training pages; the browser can keep it
            "ui: if a page shows MLflow's GenAI sidebar, pick 'Model training' at its top once; the browser keeps it",
            err=True,
        )
        # The store URI travels in the environment, not argv: `ps` shows argv (and any password in it) to every user.
        os.environ["MLFLOW_BACKEND_STORE_URI"] = uri
        os.execv(
            sys.executable,
            [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port), "--workers", str(workers)],
        )

    _stage(run, params_path)


def _check_bindable(host: str, port: int) -> None:
    """Fail with one line when the UI could not listen at host:port (a port in use, an address not of this host)."""
    import errno
    import socket

    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
            probe.bind(address)
    except socket.gaierror as exc:
        raise ConvbenchError(f"--host {host}: not an address of this machine ({exc.strerror}); fix --host") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConvbenchError(
                f"port {port} on {host} is already in use (another `convbench ui` or server?); stop that process "
                f"or pick a free port with --port"
            ) from None
        raise ConvbenchError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another --host or --port"
        ) from None


def main() -> None:
    """Entry point of `convbench` and `python -m pipeline`."""
    try:
        app(prog_name="convbench")
    finally:
        # Exiting, Python collects torch's and MLflow's objects one by one: about 1.3 s of every command.
        # Frozen, they are simply dropped with the process (atexit handlers and flushes still run).
        gc.freeze()
