"""The ``vadpipe train`` options that override one field of the recipe (`vadpipe.recipes`), and
the recipe they give: the chosen recipe with the user's options applied and nothing else,
refusing options the result would ignore."""

from __future__ import annotations

import click

from vadpipe.errors import ConfigError

__all__ = ["FIELDS", "RUN_OPTIONS", "RecipeOption", "flags", "chosen_recipe"]

# The options that override one field of the recipe (`vadpipe.recipes`): option name -> field path.
# They default to None (= the recipe's value); their help shows the registry's defaults.
FIELDS: dict[str, tuple[str, ...]] = {
    "epochs": ("training", "epochs"),
    "min_steps": ("training", "min_steps"),
    "batch_size": ("training", "batch_size"),
    "balanced": ("training", "balanced"),
    "lr": ("training", "lr"),
    "schedule": ("training", "schedule"),
    "lr_milestone": ("training", "lr_milestone_epoch"),
    "lr_decay": ("training", "lr_decay"),
    "warmup_steps": ("training", "warmup_steps"),
    "views": ("training", "views"),
    "align": ("training", "align"),
    "block_len": ("training", "block_len"),
    "attention": ("training", "model", "attention"),
    "kernel_size": ("training", "model", "kernel_size"),
    "w_sparsity": ("training", "loss", "w_sparsity"),
    "w_smooth": ("training", "loss", "w_smooth"),
    "w_align": ("training", "loss", "w_align"),
    "w_mil": ("training", "loss", "w_mil"),
    "loss_norm": ("training", "loss", "normalize"),
    "view_scaling": ("training", "loss", "view_scaling"),
    "early_stopping": ("training", "early_stopping"),
    "seed": ("training", "seed"),
    "holdout_fraction": ("calibration", "holdout_fraction"),
    "operating_point": ("calibration", "operating_point"),
    "target_false_alarm_rate": ("calibration", "target_false_alarm_rate"),
    "train_annotations": ("calibration", "annotations"),
    "calibration": ("calibration", "method"),
    "ensemble": ("ensemble",),
}
# Options that define a run; --resume takes them from the run's config.json instead (only --epochs may change).
RUN_OPTIONS = (
    "features",
    "labels_csv",
    "out_dir",
    "recipe",
    "loss_weights",
    "crops",
    "val_features",
    "annotations",
    "val_every",
    "features_backbone",
    *(name for name in FIELDS if name != "epochs"),
)
# Options that only mean something when videos are held out for calibration.
_CALIBRATION_OPTIONS = tuple(
    name for name, path in FIELDS.items() if path[0] == "calibration" and name != "holdout_fraction"
)


class RecipeOption(click.Option):
    """An option overriding one recipe field: its help ends with the registry's default(s)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from vadpipe.recipes import describe_default  # imports torch: only when help is shown

        record = super().get_help_record(ctx)
        if record is None:
            return None
        return record[0], f"{record[1]}  [default: {describe_default(FIELDS[self.name])}]"


def flags(ctx: click.Context, names: list[str]) -> str:
    """The options ``names`` as the user would type them (``--align/--no-align`` for a flag pair)."""
    return ", ".join("/".join(p.opts + p.secondary_opts) for p in ctx.command.params if p.name in names)


def chosen_recipe(ctx: click.Context, name: str):
    """The recipe ``name`` with the options the user gave applied, and nothing else
    (`vadpipe.recipes.Recipe.replaced`); refuses options that the result would ignore."""
    from vadpipe.model.losses import WEIGHT_ASSIGNMENTS
    from vadpipe.recipes import recipe

    base = recipe(name)
    given = {option: value for option, value in ctx.params.items() if option in FIELDS and value is not None}
    if "operating_point" in given:
        given["operating_point"] = given["operating_point"].replace("-", "_")
    changes: dict[str, dict] = {"training": {}, "model": {}, "loss": {}, "calibration": {}}
    if ctx.params["loss_weights"]:
        changes["loss"].update(WEIGHT_ASSIGNMENTS[ctx.params["loss_weights"]])
    ensemble = given.pop("ensemble", None)
    for option, value in given.items():
        path = FIELDS[option]
        changes[path[1] if len(path) == 3 else path[0]][path[-1]] = value
    training = {**vars(base.training), **changes["training"]}
    if "w_align" in given and not training["align"]:
        raise ConfigError("--w-align weighs the alignment loss, which needs --align (two views per sample)")
    if training["schedule"] == "cosine" and "lr_milestone" in given:
        raise ConfigError("--lr-milestone applies to --schedule multistep; cosine decays every step")
    if training["schedule"] == "multistep" and "warmup_steps" in given:
        raise ConfigError("--warmup-steps applies to --schedule cosine")
    holds_out = given.get("holdout_fraction", base.calibration and base.calibration.holdout_fraction) or 0
    calibrating = [option for option in _CALIBRATION_OPTIONS if option in given]
    if not holds_out and calibrating:
        raise ConfigError(f"--holdout-fraction 0 holds out no videos to calibrate on; drop {flags(ctx, calibrating)}")
    if given.get("operating_point") == "f1" and "target_false_alarm_rate" in given:
        raise ConfigError("--target-false-alarm-rate applies to --operating-point false-alarms, not f1")
    chosen = base.replaced(**changes, ensemble=ensemble)
    if chosen.ensemble > 1 and chosen.calibration is not None and "holdout_fraction" in given:
        raise ConfigError(
            f"--ensemble {chosen.ensemble} cross-fits its members: each holds out one of "
            f"{chosen.ensemble} folds (1/{chosen.ensemble} of the videos); drop --holdout-fraction, "
            "or pass --ensemble 1"
        )
    if chosen.training.early_stopping and chosen.calibration is None:
        if given.get("early_stopping"):
            raise ConfigError("--early-stopping watches held-out videos; --holdout-fraction 0 holds out none")
        click.secho(
            "note: no videos held out (--holdout-fraction 0): no early stopping, the last epoch's weights are kept",
            fg="yellow",
            err=True,
        )
        chosen = chosen.replaced(training={"early_stopping": False})
    return chosen
