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


def test_the_newer_models_are_described_by_what_they_do_and_every_parameter_is_in_a_row() -> None:
    params = validate_params(
        params_with({"models": ["cnn", "resnet", "mixer", "vit", "gru"], "model.vit": {"pool": "cls"}})
    )
    configs = models.resolve(params, (1, 28, 28), 10)
    names = {}
    for name, config in configs.items():
        rows = describe(config)
        assert sum(row.params for row in rows) == models.count_params(models.build(config)), name
        names[name] = [row.layer for row in rows[1:]]
    assert names["vit"][:2] == [
        "Patches(7x7 -> 119, 16 tokens, position embedding and class token)",
        "4 x EncoderBlock(attention 4 heads x 30, MLP 473)",
    ]
    assert names["mixer"][1] == "4 x MixerBlock(token MLP 72, channel MLP 580)"
    assert "BasicBlock(16->32, stride 2)" in names["resnet"]
    assert names["gru"] == ["bidirectional GRU(28->6)", "Linear(336->10)"]  # an image read row by row
