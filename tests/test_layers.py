"""The layers torch lacks: a locally connected layer (per-position filters) and a residual wrapper."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.layers import LocallyConnected, Residual
from pipeline.errors import ParamsError


def test_locally_connected_has_a_filter_per_position_and_a_conv_geometry() -> None:
    layer = LocallyConnected(2, 3, kernel=3, padding=1, spatial=(5, 4))
    assert layer.out_size == (5, 4) and layer(torch.randn(7, 2, 5, 4)).shape == (7, 3, 5, 4)
    assert layer.weight.shape == (20, 3, 2 * 9) and layer.bias.shape == (3, 20)
    assert LocallyConnected(1, 4, kernel=5, padding=0, spatial=(12,))(torch.randn(2, 1, 12)).shape == (2, 4, 8)


def test_each_position_sees_only_its_own_filter() -> None:
    layer = LocallyConnected(1, 1, kernel=3, padding=0, spatial=(6, 6))
    x = torch.randn(1, 1, 6, 6)
    before = layer(x).detach().clone()
    with torch.no_grad():
        layer.weight[0].add_(1.0)  # position (0, 0) only
    changed = (layer(x).detach() != before).flatten()
    assert changed[0] and not changed[1:].any()


def test_a_kernel_larger_than_the_input_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match=r"kernel 7 does not fit inputs of size \[5, 5\]"):
        LocallyConnected(1, 1, kernel=7, padding=0, spatial=(5, 5))


def test_residual_adds_its_input() -> None:
    inner = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(Residual(inner)(x), x + inner(x))
