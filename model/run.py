"""Run folders: trained weights, their config, the resume checkpoint and the LATEST pointer.

A run folder holds::

    config.json           model / training / data / extraction settings, vadpipe version
    weights.safetensors   the final model weights
    metrics.jsonl         one JSON line per epoch (loss parts, validation metrics)
    summary.json          last-epoch and best-epoch metrics, labelled
    curves.png            loss and metric curves
    checkpoint/           state.json + state-eNNNN.safetensors (model + Adam moments) for resume

Nothing here unpickles: tensors are safetensors, everything else JSON. Every file is written to a
temp file and renamed into place; ``checkpoint/state.json`` is written last and names the
tensor file it belongs to, so a kill mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vadpipe._version import __version__
from vadpipe.errors import CheckpointError
from vadpipe.extract.fileio import atomic_write_bytes, atomic_write_text, sha256_bytes

from .ensemble import Ensemble
from .net import CSLTAL
from .run_config import RUN_SCHEMA_VERSION, RunConfig

__all__ = [
    "RUN_SCHEMA_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "SUMMARY_FILE",
    "CURVES_FILE",
    "CHECKPOINT_DIR",
    "LATEST_FILE",
    "Run",
    "load_run",
    "ensemble_size",
    "read_run_config",
    "latest_run",
    "set_latest",
    "new_run_dir",
    "save_run",
    "write_json",
    "read_json",
    "save_weights",
    "save_checkpoint",
    "load_checkpoint",
    "load_best",
    "has_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoint"
LATEST_FILE = "LATEST"
_STATE_FILE = "state.json"


@dataclass(frozen=True)
class Run:
    """A trained run: ``model`` on the CPU in eval mode, ``config`` its checked config.json."""

    path: Path
    config: RunConfig
    model: CSLTAL | Ensemble


def write_json(path: Path, data: object) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")


def read_json(path: Path, *, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} is not a JSON object")
    return data


def _read_bytes(path: Path, *, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc


def _parse_tensors(data: bytes, path: Path, *, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{what} {path} is not a readable safetensors file: {exc}") from exc


def save_weights(model: CSLTAL | Ensemble, path: Path) -> None:
    """Model weights as safetensors, with the model config in the metadata."""
    metadata = {"format": "pt", "vadpipe_version": __version__, "model": json.dumps(model.config.to_dict())}
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_bytes(Path(path), save_safetensors(state, metadata=metadata))


def save_run(run_dir: Path | str, model: CSLTAL | Ensemble, *, config: dict | None = None) -> Path:
    """Write a loadable run folder: ``config.json`` and ``weights.safetensors``.

    Args:
        run_dir: the folder (created if needed).
        model: the network; its ``ModelConfig`` becomes the config's "model" section.
        config: other sections ("training", "data", "validation", "extraction", ...); missing
            ones are null. Train writes them all; a hand-built model may pass none.

    Example:
        >>> save_run("runs/untrained", CSLTAL(ModelConfig()))  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    base = dict.fromkeys(("training", "data", "validation", "extraction"))
    full = {**base, **(config or {}), "schema_version": RUN_SCHEMA_VERSION, "model": model.config.to_dict()}
    full.setdefault("vadpipe_version", __version__)
    write_json(run_dir / CONFIG_FILE, full)
    save_weights(model, run_dir / WEIGHTS_FILE)
    return run_dir


def _load_state(model: CSLTAL, state: dict[str, torch.Tensor], *, source: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{source} does not fit the model in its config.json: {first}") from exc


def read_run_config(run_dir: Path | str) -> RunConfig:
    """The checked ``config.json`` of a run folder (`RunConfig.from_dict`)."""
    path = Path(run_dir) / CONFIG_FILE
    return RunConfig.from_dict(read_json(path, what="run config"), where=str(path))


def ensemble_size(config: RunConfig, *, where: Path) -> int:
    """Members of the run's model: its ``ensemble`` section's ``size`` (1 without one: every run
    written before ensembles, and every single-seed run)."""
    section = config.sections.get("ensemble")
    if section is None:
        return 1
    size = section.get("size") if isinstance(section, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CheckpointError(f"{where}: ensemble.size must be an integer >= 1, got {size!r}")
    return size


def load_run(run_dir: Path | str) -> Run:
    """Load a run folder's final weights into a fresh model (CPU, eval mode).

    Raises:
        CheckpointError: missing or unreadable files, foreign schema, weights not matching the config.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    config = read_run_config(run_dir)
    size = ensemble_size(config, where=run_dir / CONFIG_FILE)
    # an ensemble section means an Ensemble, even of one (a cross-fitted run that left members out)
    model = CSLTAL(config.model) if "ensemble" not in config.sections else Ensemble.empty(config.model, size)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{weights} is missing: the run did not finish; resume it with vadpipe train --resume {run_dir}"
        )
    _load_state(model, _parse_tensors(_read_bytes(weights, what="weights"), weights, what="weights"), source=weights)
    return Run(path=run_dir, config=config, model=model.eval())


def latest_run(runs_dir: Path | str) -> Path:
    """The run folder named in ``runs_dir/LATEST`` (written after each finished ``vadpipe train``)."""
    pointer = Path(runs_dir) / LATEST_FILE
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        raise CheckpointError(
            f"no trained model: {pointer} does not exist; run vadpipe train first, or pass --run RUN_DIR"
        ) from None
    run_dir = Path(runs_dir) / name  # an absolute name stays absolute
    if not name or not run_dir.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a run folder; pass --run RUN_DIR")
    return run_dir


def set_latest(runs_dir: Path | str, run_dir: Path | str) -> None:
    """Point ``runs_dir/LATEST`` at ``run_dir`` (by name when it lies in runs_dir, else absolute)."""
    runs_dir, run_dir = Path(runs_dir), Path(run_dir)
    inside = run_dir.resolve().parent == runs_dir.resolve()
    atomic_write_text(runs_dir / LATEST_FILE, (run_dir.name if inside else str(run_dir.resolve())) + "\n")


def new_run_dir(runs_dir: Path | str) -> Path:
    """A fresh, not yet existing ``runs_dir/run-YYYYmmdd-HHMMSS[-n]`` path."""
    base = "run-" + time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        candidate = Path(runs_dir) / (base if n == 0 else f"{base}-{n}")
        if not candidate.exists():
            return candidate
    raise CheckpointError(f"cannot find a free run folder name in {runs_dir}")


def save_checkpoint(
    run_dir: Path,
    *,
    epoch: int,
    model: CSLTAL,
    optimizer: torch.optim.Adam,
    best: tuple[int, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Model weights and Adam state after ``epoch``, with no pickle: moments as tensors, steps as JSON.

    ``best`` (epoch, state dict): the weights early stopping has kept so far, stored alongside.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    names = [name for name, _ in model.named_parameters()]
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v.detach().contiguous() for k, v in best[1].items()})
    steps: dict[str, int] = {}
    opt_state = optimizer.state_dict()["state"]
    for index, name in enumerate(names):
        slot = opt_state.get(index)
        if slot:
            tensors[f"adam.{name}.exp_avg"] = slot["exp_avg"].contiguous()
            tensors[f"adam.{name}.exp_avg_sq"] = slot["exp_avg_sq"].contiguous()
            steps[name] = int(slot["step"])
    data = save_safetensors(tensors)
    tensor_file = f"state-e{epoch:04d}.safetensors"
    previous = {p.name for p in folder.glob("state-e*.safetensors")} - {tensor_file}
    atomic_write_bytes(folder / tensor_file, data)
    write_json(
        folder / _STATE_FILE,
        {
            "schema_version": RUN_SCHEMA_VERSION,
            "epoch": epoch,
            "tensors": tensor_file,
            "sha256": sha256_bytes(data),
            "adam_steps": steps,
            "best_epoch": None if best is None else best[0],
        },
    )
    for name in previous:  # only after state.json names the new file
        (folder / name).unlink(missing_ok=True)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a checkpoint was completed (a run killed during its first epoch has none)."""
    return (Path(run_dir) / CHECKPOINT_DIR / _STATE_FILE).is_file()


def _read_checkpoint(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor], Path]:
    folder = Path(run_dir) / CHECKPOINT_DIR
    state = read_json(folder / _STATE_FILE, what="checkpoint")
    if state.get("schema_version") != RUN_SCHEMA_VERSION:
        raise CheckpointError(f"{folder / _STATE_FILE} has an unknown schema_version {state.get('schema_version')!r}")
    path = folder / str(state.get("tensors"))
    data = _read_bytes(path, what="checkpoint tensors")
    if sha256_bytes(data) != state.get("sha256"):
        raise CheckpointError(f"checkpoint tensors {path} are corrupted (sha256 differs from state.json)")
    return state, _parse_tensors(data, path, what="checkpoint tensors"), path


def load_best(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
    """The early-stopping weights stored with the checkpoint: (epoch, state dict), or None."""
    state, tensors, path = _read_checkpoint(run_dir)
    if state.get("best_epoch") is None:
        return None
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    if not best:
        raise CheckpointError(f"checkpoint {path} names best epoch {state['best_epoch']} but lacks its weights")
    return int(state["best_epoch"]), best


def load_checkpoint(run_dir: Path, *, model: CSLTAL, optimizer: torch.optim.Adam) -> int:
    """Restore model and Adam state from ``run_dir/checkpoint``; returns the epoch it was saved after."""
    state, tensors, path = _read_checkpoint(run_dir)
    _load_state(model, {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, source=path)
    opt = optimizer.state_dict()
    steps = state.get("adam_steps", {})
    opt["state"] = {}
    for index, (name, _) in enumerate(model.named_parameters()):
        saved, convert = name, (lambda t: t)
        if name == "conv.taps" and name not in steps:  # written when the conv's parameter was its full weight
            saved, convert = "conv.weight", model.conv.pack
        if saved in steps:
            try:
                opt["state"][index] = {
                    "step": torch.tensor(float(steps[saved])),
                    "exp_avg": convert(tensors[f"adam.{saved}.exp_avg"]),
                    "exp_avg_sq": convert(tensors[f"adam.{saved}.exp_avg_sq"]),
                }
            except KeyError as exc:
                raise CheckpointError(f"checkpoint {path} lacks the Adam state {exc.args[0]}") from None
    optimizer.load_state_dict(opt)
    return int(state["epoch"])
