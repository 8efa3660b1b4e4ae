"""The architecture section's layer rows, read off the built module (reporting/architecture.py)."""

from __future__ import annotations

from pipeline.core import models
from pipeline.params import validate_params
from pipeline.reporting.architecture import LayerRow, describe, flow_labels
from tests.helpers import params_with


def test_describe_reads_the_layers_off_the_built_module() -> None:
    configs = models.resolve(validate_params(params_with({"models": ["lcn", "cnn"]})), (1, 28, 28), 10)
    rows = describe(configs["lcn"])
    assert rows[0] == LayerRow("Input", "1x28x28", 0)
    assert rows[1] == LayerRow("LocallyConnected(1->32, k3, padding 0)", "32x26x26", 216_320)
    assert sum(row.params for row in rows) == 909_962 == models.count_params(models.build(configs["lcn"]))
    assert flow_labels(rows)[1] == "LocallyConnected(1->32, k3, padding 0) -> 32x26x26"
    assert flow_labels(rows)[-1] == "Output (softmax)"
