"""Prepare I3D for inference on one device and precision, and check that the precision is real there.

One place decides what each precision means on each device:

* ``fp32``: true fp32 everywhere (TF32 off on CUDA, so results match the CPU reference);
* ``bf16``: on CUDA, autocast; on a CPU, the network's weights and activations in bfloat16,
  which oneDNN runs on AVX512-BF16 / AMX units. A CPU without native BF16 would emulate it,
  slower than fp32, so it is refused there with a clear message instead;
* ``fp16``: CUDA only (autocast).

BatchNorm is folded into the convolutions (``fold_batch_norm``) and the channels-last 3D memory
format is used on every device (oneDNN and cuDNN both prefer it for these convolutions).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from vadpipe.errors import ConfigError

from .i3d import InceptionI3d, fold_batch_norm

__all__ = ["AUTOCAST_DTYPES", "cpu_has_native_bf16", "check_precision", "inference_network"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU has BF16 arithmetic (AVX512-BF16 or AMX-BF16) and torch's oneDNN can use it.

    oneDNN also accepts bf16 on plain AVX-512 by emulating it, which is slower than fp32: the
    CPU flags (Linux ``/proc/cpuinfo``) decide, not oneDNN's own answer alone.
    """
    try:
        onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        onednn = False
    return bool(onednn) and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run natively, naming what to use instead."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError("bf16 on this CPU would be emulated (no AVX512-BF16 or AMX-BF16 units), which is "
                          "slower than fp32; use --precision fp32")


def inference_network(model: InceptionI3d, device: torch.device, precision: str) -> tuple[nn.Module, torch.dtype]:
    """The network ready to run on ``device`` and the dtype its input must have.

    The caller's ``model`` is left untouched (the folded copy is separate).
    """
    check_precision(precision, device)
    net = fold_batch_norm(model).to(device)
    input_dtype = torch.float32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if precision == "fp32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    elif precision == "bf16":
        net = net.to(torch.bfloat16)
        input_dtype = torch.bfloat16
    return net.to(memory_format=torch.channels_last_3d), input_dtype
