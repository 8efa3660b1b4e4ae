"""Layers torch lacks that the built-in models use: a locally connected layer and a residual wrapper."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.errors import ParamsError


class LocallyConnected(nn.Module):
    """A convolution without weight sharing: a separate filter (and bias) at every output position.

    torch has no such layer; `unfold` gathers each position's receptive field and one einsum applies
    that position's own filter, so the geometry (kernel, padding, output size) is exactly a conv's.
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
        """(N, C, *spatial) -> (N, out_channels, *out_size)."""
        one_d = x.dim() == 3
        images = x.unsqueeze(2) if one_d else x
        kernel = (1, self.kernel) if one_d else (self.kernel, self.kernel)
        padding = (0, self.padding) if one_d else (self.padding, self.padding)
        columns = nn.functional.unfold(images, kernel, padding=padding)  # (N, C*k^d, positions)
        out = torch.einsum("ncp,poc->nop", columns, self.weight) + self.bias
        return out.reshape(x.shape[0], self.out_channels, *self.out_size)


class Residual(nn.Module):
    """x + layer(x)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The identity plus the wrapped layer."""
        return x + self.layer(x)
