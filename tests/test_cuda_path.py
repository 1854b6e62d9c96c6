"""The CUDA path's refusals and choices, checked on the CPU where they are pure (device names, the
auto choice, bf16 by compute capability, the cuDNN switches, out-of-memory as one line, the bf16
cache key, decoder threads per decode process, shared memory), and on a GPU where one is here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vadpipe.errors import ConfigError, VadpipeError
from vadpipe.executor_choice import choose_executor
from vadpipe.extract.decode import open_frames
from vadpipe.extract.encoder import auto_device, known_device, select_device
from vadpipe.extract.inference import check_cuda_bf16, gpu_memory_errors, set_cuda_backend
from vadpipe.extract.options import ThreadOptions
from vadpipe.extract.procs import check_shared_memory, decode_threads, shared_memory_free
from vadpipe.extract.settings import ExtractionSettings

CUDA_COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(
    "name, match",
    [
        ("mps", r"device 'mps': only cpu and cuda devices are supported"),
        ("xla", r"device 'xla': only cpu and cuda devices are supported"),
        ("meta", r"only cpu and cuda"),
        ("cuda:-1", r"unknown device 'cuda:-1' \(use auto, cpu, cuda or cuda:N\)"),
        ("gpu0", r"unknown device 'gpu0'"),
        ("cuda:x", r"unknown device 'cuda:x'"),
        ("cuda:7", rf"device cuda:7 requested but this machine has {CUDA_COUNT} CUDA device\(s\)"),
    ],
)
def test_a_device_vadpipe_cannot_run_on_is_refused_in_one_line(name, match):
    if name == "cuda:7" and CUDA_COUNT > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match=match) as err:
        select_device(name)
    assert "\n" not in str(err.value)


def test_cpu_and_auto_are_devices():
    assert select_device("cpu") == torch.device("cpu") == known_device("cpu")
    assert select_device("auto").type == ("cuda" if CUDA_COUNT else "cpu")
    assert select_device(None) == select_device("") == select_device("auto")
    if not CUDA_COUNT:
        with pytest.raises(ConfigError, match=r"device cuda requested .* 0 CUDA device\(s\) \(CUDA is not available\)"):
            select_device("cuda")


def test_auto_runs_openvino_on_the_cpu_and_bf16_features_where_they_were_made():
    assert auto_device("torch", True) == "cuda" and auto_device("torch", False) == "cpu"
    assert auto_device("openvino", True) == "cpu" == auto_device("openvino", False)
    assert auto_device("torch", True, device_type="cpu") == "cpu"
    assert auto_device("torch", True, device_type="cuda") == "cuda"
    assert auto_device("torch", False, device_type="cuda") == "cpu"  # refused later, naming the device
    assert select_device("auto", runtime="openvino") == torch.device("cpu")
    # the CLI's executor for an openvino run: a decode thread, as on any CPU run
    assert choose_executor(device="auto", runtime="openvino") == ThreadOptions(device="auto")


@pytest.mark.parametrize("capability", [(6, 1), (7, 0), (7, 5)])
def test_bf16_is_refused_below_compute_capability_8(capability):
    major, minor = capability
    with pytest.raises(ConfigError, match=rf"bf16 on cuda:0 \(compute capability {major}\.{minor}\) would be emulated"):
        check_cuda_bf16(capability, "cuda:0")


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (9, 0), (10, 0)])
def test_bf16_is_accepted_from_compute_capability_8(capability):
    check_cuda_bf16(capability)


@pytest.fixture
def cuda_flags():
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_cuda_backend_does_not_retune_convolutions_per_batch_size(cuda_flags, precision):
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    set_cuda_backend(precision)
    assert torch.backends.cudnn.benchmark is False
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    assert tf32 == ((False, False) if precision == "fp32" else (True, True))


def test_gpu_out_of_memory_is_one_clear_line():
    def network():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB ...")

    with pytest.raises(VadpipeError, match=r"^GPU out of memory at a batch of 32 crops on cuda:1: lower --i3d-batch$"):
        with gpu_memory_errors(torch.device("cuda:1"), 32):
            network()
    with pytest.raises(RuntimeError, match="other"):  # any other error passes as it is
        with gpu_memory_errors(torch.device("cuda:1"), 32):
            raise RuntimeError("other")


def test_bf16_features_of_a_cpu_and_of_cuda_have_two_keys_fp32_keeps_its_key():
    fp32 = ExtractionSettings()
    assert fp32.on_device("cuda") == fp32.on_device("cpu") == fp32
    assert fp32.on_device("cuda").key() == fp32.key() and "device_type" not in fp32.on_device("cuda").to_dict()
    fp16 = ExtractionSettings(precision="fp16")
    assert fp16.on_device("cuda").key() == fp16.key()
    bf16 = ExtractionSettings(precision="bf16")
    on_cpu, on_cuda = bf16.on_device("cpu"), bf16.on_device("cuda")
    assert len({bf16.key(), on_cpu.key(), on_cuda.key()}) == 3
    assert ExtractionSettings.from_dict(on_cuda.to_dict()) == on_cuda and on_cuda.to_dict()["device_type"] == "cuda"
    with pytest.raises(ConfigError, match="device_type is cpu or cuda for bf16 features only"):
        ExtractionSettings(device_type="cuda")
    with pytest.raises(ConfigError, match="device_type"):
        ExtractionSettings(precision="bf16", device_type="mps")


def test_decode_processes_share_the_cores():
    assert decode_threads(1, cpus=16) == 16
    assert decode_threads(4, cpus=16) == 4
    assert decode_threads(15, cpus=16) == 1
    assert decode_threads(32, cpus=16) == 1
    assert decode_threads(3) >= 1


def test_decoding_with_fewer_threads_gives_the_same_frames(make_video):
    video = make_video("clip.mp4", n_frames=30)
    with open_frames(video, threads=1) as (info, frames):
        one = [f.rgb for f in frames]
        assert info.decode_threads == 1
    with open_frames(video) as (info, frames):
        auto = [f.rgb for f in frames]
        assert info.decode_threads >= 1  # FFmpeg's automatic count, once open
    assert len(one) == len(auto) == 30 and all(np.array_equal(a, b) for a, b in zip(one, auto))


def test_a_decode_worker_decodes_with_its_share_of_the_cores(make_video):
    from vadpipe.extract import workers

    video = make_video("clip.mp4", n_frames=20)
    settings = ExtractionSettings(resize_short=48, crop_size=48)
    pool = workers._Pool(2, settings, clips_per_batch=2)  # two real decode processes
    try:
        assert pool.threads == decode_threads(2)
        w = pool.workers[1]
        w.conn.send(workers._Decode(0, str(video)))
        while True:
            assert w.conn.poll(60), "the decode worker sent nothing"
            msg = w.conn.recv()
            if isinstance(msg, workers._Event):
                break
        assert type(msg.event).__name__ == "Began", msg.event
        assert msg.event.info.decode_threads == decode_threads(2)
    finally:
        pool.stop()


def test_decode_processes_refuse_to_start_without_the_shared_memory_they_need():
    check_shared_memory(1 << 20, 64 << 20)
    check_shared_memory(1 << 40, None)  # nothing to ask (not Linux): not checked
    with pytest.raises(ConfigError, match=r"need 1024 MiB of shared memory but /dev/shm has 64 MiB free: .*--shm-size"):
        check_shared_memory(1 << 30, 64 << 20)
    free = shared_memory_free()
    assert free is None or free >= 0


# --------------------------------------------------------------------------------------------
# on a GPU


@pytest.mark.cuda
@needs_cuda
def test_cuda_device_past_the_count_is_refused_and_the_last_one_is_taken():
    assert select_device(f"cuda:{CUDA_COUNT - 1}") == torch.device(f"cuda:{CUDA_COUNT - 1}")
    with pytest.raises(ConfigError, match=rf"has {CUDA_COUNT} CUDA device\(s\) \(cuda:0 to cuda:{CUDA_COUNT - 1}\)"):
        select_device(f"cuda:{CUDA_COUNT}")


@pytest.mark.cuda
@needs_cuda
def test_a_cuda_encoder_leaves_cudnn_benchmark_off_and_bf16_follows_the_capability(cuda_flags):
    from vadpipe.extract.encoder import ClipEncoder
    from vadpipe.extract.i3d import InceptionI3d

    torch.backends.cudnn.benchmark = True
    model = InceptionI3d().eval()
    device = torch.device("cuda:0")
    clips = torch.randint(0, 256, (2, 3, 16, 64, 64), dtype=torch.uint8)
    assert ClipEncoder(model, device, "fp32")(clips).shape == (2, 1024)
    assert torch.backends.cudnn.benchmark is False
    if torch.cuda.get_device_capability(device) >= (8, 0):
        assert ClipEncoder(model, device, "bf16")(clips).shape == (2, 1024)
    else:
        with pytest.raises(ConfigError, match="would be emulated"):
            ClipEncoder(model, device, "bf16")
