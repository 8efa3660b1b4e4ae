"""Layers torch lacks that the built-in models use: a locally connected layer and a residual wrapper."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.errors import ParamsError


class LocallyConnected(nn.Module):
    """A convolution without weight sharing: a separate filter (and bias) at every output position.

    torch has no such layer; sliding-window views of the padded input gather each position's receptive field
    and one batched matmul over positions applies that position's own filter, so the geometry (kernel, padding,
    output size) is exactly a conv's. Patches are laid out (positions, N, fan_in) and the output is stored
    (N, *out_size, out_channels) in memory (channels_last): with unit inner strides forward and backward bmm take the
    batched-gemm kernel instead of a per-position loop (2-3x faster on CPU than an einsum over unfold's columns).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, padding: int, spatial: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.padding = in_channels, out_channels, kernel, padding
        self.out_size = tuple(s + 2 * padding - kernel + 1 for s in spatial)
        if min(self.out_size) < 1:
            raise ParamsError(
                f"a locally connected layer with kernel {kernel} does not fit inputs of size {list(spatial)}"
            )
        fan_in = in_channels * kernel ** len(spatial)
        positions = math.prod(self.out_size)
        bound = 1 / math.sqrt(fan_in)  # nn.Conv's default initialisation, per position
        self.weight = nn.Parameter(torch.empty(positions, out_channels, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, positions).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, out_channels, *out_size); 1-D inputs (N, C, L) work the same way."""
        dims = x.dim() - 2
        patches = nn.functional.pad(x, [self.padding] * 2 * dims)
        for dim in range(2, 2 + dims):
            patches = patches.unfold(dim, self.kernel, 1)  # (N, C, *out_size, *[kernel] * dims), a view
        order = (*range(2, 2 + dims), 0, 1, *range(2 + dims, 2 + 2 * dims))
        positions, _, fan_in = self.weight.shape
        columns = patches.permute(order).reshape(positions, x.shape[0], fan_in)  # fan_in ordered (C, *kernel)
        out = torch.baddbmm(self.bias.t().unsqueeze(1), columns, self.weight.transpose(1, 2))  # (positions, N, out)
        return out.transpose(0, 1).contiguous().transpose(1, 2).unflatten(2, self.out_size)


class Residual(nn.Module):
    """x + layer(x)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The identity plus the wrapped layer."""
        return x + self.layer(x)
