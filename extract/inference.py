"""Prepare I3D for inference on one device and precision, and check that the precision is real there.

One place decides what each precision means on each device:

* ``fp32``: true fp32 everywhere (TF32 off on CUDA, so results match the CPU reference);
* ``bf16``: on CUDA, autocast; on a CPU, the network's weights and activations in bfloat16,
  which oneDNN runs on AVX512-BF16 / AMX units. A CPU without native BF16 would emulate it,
  slower than fp32, so it is refused there with a clear message instead;
* ``fp16``: CUDA only (autocast).

bf16 is refused where it would be emulated: on a CPU without BF16 units, and on a GPU of compute
capability below 8.0.

BatchNorm is folded into the convolutions (``fold_batch_norm``) and the channels-last 3D memory
format is used on every device (oneDNN and cuDNN both prefer it for these convolutions).

Two runtimes run the same folded network: ``torch`` (the default, every device) and
``openvino`` (CPUs only, ``pip install 'vadpipe[openvino]'``). OpenVINO runs these 3D
convolutions markedly faster on x86 CPUs (``bench/precision.py`` measures both). Its network is
the folded PyTorch network exported to ONNX once per weights (cached beside the weights) and
read with OpenVINO's runtime API only: its model-conversion API, which sends usage telemetry by
default, is never called.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vadpipe.errors import ConfigError, VadpipeError

from .fileio import atomic_writer
from .i3d import InceptionI3d, fold_batch_norm
from .settings import RUNTIMES
from .transforms import to_unit_range

__all__ = [
    "AUTOCAST_DTYPES",
    "RUNTIMES",
    "cpu_has_native_bf16",
    "check_cuda_bf16",
    "check_precision",
    "check_runtime",
    "gpu_memory_errors",
    "inference_network",
    "set_cuda_backend",
]

Network = Callable[[torch.Tensor], np.ndarray]  # uint8 (N, 3, T, S, S) on the CPU -> (N, 1024) float32

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


def check_cuda_bf16(capability: tuple[int, int], device: str = "cuda") -> None:
    """Refuse bf16 on a GPU of compute ``capability`` below 8.0 (before Ampere): it has no bf16
    tensor cores, so autocast would emulate it, slower than fp32."""
    if tuple(capability) < (8, 0):
        major, minor = capability
        raise ConfigError(
            f"bf16 on {device} (compute capability {major}.{minor}) would be emulated: native bf16 needs "
            "compute capability 8.0 or newer (Ampere); use --precision fp16 or fp32"
        )


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run natively, naming what to use instead."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cuda":
        check_cuda_bf16(torch.cuda.get_device_capability(device), str(device))
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError(
            "bf16 on this CPU would be emulated (no AVX512-BF16 or AMX-BF16 units), which is "
            "slower than fp32; use --precision fp32"
        )


def check_runtime(runtime: str, device: torch.device) -> None:
    """Refuse a runtime that is unknown, not installed, or not for this device, saying what to do."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "openvino":
        if device.type != "cpu":
            raise ConfigError(f"the openvino runtime runs on CPUs; on {device} use --runtime torch")
        try:
            import onnx  # noqa: F401  (the exporter needs it)
            import openvino  # noqa: F401
        except ImportError:
            raise ConfigError("the openvino runtime is not installed: pip install 'vadpipe[openvino]'") from None


def set_cuda_backend(precision: str) -> None:
    """The process-wide cuDNN/cuBLAS switches for a CUDA network (they need no GPU to be set).

    ``cudnn.benchmark`` stays off: it re-tunes every convolution for each new input shape, and the
    batch size changes with every video's last batch and every watch batch (1-8 crops), which would
    stall live streams on each new size. fp32 turns TF32 off, so results match the CPU reference.
    """
    torch.backends.cudnn.benchmark = False
    if precision == "fp32":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@contextmanager
def gpu_memory_errors(device: torch.device, crops: int) -> Iterator[None]:
    """A GPU out-of-memory error as one clear line (not a traceback, nor a dead ``--devices`` child)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise VadpipeError(f"GPU out of memory at a batch of {crops} crops on {device}: lower --i3d-batch") from None


def inference_network(model: InceptionI3d, device: torch.device, precision: str, *, runtime: str = "torch") -> Network:
    """The network ready to turn uint8 clips into features on ``device`` with ``precision``.

    The caller's ``model`` is left untouched (the folded copy is separate). On CUDA the batch is
    copied from pinned memory without blocking and scaled on the device (4x less to transfer
    than float32).
    """
    check_precision(precision, device)
    check_runtime(runtime, device)
    net = fold_batch_norm(model)
    if runtime == "openvino":
        return _openvino_network(net, precision)
    net = net.to(device)
    input_dtype = torch.float32
    autocast = None
    if device.type == "cuda":
        set_cuda_backend(precision)
        autocast = AUTOCAST_DTYPES.get(precision)
    elif precision == "bf16":
        net = net.to(torch.bfloat16)
        input_dtype = torch.bfloat16
    net = net.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def run(clips: torch.Tensor) -> np.ndarray:
        with gpu_memory_errors(device, len(clips)) if device.type == "cuda" else nullcontext():
            if device.type == "cuda":
                clips = clips.pin_memory().to(device, non_blocking=True)
            x = to_unit_range(clips).to(input_dtype).contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast("cuda", dtype=autocast) if autocast else nullcontext():
                feats = net.forward_features(x)
            return feats.float().cpu().numpy()

    return run


class _Features(nn.Module):
    """``forward_features`` as ``forward``, for the exporter."""

    def __init__(self, net: InceptionI3d) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def _onnx_file(net: InceptionI3d, clip_len: int = 16, size: int = 224) -> Path:
    """The folded network as ONNX with a free batch size, exported once per weights and torch version."""
    from .weights import cache_dir

    digest = hashlib.sha256(torch.__version__.encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    path = cache_dir() / "openvino" / f"i3d-{digest.hexdigest()[:16]}-{clip_len}x{size}.onnx"
    if not path.exists():
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the tracer notes the Python-side SAME padding: fixed for this shape
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Features(net).eval(),
                (torch.zeros(1, 3, clip_len, size, size),),
                buf,
                input_names=["clips"],
                output_names=["features"],
                dynamic_axes={"clips": {0: "batch"}, "features": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as f:
            f.write(buf.getvalue())
    return path


def _openvino_network(net: InceptionI3d, precision: str) -> Network:
    """OpenVINO's compiled network per clip shape (SAME padding is fixed by the shape at export)."""
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    }
    requests: dict[tuple[int, int, int], object] = {}

    def run(clips: torch.Tensor) -> np.ndarray:
        shape = tuple(clips.shape[2:])
        if shape not in requests:
            if shape[1] != shape[2]:
                raise ConfigError(f"the openvino runtime takes square crops, got {shape[1]}x{shape[2]}")
            onnx_path = _onnx_file(net, clip_len=shape[0], size=shape[1])
            requests[shape] = core.compile_model(core.read_model(str(onnx_path)), "CPU", config).create_infer_request()
        x = to_unit_range(clips).numpy()
        return np.array(requests[shape].infer({0: x})[0], dtype=np.float32, copy=True)

    return run
