"""The ``vadpipe train`` settings that override one field of the recipe (`vadpipe.recipes`), and
the recipe they give: the chosen recipe with the user's settings applied and nothing else,
refusing settings the result would ignore.

A few are options of their own (``--epochs``, ``--lr``...); the advanced ones are keys of
``--set KEY=VALUE``, named after their field (`vadpipe.model.config.TrainConfig`, its loss and
model, `vadpipe.run_calibration.CalibrationSpec`), each parsed by its field's type. Their old
flags (``--w-smooth``, ``--align/--no-align``...) stay as hidden aliases of ``--set``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import click

from vadpipe.cli_options import Alias, AliasedChoice, Option
from vadpipe.errors import ConfigError

__all__ = [
    "FIELDS",
    "KEYS",
    "RUN_OPTIONS",
    "Key",
    "RecipeOption",
    "chosen_recipe",
    "flags",
    "key_aliases",
    "keys_help",
    "parse_set",
]

AUTHORS = {"authors": "code"}  # the value meaning "as the authors' code does" -> what the recipe stores


@dataclass(frozen=True)
class Key:
    """A ``--set`` key: the recipe field it sets, its type, one line of help, and its old flag."""

    path: tuple[str, ...]
    type: click.ParamType
    help: str
    old: str


_ON = click.BOOL
KEYS: dict[str, Key] = {
    "min_steps": Key(("training", "min_steps"), click.IntRange(min=0), "train at least this many optimizer steps", "--min-steps"),
    "balanced": Key(("training", "balanced"), _ON, "class-balanced batches (half normal, half anomalous)", "--balanced/--no-balanced"),
    "schedule": Key(("training", "schedule"), click.Choice(["multistep", "cosine"]), "multistep: lr x lr_decay after lr_milestone_epoch (the authors'); cosine: warm-up, then cosine decay", "--schedule"),
    "lr_milestone_epoch": Key(("training", "lr_milestone_epoch"), click.IntRange(min=0), "multistep: epoch after which lr x lr_decay (30: the authors' code; 10: the paper's text)", "--lr-milestone"),
    "lr_decay": Key(("training", "lr_decay"), click.FloatRange(min=0, max=1, min_open=True), "multistep: factor at the milestone; cosine: the final share of the lr", "--lr-decay"),
    "warmup_steps": Key(("training", "warmup_steps"), click.IntRange(min=0), "cosine: optimizer steps of linear lr warm-up", "--warmup-steps"),
    "views": Key(("training", "views"), click.Choice(["random", "phase"]), "random: one random row per block (the authors'); phase: phase-shifted sub-sequences", "--views"),
    "align": Key(("training", "align"), _ON, "two views per sample and the alignment loss (false: Table 1's 'w/o align')", "--align/--no-align"),
    "block_len": Key(("training", "block_len"), click.IntRange(min=1), "augmentation block length L: a view keeps one row per L", "--block-len"),
    "attention": Key(("training", "model", "attention"), click.Choice(["mlp", "gated"]), "attention head: mlp (the paper's) or gated", "--attention"),
    "kernel_size": Key(("training", "model", "kernel_size"), click.IntRange(min=1), "odd kernel size of the masked causal conv", "--kernel-size"),
    "w_sparsity": Key(("training", "loss", "w_sparsity"), click.FloatRange(min=0), "sparsity weight (overrides --loss-weights)", "--w-sparsity"),
    "w_smooth": Key(("training", "loss", "w_smooth"), click.FloatRange(min=0), "smoothness weight (overrides --loss-weights)", "--w-smooth"),
    "w_align": Key(("training", "loss", "w_align"), click.FloatRange(min=0), "alignment weight (with align=true)", "--w-align"),
    "w_mil": Key(("training", "loss", "w_mil"), click.FloatRange(min=0), "weight of the top-k MIL term on the weighted T-CAM", "--w-mil"),
    "normalize": Key(("training", "loss", "normalize"), click.Choice(["steps", "video"]), "divide the batch loss by its step count (the authors') or per video", "--loss-norm"),
    "view_scaling": Key(("training", "loss", "view_scaling"), AliasedChoice(["authors", "once"], {"code": "authors"}), "two views: authors divides BCE and MIL by the view count twice, once: every term once", "--view-scaling"),
    "early_stopping": Key(("training", "early_stopping"), _ON, "keep the weights with the lowest held-out loss (needs holdout_fraction > 0)", "--early-stopping/--no-early-stopping"),
    "holdout_fraction": Key(("calibration", "holdout_fraction"), click.FloatRange(min=0, max=1, max_open=True), "share of each class's videos held out to stop early and calibrate (0: none, threshold 0.35)", "--holdout-fraction"),
}  # fmt: skip

# Every setting that overrides one recipe field: the options of their own, then the --set keys.
FIELDS: dict[str, tuple[str, ...]] = {
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "seed": ("training", "seed"),
    "operating_point": ("calibration", "operating_point"),
    "target_false_alarm_rate": ("calibration", "target_false_alarm_rate"),
    "train_annotations": ("calibration", "annotations"),
    "calibration": ("calibration", "method"),
    "ensemble": ("ensemble",),
    **{name: key.path for name, key in KEYS.items()},
}
# Options that define a run; --resume takes them from the run's config.json instead (only --epochs may change).
RUN_OPTIONS = (
    "features",
    "labels_csv",
    "run_dir",
    "recipe",
    "loss_weights",
    "crop_indices",
    "val_features",
    "val_annotations",
    "val_every",
    "backbone",
    "settings",
    *(name for name in FIELDS if name != "epochs"),
)
# Settings that only mean something when videos are held out for calibration.
_CALIBRATION_OPTIONS = tuple(
    name for name, path in FIELDS.items() if path[0] == "calibration" and name != "holdout_fraction"
)


def _default(name: str) -> str:
    from vadpipe.recipes import describe_default  # imports torch: only when help is shown

    text = describe_default(FIELDS[name])
    return text.replace("code", "authors") if name == "view_scaling" else text


class RecipeOption(Option):
    """An option overriding one recipe field: its help ends with the registry's default(s)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = click.Option.get_help_record(self, ctx)  # its default comes from the registry
        if record is None:
            return None
        return record[0], f"{record[1]}  [default: {_default(self.name)}]"


def key_aliases() -> list[Callable]:
    """The old flags of the ``--set`` keys, as hidden aliases (decorators for the train command)."""
    return [
        click.option(
            key.old,
            name,
            cls=Alias,
            use=f"--set {name}=VALUE",
            type=None if key.type is _ON else key.type,
            default=None,
        )
        for name, key in KEYS.items()
    ]


def keys_help() -> str:
    """What ``vadpipe train --help-keys`` prints: each key, its values, its default and what it does."""
    lines = ["Keys of vadpipe train --set KEY=VALUE (defaults from the recipes):", ""]
    for name, key in KEYS.items():
        values = "true|false" if key.type is _ON else key.type.get_metavar(click.Option(["--x"]), None) or key.type.name
        lines.append(f"  {name} {values}  [default: {_default(name)}]")
        lines.append(f"      {key.help}")
    return "\n".join(lines)


def parse_set(items: tuple[str, ...]) -> dict[str, object]:
    """``("w_mil=0.5", "align=false")`` -> ``{"w_mil": 0.5, "align": False}``, each value parsed by its
    key's type; a key given twice keeps the last value."""
    values: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in KEYS:
            raise ConfigError(
                f"--set takes KEY=VALUE with KEY one of {', '.join(KEYS)}, got {item!r} (vadpipe train --help-keys)"
            )
        try:
            values[name] = KEYS[name].type.convert(text.strip(), None, None)
        except click.BadParameter as exc:
            raise ConfigError(f"--set {name}: {exc.message}") from None
    return values


def _shown(ctx: click.Context, name: str) -> str:
    """A setting as the user would type it: ``--epochs``, or ``--set lr_decay`` for a key."""
    if name in KEYS:
        return f"--set {name}"
    return next("/".join(p.opts + p.secondary_opts) for p in ctx.command.params if p.name == name)


def flags(ctx: click.Context, names: list[str]) -> str:
    """The settings ``names`` as the user would type them."""
    return ", ".join(_shown(ctx, name) for name in names)


def chosen_recipe(ctx: click.Context, name: str, settings: dict[str, object]):
    """The recipe ``name`` with the options and ``--set`` ``settings`` the user gave applied, and
    nothing else (`vadpipe.recipes.Recipe.replaced`); refuses settings that the result would ignore."""
    from vadpipe.model.losses import WEIGHT_ASSIGNMENTS
    from vadpipe.recipes import recipe

    base = recipe(name)
    given = {option: value for option, value in ctx.params.items() if option in FIELDS and value is not None}
    twice = sorted(set(given) & set(settings))
    if twice:
        raise ConfigError(f"{', '.join(twice)} given both as an old flag and with --set; give --set only")
    given.update(settings)
    if "operating_point" in given:
        given["operating_point"] = given["operating_point"].replace("-", "_")
    if "view_scaling" in given:
        given["view_scaling"] = AUTHORS.get(given["view_scaling"], given["view_scaling"])
    changes: dict[str, dict] = {"training": {}, "model": {}, "loss": {}, "calibration": {}}
    if ctx.params["loss_weights"]:
        changes["loss"].update(WEIGHT_ASSIGNMENTS[AUTHORS.get(ctx.params["loss_weights"], ctx.params["loss_weights"])])
    ensemble = given.pop("ensemble", None)
    for option, value in given.items():
        path = FIELDS[option]
        changes[path[1] if len(path) == 3 else path[0]][path[-1]] = value
    training = {**vars(base.training), **changes["training"]}
    if "w_align" in given and not training["align"]:
        raise ConfigError(
            "--set w_align weighs the alignment loss, which needs --set align=true (two views per sample)"
        )
    if training["schedule"] == "cosine" and "lr_milestone_epoch" in given:
        raise ConfigError("--set lr_milestone_epoch applies to --set schedule=multistep; cosine decays every step")
    if training["schedule"] == "multistep" and "warmup_steps" in given:
        raise ConfigError("--set warmup_steps applies to --set schedule=cosine")
    holds_out = given.get("holdout_fraction", base.calibration and base.calibration.holdout_fraction) or 0
    calibrating = [option for option in _CALIBRATION_OPTIONS if option in given]
    if not holds_out and calibrating:
        raise ConfigError(
            f"--set holdout_fraction=0 holds out no videos to calibrate on; drop {flags(ctx, calibrating)}"
        )
    if given.get("operating_point") == "f1" and "target_false_alarm_rate" in given:
        raise ConfigError("--target-false-alarm-rate applies to --operating-point false-alarms, not f1")
    chosen = base.replaced(**changes, ensemble=ensemble)
    if chosen.ensemble > 1 and chosen.calibration is not None and "holdout_fraction" in given:
        raise ConfigError(
            f"--ensemble {chosen.ensemble} cross-fits its members: each holds out one of "
            f"{chosen.ensemble} folds (1/{chosen.ensemble} of the videos); drop holdout_fraction, "
            "or pass --ensemble 1"
        )
    if chosen.training.early_stopping and chosen.calibration is None:
        if given.get("early_stopping"):
            raise ConfigError("--set early_stopping=true watches held-out videos; holdout_fraction=0 holds out none")
        click.secho(
            "note: no videos held out (holdout_fraction 0): no early stopping, the last epoch's weights are kept",
            fg="yellow",
            err=True,
        )
        chosen = chosen.replaced(training={"early_stopping": False})
    return chosen
