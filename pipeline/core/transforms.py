"""What the probes do to images: shift them, shuffle their pixels, or keep a stratified share of them."""

from __future__ import annotations

import numpy as np
import torch


def shift(images: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """Move (N, C, *spatial) images by `offsets` pixels per spatial axis, filling with zeros (no wrap-around)."""
    shifted = torch.zeros_like(images)
    source: list[slice] = [slice(None), slice(None)]
    target: list[slice] = [slice(None), slice(None)]
    for offset, size in zip(offsets, images.shape[2:]):
        if abs(offset) >= size:
            return shifted
        source.append(slice(max(0, -offset), size - max(0, offset)))
        target.append(slice(max(0, offset), size - max(0, -offset)))
    shifted[tuple(target)] = images[tuple(source)]
    return shifted


def shift_directions(pixels: int, spatial_dims: int) -> list[tuple[int, ...]]:
    """The 2 (1-D) or 4 (2-D) axis-aligned moves by `pixels`; the probe averages accuracy over them."""
    if pixels == 0:
        return [(0,) * spatial_dims]
    moves = []
    for axis in range(spatial_dims):
        for sign in (1, -1):
            offset = [0] * spatial_dims
            offset[axis] = sign * pixels
            moves.append(tuple(offset))
    return moves


def permutation(spatial_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One fixed shuffle of the spatial positions, the same for every image and channel."""
    size = int(np.prod(spatial_shape))
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def permute_pixels(images: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply a spatial permutation to (N, C, *spatial) images (`order.argsort()` undoes it)."""
    flat = images.reshape(images.shape[0], images.shape[1], -1)
    return flat[:, :, order.to(images.device)].reshape(images.shape)


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a `fraction` of the rows, drawn per class so every class keeps its share (at least one)."""
    if fraction >= 1.0:
        return torch.arange(len(labels))
    rng = np.random.default_rng(seed)
    values = labels.cpu().numpy()
    chosen = [
        rng.permutation(np.flatnonzero(values == c))[: max(1, round(fraction * int((values == c).sum())))]
        for c in np.unique(values)
    ]
    return torch.as_tensor(np.sort(np.concatenate(chosen)))
