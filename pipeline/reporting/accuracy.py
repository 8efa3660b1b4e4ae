"""The Accuracy section: intervals over seeds, the paired tests against the reference, and the figures of fit.

Learning curves, confusion matrices (summed over seeds) and the test images each model gets wrong are drawn
here from the records and predictions the report stage loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts.records import CellMetrics
from pipeline.reporting import figures as draw
from pipeline.reporting.comparison import Comparison, by_model, p_text, p_value
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Figure, Paragraph, Table


def accuracy_frame(comparison: Comparison, metrics: Sequence[CellMetrics]) -> pd.DataFrame:
    """Test accuracy per model: mean, std and t-interval over seeds, and its parameter count."""
    level = f"{comparison.confidence:.0%}"
    intervals = [comparison.accuracy[m] for m in comparison.models]
    grouped = by_model(metrics)
    return pd.DataFrame(
        {
            "Model": [comparison.labels[m] for m in comparison.models],
            "Parameters": [f"{grouped[m][0].params:,}" for m in comparison.models],
            "Test accuracy (mean ± std)": [
                f"{i.mean:.4f} ± {i.std:.4f}" if i.n > 1 else f"{i.mean:.4f}" for i in intervals
            ],
            f"{level} CI (t, over seeds)": [
                f"[{i.low:.4f}, {i.high:.4f}]" if i.n > 1 else "n/a (1 seed)" for i in intervals
            ],
            "Seeds": [str(i.n) for i in intervals],
        }
    )


def pairs_frame(comparison: Comparison) -> pd.DataFrame:
    """One row per model: the reference's paired lead over it, the per-seed McNemar tests, the Holm p-value, and
    the verdict, which follows McNemar and says when the bootstrap interval disagrees."""
    ref = comparison.labels[comparison.reference]
    level = f"{comparison.confidence:.0%}"
    rows = []
    for model, test in comparison.pairs.items():
        d = test.difference
        rows.append(
            {
                "Model": comparison.labels[model],
                f"{ref} − model (points)": f"{d.difference * 100:+.2f}",
                f"{level} paired-bootstrap CI": f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}]",
                "McNemar per seed (only ref right / only model right, p)": "; ".join(
                    f"{t.only_a_correct}/{t.only_b_correct}, {p_text(t.p_value)}" for t in test.per_seed
                ),
                "p (Holm)": p_value(test.p_holm),
                "Verdict (McNemar)": _pair_verdict(comparison, model),
            }
        )
    return pd.DataFrame(rows)


def _pair_verdict(comparison: Comparison, model: str) -> str:
    """The table's verdict for one pair: McNemar's, with a note when the bootstrap interval says otherwise."""
    winner = comparison.winner(model)
    if winner is not None:
        said = f"**{comparison.labels[winner]} better**"
    elif comparison.significant(model):
        said = "differ, not in one direction"
    else:
        said = "not significant"
    if comparison.tests_agree(model):
        return said
    excludes = comparison.pairs[model].interval_excludes_zero
    return f"{said}; the bootstrap CI {'excludes' if excludes else 'includes'} 0 (see Verdict)"


def per_class_frame(inputs: ReportInputs) -> pd.DataFrame:
    """Each class's test accuracy (its recall) per model, from the confusion matrices summed over seeds; a class
    the test split has no images of has no accuracy, and says so rather than showing 0.000."""
    grouped = by_model(inputs.metrics)
    columns = {}
    for model in inputs.comparison.models:
        matrix = np.sum([np.asarray(c.confusion_matrix) for c in grouped[model]], axis=0)
        recall = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
        columns[inputs.labels[model]] = [
            f"{r:.3f}" if n else "no test images" for r, n in zip(recall, matrix.sum(axis=1))
        ]
    support = np.asarray(grouped[inputs.comparison.models[0]][0].confusion_matrix).sum(axis=1)
    return pd.DataFrame({"Class": [str(c) for c in inputs.prepared.classes], "Test images": support, **columns})


def paired_sentence(comparison: Comparison) -> str:
    """How the paired comparisons above were made, and which test the verdicts follow, in one paragraph."""
    d = next(iter(comparison.pairs.values())).difference if comparison.pairs else None
    resamples = f"{d.resamples:,} resamples of test images" if d else "resamples of test images"
    return (
        f"Each model is paired with the reference ({comparison.name(comparison.reference)}) on the same test images. "
        f"The verdicts follow the exact McNemar test, run per seed, never on predictions pooled across seeds (which "
        f"would count each image once per seed): a pair's p is the largest of its seeds' p-values (it is significant "
        f"only if every seed is), then Holm-corrected across the {len(comparison.pairs)} pair(s) at "
        f"α = {comparison.alpha:.2g}. Beside it, the paired-bootstrap CI resamples images ({resamples}, each image's "
        f"difference averaged over seeds first); it is not corrected for the number of pairs."
    )


def blocks(inputs: ReportInputs) -> list[Block]:
    """The accuracy tables, how the pairs were tested, and the learning, confusion and misclassified figures."""
    comparison = inputs.comparison
    paired: list[Block] = [
        Table(pairs_frame(comparison), ("left", "right", "right", "left", "right", "left")),
        Paragraph(paired_sentence(comparison)),
    ]
    return [
        Table(accuracy_frame(comparison, inputs.metrics), ("left", "right", "right", "right", "right")),
        *(paired if comparison.pairs else []),  # one model: no pair to test
        Figure(
            _learning_curves(inputs),
            "Loss and accuracy per epoch on the training and validation splits: each seed faint, the mean over "
            "seeds bold.",
        ),
        Paragraph("Test accuracy per class (the share of each class's test images classified as it, over all seeds):"),
        Table(per_class_frame(inputs), ("left", *("right",) * (len(inputs.comparison.models) + 1))),
        Figure(
            _confusion(inputs),
            "Confusion matrices on the test split, summed over seeds: the number in a cell counts test images, its "
            "colour their share of the true class (the row).",
        ),
        Figure(
            _misclassified(inputs),
            f"Test images each model gets wrong at seed {inputs.seeds[0]}, each titled true → predicted class.",
        ),
    ]


def _learning_curves(inputs: ReportInputs) -> Path:
    """Every cell's curves, models by their labels."""
    curves = inputs.curves.assign(model=inputs.curves["model"].map(inputs.labels))
    return draw.learning_curves(curves, inputs.figures_dir / "learning_curves.png")


def _confusion(inputs: ReportInputs) -> Path:
    """Each model's confusion matrix summed over its seeds."""
    grouped = by_model(inputs.metrics)
    matrices = {
        inputs.labels[m]: np.sum([np.asarray(c.confusion_matrix) for c in grouped[m]], axis=0)
        for m in inputs.comparison.models
    }
    return draw.confusion_matrices(
        matrices, [str(c) for c in inputs.prepared.classes], inputs.figures_dir / "confusion_matrices.png"
    )


def _misclassified(inputs: ReportInputs) -> Path:
    """The first test images each model gets wrong at the first seed."""
    models = inputs.comparison.models
    truth = inputs.predictions[models[0]]["label"].astype(str).tolist()
    guesses = {inputs.labels[m]: inputs.predictions[m]["prediction"].astype(str).tolist() for m in models}
    return draw.misclassified(inputs.test_images.numpy(), truth, guesses, inputs.figures_dir / "misclassified.png")
