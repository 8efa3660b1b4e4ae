"""The report's tuning parts: which recipe each model trained with, the budget, the search, and both gaps.

A shared recipe favours whichever model it happens to suit. With tune.trials 0 the report says plainly
that the recipe was shared and not tuned; with tuning on it shows the budget every model got, the search
space, each model's best recipe, how the best score grew with trials, and the reference's lead over each
model under the shared recipe (trial 0 of every study) next to its lead after tuning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import recipes
from pipeline.params import RECIPE_KNOBS, Params
from pipeline.render import Figure, Paragraph, Section, Table

FIGURE = "tuning_progress"


def load(params: Params, dataset_sha256: str) -> dict[str, dict[str, Any]] | None:
    """Each model's tuned/<model>.yaml (checked against params and data), or None when tuning is off."""
    if params.tune.trials == 0:
        return None
    return {model: recipes.tuned_for(params, model, dataset_sha256) for model in params.models}  # type: ignore[misc]


def draw(params: Params, labels: dict[str, str], dataset_sha256: str, figures_dir: Path) -> dict[str, Path]:
    """The best-so-far figure (nothing when tuning is off)."""
    from pipeline import figures as draw_figures

    tuned = load(params, dataset_sha256)
    if tuned is None:
        return {}
    rows = [{"model": labels[model], "trial": row["trial"], "val_accuracy": row["val_accuracy"],
             "best_so_far": row["best_so_far"]} for model, content in tuned.items() for row in content["history"]]
    return {FIGURE: draw_figures.tuning_progress(pd.DataFrame(rows), figures_dir / "tuning_progress.png")}


def _recipe(recipe: dict[str, Any]) -> str:
    return (f"lr {recipe['lr']:.3g}, weight decay {recipe['weight_decay']:.3g}, {recipe['epochs']} epochs, batch "
            f"{recipe['batch_size']}, label smoothing {recipe['label_smoothing']:.3g}")


def recipe_text(params: Params, trained: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """The header's words on the recipe, from what each checkpoint records it was trained with."""
    first = next(iter(trained.values()))
    if params.tune.trials == 0:
        return f"with the same recipe, as each checkpoint records it (AdamW, {first['schedule']} schedule, {_recipe(first)})"
    each = "; ".join(f"{labels[model]}: {_recipe(recipe)}" for model, recipe in trained.items())
    return f"each with its own recipe, as each checkpoint records it (AdamW, {first['schedule']} schedule; {each})"


def recipe_note(params: Params) -> str:
    """One sentence for the header: whether the recipe was shared or tuned per model, and with what budget."""
    if params.tune.trials == 0:
        return ("The recipe was not tuned per model (tune.trials: 0): it is shared, and a shared recipe favours "
                "whichever model it happens to suit.")
    return (f"Each model's recipe is the best of the same budget of {params.tune.trials} Optuna trials per model, "
            f"scored on the validation split only (see Tuning).")


def verdict_source(params: Params) -> str:
    """Which recipe the verdict's numbers come from."""
    if params.tune.trials == 0:
        return ("These numbers come from the shared recipe, not tuned per model (tune.trials: 0); set tune.trials to "
                "give every model the same tuning budget.")
    return (f"These numbers come from each model's tuned recipe (the best of {params.tune.trials} Optuna trials per "
            f"model, scored on the validation split only), trained over the seeds {list(params.train.seeds)} and "
            f"scored once on the test split.")


def section(params: Params, comparison: Any, dataset_sha256: str, figures: dict[str, Path]) -> Section:
    """The Tuning section: budget, space, best recipes, the best-so-far figure, and the gaps before and after."""
    tuned = load(params, dataset_sha256)
    labels = comparison.labels
    if tuned is None:
        return Section("Tuning", [Paragraph(
            "Not tuned: every model trained with the shared recipe of params.yaml's `train` section (tune.trials: 0). "
            "A shared recipe favours whichever model it happened to suit, so the gaps above may owe something to the "
            "recipe. `dvc exp run -S tune.trials=20` gives every model the same budget of Optuna trials.")])
    tune = params.tune
    budget = Paragraph(
        f"Every model got the same budget: {tune.trials} trials of one Optuna study (TPE sampler, seed "
        f"{tune.sampler_seed}, {tune.startup_trials} random startup trials, pruner {tune.pruner}). Trial 0 of every "
        f"study is the shared recipe. A trial trains on the train split and scores the mean final validation accuracy "
        f"over seeds {list(tune.seeds)}; the test split is never read while tuning. The chosen recipe is then trained "
        f"over seeds {list(params.train.seeds)} and scored on the test split like any other."
    )
    space_rows = []
    for knob in RECIPE_KNOBS:
        value = getattr(tune.space, knob)
        if value is None:
            text = f"fixed at {getattr(params.train, knob)}"
        elif isinstance(value, list):
            text = "one of " + ", ".join(map(str, value))
        else:
            text = f"{'log-uniform' if knob in ('lr', 'weight_decay') else 'uniform'} in [{value.low:g}, {value.high:g}]"
        space_rows.append({"Knob": knob, "Searched": text})
    for model in comparison.models:
        for key, choices in tune.shape.get(model, {}).items():
            space_rows.append({"Knob": f"model.{model}.{key}",
                               "Searched": "one of " + ", ".join(map(str, choices)) + " (width re-matched to the budget)"})
    best_rows = []
    for model in comparison.models:
        content = tuned[model]
        recipe, shape = content["recipe"], content.get("model_settings") or {}
        best_rows.append({
            "Model": labels[model],
            "Best val accuracy (trial)": f"{content['best']['val_accuracy']:.4f} ({content['best']['trial']})",
            "Shared recipe val accuracy": _value(content["baseline"]["val_accuracy"]),
            "lr": f"{recipe['lr']:.3g}", "Weight decay": f"{recipe['weight_decay']:.3g}",
            "Label smoothing": f"{recipe['label_smoothing']:.3g}", "Epochs": str(recipe["epochs"]),
            "Batch": str(recipe["batch_size"]),
            "Shape": ", ".join(f"{k} {v}" for k, v in shape.items()) or "–",
            "Complete / pruned": f"{content['counts']['complete']} / {content['counts']['pruned']}",
        })
    blocks: list = [budget, Table(pd.DataFrame(space_rows), ("left", "left")),
                    Table(pd.DataFrame(best_rows), ("left",) + ("right",) * 9)]
    if FIGURE in figures:
        blocks.append(Figure(figures[FIGURE], "Best validation accuracy so far against trial number, per model; a line "
                                              "still rising at the end says the budget was not enough."))
    gaps = gap_rows(comparison, tuned)
    if gaps:
        ref = labels[comparison.reference]
        blocks += [Table(pd.DataFrame(gaps), ("left", "right", "right", "right", "right")), Paragraph(
            f"The {ref}'s lead over each model in accuracy points. The shared and tuned validation gaps are measured "
            f"alike (mean validation accuracy over the tune seeds, trial 0 against each study's best trial); the test "
            f"gap is the report's paired comparison of the tuned recipes above. A gap that shrinks after tuning was "
            f"partly owed to the shared recipe.")]
    return Section("Tuning", blocks)


def gap_rows(comparison: Any, tuned: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The reference's lead over each other model: shared recipe (val), tuned (val), and tuned (test, paired CI)."""
    ref = comparison.reference
    level = f"{comparison.confidence:.0%}"
    rows = []
    for model, test in comparison.pairs.items():
        shared = _difference(tuned[ref]["baseline"]["val_accuracy"], tuned[model]["baseline"]["val_accuracy"])
        after = _difference(tuned[ref]["best"]["val_accuracy"], tuned[model]["best"]["val_accuracy"])
        d = test.difference
        rows.append({
            "Model": comparison.labels[model],
            "Gap, shared recipe (val)": _points(shared),
            "Gap, tuned (val)": _points(after),
            "Change from tuning": _points(None if shared is None or after is None else after - shared),
            f"Gap, tuned (test, {level} paired CI)": f"{d.difference * 100:+.2f} [{d.low * 100:+.2f}, {d.high * 100:+.2f}]",
        })
    return rows


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}"


def _value(value: float | None) -> str:
    return "n/a (not finished)" if value is None else f"{value:.4f}"
