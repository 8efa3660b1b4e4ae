"""A user's own data as users keep it: image folders in torchvision's ImageFolder layout and .npz arrays.

Each class is a spatial pattern (a bar at a class-specific angle, drawn at a random place, in a class tint,
over noise), so a model has something to learn from where pixels are, not only from their colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pattern_images(
    classes: int, per_class: int, size: int, channels: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, C) uint8 images and their int64 labels, class by class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images, labels = [], []
    for label in range(classes):
        angle = np.pi * label / classes
        tint = np.array([0.4 + 0.6 * ((label + k) % 3 == 0) for k in range(3)])[:channels]
        for _ in range(per_class):
            cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
            distance = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
            bar = (distance < max(1.0, size / 10)) & (np.hypot(xx - cx, yy - cy) < size / 3)
            picture = rng.uniform(0, 60, (size, size, 1)) + 190 * bar[..., None] * (tint if channels == 3 else [1.0])
            images.append(np.clip(picture, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def write_image_folder(
    root: Path,
    names: list[str],
    per_class: int,
    size: int,
    channels: int = 3,
    splits: dict[str, int] | None = None,
    suffix: str = ".png",
    seed: int = 0,
) -> Path:
    """`root/<class>/<i>.png`, or with `splits` ({'train': n, 'val': n, 'test': n} images per class)
    `root/<split>/<class>/<i>.png`; a .DS_Store and Thumbs.db beside them, as file managers leave."""
    from PIL import Image

    layout = splits or {"": per_class}
    for offset, (split, count) in enumerate(layout.items()):
        images, labels = pattern_images(len(names), count, size, channels, seed + offset)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if channels == 1 else image).save(folder / f"{index:05d}{suffix}")
    (root / ".DS_Store").write_bytes(b"\0Bud1")
    (root / (next(iter(layout)) or ".") / names[0] / "Thumbs.db").write_bytes(b"\xd0\xcf")
    return root
