"""Every matplotlib figure of the report and of the MLflow runs; each function draws one PNG atomically.

Functions take plain arrays and DataFrames, so they are easy to test and never read files themselves.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, ParamSpec

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.text import Text

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


# Every figure is drawn at most WIDTH inches wide with text sized in points, and the HTML shows it at 96 CSS px per
# inch (render.py reads the PNG's dpi), so a point in a figure is a CSS point: 12 pt labels are the page's 16 px body
# text and 11 pt ticks its 14.7 px tables. 7.2 in (691 px) fits the page's text column in an 800 px window (736 px),
# so figures are not scaled down there or wider. DPI is two device pixels per CSS pixel, sharp on high-density screens.
WIDTH = 7.2
DPI = 192
SMALLEST = 9.0  # pt: the least any text may be (numbers inside cells, flowchart boxes): 12 CSS px
STYLE: dict[Any, Any] = {  # rc_context's keys are typed as literals
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "legend.title_fontsize": 11,
    "figure.titlesize": 12,
    "axes.titleweight": "normal",
}
SMALLEST_KEY = "Smallest text (pt)"  # PNG text chunk: the smallest font size drawn, read by the page's tests

P = ParamSpec("P")


def styled(draw: Callable[P, Path]) -> Callable[P, Path]:
    """Draw (and save) under the report's text sizes; tick labels are made at draw time, so saving is inside too."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Path:
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def smallest_text(figure: Figure) -> float:
    """The smallest font size (pt) of any visible, non-empty text of a laid-out figure."""
    sizes = [
        float(text.get_fontsize())
        for text in figure.findobj(Text)
        if isinstance(text, Text) and text.get_visible() and text.get_text().strip()
    ]
    return min(sizes, default=0.0)


def save(figure: Figure, target: Path) -> Path:
    """Write `figure` as a PNG via a temporary file and close it; the PNG records its smallest text size.

    The layout runs once and the figure is drawn once: savefig draws a figure that has a layout engine twice, the
    first time with no output only to run the layout (about 15% of the drawing time). The bytes are savefig's.
    """
    figure.set_dpi(DPI)
    engine = figure.get_layout_engine()
    if engine is not None:
        engine.execute(figure)
        figure.set_layout_engine("none")
    metadata = {SMALLEST_KEY: f"{smallest_text(figure):g}"}
    atomic.write_with(target, functools.partial(figure.canvas.print_png, metadata=metadata))  # type: ignore[attr-defined]
    plt.close(figure)
    return target


def _legend_above(figure: Figure, axis: plt.Axes) -> None:
    """One legend for every panel, above them (the panels share models and colours), in as few rows as fit."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside upper center", ncols=_columns(labels), frameon=False)


def _columns(labels: Sequence[str], width: float = WIDTH) -> int:
    """How many legend entries fit side by side across `width` inches at the legend's text size (about 0.6 em a
    character, plus the handle and the gaps)."""
    size = float(STYLE["legend.fontsize"]) / 72  # inches per em
    entry = max((len(label) * 0.6 + 4.5) * size for label in labels)
    return max(1, min(len(labels), int(width * 0.95 // entry)))


@styled
def learning_curves(curves: pd.DataFrame, target: Path) -> Path:
    """Train/val loss and accuracy per epoch for every model: seeds faint, mean bold; loss and accuracy rows share
    their y axis, so training and validation read on one scale."""
    models = list(dict.fromkeys(curves["model"]))
    figure, axes = plt.subplots(2, 2, figsize=(WIDTH, 5.8), sharex=True, sharey="row", layout="constrained")
    colors = palette(models)
    panels = (
        (axes[0, 0], "train_loss"),
        (axes[0, 1], "val_loss"),
        (axes[1, 0], "train_accuracy"),
        (axes[1, 1], "val_accuracy"),
    )
    for axis, column in panels:
        for model, frame in curves.groupby("model", sort=False):
            color = colors[str(model)]
            for _seed, run in frame.groupby("seed"):
                axis.plot(run["epoch"], run[column], color=color, alpha=0.25, linewidth=1)
            mean = frame.groupby("epoch")[column].mean()
            axis.plot(
                mean.index,
                mean.to_numpy(),
                color=color,
                linewidth=2.5,
                label=str(model),
                marker="o" if len(mean) < 3 else None,  # one or two epochs: points, not a bare segment
            )
        axis.grid(alpha=0.3)
    axes[0, 0].set(title="Training", ylabel="loss (cross-entropy)")
    axes[0, 1].set(title="Validation")
    axes[1, 0].set(ylabel="accuracy")
    for axis in axes[1]:
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    _legend_above(figure, axes[0, 0])
    return save(figure, target)


@styled
def accuracy_vs_cost(points: pd.DataFrame, target: Path) -> Path:
    """Test accuracy against parameters and against forward FLOPs; error bars are the CI over seeds.

    `points` has model, params, flops, accuracy, ci_low, ci_high (one row per model and size).
    """
    models = list(dict.fromkeys(points["model"]))
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.8), sharey=True, layout="constrained")
    colors, shapes = palette(models), markers(models)
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
                marker=shapes[str(model)],
                capsize=4,
                color=colors[str(model)],
                label=str(model),
            )
        axis.set(xscale="log", xlabel=title)
        axis.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 10k, 1M: readable on a log axis
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlapped the majors
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy")
    _legend_above(figure, axes[0])
    return save(figure, target)


@styled
def throughput_vs_batch(throughput: pd.DataFrame, target: Path) -> Path:
    """Inference images/s against batch size (log-log): median over timing rounds, band from min to max."""
    models = list(dict.fromkeys(throughput["model"]))
    figure, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    colors, shapes = palette(models), markers(models)
    for model, frame in throughput.groupby("model", sort=False):
        stats = frame.groupby("batch_size")["images_per_second"].agg(["median", "min", "max"])
        color = colors[str(model)]
        axis.plot(stats.index, stats["median"], marker=shapes[str(model)], color=color, label=str(model))
        axis.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2)
    axis.set(xscale="log", yscale="log", xlabel="batch size", ylabel="images / s")
    batches = sorted(throughput["batch_size"].unique())
    axis.set_xticks(batches, [str(int(b)) for b in batches])  # the batch sizes timed, not powers of ten
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.yaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
    axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.grid(alpha=0.3, which="both")
    axis.legend(ncols=1 + len(models) // 6)
    return save(figure, target)


@styled
def confusion_matrices(matrices: dict[str, np.ndarray], classes: Sequence[str], target: Path) -> Path:
    """Row-normalised confusion matrices, two to a row, on one colour scale (the share of each true class) with
    its colour bar; the counts are written in each cell for up to 12 classes."""
    annotate = len(classes) <= 12
    digits = max(len(str(int(np.max(counts, initial=0)))) for counts in matrices.values())
    columns = 1 if len(matrices) == 1 or (annotate and digits > 3) else 2  # four-digit counts need wider cells
    rows = -(-len(matrices) // columns)
    width = WIDTH if columns == 2 else 4.8
    figure, axes = plt.subplots(
        rows, columns, figsize=(width, rows * (width / columns) * 0.95 + 0.3), layout="constrained", squeeze=False
    )
    image = None
    for axis, (model, counts) in zip(axes.flat, matrices.items()):
        rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
        image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if annotate:
            for (row, col), count in np.ndenumerate(counts):
                axis.text(
                    col,
                    row,
                    str(int(count)),
                    ha="center",
                    va="center",
                    fontsize=SMALLEST,
                    color="white" if rates[row, col] > 0.5 else "black",
                )
        ticks = np.arange(len(classes))
        axis.set_xticks(ticks, classes, rotation=90 if max(map(len, classes)) > 2 else 0)
        axis.set_yticks(ticks, classes)
        axis.set(title=str(model), xlabel="predicted", ylabel="true")
    for axis in axes.flat[len(matrices) :]:
        axis.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the true class")
    return save(figure, target)


@styled
def filters_and_feature_maps(weights: np.ndarray, image: np.ndarray, maps: np.ndarray, target: Path) -> Path:
    """The first conv layer's filters (one tile each, first input channel) and the maps they make of `image`.

    weights: (out, in, k, k); image: (C, H, W) as the model sees it; maps: (out, H', W') after conv and ReLU.
    Filters share one symmetric colour scale and maps one scale from zero, each with its colour bar, so a tile's
    colour is a value that reads the same in every tile (a map that is zero everywhere shows as zero, and the
    title counts them). Each side is one mosaic image (a tile per filter, the same grid position on both sides),
    which draws in a fraction of the time of one axes per tile.
    """
    count = weights.shape[0]
    columns = min(8, count)
    rows = -(-count // columns)
    kernels = [np.atleast_2d(weights[index, 0]) for index in range(count)]  # 1-D kernels are drawn as one row
    map_tiles = [_strip(np.atleast_2d(channel)) for channel in maps]
    limit = max(float(np.abs(kernel).max()) for kernel in kernels) or 1.0
    top = max(float(tile.max()) for tile in map_tiles) or 1.0
    zero = sum(1 for tile in map_tiles if not np.any(tile > 0))
    sheets = {
        "filters": _mosaic([_enlarged(kernel) for kernel in kernels], columns, pad=2),
        "maps": _mosaic([_enlarged(tile) for tile in map_tiles], columns, pad=2),
    }
    figure, axes = plt.subplot_mosaic(
        [["input", "filters"], [".", "maps"]],
        figsize=(WIDTH, 2 * (4.6 * rows / columns) + 1.4),
        width_ratios=[1, 4],
        layout="constrained",
    )
    axes["input"].imshow(_as_image(image), cmap="gray")
    axes["input"].set_title("input")
    shape = "×".join(map(str, weights.shape[2:]))
    channel = ", first input channel" if weights.shape[1] > 1 else ""
    drawn = axes["filters"].imshow(
        sheets["filters"], cmap=matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.55"), vmin=-limit, vmax=limit
    )
    axes["filters"].set_title(f"{count} filters ({shape}{channel})")
    figure.colorbar(drawn, ax=axes["filters"], label="weight", shrink=0.9)
    drawn = axes["maps"].imshow(
        sheets["maps"], cmap=matplotlib.colormaps["viridis"].with_extremes(bad="white"), vmin=0, vmax=top
    )
    axes["maps"].set_title("their feature maps after ReLU" + (f" ({zero} of {count} zero everywhere)" if zero else ""))
    figure.colorbar(drawn, ax=axes["maps"], label="activation", shrink=0.9)
    for axis in axes.values():
        axis.axis("off")
    return save(figure, target)


def _enlarged(tile: np.ndarray, pixels: int = 16) -> np.ndarray:
    """A small tile repeated pixel by pixel to about `pixels` across, so the one-pixel gaps between tiles stay thin."""
    factor = max(1, math.ceil(pixels / max(tile.shape)))
    return np.kron(tile, np.ones((factor, factor)))


def _strip(tile: np.ndarray) -> np.ndarray:
    """A 1-row map of a 1-D signal stretched to a visible strip; 2-D maps unchanged."""
    return np.repeat(tile, max(1, tile.shape[1] // 8), axis=0) if tile.shape[0] == 1 else tile


def _mosaic(tiles: list[np.ndarray], columns: int, pad: int = 1) -> np.ndarray:
    """Equal-sized value tiles laid out row by row, `pad` pixels apart; the gaps are NaN (drawn white)."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad), np.nan)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        sheet[
            row * (height + pad) : row * (height + pad) + height, col * (width + pad) : col * (width + pad) + width
        ] = tile
    return sheet


@styled
def misclassified(
    images: np.ndarray, labels: Sequence[str], predictions: dict[str, Sequence[str]], target: Path, per_model: int = 8
) -> Path:
    """The first `per_model` test images each model gets wrong, titled 'true → predicted', a row per model under
    its name and how many it gets wrong."""
    figure = plt.figure(figsize=(WIDTH, 1.55 * len(predictions) + 0.1), layout="constrained")
    rows = figure.subfigures(len(predictions), 1, squeeze=False)[:, 0]
    long = max(map(len, labels), default=0) > 3  # class names, not digits: true and predicted on two lines
    for row, (model, predicted) in zip(rows, predictions.items()):
        wrong = [i for i, (truth, guess) in enumerate(zip(labels, predicted)) if truth != guess]
        row.suptitle(
            f"{model}: {len(wrong)} of {len(labels)} test images wrong" + (", the first shown" if wrong else ""),
            x=0.01,
            ha="left",
            fontsize=STYLE["axes.titlesize"],
            fontweight="bold",
        )
        axes = row.subplots(1, per_model, squeeze=False)[0]
        for col, axis in enumerate(axes):
            axis.axis("off")
            if col < len(wrong):
                index = wrong[col]
                axis.imshow(_as_image(images[index]), cmap="gray")
                axis.set_title(
                    f"{labels[index]}\n→ {predicted[index]}" if long else f"{labels[index]} → {predicted[index]}",
                    fontsize=10,
                    color="tab:red",
                )
    return save(figure, target)


@styled
def architecture_diagram(nodes: dict[str, list[str]], target: Path) -> Path:
    """Each model's layers as a top-down flowchart of boxes, two models to a row (the HTML's twin of the
    Markdown's Mermaid diagrams, drawn without scripts or network)."""
    columns = min(2, len(nodes))
    grid_rows = -(-len(nodes) // columns)
    names = list(nodes)
    tallest = [max(len(nodes[n]) for n in names[r * columns : (r + 1) * columns]) for r in range(grid_rows)]
    figure, axes = plt.subplots(
        grid_rows,
        columns,
        figsize=(WIDTH if columns == 2 else WIDTH / 2, 0.72 * sum(tallest) + 0.5 * grid_rows),
        height_ratios=tallest,
        layout="constrained",
        squeeze=False,
    )
    colors = palette(names)
    for index, (axis, model) in enumerate(zip(axes.flat, names)):
        labels = [_box(label) for label in nodes[model]]
        depth = tallest[index // columns]
        axis.set_xlim(0, 1)
        axis.set_ylim(-depth + 0.5, 0.6)
        axis.axis("off")
        axis.set_title(model, fontweight="bold")
        for step, label in enumerate(labels):
            axis.text(
                0.5,
                -step,
                label,
                ha="center",
                va="center",
                fontsize=10,
                linespacing=1.1,
                bbox={
                    "boxstyle": "round,pad=0.35",
                    "facecolor": matplotlib.colors.to_rgba(colors[model], 0.15),
                    "edgecolor": colors[model],
                },
            )
            if step:
                axis.annotate(
                    "",
                    xy=(0.5, -step + 0.36),
                    xytext=(0.5, -step + 0.64),
                    arrowprops={"arrowstyle": "->", "color": "black"},
                )
    for axis in axes.flat[len(names) :]:
        axis.set_visible(False)
    return save(figure, target)


def _box(label: str, width: int = 30) -> str:
    """A flowchart label ('layer -> shape') on one line, or the shape on a second when it is long; a layer name
    longer still is wrapped at commas and spaces."""
    layer, arrow, shape = label.rpartition(" -> ")
    if not arrow:
        return "\n".join(textwrap.wrap(label, width)) or label
    if len(label) <= width:
        return f"{layer} → {shape}"
    return "\n".join([*textwrap.wrap(layer, width), f"→ {shape}"])


def _as_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) scaled to [0, 1]; 1-D signals (C, L) are drawn as a 1-row strip."""
    if image.ndim == 2:
        image = image[:, None, :]
    picture = image[0] if image.shape[0] == 1 else np.transpose(image[:3], (1, 2, 0))
    low, high = float(picture.min()), float(picture.max())
    return (picture - low) / (high - low or 1.0)


@styled
def robustness(shifts: pd.DataFrame, noise: pd.DataFrame, target: Path) -> Path:
    """Accuracy against shift and against noise per model (mean over seeds, bars for the CI)."""
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.8), sharey=True, layout="constrained")
    for axis, frame, xlabel, title in (
        (axes[0], shifts, "shift (pixels)", "Translation"),
        (axes[1], noise, "noise std (pixel range = 1)", "Gaussian noise"),
    ):
        _interval_lines(axis, frame, "level", legend=False)
        axis.set(xlabel=xlabel, title=title)
        axis.set_xticks(sorted(frame["level"].unique()))  # the levels measured
    axes[0].set_ylabel("test accuracy")
    _legend_above(figure, axes[0])
    return save(figure, target)


@styled
def fraction_curve(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against the share of training data (log x), mean over seeds with CI bars."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    _interval_lines(axis, points, "level")
    axis.set(xscale="log", xlabel="share of the training split", ylabel="test accuracy", title="Data efficiency")
    levels = sorted(points["level"].unique())
    axis.set_xticks(levels, [f"{level:.0%}" if level >= 0.01 else f"{level:.1%}" for level in levels])
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    return save(figure, target)


@styled
def augment_curve(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against the largest training shift of the augmentation (0: none), mean over seeds with CI bars."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    _interval_lines(axis, points, "level")
    axis.set(xlabel="largest random training shift (pixels; 0 = none)", ylabel="test accuracy")
    axis.set_title("Accuracy with translation augmentation")
    axis.set_xticks(sorted(points["level"].unique()))
    return save(figure, target)


@styled
def augmented_robustness(points: pd.DataFrame, target: Path) -> Path:
    """Accuracy against test-time shift per model, trained without (dashed) and with augmentation (solid).

    `points` has model, trained (how it was trained, the unaugmented setting first), level, mean, low, high. The
    legend gives each model's colour once and each training's line style once.
    """
    figure, axis = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
    models = list(dict.fromkeys(points["model"]))
    colors, shapes = palette(models), markers(models)
    trainings = list(dict.fromkeys(points["trained"]))
    styles: dict[str, Literal["--", "-"]] = {str(t): "--" if t == trainings[0] else "-" for t in trainings}
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
            linestyle=styles[str(trained)],
        )
    handles = [
        matplotlib.lines.Line2D([], [], color=colors[m], marker=shapes[m], linestyle="-", label=m) for m in models
    ] + [
        matplotlib.lines.Line2D([], [], color="black", linestyle=styles[str(t)], label=f"trained {t}")
        for t in trainings
    ]
    axis.set(xlabel="test shift (pixels)", ylabel="test accuracy", title="Translation robustness after augmentation")
    axis.set_xticks(sorted(points["level"].unique()))
    axis.grid(alpha=0.3)
    figure.legend(handles=handles, loc="outside right upper", frameon=False)
    return save(figure, target)


@styled
def activations(points: pd.DataFrame, models: Sequence[str], target: Path) -> Path:
    """Final training loss and test accuracy per activation, one point with CI bars per model, side by side within
    each activation; the ReLU family's activations shaded.

    `points` has model, activation, relu_family, measure ("loss" or "accuracy"), mean, low, high; `models` is the
    report's order of every model, so each keeps the colour it has in every other figure.
    """
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.0), sharex=True, layout="constrained")
    colors, shapes = palette(models), markers(models)
    names = list(dict.fromkeys(points["activation"]))
    family = {str(a) for a in points.loc[points["relu_family"].astype(bool), "activation"]}
    shown = [m for m in dict.fromkeys(models) if m in set(points["model"])]
    step = 0.7 / max(1, len(shown))
    for axis, measure, label in ((axes[0], "loss", "final training loss"), (axes[1], "accuracy", "test accuracy")):
        for index, name in enumerate(names):
            if name in family:
                axis.axvspan(index - 0.45, index + 0.45, color="0.92", zorder=0)
        for offset, model in enumerate(shown):
            rows = points[(points["model"] == model) & (points["measure"] == measure)]
            x = [names.index(a) - 0.35 + step * (offset + 0.5) for a in rows["activation"]]
            error = np.nan_to_num(np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]]))
            axis.errorbar(
                x,
                rows["mean"],
                yerr=error,
                marker=shapes[model],
                linestyle="none",
                capsize=3,
                color=colors[model],
                label=model,
            )
        axis.set(ylabel=label)
        axis.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0)
        axis.grid(alpha=0.3, axis="y")
    axes[0].set_title("Training (lower is better)")
    axes[1].set_title("Test")
    _legend_above(figure, axes[0])
    return save(figure, target)


def _interval_lines(axis: plt.Axes, frame: pd.DataFrame, x: str, legend: bool = True) -> None:
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
    if legend:
        axis.legend()


@styled
def ladder(steps: pd.DataFrame, target: Path) -> Path:
    """What each inductive bias buys: accuracy of each rung, and each step's paired gain with its interval.

    `steps` has one row per rung: label, accuracy, low, high (the rung's CI over seeds), and for every rung
    after the first gain, gain_low, gain_high (its paired gain over the rung before, in points).
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, 4), layout="constrained")
    colors = palette(list(steps["label"]))
    error = np.nan_to_num(np.vstack([steps["accuracy"] - steps["low"], steps["high"] - steps["accuracy"]]))
    left.bar(steps["label"], steps["accuracy"], yerr=error, capsize=5, color=[colors[m] for m in steps["label"]])
    low = float(np.nanmin(steps["low"].fillna(steps["accuracy"])))
    left.set(
        ylabel="test accuracy",
        title="Accuracy of each rung",
        ylim=(max(0.0, low - 0.05), min(1.0, float(np.nanmax(steps["high"].fillna(steps["accuracy"]))) + 0.02)),
    )
    gains = steps.dropna(subset=["gain"])
    gain_error = np.vstack([gains["gain"] - gains["gain_low"], gains["gain_high"] - gains["gain"]])
    right.bar(gains["step"], gains["gain"], yerr=gain_error, capsize=5, color=[colors[m] for m in gains["label"]])
    right.axhline(0, color="black", linewidth=0.8)
    right.set(ylabel="accuracy gain (points)", title="What each step buys")
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")
    return save(figure, target)


@styled
def tuning_progress(trials: pd.DataFrame, target: Path) -> Path:
    """Best validation score so far against trial number, one line per model; each trial's own score as a dot.

    `trials` has model, trial (0-based), val_accuracy (None when pruned before a score) and best_so_far. A line
    still rising at the last trial says the budget was not enough.
    """
    figure, axis = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
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
