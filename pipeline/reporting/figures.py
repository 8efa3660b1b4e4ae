"""Every matplotlib figure of the report and of the MLflow runs; each function draws one PNG atomically.

Functions take plain arrays and DataFrames, so they are easy to test and never read files themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.artifacts import atomic


def palette(names: Sequence[str]) -> dict[str, str]:
    """One distinct colour per model, in the order the report lists them, so every figure colours a model alike:
    tab10 up to ten models, tab20 up to twenty, then evenly spaced hues of a perceptual colormap."""
    unique = list(dict.fromkeys(names))
    if len(unique) <= 10:
        return {name: f"C{index}" for index, name in enumerate(unique)}
    if len(unique) <= 20:
        colors = [matplotlib.colormaps["tab20"](index) for index in range(len(unique))]
    else:
        colors = [matplotlib.colormaps["turbo"](0.05 + 0.9 * index / (len(unique) - 1)) for index in range(len(unique))]
    return {name: matplotlib.colors.to_hex(color) for name, color in zip(unique, colors)}


MARKERS = "os^Dv<>PX*"


def markers(names: Sequence[str]) -> dict[str, str]:
    """A marker per model: circles up to ten models; beyond, shapes cycle too, as neighbouring hues look alike."""
    unique = list(dict.fromkeys(names))
    if len(unique) <= 10:
        return {name: "o" for name in unique}
    return {name: MARKERS[index % len(MARKERS)] for index, name in enumerate(unique)}


DPI = 110


def save(figure: Figure, target: Path) -> Path:
    """Write `figure` as a PNG via a temporary file and close it.

    The layout runs once and the figure is drawn once: savefig draws a figure that has a layout engine twice, the
    first time with no output only to run the layout (about 15% of the drawing time). The bytes are savefig's.
    """
    figure.set_dpi(DPI)
    engine = figure.get_layout_engine()
    if engine is not None:
        engine.execute(figure)
        figure.set_layout_engine("none")
    atomic.write_with(target, figure.canvas.print_png)  # type: ignore[attr-defined]  # the Agg canvas has it
    plt.close(figure)
    return target


def learning_curves(curves: pd.DataFrame, target: Path) -> Path:
    """Train/val loss and accuracy per epoch for every model on shared axes: seeds faint, mean bold."""
    panels = (
        ("train_loss", "Training loss"),
        ("val_loss", "Validation loss"),
        ("train_accuracy", "Training accuracy"),
        ("val_accuracy", "Validation accuracy"),
    )
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, constrained_layout=True)
    colors = palette(list(curves["model"]))
    for axis, (column, title) in zip(axes.flat, panels):
        for model, frame in curves.groupby("model", sort=False):
            color, label = colors[str(model)], str(model)
            for _seed, run in frame.groupby("seed"):
                axis.plot(run["epoch"], run[column], color=color, alpha=0.25, linewidth=1)
            mean = frame.groupby("epoch")[column].mean()
            axis.plot(mean.index, mean.to_numpy(), color=color, linewidth=2.5, label=label)
        axis.set(title=title, xlabel="epoch")
        if column.endswith("loss"):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    return save(figure, target)


def accuracy_vs_cost(points: pd.DataFrame, target: Path) -> Path:
    """Test accuracy against parameters and against forward FLOPs; error bars are the CI over seeds.

    `points` has model, params, flops, accuracy, ci_low, ci_high (one row per model and size).
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = palette(list(points["model"]))
    for axis, column, title in ((axes[0], "params", "parameters"), (axes[1], "flops", "forward FLOPs per image")):
        for model, frame in points.dropna(subset=[column]).groupby("model", sort=False):
            frame = frame.sort_values(column)
            error = np.nan_to_num(
                np.vstack([frame["accuracy"] - frame["ci_low"], frame["ci_high"] - frame["accuracy"]])
            )
            axis.errorbar(
                frame[column],
                frame["accuracy"],
                yerr=error,
                marker=markers(list(points["model"]))[str(model)],
                capsize=4,
                color=colors[str(model)],
                label=str(model),
            )
        axis.set(xscale="log", xlabel=title, ylabel="test accuracy", title=f"Accuracy vs {title}")
        axis.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 10k, 1M: readable on a log axis
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlapped the majors
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    return save(figure, target)


def throughput_vs_batch(throughput: pd.DataFrame, target: Path) -> Path:
    """Inference images/s against batch size (log-log): median over timing rounds, band from min to max."""
    figure, axis = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    colors, shapes = palette(list(throughput["model"])), markers(list(throughput["model"]))
    for model, frame in throughput.groupby("model", sort=False):
        stats = frame.groupby("batch_size")["images_per_second"].agg(["median", "min", "max"])
        color = colors[str(model)]
        axis.plot(stats.index, stats["median"], marker=shapes[str(model)], color=color, label=str(model))
        axis.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2)
    axis.set(xscale="log", yscale="log", xlabel="batch size", ylabel="images / s", title="Inference throughput")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    return save(figure, target)


def confusion_matrices(matrices: dict[str, np.ndarray], classes: Sequence[str], target: Path) -> Path:
    """Row-normalised confusion matrices side by side, counts written in each cell for up to 12 classes."""
    figure, axes = plt.subplots(
        1, len(matrices), figsize=(5.5 * len(matrices), 5), constrained_layout=True, squeeze=False
    )
    for axis, (model, counts) in zip(axes[0], matrices.items()):
        rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if len(classes) <= 12:
            for (row, col), count in np.ndenumerate(counts):
                axis.text(
                    col,
                    row,
                    str(int(count)),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rates[row, col] > 0.5 else "black",
                )
        ticks = np.arange(len(classes))
        axis.set_xticks(ticks, classes, rotation=90 if max(map(len, classes)) > 2 else 0)
        axis.set_yticks(ticks, classes)
        axis.set(title=f"{model} (summed over seeds)", xlabel="predicted", ylabel="true")
    return save(figure, target)


def filters_and_feature_maps(weights: np.ndarray, image: np.ndarray, maps: np.ndarray, target: Path) -> Path:
    """The first conv layer's filters (one tile each, first input channel) and the maps they make of `image`.

    weights: (out, in, k, k); image: (C, H, W) as the model sees it; maps: (out, H', W') after conv and ReLU.
    Each side is one mosaic image (a tile per filter, the same grid position on both sides), which draws
    in a fraction of the time of one axes per tile.
    """
    count = weights.shape[0]
    columns = min(8, count)
    rows = -(-count // columns)
    map_tiles = [_strip(np.atleast_2d(channel)) for channel in maps]
    scale = max(1, map_tiles[0].shape[0] // max(1, np.atleast_2d(weights[0, 0]).shape[0]))
    filter_tiles = []
    for index in range(count):
        kernel = np.atleast_2d(weights[index, 0])  # 1-D kernels are drawn as one row
        limit = float(np.abs(kernel).max()) or 1.0
        filter_tiles.append(np.kron(_colored(kernel / limit / 2 + 0.5, "RdBu_r"), np.ones((scale, scale, 1))))
    maps_rgb = []
    for tile in map_tiles:
        low, high = float(tile.min()), float(tile.max())
        maps_rgb.append(_colored((tile - low) / (high - low or 1.0), "viridis"))
    figure, axes = plt.subplots(
        1,
        3,
        figsize=(2.4 * columns + 2.5, 1.2 * rows + 1.0),
        constrained_layout=True,
        gridspec_kw={"width_ratios": [0.5 * columns / max(rows, 1), columns, columns]},
    )
    panels = (
        (_as_image(image), "input", "gray"),
        (_mosaic(filter_tiles, columns), "filters", None),
        (_mosaic(maps_rgb, columns), "feature maps", None),
    )
    for axis, (picture, title, cmap) in zip(axes, panels):
        axis.imshow(picture, cmap=cmap)
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle(
        f"First-layer filters (red = positive weight) and the {count} feature maps they produce (same grid position)"
    )
    return save(figure, target)


def _colored(values: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] -> RGB through a matplotlib colormap."""
    return matplotlib.colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3]


def _strip(tile: np.ndarray) -> np.ndarray:
    """A 1-row map of a 1-D signal stretched to a visible strip; 2-D maps unchanged."""
    return np.repeat(tile, max(1, tile.shape[1] // 8), axis=0) if tile.shape[0] == 1 else tile


def _mosaic(tiles: list[np.ndarray], columns: int, pad: int = 1) -> np.ndarray:
    """Equal-sized RGB tiles laid out row by row on a white background, `pad` pixels apart."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.ones((rows * (height + pad) - pad, columns * (width + pad) - pad, 3))
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        sheet[
            row * (height + pad) : row * (height + pad) + height, col * (width + pad) : col * (width + pad) + width
        ] = tile
    return sheet


def misclassified(
    images: np.ndarray, labels: Sequence[str], predictions: dict[str, Sequence[str]], target: Path, per_model: int = 8
) -> Path:
    """The first `per_model` test images each model gets wrong, titled 'true -> predicted'."""
    figure, axes = plt.subplots(
        len(predictions),
        per_model,
        figsize=(1.5 * per_model, 1.9 * len(predictions)),
        constrained_layout=True,
        squeeze=False,
    )
    for row, (model, predicted) in enumerate(predictions.items()):
        wrong = [i for i, (truth, guess) in enumerate(zip(labels, predicted)) if truth != guess][:per_model]
        for col, axis in enumerate(axes[row]):
            axis.axis("off")
            if col < len(wrong):
                index = wrong[col]
                axis.imshow(_as_image(images[index]), cmap="gray")
                axis.set_title(f"{labels[index]} → {predicted[index]}", fontsize=9, color="tab:red")
        axes[row][0].text(
            -0.15, 0.5, model, transform=axes[row][0].transAxes, ha="right", va="center", fontsize=11, fontweight="bold"
        )
    figure.suptitle("Test images the models get wrong (true → predicted, seed 0)")
    return save(figure, target)


def architecture_diagram(nodes: dict[str, list[str]], target: Path) -> Path:
    """Each model's layers as a top-down flowchart of boxes (the offline twin of the report's Mermaid)."""
    figure, axes = plt.subplots(
        1,
        len(nodes),
        figsize=(4.2 * len(nodes), 0.9 * max(map(len, nodes.values())) + 0.8),
        constrained_layout=True,
        squeeze=False,
    )
    colors = palette(list(nodes))
    for axis, (model, labels) in zip(axes[0], nodes.items()):
        axis.set_xlim(0, 1)
        axis.set_ylim(-len(labels) + 0.5, 0.8)
        axis.axis("off")
        axis.set_title(model, fontweight="bold")
        for index, label in enumerate(labels):
            axis.text(
                0.5,
                -index,
                label,
                ha="center",
                va="center",
                fontsize=9,
                bbox={
                    "boxstyle": "round,pad=0.4",
                    "facecolor": matplotlib.colors.to_rgba(colors[model], 0.15),
                    "edgecolor": colors[model],
                },
            )
            if index:
                axis.annotate(
                    "",
                    xy=(0.5, -index + 0.3),
                    xytext=(0.5, -index + 0.7),
                    arrowprops={"arrowstyle": "->", "color": "black"},
                )
    return save(figure, target)


def _as_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) scaled to [0, 1]; 1-D signals (C, L) are drawn as a 1-row strip."""
    if image.ndim == 2:
        image = image[:, None, :]
    picture = image[0] if image.shape[0] == 1 else np.transpose(image[:3], (1, 2, 0))
    low, high = float(picture.min()), float(picture.max())
    return (picture - low) / (high - low or 1.0)


def robustness(shifts: pd.DataFrame, noise: pd.DataFrame, target: Path) -> Path:
    """Accuracy against shift and against noise per model (mean over seeds, bars for the CI)."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for axis, frame, xlabel, title in (
        (axes[0], shifts, "shift (pixels)", "Translation"),
        (axes[1], noise, "noise std (pixel range = 1)", "Gaussian noise"),
    ):
        _interval_lines(axis, frame, "level")
        axis.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    return save(figure, target)


def fraction_curve(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against the share of training data (log x), mean over seeds with CI bars."""
    figure, axis = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    _interval_lines(axis, points, "level")
    axis.set(xscale="log", xlabel="share of the training split", ylabel="test accuracy", title="Data efficiency")
    return save(figure, target)


def augment_curve(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against the largest training shift of the augmentation (0: none), mean over seeds with CI bars."""
    figure, axis = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    _interval_lines(axis, points, "level")
    axis.set(xlabel="largest random training shift (pixels; 0 = no augmentation)", ylabel="test accuracy")
    axis.set_title("Accuracy with translation augmentation")
    axis.set_xticks(sorted(points["level"].unique()))
    return save(figure, target)


def augmented_robustness(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against test-time shift per model, trained without (dashed) and with augmentation (solid).

    `points` has model, trained (how it was trained, the unaugmented setting first), level, mean, low, high.
    """
    figure, axis = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    models = list(dict.fromkeys(points["model"]))
    colors, shapes = palette(models), markers(models)
    trainings = list(dict.fromkeys(points["trained"]))
    for (model, trained), rows in points.groupby(["model", "trained"], sort=False):
        rows = rows.sort_values("level")
        error = np.nan_to_num(np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]]))
        axis.errorbar(
            rows["level"],
            rows["mean"],
            yerr=error,
            marker=shapes[str(model)],
            capsize=3,
            color=colors[str(model)],
            linestyle="--" if trained == trainings[0] else "-",
            label=f"{model}, trained {trained}",
        )
    axis.set(xlabel="test shift (pixels)", ylabel="test accuracy", title="Translation robustness after augmentation")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return save(figure, target)


def _interval_lines(axis: plt.Axes, frame: pd.DataFrame, x: str) -> None:
    """One line per model with CI error bars, coloured as in every other figure."""
    colors, shapes = palette(list(frame["model"])), markers(list(frame["model"]))
    for model, rows in frame.groupby("model", sort=False):
        rows = rows.sort_values(x)
        error = np.nan_to_num(np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]]))
        axis.errorbar(
            rows[x],
            rows["mean"],
            yerr=error,
            marker=shapes[str(model)],
            capsize=4,
            color=colors[str(model)],
            label=str(model),
        )
    axis.grid(alpha=0.3, which="both")
    axis.legend()


def ladder(steps: pd.DataFrame, target: Path) -> Path:
    """What each inductive bias buys: accuracy of each rung, and each step's paired gain with its interval.

    `steps` has one row per rung: label, accuracy, low, high (the rung's CI over seeds), and for every rung
    after the first gain, gain_low, gain_high (its paired gain over the rung before, in points).
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = palette(list(steps["label"]))
    error = np.nan_to_num(np.vstack([steps["accuracy"] - steps["low"], steps["high"] - steps["accuracy"]]))
    left.bar(steps["label"], steps["accuracy"], yerr=error, capsize=5, color=[colors[m] for m in steps["label"]])
    low = float(np.nanmin(steps["low"].fillna(steps["accuracy"])))
    left.set(
        ylabel="test accuracy",
        title="Accuracy of each rung (CI over seeds)",
        ylim=(max(0.0, low - 0.05), min(1.0, float(np.nanmax(steps["high"].fillna(steps["accuracy"]))) + 0.02)),
    )
    gains = steps.dropna(subset=["gain"])
    gain_error = np.vstack([gains["gain"] - gains["gain_low"], gains["gain_high"] - gains["gain"]])
    right.bar(gains["step"], gains["gain"], yerr=gain_error, capsize=5, color=[colors[m] for m in gains["label"]])
    right.axhline(0, color="black", linewidth=0.8)
    right.set(ylabel="accuracy gain (points)", title="What each step buys (paired bootstrap CI)")
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")
    return save(figure, target)


def tuning_progress(trials: pd.DataFrame, target: Path) -> Path:
    """Best validation score so far against trial number, one line per model; each trial's own score as a dot.

    `trials` has model, trial (0-based), val_accuracy (None when pruned before a score) and best_so_far. A line
    still rising at the last trial says the budget was not enough.
    """
    figure, axis = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    colors = palette(list(trials["model"]))
    for model, rows in trials.groupby("model", sort=False):
        rows = rows.sort_values("trial")
        color = colors[str(model)]
        axis.scatter(rows["trial"], rows["val_accuracy"], color=color, alpha=0.35, s=18)
        axis.step(rows["trial"], rows["best_so_far"], where="post", color=color, linewidth=2.2, label=str(model))
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set(
        xlabel="trial (0 = the shared recipe)",
        ylabel="validation accuracy",
        title="Best validation accuracy so far (dots: each trial)",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    return save(figure, target)
