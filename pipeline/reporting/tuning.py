"""The report's tuning parts: which recipe each model trained with, the budget, the search, and both gaps.

A shared recipe favours whichever model it happens to suit. With tune.trials 0 the report says plainly
that the recipe was shared and not tuned; with tuning on it shows the budget every model got, the search
space, each model's best recipe, how the best score grew with trials, and the reference's lead over each
model under the shared recipe (trial 0 of every study) next to its lead after tuning.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.artifacts.records import Scored, TunedRecipe
from pipeline.core import recipes
from pipeline.params import RECIPE_KNOBS, Params, TrainParams
from pipeline.reporting.comparison import Comparison, named
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Figure, Paragraph, Table

FIGURE = "tuning_progress.png"


def load(params: Params, dataset_sha256: str) -> dict[str, TunedRecipe] | None:
    """Each model's tuned/<dataset>/<model>.yaml (checked against params and data), or None when tuning is off."""
    if params.tune.trials == 0:
        return None
    tuned = {model: recipes.tuned_for(params, model, dataset_sha256) for model in params.models}
    return {model: recipe for model, recipe in tuned.items() if recipe is not None}


def draw(tuned: dict[str, TunedRecipe], labels: dict[str, str], figures_dir: Path) -> Path:
    """The best-so-far figure: every trial of every model's study."""
    from pipeline.reporting import figures  # matplotlib loads only when a study is drawn

    rows = [
        {"model": labels[model], "trial": row.trial, "val_accuracy": row.val_accuracy, "best_so_far": row.best_so_far}
        for model, recipe in tuned.items()
        for row in recipe.history
    ]
    return figures.tuning_progress(pd.DataFrame(rows), figures_dir / FIGURE)


def _recipe(train: TrainParams) -> str:
    """A recipe's knobs in one phrase."""
    return (
        f"lr {train.lr:.3g}, weight decay {train.weight_decay:.3g}, {train.epochs} epochs, batch "
        f"{train.batch_size}, label smoothing {train.label_smoothing:.3g}"
    )


def recipe_text(params: Params, trained: dict[str, TrainParams], labels: dict[str, str]) -> str:
    """The header's words on the recipe, from what each model's checkpoints were checked to be trained with."""
    first = next(iter(trained.values()))
    if params.tune.trials == 0:
        return (
            f"with the same recipe, as each checkpoint records it (AdamW, {first.schedule} schedule, {_recipe(first)})"
        )
    each = "; ".join(f"{named(labels, model)}: {_recipe(train)}" for model, train in trained.items())
    return f"each with its own recipe, as each checkpoint records it (AdamW, {first.schedule} schedule; {each})"


def recipe_note(params: Params) -> str:
    """The header's sentence on tuning: the budget when tuned; nothing when not (the header says the recipe was the
    same for every model, and the verdict says what that implies)."""
    if params.tune.trials == 0:
        return ""
    return (
        f"Each model's recipe is the best of the same budget of {params.tune.trials} Optuna trials per model, "
        f"scored on the validation split only (see Tuning)."
    )


def verdict_source(params: Params) -> str:
    """Which recipe the verdict's numbers come from, and, for a shared recipe, the caveat that goes with it (said
    here once; the Tuning section says how to tune)."""
    if params.tune.trials == 0:
        return (
            "These numbers come from one shared recipe, not tuned per model (tune.trials: 0), and a shared recipe "
            "favours whichever model it happens to suit, so the gaps may owe something to it (see Tuning)."
        )
    return (
        f"These numbers come from each model's tuned recipe (see Tuning), trained over the seeds "
        f"{list(params.train.seeds)} and scored once on the test split."
    )


NOT_TUNED = (
    "Not tuned: every model trained with the shared recipe of params.yaml's `train` section (tune.trials: 0). "
    "`dvc exp run -S tune.trials=20` gives every model the same budget of Optuna trials, scored on the validation "
    "split only."
)


def blocks(inputs: ReportInputs) -> list[Block]:
    """The Tuning section of the report, its best-so-far figure drawn when tuning is on."""
    if inputs.tuned is None:
        return [Paragraph(NOT_TUNED)]
    figure = draw(inputs.tuned, inputs.labels, inputs.figures_dir)
    return tuning_blocks(inputs.params, inputs.comparison, inputs.tuned, figure)


def tuning_blocks(
    params: Params, comparison: Comparison, tuned: dict[str, TunedRecipe], figure: Path | None = None
) -> list[Block]:
    """Budget, space, best recipes, the best-so-far figure, and the gaps before and after."""
    tune = params.tune
    budget = Paragraph(
        f"Every model got the same budget: {tune.trials} trials of one Optuna study (TPE sampler, seed "
        f"{tune.sampler_seed}, {tune.startup_trials} random startup trials, pruner {tune.pruner}). Trial 0 of every "
        f"study is the shared recipe. A trial trains on the train split and scores the mean final validation accuracy "
        f"over seeds {list(tune.seeds)}; the test split is never read while tuning. The chosen recipe is then trained "
        f"over seeds {list(params.train.seeds)} and scored on the test split like any other."
    )
    out: list[Block] = [
        budget,
        Table(pd.DataFrame(space_rows(params, comparison.models)), ("left", "left")),
        Table(pd.DataFrame(best_rows(params, comparison, tuned)), ("left",) + ("right",) * 9),
    ]
    if figure is not None:
        out.append(
            Figure(
                figure,
                "Best validation accuracy so far against trial number, per model; a line still "
                "rising at the end says the budget was not enough.",
            )
        )
    gaps = gap_rows(comparison, tuned)
    if gaps:
        out += [
            Table(pd.DataFrame(gaps), ("left", "right", "right", "right", "right")),
            Paragraph(
                f"{comparison.the(comparison.reference, start=True)}'s lead over each model in accuracy points. The shared and tuned validation gaps are measured "
                f"alike (mean validation accuracy over the tune seeds, trial 0 against each study's best trial); the test "
                f"gap is the report's paired comparison of the tuned recipes above. A gap that shrinks after tuning was "
                f"partly owed to the shared recipe."
            ),
        ]
    return out


def space_rows(params: Params, models: list[str]) -> list[dict[str, str]]:
    """What the study searched: each recipe knob's range or fixed value, then each model's shape choices."""
    tune = params.tune
    rows = []
    for knob in RECIPE_KNOBS:
        value = getattr(tune.space, knob)
        if value is None:
            text = f"fixed at {getattr(params.train, knob)}"
        elif isinstance(value, list):
            text = "one of " + ", ".join(map(str, value))
        else:
            text = (
                f"{'log-uniform' if knob in ('lr', 'weight_decay') else 'uniform'} in [{value.low:g}, {value.high:g}]"
            )
        rows.append({"Knob": knob, "Searched": text})
    for model in models:
        for key, choices in tune.shape.get(model, {}).items():
            rows.append(
                {
                    "Knob": f"model.{model}.{key}",
                    "Searched": "one of " + ", ".join(map(str, choices)) + " (width re-matched to the budget)",
                }
            )
    return rows


def best_rows(params: Params, comparison: Comparison, tuned: dict[str, TunedRecipe]) -> list[dict[str, str]]:
    """Each model's best trial, its score against the shared recipe's, and the recipe it chose."""
    rows = []
    for model in comparison.models:
        recipe = tuned[model]
        train = params.train.model_copy(update=recipe.recipe)
        trial = "–" if recipe.best is None else recipe.best.trial
        rows.append(
            {
                "Model": comparison.labels[model],
                "Best val accuracy (trial)": f"{_value(_score(recipe.best))} ({trial})",
                "Shared recipe val accuracy": _value(_score(recipe.baseline)),
                "lr": f"{train.lr:.3g}",
                "Weight decay": f"{train.weight_decay:.3g}",
                "Label smoothing": f"{train.label_smoothing:.3g}",
                "Epochs": str(train.epochs),
                "Batch": str(train.batch_size),
                "Shape": ", ".join(f"{k} {v}" for k, v in recipe.model_settings.items()) or "–",
                "Complete / pruned": f"{recipe.counts.get('complete', 0)} / {recipe.counts.get('pruned', 0)}",
            }
        )
    return rows


def gap_rows(comparison: Comparison, tuned: dict[str, TunedRecipe]) -> list[dict[str, str]]:
    """The reference's lead over each other model: shared recipe (val), tuned (val), and tuned (test, paired CI)."""
    ref = tuned[comparison.reference]
    level = f"{comparison.confidence:.0%}"
    rows = []
    for model, test in comparison.pairs.items():
        shared = _difference(_score(ref.baseline), _score(tuned[model].baseline))
        after = _difference(_score(ref.best), _score(tuned[model].best))
        d = test.difference
        rows.append(
            {
                "Model": comparison.labels[model],
                "Gap, shared recipe (val)": _points(shared),
                "Gap, tuned (val)": _points(after),
                "Change from tuning": _points(None if shared is None or after is None else after - shared),
                f"Gap, tuned (test, {level} paired CI)": f"{d.difference * 100:+.2f} [{d.low * 100:+.2f}, {d.high * 100:+.2f}]",
            }
        )
    return rows


def _score(scored: Scored | None) -> float | None:
    """The validation accuracy of a study's best trial or baseline (trial 0); None when it has none."""
    return None if scored is None else scored.val_accuracy


def _difference(a: float | None, b: float | None) -> float | None:
    """a - b, None when either score is missing (a pruned trial)."""
    return None if a is None or b is None else a - b


def _points(value: float | None) -> str:
    """A gap in accuracy points, or n/a."""
    return "n/a" if value is None else f"{value * 100:+.2f}"


def _value(value: float | None) -> str:
    """A validation accuracy, or why there is none."""
    return "n/a (not finished)" if value is None else f"{value:.4f}"
