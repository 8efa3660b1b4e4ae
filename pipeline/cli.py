"""convbench's command line: one command per pipeline stage, exactly what dvc.yaml runs.

Each command validates params.yaml first, then calls one stage function. Known failures print
one line and exit non-zero (2 for bad params); nothing is half-written. Failures of the system
(a full or read-only disk, a path under a file) print one line naming the path and the fix; anything
unexpected prints one line and the path of a log holding its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, get_args

import typer

from pipeline import paths
from pipeline.errors import ConvbenchError, ParamsError, redact
from pipeline.params import Params, ProbeName, load_params

if TYPE_CHECKING:
    from pipeline.data import PreparedData
    from pipeline.sweep import CellOutcome

app = typer.Typer(
    name="convbench",
    help="Benchmark a CNN against a size-matched MLP: download, prepare, train, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsPath = Annotated[
    Path, typer.Option("--params", "-p", help="params file to validate and use.", dir_okay=False)
]
ModelOption = Annotated[
    Optional[str], typer.Option("--model", "-m", help="Only this model, one of `models` in params.yaml (default: every model).")
]
SeedOption = Annotated[
    Optional[int], typer.Option("--seed", "-s", min=0, help="Only this seed (default: every seed in train.seeds).")
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print any failure as one line on stderr and exit non-zero, no traceback.

    ConvbenchError and interrupts keep their own message and code; OSError (full or read-only disk, a path
    under a file, no permission) names the path and the fix; anything else names a log with the traceback.
    Every line is redacted, so a password in a tracking URI never reaches the terminal.
    """
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    except typer.Exit:
        raise
    except ConvbenchError as exc:
        typer.echo(f"convbench: error: {redact(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("convbench: interrupted; no partial outputs were written", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        typer.echo(f"convbench: error: {redact(_os_error_line(exc))}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, the traceback kept in a log
        typer.echo(f"convbench: error: {_unexpected_line(exc)}", err=True)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


_active_params: Optional[Params] = None  # the params of the running command, to name the setting behind a path

# errno -> what went wrong and the fix, after the path it happened to
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device; free space on it (or move the project to a bigger disk) and run again",
    errno.EDQUOT: "disk quota exceeded; free space within your quota and run again",
    errno.EROFS: "the filesystem is read-only; use a writable folder (or remount it read-write)",
    errno.EACCES: "permission denied; make it writable (and its folder searchable) for this user, or use another path",
    errno.EPERM: "operation not permitted; make it writable for this user, or use another path",
    errno.ENOTDIR: "part of this path is a file, not a folder; fix the path or move that file away",
    errno.EISDIR: "this is a folder where a file is expected; move the folder away or fix the path",
    errno.EEXIST: "this exists and is not a folder; move it away or fix the path",
    errno.ENOENT: "no such file or folder; check the path, or run the stage that creates it",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
    errno.ELOOP: "the path has a symbolic-link loop; fix the link",
    errno.EIO: "input/output error, the disk may be failing; check it (dmesg) and run again",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
}


def _os_error_line(exc: OSError) -> str:
    """'<path>: <problem and fix>', naming data.root when the path is under it."""
    path = exc.filename if exc.filename is not None else None
    fix = _OS_FIXES.get(exc.errno or -1, f"{exc.strerror or exc}; check the path and run again")
    if path is None:
        return f"{exc.strerror or type(exc).__name__}; {fix.split('; ', 1)[-1]}"
    return f"{os.fsdecode(path)}: {fix}{_setting_for(Path(os.fsdecode(path)))}"


def _setting_for(path: Path) -> str:
    """' (data.root in params.yaml is ...)' when `path` lies in params' data.root, else ''."""
    if _active_params is None:
        return ""
    root = Path(_active_params.data.root)
    try:
        path.resolve(strict=False).relative_to(root.resolve(strict=False))
    except (ValueError, OSError, RuntimeError):
        return ""
    return f" (data.root in params.yaml is '{root}')"


def _unexpected_line(exc: BaseException) -> str:
    """One line for an error nobody anticipated, with the path of a log holding its redacted traceback."""
    first = (str(exc).strip().splitlines() or [""])[0]
    summary = redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    text = redact("convbench " + " ".join(sys.argv[1:]) + "\n" + "".join(traceback.format_exception(exc)))
    try:
        folder = Path(os.environ.get("CONVBENCH_LOG_DIR") or tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix="convbench-error-", suffix=".log", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as log_error:
        return f"unexpected {summary} (the traceback could not be saved: {log_error.strerror}); please report it"
    return f"unexpected {summary}; the traceback is in {log}; please report it with that file"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cells(params: Params, model: Optional[str], seed: Optional[int]) -> list[tuple[str, int]]:
    if model is not None and model not in params.models:
        raise ParamsError(f"--model {model}: not in models {params.models} of params.yaml; pick one of them or add it")
    models = [model] if model else list(params.models)
    seeds = [seed] if seed is not None else list(params.train.seeds)
    return [(m, s) for m in models for s in seeds]


def _stage(run: Callable[[Params], None], params_path: Path) -> None:
    global _active_params
    with _user_errors():
        params = load_params(params_path)
        _active_params = params
        run(params)


@app.command()
def download(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Put data.name's raw files under data.root/<name>/ (network only if files are missing)."""
    _stage(_download, params_path)


def _download(params: Params) -> None:
    from pipeline.download import download as run_download

    result = run_download(params.data, paths.raw_dir(params.data.root, params.data.name))
    state = "downloaded" if result.fetched else "already present"
    typer.echo(f"download: {result.dataset} {state} in {result.folder}")


@app.command()
def prepare(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Split the raw dataset stratified into train/val/test uint8 tensors plus a JSON manifest."""
    _stage(_prepare, params_path)


def _prepare(params: Params) -> None:
    from pipeline.prepare import prepare as run_prepare

    name = params.data.name
    result = run_prepare(
        params.data, paths.raw_dir(params.data.root, name), paths.prepared_tensors(name), paths.prepared_manifest(name)
    )
    sizes = ", ".join(f"{k} {v:,}" for k, v in result.sizes.items())
    typer.echo(f"prepare: {name} -> {result.tensors_path} ({sizes}; sha256 {result.sha256[:12]})")


class TuneBackend(str, Enum):
    """Where tuning trials run."""

    local = "local"
    ray = "ray"


@app.command()
def tune(
    params_path: ParamsPath = Path("params.yaml"),
    model: ModelOption = None,
    workers: Annotated[int, typer.Option(min=1, help="Optuna workers sharing the study (processes here, or Ray tasks).")] = 1,
    backend: Annotated[TuneBackend, typer.Option(help="local: this machine; ray: a Ray cluster.")] = TuneBackend.local,
    ray_address: Annotated[Optional[str], typer.Option(help="ray backend: cluster address (default $RAY_ADDRESS).")] = None,
    cpus_per_worker: Annotated[float, typer.Option(min=0.0, help="ray backend: CPUs each worker reserves.")] = 1.0,
    storage: Annotated[Optional[str], typer.Option(
        help="Optuna study storage URL (default sqlite:///tuned/<model>.study.db; a database every worker reaches "
             "for a cluster).")] = None,
) -> None:
    """Give every model the same tune.trials Optuna trials (scored on validation only); writes tuned/<model>.yaml.

    A killed run resumes from its study storage without repeating finished trials. With tune.trials 0 it only
    writes a note that the model was not tuned, and every model trains with the shared recipe.
    """
    _stage(lambda params: _tune(params, model, workers, backend, ray_address, cpus_per_worker, storage), params_path)


def _tune(params: Params, model: Optional[str] = None, workers: int = 1, backend: TuneBackend = TuneBackend.local,
          ray_address: Optional[str] = None, cpus_per_worker: float = 1.0, storage: Optional[str] = None) -> None:
    from pipeline.cluster import check_listening
    from pipeline.data import load_prepared
    from pipeline.recipes import write_not_tuned

    if model is not None and model not in params.models:
        raise ParamsError(f"--model {model}: not in models {params.models} of params.yaml; pick one of them or add it")
    if params.tune.trials == 0 and backend is TuneBackend.local:  # a note per model; torch and Optuna stay unloaded
        for name in [model] if model else params.models:
            write_not_tuned(name, paths.tuned_recipe(name))
            typer.echo(_not_tuned(name, paths.tuned_recipe(name)))
        return
    from pipeline.tune import tune_model

    address = None
    if backend is TuneBackend.ray:
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ParamsError("--backend ray needs a cluster: set RAY_ADDRESS (e.g. 127.0.0.1:6379 from `ray start "
                              "--head`) or pass --ray-address")
        check_listening(address)  # in seconds, before any storage or run is opened
    if params.tune.trials == 0:
        prepared = None
    else:
        name = params.data.name
        prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))
    for name in [model] if model else params.models:
        result = tune_model(params, name, prepared, paths.tuned_recipe(name), storage, workers, address,  # type: ignore[arg-type]
                            cpus_per_worker, typer.echo)
        if not result.tuned:
            typer.echo(_not_tuned(name, result.path))
            continue
        baseline = "n/a" if result.baseline_value is None else f"{result.baseline_value:.4f}"
        typer.echo(f"tune: {name} best val_accuracy {result.best_value:.4f} (trial {result.best_trial} of "
                   f"{params.tune.trials}; shared recipe {baseline}; {result.ran} trial(s) run now) -> {result.path}")


def _not_tuned(model: str, path: Path) -> str:
    return f"tune: {model} not tuned (tune.trials is 0: the shared recipe) -> {path}"


@app.command()
def train(params_path: ParamsPath = Path("params.yaml"), model: ModelOption = None, seed: SeedOption = None) -> None:
    """Train every (model, seed) cell whose checkpoint is missing or stale, in one process (what `dvc repro` runs).

    A cell trained from exactly the data, model and recipe params.yaml now gives is kept; cells params.yaml no
    longer lists are removed. --model and --seed pick cells and train them again, current or not.
    """
    _stage(lambda params: _train(params, model, seed), params_path)


def _train(params: Params, model: Optional[str], seed: Optional[int]) -> None:
    from pipeline.train import is_current, prune

    _each_cell(params, model, seed, "train", is_current, _train_cell, prune)


def _each_cell(params: Params, model: Optional[str], seed: Optional[int], stage: str,
               is_current: Callable[[Params, str, int, PreparedData], bool],
               compute: Callable[[Params, str, int, PreparedData], str], prune: Callable[[list], list[Path]]) -> None:
    """Compute the selected cells; without --model/--seed, keep the current ones and remove cells no longer listed."""
    from pipeline.data import load_prepared

    picked = model is not None or seed is not None
    cells = _cells(params, model, seed)
    prepared = load_prepared(paths.prepared_tensors(params.data.name), paths.prepared_manifest(params.data.name))
    for model_name, cell_seed in cells:
        if not picked and is_current(params, model_name, cell_seed, prepared):
            typer.echo(f"{stage}: {paths.cell(model_name, cell_seed)} is current (same inputs and code): kept")
            continue
        typer.echo(compute(params, model_name, cell_seed, prepared))
    if not picked:
        for path in prune(cells):
            typer.echo(f"{stage}: removed {path} (its cell is no longer in models x train.seeds)")


def _train_cell(params: Params, model_name: str, cell_seed: int, prepared: PreparedData) -> str:
    from pipeline.train import train_cell

    with _cell_lock(model_name, cell_seed):
        result = train_cell(
            params, model_name, cell_seed, prepared,
            paths.checkpoint(model_name, cell_seed), paths.curves(model_name, cell_seed),
        )
    return (
        f"train: {paths.cell(model_name, cell_seed)} val_accuracy {result.history[-1].val_accuracy:.4f} "
        f"({result.train_images_per_second:,.0f} img/s) -> {result.checkpoint}"
    )


@contextmanager
def _cell_lock(model_name: str, cell_seed: int) -> Iterator[None]:
    """Only one process trains a cell at a time: a second one would share its resume state and MLflow run."""
    from pipeline import atomic

    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the cell (it alone writes and logs)
        yield
        return
    checkpoint = paths.checkpoint(model_name, cell_seed)
    lock = checkpoint.with_suffix(".lock")
    try:
        with atomic.exclusive(lock):
            yield
    except atomic.Busy as busy:
        cell = paths.cell(model_name, cell_seed)
        raise ConvbenchError(
            f"{checkpoint}: cell {cell} is being trained by another process ({busy.holder or 'lock ' + str(lock)}); "
            f"wait for it to finish (or stop it), then run `convbench train --model {model_name} --seed {cell_seed}` "
            f"again if still needed"
        ) from None


@app.command()
def evaluate(params_path: ParamsPath = Path("params.yaml"), model: ModelOption = None, seed: SeedOption = None) -> None:
    """Score every trained cell whose metrics are missing or stale on the test split; writes metrics/cells/<cell>.json.

    Metrics computed from the cell's current checkpoint with the current evaluate settings are kept; cells
    params.yaml no longer lists are removed. --model and --seed pick cells and score them again.
    """
    _stage(lambda params: _evaluate(params, model, seed), params_path)


def _evaluate(params: Params, model: Optional[str], seed: Optional[int]) -> None:
    from pipeline.evaluate import is_current, prune

    _each_cell(params, model, seed, "evaluate", is_current, _evaluate_cell, prune)


def _evaluate_cell(params: Params, model_name: str, cell_seed: int, prepared: PreparedData) -> str:
    from pipeline.evaluate import evaluate_cell

    metrics = evaluate_cell(params, model_name, cell_seed, prepared, paths.checkpoint(model_name, cell_seed),
                            paths.metrics(model_name, cell_seed)).metrics
    return (f"evaluate: {paths.cell(model_name, cell_seed)} test_accuracy {metrics['test_accuracy']:.4f} "
            f"params {metrics['params']:,} forward {metrics['flops_forward_per_image'] / 1e6:.2f} MFLOP/image")


@app.command(name="bench")
def bench_command(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Time every model side by side, round by round (needs trained checkpoints); writes metrics/bench.json."""
    _stage(_bench, params_path)


def _bench(params: Params) -> None:
    from pipeline.data import load_prepared
    from pipeline.timing import bench

    name = params.data.name
    prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))
    result = bench(params, prepared, paths.bench())
    largest = f"inference_batch_{max(params.evaluate.throughput_batch_sizes)}"
    speeds = ", ".join(f"{model} {figures['images_per_second']:,.0f} img/s"
                       for model, figures in result["cases"][largest]["models"].items())
    typer.echo(f"bench: {largest}: {speeds} -> {paths.bench()}")
    if result["noisy"]:
        typer.echo(f"convbench: warning: noisy timing ({', '.join(result['noisy'])}): other work competed for the "
                   f"cores; {result['fix']}", err=True)


ProbeChoice = Enum("ProbeChoice", {name: name for name in get_args(ProbeName)}, type=str)  # type: ignore[misc]


class Backend(str, Enum):
    """Where a grid sweep runs."""

    dvc = "dvc"
    ray = "ray"


@app.command()
def sweep(
    probe: Annotated[Optional[ProbeChoice], typer.Option("--probe", help="Run one retraining probe in this process.")] = None,
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", "-S", help="Grid axis KEY=V1,V2 (repeatable; values are YAML), e.g. -S train.lr=0.001,0.003.")] = None,
    grid: Annotated[Optional[Path], typer.Option(help="YAML grid: dotted keys mapped to lists of values.", dir_okay=False)] = None,
    backend: Annotated[Backend, typer.Option(help="dvc: DVC's experiment queue here; ray: a Ray cluster.")] = Backend.dvc,
    jobs: Annotated[int, typer.Option(min=1, help="dvc backend: queue workers running at once.")] = 1,
    ray_address: Annotated[Optional[str], typer.Option(help="ray backend: cluster address (default $RAY_ADDRESS).")] = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.0, help="ray backend: CPUs each trial reserves.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0.0, help="ray backend: GPUs each trial reserves.")] = 0.0,
    name: Annotated[Optional[str], typer.Option(help="Sweep name, the prefix of every cell (default: sweep-<time>).")] = None,
    params_path: ParamsPath = Path("params.yaml"),
) -> None:
    """Run a grid of params (-S/--grid) on DVC's queue or Ray, one full pipeline per cell; or one --probe.

    Every cell logs to the tracking server tagged sweep=<name> and sweep_cell=<name>-<i>. Failed cells
    are listed at the end (exit 1); the others run to completion.
    """
    if probe is not None:
        if settings or grid:
            with _user_errors():
                raise ParamsError("sweep: --probe runs one probe; do not combine it with -S or --grid")
        return _probe_sweep(probe, params_path)
    with _user_errors():
        outcomes = _grid_sweep(settings or [], grid, backend, jobs, ray_address, cpus_per_trial, gpus_per_trial,
                               name, params_path)
    failed = [outcome for outcome in outcomes if outcome.status != "success"]
    for outcome in outcomes:
        scores = " ".join(f"{cell} {value:.4f}" for cell, value in sorted(outcome.accuracy.items()))
        typer.echo(f"sweep: {outcome.cell} [{outcome.settings}] {outcome.status}: {scores or outcome.detail}")
    if failed:
        typer.echo(f"convbench: error: {len(failed)} of {len(outcomes)} sweep cells failed: "
                   f"{', '.join(outcome.cell for outcome in failed)}", err=True)
        raise typer.Exit(1)


def _grid_sweep(settings: list[str], grid: Optional[Path], backend: Backend, jobs: int, ray_address: Optional[str],
                cpus_per_trial: float, gpus_per_trial: float, name: Optional[str], params_path: Path) -> list[CellOutcome]:
    """Validate params and every grid cell, then hand the cells to the chosen backend."""
    import time

    import yaml

    from pipeline import grid as grids
    from pipeline import sweep as sweeps
    from pipeline.cluster import is_local_address
    from pipeline.tracking import check_reachable, redact, tracking_uri

    params = load_params(params_path)
    sweep_name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,62}", sweep_name):
        raise ParamsError(f"--name '{sweep_name}': use a letter, then letters, digits, '-' or '_' (it names DVC experiments)")
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    cells = grids.expand(raw, grids.combine_axes(grid, settings), sweep_name, str(params_path))
    project = Path(params_path).resolve().parent
    uri = tracking_uri(params.tracking, project)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        uri = f"sqlite:///{(project / uri.removeprefix('sqlite:///')).resolve()}"
    check_reachable(uri)  # before any cell starts, not once per failed cell
    typer.echo(f"sweep: {sweep_name}: {len(cells)} cell(s) on {backend.value}, tracking to {redact(uri)}")
    if backend is Backend.dvc:
        return sweeps.run_on_dvc_queue(cells, project, jobs, uri, typer.echo)
    if not uri.startswith(("http://", "https://")) and not is_local_address(ray_address):
        typer.echo(f"convbench: warning: trials on other Ray nodes cannot reach {redact(uri)}; for a cluster, "
                   "point MLFLOW_TRACKING_URI at a tracking server (`make server`)", err=True)
    cells = [sweeps.trial_params(cell, project) for cell in cells]
    return sweeps.run_on_ray(cells, project, ray_address, cpus_per_trial, gpus_per_trial, typer.echo, uri)


def _probe_sweep(probe: ProbeChoice, params_path: Path) -> None:
    """Retrain every model at every setting of one probe; writes metrics/probes/<probe>.json."""
    _stage(lambda params: _probe(params, probe.value), params_path)


def _probe(params: Params, probe: str) -> None:
    from pipeline.data import load_prepared
    from pipeline.probes import run_probe

    name = params.data.name
    prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))

    def show(row: dict) -> None:
        typer.echo(f"sweep: {row['probe']}={row['setting']} {row['model']}-s{row['seed']} "
                   f"test_accuracy {row['test_accuracy']:.4f}")

    run_probe(params, probe, prepared, paths.probe(probe), show)
    typer.echo(f"sweep: {paths.probe(probe)}")


@app.command()
def report(params_path: ParamsPath = Path("params.yaml")) -> None:
    """Compare the models over seeds: reports/comparison.{md,html}, figures, and an MLflow comparison run."""
    _stage(_report, params_path)


def _report(params: Params) -> None:
    from pipeline.report import report as run_report

    result = run_report(params, paths.report_markdown(), paths.figures_dir(), paths.report_html())
    typer.echo(f"report: {result.markdown} and {paths.report_html()}")


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

    _stage(run, params_path)


@app.command()
def ui(
    params_path: ParamsPath = Path("params.yaml"),
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (MLflow's default is 4).")] = 4,
) -> None:
    """Open the MLflow UI on the store convbench logs to (tracking.uri, $MLFLOW_TRACKING_URI or mlflow.db)."""

    def run(params: Params) -> None:
        from pipeline.tracking import check_reachable, training_runs_url, tracking_uri

        uri = tracking_uri(params.tracking)
        if uri.startswith(("http://", "https://")):
            public = re.sub(r"//[^/@]*@", "//", uri)
            raise ConvbenchError(f"runs go to the tracking server '{redact(uri)}', which serves its own UI: open {public} "
                                 f"in a browser (`convbench ui` serves local stores such as sqlite:///mlflow.db)")
        check_reachable(uri)  # rejects a SQLite URI without a file
        page = training_runs_url(params.tracking, params.data.name, f"http://{host}:{port}")
        typer.echo(f"ui: serving {redact(uri)}; the training runs of {params.data.name} are at {page}", err=True)
        # The store URI travels in the environment, not argv: `ps` shows argv (and any password in it) to every user.
        os.environ["MLFLOW_BACKEND_STORE_URI"] = uri
        os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port),
                                  "--workers", str(workers)])

    _stage(run, params_path)


def main() -> None:
    """Entry point for `python -m pipeline`."""
    app(prog_name="convbench")
