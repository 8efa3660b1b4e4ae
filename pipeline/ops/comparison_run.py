"""The comparison's MLflow run as a reader meets it: the params that define the comparison, the report's verdict as
its Description, its figures rounded, and the link that opens it on MLflow's model-training pages.

The report stage opens the run and logs the report files into it; this module says what else the run carries,
as plain values handed to a RunLogger, and where convbench points the user to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import without_credentials
from pipeline.ops import tracking
from pipeline.params import Params
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.tuning import verdict_source
from pipeline.reporting.verdict import verdict

# Where `convbench ui` (and `make ui`) serve a local store unless told otherwise: its default --host and --port.
UI_ADDRESS = "http://127.0.0.1:5000"


def record(logger: tracking.RunLogger, inputs: ReportInputs, metrics: Mapping[str, float]) -> None:
    """The comparison run's params, its Description (the verdict) and `metrics` rounded for reading."""
    logger.log_params(comparison_params(inputs))
    logger.describe(description(inputs))
    logger.log_metrics({key: tracking.rounded(value) for key, value in metrics.items()})


def comparison_params(inputs: ReportInputs) -> dict[str, Any]:
    """What defines the comparison, resolved (the reference when params.yaml leaves it null, data.name's overrides
    applied), nested as the cell runs' params are: models, reference, seeds, data and its sha256, the shared recipe,
    each model's architecture (and its tuned recipe when tuning is on), tuning, evaluation, probes and report settings.
    """
    params, comparison = inputs.params, inputs.comparison
    values: dict[str, Any] = {
        "models": list(comparison.models),
        "reference": comparison.reference,
        "seeds": inputs.seeds,
        "data": {**params.data.model_dump(mode="json"), "sha256": inputs.prepared.sha256},
        "train": params.train.recipe(),
        "architecture": {model: config.to_dict() for model, config in inputs.configs.items()},
        "tune": {"trials": params.tune.trials},
        "evaluate": params.evaluate.model_dump(mode="json"),
        "probes": {"run": list(params.probes.run)},
        "report": params.report.model_dump(mode="json"),
    }
    if params.tune.trials > 0:  # each model trained with its own recipe, the best of this search; else with `train`
        values["tune"] = params.tune.model_dump(mode="json")
        values["recipe"] = {model: train.recipe() for model, train in inputs.trains.items()}
    return values


def description(inputs: ReportInputs) -> str:
    """The report's verdict, generated from the numbers, and which recipe they come from (Markdown)."""
    return "\n\n".join([*verdict(inputs.comparison), verdict_source(inputs.params)])


def link_words(params: Params) -> str:
    """'; MLflow run: <link>' for the end of the report's line, or '' when no finished comparison run is found.

    The link opens the run on the training pages: on the tracking server's own UI for an HTTP store, else
    where `convbench ui` serves the local store by default.
    """
    uri = tracking.tracking_uri(params.tracking)
    server = uri.startswith(("http://", "https://"))
    address = without_credentials(uri) if server else UI_ADDRESS
    url = tracking.comparison_run_url(params.tracking, params.data.name, address)
    if url is None:
        return ""
    return f"; MLflow run: {url}" if server else f"; MLflow run: {url} (while `convbench ui` runs)"
