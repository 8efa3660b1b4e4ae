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


def _einsum_reference(layer: LocallyConnected, x: torch.Tensor) -> torch.Tensor:
    """The layer's first formulation: unfold's (N, C*k^d, positions) columns and one einsum."""
    one_d = x.dim() == 3
    images = x.unsqueeze(2) if one_d else x
    kernel = (1, layer.kernel) if one_d else (layer.kernel, layer.kernel)
    padding = (0, layer.padding) if one_d else (layer.padding, layer.padding)
    columns = torch.nn.functional.unfold(images, kernel, padding=padding)
    out = torch.einsum("ncp,poc->nop", columns, layer.weight) + layer.bias
    return out.reshape(x.shape[0], layer.out_channels, *layer.out_size)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel", "padding", "spatial"),
    [(3, 5, 3, 1, (7, 6)), (2, 4, 5, 2, (12,)), (1, 32, 3, 0, (10, 10))],
    ids=["2d-padded", "1d-padded", "2d-cnn-block"],
)
def test_locally_connected_matches_the_einsum_formulation_and_its_gradients(
    in_channels: int, out_channels: int, kernel: int, padding: int, spatial: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    layer = LocallyConnected(in_channels, out_channels, kernel, padding, spatial).double()
    with torch.no_grad():
        layer.bias.normal_()  # a per-position bias that tells positions apart
    x = torch.randn(4, in_channels, *spatial, dtype=torch.float64, requires_grad=True)
    out, expected = layer(x), _einsum_reference(layer, x)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn_like(expected)
    inputs = (x, layer.weight, layer.bias)
    grads = torch.autograd.grad(out, inputs, upstream)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    for name, grad, want in zip(("input", "weight", "bias"), grads, expected_grads):
        torch.testing.assert_close(grad, want, msg=lambda m, name=name: f"grad w.r.t. {name}: {m}")


def test_a_kernel_larger_than_the_input_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match=r"kernel 7 does not fit inputs of size \[5, 5\]"):
        LocallyConnected(1, 1, kernel=7, padding=0, spatial=(5, 5))


def test_residual_adds_its_input() -> None:
    inner = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(Residual(inner)(x), x + inner(x))
