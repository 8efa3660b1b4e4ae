"""The last two sections: what the first convolution learned, and every architecture as a table and a flowchart.

The filters come from the first model (in report order) that has a convolution anywhere in its module tree
(core.measure.first_conv_maps); when none has, the section says so in one sentence.

The flowcharts are Mermaid in the Markdown, where GitHub draws them, and a matplotlib figure in the HTML. The page
runs no scripts and reaches no network, and Mermaid draws only with its JavaScript (inlined it would add megabytes;
rendered ahead it would need Node and a browser in every pipeline run), so the page shows the same nodes drawn by
matplotlib instead of printing Mermaid's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from pipeline.artifacts import checkpoint as checkpoints
from pipeline.core import models
from pipeline.core.layers import BasicBlock, EncoderBlock, LocallyConnected, MixerBlock, Patches, Residual
from pipeline.core.measure import first_conv_maps
from pipeline.core.models import ModelConfig
from pipeline.reporting import figures as draw
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import HTML, MARKDOWN, Block, Code, Figure, Paragraph, Table

KERAS_REFERENCE = """from keras.models import Sequential
from keras.layers import Conv2D, MaxPooling2D, Flatten, Dense
model = Sequential([
    Conv2D(32, (3, 3), activation='relu', input_shape=(64, 64, 3)),
    MaxPooling2D(pool_size=(2, 2)),
    Flatten(),
    Dense(128, activation='relu'),
    Dense(10, activation='softmax')
])"""


def filter_blocks(inputs: ReportInputs) -> list[Block]:
    """The first conv layer's filters and the maps they make of one test image, or why there are none."""
    drawn = _filters(inputs)
    if drawn is None:
        names = ", ".join(inputs.comparison.name(m) for m in inputs.comparison.models)
        return [Paragraph(f"No model compared here ({names}) has a convolution, so there are no filters to show.")]
    model, figure = drawn
    return [
        Figure(
            figure,
            f"The first convolution of {inputs.comparison.the(model)} (seed {inputs.seeds[0]}): its filters and the "
            "feature maps they make of one test image (same grid position, same filter); each filter slides over the "
            "input to make one map. Filters share one colour scale and maps another, so a colour reads the same in "
            "every tile.",
        )
    ]


def _filters(inputs: ReportInputs) -> tuple[str, Path] | None:
    """The model whose filters are drawn (the first with a convolution, at its first seed) and the figure; None
    when no model has one."""
    image = inputs.test_images[0]
    for model in inputs.comparison.models:
        cell = inputs.first_cell(model)
        module = checkpoints.restore(inputs.checkpoints[cell.name], cell.checkpoint_path).eval()
        maps = first_conv_maps(module, image)
        if maps is not None:
            weights, feature_maps = maps
            return model, draw.filters_and_feature_maps(
                weights.numpy(), image.numpy(), feature_maps.numpy(), inputs.figures_dir / "filters.png"
            )
    return None


def mermaid(labels: list[str]) -> str:
    """A top-down Mermaid flowchart (graph TD) with one node per label, as GitHub renders it."""
    names = [f"N{i}" for i in range(len(labels))]
    nodes = [f'    {name}["{label.replace(chr(34), chr(39))}"]' for name, label in zip(names, labels)]
    edges = [f"    {a} --> {b}" for a, b in zip(names, names[1:])]
    return "\n".join(["graph TD", *nodes, *edges])


def blocks(inputs: ReportInputs) -> list[Block]:
    """Every model's layers (read off the built module) as a table and a Mermaid flowchart, then one figure."""
    out: list[Block] = [
        Paragraph(
            "The default CNN is the explainer's Keras model (below) at this dataset's input size; convbench runs each "
            "MaxPool before its ReLU, which gives identical outputs and gradients and is faster. A model with "
            "`match: params` has its width solved so its parameter count matches the reference's. The tables and "
            "diagrams are read off the built modules."
        ),
        Code("python", KERAS_REFERENCE, collapsed="The reference Keras model"),
    ]
    flows = {}
    for model, config in inputs.configs.items():
        rows = describe(config)
        table = pd.DataFrame(
            {
                "Layer": [r.layer for r in rows],
                "Output shape": [r.output_shape for r in rows],
                "Parameters": [f"{r.params:,}" for r in rows],
            }
        )
        flows[inputs.labels[model]] = flow_labels(rows)
        out += [
            Paragraph(f"**{inputs.labels[model]}** (`{config.arch}`, {sum(r.params for r in rows):,} parameters)"),
            Table(table, ("left", "right", "right")),
            Code("mermaid", mermaid(flows[inputs.labels[model]]), only=MARKDOWN),  # GitHub draws it
        ]
    diagram = draw.architecture_diagram(flows, inputs.figures_dir / "architectures.png")
    out.append(Figure(diagram, "Every architecture as a flowchart, read off the built modules.", only=HTML))
    return out


# --- layers read off the built module (display only: no trained weight depends on these words) ---------------------


@dataclass(frozen=True)
class LayerRow:
    """One top-level layer of a built model: its name, output shape for one input, and parameter count."""

    layer: str
    output_shape: str
    params: int


def describe(config: ModelConfig) -> list[LayerRow]:
    """One row per top-level layer of the built module, after an Input row."""
    model = models.build(config)
    rows: list[LayerRow] = []

    def record(module: nn.Module, _inputs: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        first = output[0] if isinstance(output, tuple) else output  # a recurrent layer returns (outputs, state)
        rows.append(LayerRow(layer_name(module), "x".join(map(str, first.shape[1:])), models.count_params(module)))

    children = list(model.children()) or [model]
    hooks = [layer.register_forward_hook(record) for layer in children]
    with torch.no_grad():
        model.eval()(torch.zeros((1, *config.input_shape)))
    for hook in hooks:
        hook.remove()
    return [LayerRow("Input", "x".join(map(str, config.input_shape)), 0), *rows]


def flow_labels(rows: list[LayerRow]) -> list[str]:
    """The model as a flowchart: one 'layer -> output shape' label per layer, then the softmax output."""
    return [f"{row.layer} -> {row.output_shape}" for row in rows] + ["Output (softmax)"]


def layer_name(module: nn.Module) -> str:
    """A layer as the report names it, e.g. 'Conv2d(1->32, 3x3, padding 0)'."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kernel = "x".join(map(str, module.kernel_size))
        stride = f", stride {module.stride[0]}" if module.stride[0] != 1 else ""
        return (
            f"{type(module).__name__}({module.in_channels}->{module.out_channels}, {kernel}, "
            f"padding {module.padding[0]}{stride})"
        )
    if isinstance(module, LocallyConnected):
        return (
            f"LocallyConnected({module.in_channels}->{module.out_channels}, k{module.kernel}, padding {module.padding})"
        )
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        return f"{type(module).__name__}({module.kernel_size})"
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}->{module.out_features})"
    if isinstance(module, Patches):
        kernel = "x".join(map(str, module.embed.kernel_size))
        cls = " and class token" if module.cls is not None else ""
        return f"Patches({kernel} -> {module.embed.out_channels}, {module.tokens} tokens, position embedding{cls})"
    if isinstance(module, EncoderBlock):
        attention = module.attention
        return (
            f"EncoderBlock(attention {attention.heads} heads x {attention.head_dim}, MLP {module.mlp[0].out_features})"
        )
    if isinstance(module, MixerBlock):
        return f"MixerBlock(token MLP {module.tokens[0].out_features}, channel MLP {module.channels[0].out_features})"
    if isinstance(module, BasicBlock):
        first = module.body[0]
        assert isinstance(first, (nn.Conv1d, nn.Conv2d))  # BasicBlock opens with its conv
        stride = f", stride {first.stride[0]}" if first.stride[0] != 1 else ""
        return f"BasicBlock({first.in_channels}->{first.out_channels}{stride})"
    if isinstance(module, nn.GRU):
        direction = "bidirectional " if module.bidirectional else ""
        return f"{direction}GRU({module.input_size}->{module.hidden_size})"
    if isinstance(module, nn.Sequential) and len(module) and len({type(layer) for layer in module}) == 1:
        return f"{len(module)} x {layer_name(module[0])}" if len(module) > 1 else layer_name(module[0])
    if isinstance(module, Residual):
        inner = (
            [layer_name(layer) for layer in module.layer.children()] if isinstance(module.layer, nn.Sequential) else []
        )
        return f"Residual(x + {', '.join(inner) or type(module.layer).__name__})"
    return type(module).__name__
