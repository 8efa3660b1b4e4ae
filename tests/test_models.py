"""Model registry: the textbook CNN, the matched MLP, and every input shape in the catalog."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline import models
from pipeline.errors import ParamsError
from pipeline.params import ModelParams, validate_params
from tests.helpers import params_with


def model_params(**overrides: object) -> ModelParams:
    return validate_params(params_with(overrides)).model


def test_registry_covers_every_model_section() -> None:
    assert set(models.REGISTRY) == set(ModelParams.model_fields) == {"cnn", "mlp"}


def test_default_cnn_is_the_textbook_model() -> None:
    config = models.resolve(model_params(), (1, 28, 28), 10)["cnn"]
    cnn = models.build(config)
    kinds = [type(layer) for layer in cnn]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    conv, dense, head = cnn[0], cnn[4], cnn[6]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1, 32, (3, 3), (0, 0))
    assert cnn[1].kernel_size == 2
    # 28 -> conv 3x3 valid -> 26 -> pool 2 -> 13, so Dense(128) sees 32 * 13 * 13 inputs.
    assert (dense.in_features, dense.out_features, head.out_features) == (32 * 13 * 13, 128, 10)
    by_hand = (32 * 1 * 3 * 3 + 32) + (32 * 13 * 13 * 128 + 128) + (128 * 10 + 10)
    assert models.count_params(cnn) == by_hand == 693_962
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 40)])
def test_mlp_matches_cnn_parameters_within_one_percent(shape: tuple[int, ...]) -> None:
    configs = models.resolve(model_params(), shape, 10)
    cnn, mlp = (models.build(configs[name]) for name in ("cnn", "mlp"))
    cnn_params, mlp_params = models.count_params(cnn), models.count_params(mlp)
    assert abs(mlp_params - cnn_params) / cnn_params <= 0.01
    x = torch.zeros((3, *shape))
    assert cnn(x).shape == mlp(x).shape == (3, 10)


def test_default_mlp_width_is_solved_exactly() -> None:
    mlp = models.resolve(model_params(), (1, 28, 28), 10)["mlp"]
    # 784*h + h + 10*h + 10 = 795h + 10 closest to 693,962 -> h = 873 (694,045 params, +0.012%).
    assert mlp["hidden"] == [873]
    assert models.count_params(models.build(mlp)) == 795 * 873 + 10


def test_deeper_mlp_is_matched_too() -> None:
    configs = models.resolve(model_params(**{"model.mlp.depth": 2}), (1, 28, 28), 10)
    cnn_params = models.count_params(models.build(configs["cnn"]))
    mlp_params = models.count_params(models.build(configs["mlp"]))
    assert len(configs["mlp"]["hidden"]) == 2
    assert abs(mlp_params - cnn_params) / cnn_params <= 0.01


def test_match_none_uses_fixed_width() -> None:
    configs = models.resolve(model_params(**{"model.mlp.match": "none", "model.mlp.width": 64}), (1, 28, 28), 10)
    assert configs["mlp"]["hidden"] == [64]


def test_image_smaller_than_receptive_field_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match=r"model.cnn.conv.0: input of size 2x2 is too small"):
        models.resolve(model_params(), (1, 2, 2), 10)


def test_impossible_match_is_a_params_error() -> None:
    tiny_cnn = {"model.cnn.conv": [{"channels": 1, "kernel": 3, "padding": 0, "pool": 2}], "model.cnn.hidden": []}
    with pytest.raises(ParamsError, match=r"model.mlp: cannot match the CNN's .* parameters within 1.0%"):
        models.resolve(model_params(**tiny_cnn), (1, 28, 28), 10)


def test_built_from_config_round_trips_weights() -> None:
    config = models.resolve(model_params(), (3, 32, 32), 10)["cnn"]
    torch.manual_seed(0)
    first = models.build(config)
    second = models.build(config)
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(first(x), second(x))


def test_pool_before_relu_equals_the_textbook_order_in_outputs_and_gradients() -> None:
    config = models.resolve(model_params(), (1, 28, 28), 10)["cnn"]
    torch.manual_seed(0)
    fast = models.build(config)
    textbook = nn.Sequential(fast[0], nn.ReLU(), nn.MaxPool2d(2), *list(fast)[3:])
    x = torch.randn(16, 1, 28, 28)
    grads = []
    for model in (fast, textbook):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert torch.equal(out, textbook(x))
    assert all(torch.equal(a, b) for a, b in zip(*grads))
