"""What every report section reads, in one small context, so a section takes one argument instead of ten.

The report stage loads and checks the artifacts, computes the comparison and hands this to each section;
a section draws its figures under `figures_dir` and writes its blocks from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.artifacts.bench_record import BenchResult
from pipeline.artifacts.records import CellMetrics, TunedRecipe
from pipeline.reporting.comparison import Cast, Comparison

if TYPE_CHECKING:
    import torch

    from pipeline.artifacts.checkpoint import Checkpoint
    from pipeline.core.cell import Cell
    from pipeline.core.data import PreparedData
    from pipeline.core.models import ModelConfig
    from pipeline.params import Params, TrainParams


@dataclass(frozen=True)
class ReportInputs:
    """The settings, the comparison, every loaded artifact, and the folder a section draws its figures in."""

    params: Params
    comparison: Comparison
    metrics: list[CellMetrics]  # every (model, seed) cell, models in report order
    curves: pd.DataFrame  # per-epoch curves of every cell, with model and seed columns
    predictions: dict[str, pd.DataFrame]  # per model: label and prediction of every test image, first seed
    bench: BenchResult
    probes: dict[str, pd.DataFrame]  # per probe that ran (and matches): its rows
    tuned: dict[str, TunedRecipe] | None  # per model, or None when tuning is off
    cells: list[Cell]
    checkpoints: dict[str, Checkpoint]  # by cell name, each checked current
    prepared: PreparedData
    commit: str  # the git commit the report was made at
    figures_dir: Path

    @property
    def labels(self) -> dict[str, str]:
        """How the report names each model."""
        return self.comparison.labels

    @property
    def cast(self) -> Cast:
        """The models, labels and reference."""
        return self.comparison.cast

    @property
    def confidence(self) -> float:
        """The interval level of the whole report."""
        return self.comparison.confidence

    @property
    def seeds(self) -> list[int]:
        """The training seeds, in params order."""
        return list(self.params.train.seeds)

    @property
    def configs(self) -> dict[str, ModelConfig]:
        """Each model's resolved config, in report order."""
        return {cell.model: cell.config for cell in self.cells}

    @property
    def trains(self) -> dict[str, TrainParams]:
        """The recipe each model trained with (its tuned one when tuning is on)."""
        return {cell.model: cell.params.train for cell in self.cells}

    def first_cell(self, model: str) -> Cell:
        """The model's cell at the first seed (the one the figures of single runs show)."""
        return next(cell for cell in self.cells if cell.model == model and cell.seed == self.seeds[0])

    @cached_property
    def test_images(self) -> torch.Tensor:
        """The test split normalised as the models see it, on the CPU."""
        import torch

        from pipeline.core.runtime import normalize  # torch loads only for the figures that need test images

        split = self.prepared.splits.test
        return normalize(split.x, self.prepared.mean, self.prepared.std, torch.device("cpu"))
