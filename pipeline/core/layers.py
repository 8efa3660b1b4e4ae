"""Layers torch lacks that the built-in models use: a locally connected layer, residual wrappers, patch tokens,
transformer and mixer blocks, and a recurrent classifier."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
MONOTONE = frozenset({"relu", "leaky_relu", "elu", "softplus", "tanh", "sigmoid"})  # commute with max-pooling


def activation(name: str) -> nn.Module:
    """The activation module a model's `activation` setting names."""
    return ACTIVATIONS[name]()


class Patches(nn.Module):
    """Non-overlapping patches of a 1-D or 2-D input as tokens: one strided conv (a shared linear map per patch),
    plus a learned position embedding, and a learned class token first when `cls`. A border that does not fill a
    whole patch is left out, as in a strided conv."""

    def __init__(self, in_channels: int, width: int, patch: int, spatial: tuple[int, ...], cls: bool = False) -> None:
        super().__init__()
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        self.embed = conv(in_channels, width, patch, stride=patch)
        self.tokens = math.prod(s // patch for s in spatial)
        if self.tokens < 1:
            raise ParamsError(f"a patch of {patch} does not fit inputs of size {list(spatial)}; use a smaller patch")
        self.position = nn.Parameter(torch.zeros(1, self.tokens, width).normal_(std=0.02))
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if cls else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, tokens, width), the class token first when there is one."""
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        if self.cls is None:
            return tokens
        return torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention on the fused kernel (torch.nn.functional.scaled_dot_product_attention)."""

    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, width) -> (N, T, width): every token attends to every token."""
        n, t, _ = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mixed = nn.functional.scaled_dot_product_attention(q, k, v)  # (N, heads, T, head_dim)
        return self.out(mixed.transpose(1, 2).reshape(n, t, self.heads * self.head_dim))


def feed_forward(width: int, hidden: int, act: str) -> nn.Sequential:
    """Linear -> activation -> Linear: the per-token MLP of transformer and mixer blocks."""
    return nn.Sequential(nn.Linear(width, hidden), activation(act), nn.Linear(hidden, width))


class EncoderBlock(nn.Module):
    """A pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, head_dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), Attention(width, heads, head_dim)
        self.norm2, self.mlp = nn.LayerNorm(width), feed_forward(width, hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, width) -> (N, T, width)."""
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MixerBlock(nn.Module):
    """An MLP-Mixer block: an MLP across tokens (the same for every channel), then one across channels (the same
    for every token), each pre-norm and residual. Mixing is global and learned, but not input-dependent."""

    def __init__(self, tokens: int, width: int, token_hidden: int, channel_hidden: int, act: str) -> None:
        super().__init__()
        self.norm1, self.tokens = nn.LayerNorm(width), feed_forward(tokens, token_hidden, act)
        self.norm2, self.channels = nn.LayerNorm(width), feed_forward(width, channel_hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, width) -> (N, T, width)."""
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class TokenClassifier(nn.Module):
    """Tokens -> blocks -> LayerNorm -> pooled (the class token when the patches have one, else the mean) -> class
    layer: the ViT and Mixer body."""

    def __init__(self, patches: Patches, blocks: Sequence[nn.Module], width: int, num_classes: int) -> None:
        super().__init__()
        self.patches, self.blocks = patches, nn.Sequential(*blocks)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, classes)."""
        tokens = self.norm(self.blocks(self.patches(x)))
        return self.head(tokens[:, 0] if self.patches.cls is not None else tokens.mean(dim=1))


class BasicBlock(nn.Module):
    """A ResNet basic block: act(x' + BN(conv(act(BN(conv(x)))))), x' the input or its strided 1x1 projection."""

    def __init__(self, in_channels: int, channels: int, stride: int, dims: int, act: str) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.body = nn.Sequential(
            conv(in_channels, channels, 3, stride=stride, padding=1),
            norm(channels),
            activation(act),
            conv(channels, channels, 3, padding=1),
            norm(channels),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and in_channels == channels
            else nn.Sequential(conv(in_channels, channels, 1, stride=stride), norm(channels))
        )
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, channels, *spatial / stride)."""
        return self.act(self.skip(x) + self.body(x))


class RecurrentClassifier(nn.Module):
    """A GRU over the input's first spatial axis (a 1-D signal's samples, an image's rows), every step's output
    flattened into the class layer (greydanus/mnist1d's GRUBase reads all 40 steps, not the last state)."""

    def __init__(self, features: int, steps: int, hidden: int, bidirectional: bool, num_classes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(steps * hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, L) or (N, C, H, W) -> (N, classes): steps along L (or H), features C (or C x W) per step."""
        sequence = x.transpose(1, 2).flatten(2)  # (N, steps, features)
        output, _ = self.gru(sequence)
        return self.head(output.flatten(1))
