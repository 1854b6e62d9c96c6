"""The one recipe registry: what ``--recipe paper`` and ``--recipe default`` mean, training *and*
calibration.

A `Recipe` holds the training configuration (`vadpipe.model.config.TrainConfig`) and the
calibration spec (`vadpipe.run_calibration.CalibrationSpec`: the share of training videos
held out, how the operating point is chosen on them), or None for training on every video with
the paper's fixed threshold. It lives in the pipeline package because the calibration spec joins
training (model) and calibration (postprocess); the model stage stays free of both.

``paper`` is the authors' exact behaviour, trained on every video; ``default`` is vadpipe's.

Why two: the paper's recipe (50 epochs, lr 1e-4 dropped at epoch 30, loss divided by the batch's
step count, no class balancing) was tuned on XD-Violence's 4,000 videos x 5 crops. On a few
dozen minute-long videos with seconds of anomaly it makes a few hundred optimizer steps, most
batches hold one or two anomalous videos, and the weighted T-CAM never learns to rise where
the anomaly is (bench/long_videos.py measures it). ``default`` keeps the paper's model, its BCE,
sparsity and smoothness losses and their weights, and changes how they are optimised:

* the loss is normalised per video (``normalize="video"``), so a long video in the batch does
  not shrink the others' share;
* every batch is class-balanced (half normal, half anomalous);
* a top-k multiple-instance term (``w_mil``) trains the per-clip curve that detection thresholds,
  at the per-clip scale it is used at;
* one view per sample, a phase-shifted sub-sequence (``views="phase"``, one of those full-rate
  scoring interleaves), and so no alignment loss: on the benchmark, training on two views per
  sample collapsed in 2 of 5 runs on a fresh set, with or without the alignment term, and was
  worse on average on both sets (``--set align=true`` turns it back on, with two phase views and weight
  0.05: at the paper's 0.5 the term outweighs the BCE 4x with 8 videos a batch; and
  ``view_scaling="once"``: the two views' BCE and MIL are divided by the view count once, not
  twice as in the authors' code, which halves the classification signal against the sparsity
  pull on the attention; bench/quality.py measures it);
* the schedule is counted in optimizer steps: at least ``min_steps`` of them (the paper's 50
  epochs are kept when they are more), a linear warm-up, then a cosine decay;
* four members are trained, cross-fitted on four folds of the training videos
  (`vadpipe.ensemble_training`): member k holds out a quarter of each class, fold k, keeps the
  weights with the lowest loss on it (early stopping; video labels only), and the run's curve is
  the members' mean. Every video is trained on by three members, and every video, scored by
  the member that held it out, takes part in choosing the operating point. On the long set one
  default run's frame AP spanned 0.51-0.84 over 5 seeds, mostly by which videos it held out;
  the cross-fitted four spanned 0.80-0.85 (bench/quality.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vadpipe.errors import ConfigError
from vadpipe.model.config import TrainConfig
from vadpipe.run_calibration import CalibrationSpec

__all__ = ["Recipe", "RECIPES", "recipe", "describe_default"]


@dataclass(frozen=True)
class Recipe:
    """A named way to train: the training settings and how the operating point is chosen.

    Attributes:
        name: the registry name.
        summary: one line for help texts.
        training: every training hyper-parameter.
        calibration: the videos held out and the operating point chosen on them; None trains
            on every video and keeps the paper's fixed threshold 0.35.
        ensemble: members trained (`vadpipe.ensemble_training`); with ``calibration`` they are
            cross-fitted on as many folds, so ``calibration.holdout_fraction`` is 1/ensemble.
    """

    name: str
    summary: str
    training: TrainConfig
    calibration: CalibrationSpec | None
    ensemble: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 1:
            raise ConfigError(f"ensemble must be an integer >= 1 (members), got {self.ensemble!r}")

    def replaced(
        self,
        *,
        training: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
        ensemble: int | None = None,
    ) -> Recipe:
        """This recipe with the named fields replaced (``dataclasses.replace``), nothing else.

        ``calibration={"holdout_fraction": 0}`` holds out nothing (``calibration`` None); other
        calibration fields on a recipe without one start from `CalibrationSpec`'s defaults.

        Raises:
            ConfigError: a value its dataclass refuses, naming it.
        """
        try:
            config = self.training
            config = replace(
                config,
                model=replace(config.model, **(model or {})),
                loss=replace(config.loss, **(loss or {})),
                **(training or {}),
            )
            spec = self.calibration
            if calibration:
                if calibration.get("holdout_fraction") == 0:
                    spec = None
                else:
                    spec = replace(spec or CalibrationSpec(), **calibration)
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise ConfigError(str(exc)) from exc
        members = self.ensemble if ensemble is None else ensemble
        return replace(self, training=config, calibration=spec, ensemble=members)


def _default_training() -> TrainConfig:
    paper = TrainConfig()
    return replace(
        paper,
        loss=replace(paper.loss, normalize="video", w_mil=1.0, w_align=0.05, view_scaling="once"),
        align=False,
        views="phase",
        schedule="cosine",
        lr=1e-4,
        lr_decay=0.01,
        warmup_steps=100,
        min_steps=1500,
        balanced=True,
        early_stopping=True,
        select_every_steps=50,
    )


RECIPES: dict[str, Recipe] = {
    "default": Recipe(
        "default",
        "vadpipe's recipe for few, long videos",
        _default_training(),
        CalibrationSpec(holdout_fraction=0.25),
        ensemble=4,
    ),
    "paper": Recipe(
        "paper", "the authors' exact recipe, trained on every video with the fixed threshold 0.35", TrainConfig(), None
    ),
}


def recipe(name: str) -> Recipe:
    """The registered recipe ``name``."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}") from None


def _value(item: Recipe, path: tuple[str, ...]) -> Any:
    """``("training", "loss", "w_mil")`` -> the recipe's value. A recipe without calibration holds
    out nothing (0); its other calibration fields are those `Recipe.replaced` would start from."""
    if path[0] == "calibration" and item.calibration is None:
        return 0 if path[-1] == "holdout_fraction" else getattr(CalibrationSpec(), path[-1])
    obj: Any = item
    for name in path:
        obj = getattr(obj, name)
    return obj


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value).replace("_", "-")


def describe_default(path: tuple[str, ...]) -> str:
    """A field's default as a help text shows it: one value when every recipe agrees, else each
    recipe's, e.g. ``cosine (default recipe), multistep (paper)``."""
    values = {name: _shown(_value(item, path)) for name, item in RECIPES.items()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{v} ({name}{' recipe' if name == 'default' else ''})" for name, v in values.items())
