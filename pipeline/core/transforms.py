"""What the probes do to images: shift them, shuffle their pixels, keep a stratified share, or augment batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


def shift(images: torch.Tensor, offsets: tuple[int, ...], fill: torch.Tensor | None = None) -> torch.Tensor:
    """Move (N, C, *spatial) images by `offsets` pixels per spatial axis (no wrap-around), filling with zeros or with
    `fill`, one value per channel."""
    if fill is None:
        shifted = torch.zeros_like(images)
    else:
        shifted = torch.empty_like(images)
        shifted.copy_(fill.view((1, -1) + (1,) * (images.dim() - 2)))
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


def shift_accuracies(
    score: Callable[[torch.Tensor], float],
    images: torch.Tensor,
    shifts: list[int],
    unmoved: float | None = None,
    fill: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy (as `score` gives it for test images) with the images moved by each k of `shifts` pixels, filled with
    `fill` (per channel; zeros when None), averaged over every axis-aligned direction: the translation probe of the
    evaluate stage and of the models the augment probe trains. `unmoved`, when the caller has scored the images as
    they are, is shift 0's."""
    spatial = images.dim() - 2
    return {
        str(k): unmoved
        if k == 0 and unmoved is not None
        else sum(score(shift(images, move, fill)) for move in shift_directions(k, spatial))
        / len(shift_directions(k, spatial))
        for k in shifts
    }


@dataclass(frozen=True)
class Augment:
    """Random translations by up to `max_shift` pixels per spatial axis and optional horizontal flips.

    It runs on whole training batches where they already are (on the device, after normalisation), drawing
    from the training run's own generator, so a cell's augmented batches are the same on every run.
    `fill` is what a zero pixel becomes once normalised, per channel: shifted-in pixels are zeros, as in
    the evaluate stage's translation probe.
    """

    max_shift: int
    flip: bool
    fill: tuple[float, ...]
    _fills: dict[tuple[torch.device, torch.dtype], torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )  # `fill` as a tensor where the batches are, made once: no host-to-device copy per training step

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch translated (each image by its own offsets) and, when asked, half of it mirrored."""
        if self.max_shift:
            key = (images.device, images.dtype)
            if key not in self._fills:
                self._fills[key] = torch.tensor(self.fill, dtype=images.dtype, device=images.device)
            images = translate(images, self.max_shift, self._fills[key], generator)
        if self.flip:
            mirror = torch.rand(len(images), generator=generator, device=images.device) < 0.5
            images = torch.where(mirror.view((-1,) + (1,) * (images.dim() - 1)), images.flip(-1), images)
        return images


def translate(images: torch.Tensor, max_shift: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Move every (N, C, *spatial) image by its own random offset in [-max_shift, max_shift] per axis.

    One pad and one gather per spatial axis for the whole batch (no per-image Python); shifted-in pixels take
    `fill` (one value per channel, on the images' device). Offsets are drawn axis by axis from `generator`, which must live on the images' device.
    """
    n, channels, *spatial = images.shape
    fill_value = fill.view((1, channels) + (1,) * len(spatial))
    moved = torch.nn.functional.pad(images - fill_value, [max_shift, max_shift] * len(spatial))
    for axis, size in enumerate(spatial):
        dim = 2 + axis
        offsets = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator, device=images.device)
        source = torch.arange(size, device=images.device) + max_shift - offsets[:, None]  # output i reads i - offset
        view = [n] + [1] * (moved.dim() - 1)
        view[dim] = size
        shape = list(moved.shape)
        shape[dim] = size
        moved = moved.gather(dim, source.view(view).expand(shape))
    return moved + fill_value
