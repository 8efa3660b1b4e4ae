"""The recipe each model trains with: the shared `train` section, or the one `convbench tune` found for it.

With tune.trials 0 every model trains with params.train, exactly as before tuning existed. With tuning on,
tuned/<dataset>/<model>.yaml holds that model's best recipe (train knobs, plus shape settings such as the MLP's depth);
train, evaluate and report all read it through `params_for`, so a checkpoint is checked against the recipe
its own model was meant to train with. A tuned file that no longer fits params.yaml or the data is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.artifacts import paths
from pipeline.artifacts.records import TunedRecipe
from pipeline.core.models import typed_settings
from pipeline.errors import ConvbenchError, plain_problem
from pipeline.params import RECIPE_KNOBS, Params, TrainParams


def write_not_tuned(model: str, out_path: Path) -> None:
    """With tune.trials 0 the stage still writes its output, so the pipeline's graph stays the same."""
    TunedRecipe(
        model=model,
        tuned=False,
        trials=0,
        note="not tuned: tune.trials is 0, so every model trains with the shared recipe (params.yaml train)",
    ).save(out_path)


def fingerprint(params: Params, model: str) -> str:
    """A hash of every setting a model's tuning depends on, except the trial count and the data (checked apart)."""
    relevant = {
        "model": model,
        "data": params.data.name,
        "settings": params.model.get(model) or {},
        "reference": params.reference_model,
        "reference_settings": params.model.get(params.reference_model) or {},
        "shared": params.train.recipe(),
        "tune": params.tune.model_dump(mode="json", exclude={"trials", "shape"}),
        "shape": params.tune.shape.get(model, {}),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def read_tuned(dataset: str, model: str, path: Path | None = None) -> TunedRecipe:
    """tuned/<dataset>/<model>.yaml; a missing or unreadable file names the command that writes it."""
    return TunedRecipe.load(Path(path or paths.tuned_recipe(dataset, model)), model)


def tuned_for(params: Params, model: str, dataset_sha256: str | None = None) -> TunedRecipe | None:
    """tuned/<dataset>/<model>.yaml when tuning is on and the file fits params.yaml (and the data, if given); None
    when off."""
    if params.tune.trials == 0:
        return None
    tuned = read_tuned(params.data.name, model)
    path = paths.tuned_recipe(params.data.name, model)
    fix = f"run `convbench tune --model {model}` (or `dvc repro`)"
    if not tuned.tuned:
        raise ConvbenchError(f"{path} says '{model}' was not tuned, but tune.trials is {params.tune.trials}; {fix}")
    if tuned.trials != params.tune.trials:
        raise ConvbenchError(
            f"{path} was tuned with {tuned.trials} trials, but tune.trials is now {params.tune.trials}; {fix}"
        )
    if tuned.fingerprint != fingerprint(params, model):
        raise ConvbenchError(
            f"{path} was tuned for other settings than params.yaml now gives (search space, shared "
            f"recipe or model section); {fix}"
        )
    if dataset_sha256 is not None and tuned.dataset_sha256 != dataset_sha256:
        raise ConvbenchError(f"{path} was tuned on other data than the prepared '{params.data.name}'; {fix}")
    check_recipe(params, model, tuned, path, fix)
    return tuned


def check_recipe(params: Params, model: str, tuned: TunedRecipe, path: Path, fix: str) -> None:
    """A tuned file's recipe holds every knob with a valid value, and its shape settings fit the model's schema:
    otherwise the cell would train with something else than the file (and its 'tuned' tag) says."""
    from pydantic import ValidationError

    missing = [knob for knob in RECIPE_KNOBS if knob not in tuned.recipe]
    if missing:
        raise ConvbenchError(
            f"{path}: recipe lacks {', '.join(missing)}, so '{model}' would not train with a tuned recipe; {fix} again"
        )
    try:
        TrainParams.model_validate({**params.train.model_dump(), **tuned.recipe})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConvbenchError(
            f"{path}: recipe.{'.'.join(map(str, error['loc']))}: {plain_problem(error)} "
            f"(got {error.get('input')!r}); {fix} again"
        ) from None
    try:
        typed_settings(with_recipe(params, model, tuned.recipe, tuned.model_settings), model, str(path))
    except ConvbenchError as exc:
        raise ConvbenchError(f"{exc} (model_settings of a tuned recipe); {fix} again") from None


def params_for(params: Params, model: str, dataset_sha256: str | None = None) -> Params:
    """params with `train` (and model.<model>'s shape settings) replaced by the model's tuned recipe when tuning is on.

    With tune.trials 0 this is `params` itself: every model trains with the shared recipe.
    """
    tuned = tuned_for(params, model, dataset_sha256)
    if tuned is None:
        return params
    return with_recipe(params, model, tuned.recipe, tuned.model_settings)


def with_recipe(params: Params, model: str, recipe: dict[str, Any], model_settings: dict[str, Any]) -> Params:
    """params with some train knobs and some of model.<model>'s settings replaced (values already validated)."""
    train = params.train.model_copy(update=recipe)
    section = {**params.model, model: {**(params.model.get(model) or {}), **model_settings}}
    return params.model_copy(update={"model": section, "train": train})
