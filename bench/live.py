"""Live cameras: latency, streams sustained, and memory over a long run (issue 14).

Cameras are real MPEG-TS-over-HTTP servers on loopback (tests/stream_server.py, paced at the
file's own bitrate, looping), watched in-process by `vadpipe.watch.Watch` with a trained run.

    python bench/live.py latency --model RUN [--device cuda] [--seconds 60]
        frame arrival -> ``start`` event latency (the events' latency_s), threshold 0.01 so each
        connection opens an interval at its first scored clip; the camera plays an 8 s file
        per connection and watch reconnects after each.
    python bench/live.py streams --model RUN [--device cuda] [--max-streams 64] [--seconds 40]
        the largest number of 25 fps cameras watched with no clip dropped (doubling, then bisecting).
    python bench/live.py soak --model RUN [--minutes 12] [--streams 1]
        RSS every 10 s over a long run (lag policy on: the drops keep memory flat); prints the
        table and the slope of a line fitted to the second half (--trim-samples: also after
        malloc_trim, i.e. without the free pages glibc keeps).
    python bench/live.py gate --model RUN [--video LONG_NORMAL.mp4 | --synth-minutes 6]
            [--gate-windows 16,32,64,128] [--runtime openvino]
        false alarms of the live video gate on long normal footage: `start` events per hour at
        the run's operating point, without the gate and with it over each trailing window; then
        the same at a curve threshold low enough to fire on the footage (--probe-quantile of its
        clip scores), to see what the gate removes when the curve alone would alarm.
        Without --video, one long normal plaza is rendered by vadpipe.synth (the demo's look,
        a seed no demo video uses). I3D runs once: the first watch records every clip's
        features (keyed by a hash of the clip's pixels), and each setting is a full watch of the
        file whose encoder replays them, so all settings score the same features.

Prints JSON on stdout; say the machine's load (uptime) when quoting a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import moving_frames, write_video  # noqa: E402

from vadpipe.detect import encoder_for, run_extraction_settings  # noqa: E402
from vadpipe.extract.sources import parse_source  # noqa: E402
from vadpipe.hooks import EventSink  # noqa: E402
from vadpipe.model.run import load_run  # noqa: E402
from vadpipe.model.run_config import SavedOperatingPoint  # noqa: E402
from vadpipe.postprocess.intervals import OperatingPoint  # noqa: E402
from vadpipe.watch import Watch, WatchConfig  # noqa: E402


class Collect(EventSink):
    def __init__(self) -> None:
        self.events: list[dict] = []

    def send(self, event: dict) -> None:
        self.events.append(event)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trimmed_rss_mb() -> float:
    """RSS after glibc returns its free heap pages (malloc_trim): live memory, without what the
    allocator merely keeps around for reuse."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_mb()


def camera_file(folder: Path, seconds: float = 8.0, fps: int = 25) -> Path:
    path = folder / f"camera_{int(seconds)}s_{fps}fps.ts"
    if not path.exists():
        write_video(path, moving_frames(int(seconds * fps), 320, 240, seed=1), fps=fps)
    return path


def serve(path: Path, seconds: float, *, loop: bool = True) -> tuple[subprocess.Popen, int]:
    rate = path.stat().st_size / seconds  # real time: the file's own bitrate
    args = [sys.executable, str(REPO / "tests" / "stream_server.py"), str(path), "--rate", f"{rate:.0f}"]
    proc = subprocess.Popen(args + (["--loop"] if loop else []), stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline().split()[1])


def make_watch(args, urls: list[str], op: OperatingPoint, sink: EventSink, **config) -> Watch:
    run = load_run(args.model)
    settings = run_extraction_settings(run)
    encoder, settings = encoder_for(settings, weights=None, device=args.device)
    specs = [parse_source(u, name=f"cam{i}") for i, u in enumerate(urls)]
    return Watch(
        specs,
        run,
        encoder,
        settings,
        op,
        WatchConfig(**config),
        block_len=run.config.block_len,
        sinks=[sink],
        log=lambda m: print(m, file=sys.stderr),
    )


def timed(w: Watch, seconds: float, on_tick=None) -> None:
    """Run ``w`` for ``seconds`` counted from its first loop tick (after I3D is loaded and measured)."""
    started: list[float] = []

    def tick() -> None:
        if not started:
            started.append(time.monotonic())
        elif time.monotonic() - started[0] > seconds:
            w.stop()
        if on_tick is not None:
            on_tick()

    w.run_until_done(on_tick=tick)


def bench_latency(args) -> dict:
    path = camera_file(args.work)
    # the server plays the file once per connection, in real time; watch reconnects after each
    # pass, and every connection opens an interval at its first scored clip (threshold 0.01)
    proc, port = serve(path, 8.0, loop=False)
    sink = Collect()
    w = make_watch(
        args,
        [f"http://127.0.0.1:{port}/"],
        OperatingPoint(SavedOperatingPoint(threshold=0.01, method="manual")),
        sink,
        batch_size=args.batch_size,
        queue_clips=2,
    )
    try:
        timed(w, args.seconds)
    finally:
        proc.kill()
    lat = [e["latency_s"] for e in sink.events if e["event"] == "start" and e.get("latency_s") is not None]
    return {
        "bench": "latency",
        "device": str(w.encoder.device),
        "starts": len(lat),
        "latency_s": {
            "median": float(np.median(lat)) if lat else None,
            "min": min(lat, default=None),
            "max": max(lat, default=None),
        },
        "i3d_clips_per_s": w.capacity_clips_s,
        "load": os.getloadavg(),
    }


def _sustains(args, n: int) -> tuple[bool, dict]:
    path = camera_file(args.work)
    servers = [serve(path, 8.0) for _ in range(n)]
    sink = Collect()
    try:
        w = make_watch(
            args,
            [f"http://127.0.0.1:{p}/" for _, p in servers],
            OperatingPoint(),
            sink,
            batch_size=args.batch_size,
            queue_clips=4,
        )
        timed(w, args.seconds)
    finally:
        for proc, _ in servers:
            proc.kill()
    st = w.statuses()
    dropped = sum(s.dropped for s in st)
    scored = sum(s.clips for s in st)
    return dropped == 0 and scored > 0, {
        "streams": n,
        "scored": scored,
        "dropped": dropped,
        "i3d_clips_per_s": w.capacity_clips_s,
    }


def bench_streams(args) -> dict:
    trials = []
    ok_n, bad_n = 0, None
    n = 1
    while n <= args.max_streams:
        ok, info = _sustains(args, n)
        trials.append(info)
        print(json.dumps(info), file=sys.stderr)
        if not ok:
            bad_n = n
            break
        ok_n = n
        n *= 2
    while bad_n is not None and bad_n - ok_n > 1:
        mid = (ok_n + bad_n) // 2
        ok, info = _sustains(args, mid)
        trials.append(info)
        ok_n, bad_n = (mid, bad_n) if ok else (ok_n, mid)
    return {
        "bench": "streams",
        "device": args.device,
        "fps": 25,
        "sustained_streams": ok_n,
        "seconds_per_trial": args.seconds,
        "trials": trials,
        "load": os.getloadavg(),
    }


def bench_soak(args) -> dict:
    path = camera_file(args.work)
    servers = [serve(path, 8.0) for _ in range(args.streams)]
    sink = Collect()
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    last = [0.0]

    def tick() -> None:
        now = time.monotonic() - t0
        if now - last[0] >= 10:
            last[0] = now
            samples.append(
                (round(now, 1), round(rss_mb(), 1), round(trimmed_rss_mb(), 1) if args.trim_samples else None)
            )
            print(
                json.dumps(
                    {
                        "t_s": samples[-1][0],
                        "rss_mb": samples[-1][1],
                        "rss_after_trim_mb": samples[-1][2],
                        "clips": sum(s.clips for s in w.statuses()),
                        "dropped": sum(s.dropped for s in w.statuses()),
                    }
                ),
                file=sys.stderr,
                flush=True,
            )
            sink.events.clear()  # the bench's own list must not be what grows

    try:
        w = make_watch(
            args, [f"http://127.0.0.1:{p}/" for _, p in servers], OperatingPoint(), sink, batch_size=args.batch_size
        )
        timed(w, args.minutes * 60, on_tick=tick)
    finally:
        for proc, _ in servers:
            proc.kill()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []

    def slope(k: int) -> float | None:
        if len(half) < 3 or half[0][k] is None:
            return None
        return float(np.polyfit([s[0] for s in half], [s[k] for s in half], 1)[0] * 60)

    st = w.statuses()
    return {
        "bench": "soak",
        "device": str(w.encoder.device),
        "minutes": args.minutes,
        "streams": args.streams,
        "clips": sum(s.clips for s in st),
        "dropped": sum(s.dropped for s in st),
        "rss_mb": {
            "first": samples[0][1] if samples else None,
            "max": max(s[1] for s in samples) if samples else None,
            "last": samples[-1][1] if samples else None,
        },
        "rss_after_trim_mb": (
            {"first": samples[0][2], "max": max(s[2] for s in samples), "last": samples[-1][2]}
            if samples and args.trim_samples
            else None
        ),
        "slope_mb_per_min_second_half": {"rss": slope(1), "after_trim": slope(2)},
        "samples": samples,
        "load": os.getloadavg(),
    }


class RecordingEncoder:
    """An encoder that records each clip's features by a hash of its pixels (``replay=False``), or
    serves the recorded ones (``replay=True``); clips it never saw (watch's throughput probe on
    a blank batch) go to the real network. Every setting then scores the same I3D features."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.device = encoder.device
        self.features: dict[bytes, np.ndarray] = {}
        self.replay = False
        self.computed = 0  # clips the real network ran on (crops)
        self.seconds = 0.0

    @staticmethod
    def _key(crop) -> bytes:
        import hashlib

        return hashlib.blake2b(crop.numpy().tobytes(), digest_size=16).digest()

    def __call__(self, clips):
        keys = [self._key(c) for c in clips]
        if self.replay and all(k in self.features for k in keys):
            return np.stack([self.features[k] for k in keys])
        t0 = time.perf_counter()
        out = self.encoder(clips)
        self.seconds += time.perf_counter() - t0
        self.computed += len(clips)
        if not self.replay:
            self.features.update(zip(keys, out))
        return out


def long_normal_video(folder: Path, minutes: float, seed: int) -> Path:
    """One normal plaza of ``minutes`` (the demo's look: vadpipe.synth defaults, 25 fps)."""
    from vadpipe.synth import SynthConfig, render_video

    config = SynthConfig()
    n = int(round(minutes * 60 * config.fps))
    path = folder / f"normal_plaza_{n}f_seed{seed}.mp4"
    if not path.exists():
        render_video(path, n_frames=n, anomaly=None, config=config, seed=seed)
    return path


def _gate_row(label: str, op: OperatingPoint, window: int, sink: Collect, clips: list[dict], seconds: float) -> dict:
    summary = next(e for e in sink.events if e["event"] == "summary")
    hours = summary["frames"] / 25.0 / 3600
    starts = [e for e in sink.events if e["event"] == "start"]
    ends = [e for e in sink.events if e["event"] == "end"]
    gate = np.array([c["gate_score"] for c in clips if "gate_score" in c])
    wtcam = np.array([c["wtcam"] for c in clips])
    vt = op.video_threshold
    return {
        "setting": label,
        "threshold": round(op.threshold, 4),
        "video_threshold": round(vt, 4),
        "gate_window_clips": window if vt > 0 else None,
        "events": len(starts),
        "events_per_hour": round(len(starts) / hours, 1),
        "alarm_s": round(sum(e["end_s"] - e["start_s"] for e in ends), 2),
        "clips": summary["clips"],
        "footage_min": round(hours * 60, 2),
        "clips_above_threshold": int((wtcam > op.threshold).sum()),
        "max_clip_score": round(float(wtcam.max()), 4),
        "gate_open_share": round(float(np.mean(gate >= vt)), 4) if gate.size else None,
        "gate_score": {
            "min": round(float(gate.min()), 4),
            "median": round(float(np.median(gate)), 4),
            "max": round(float(gate.max()), 4),
        }
        if gate.size
        else None,
        "offline_video_score": summary["video_score"],
        "wall_s": round(seconds, 1),
    }


def bench_gate(args) -> dict:
    from dataclasses import replace

    run = load_run(args.model)
    saved = OperatingPoint.for_run(run.config.operating_point, where="run")
    if saved.video_threshold <= 0:
        raise SystemExit(f"{args.model}: the run's operating point has no video gate (video_threshold 0)")
    video = args.video or long_normal_video(args.work, args.synth_minutes, args.synth_seed)
    settings = replace(run_extraction_settings(run), runtime=args.runtime)
    encoder, settings = encoder_for(settings, weights=None, device=args.device)
    recorder = RecordingEncoder(encoder)
    windows = [int(w) for w in args.gate_windows.split(",")]

    def watch(label: str, op: OperatingPoint, window: int) -> dict:
        sink, clips = Collect(), []
        t0 = time.perf_counter()
        w = Watch(
            [parse_source(str(video), name="plaza")],
            run,
            recorder,
            settings,
            op,
            WatchConfig(lag="wait", gate_window=window, batch_size=args.batch_size),
            block_len=run.config.block_len,
            sinks=[sink],
            on_clip=clips.append,
            log=lambda m: print(m, file=sys.stderr),
        )
        w.run_until_done()  # the whole file, nothing dropped
        recorder.replay = True  # every later setting scores the recorded features
        row = _gate_row(label, op, window, sink, clips, time.perf_counter() - t0)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row, clips

    results = []

    def gate_off(op: OperatingPoint) -> OperatingPoint:
        return replace(op, chosen=replace(op.chosen, video_threshold=0.0))

    first, clips = watch("no_gate", gate_off(saved), windows[0])
    results.append(first)
    results += [watch(f"gate_{w}", saved, w)[0] for w in windows]
    # the same footage at a curve threshold low enough to fire on it (its 98th percentile clip
    # score): what the gate removes when the curve alone would alarm
    probe = float(np.quantile([c["wtcam"] for c in clips], args.probe_quantile))
    low = replace(saved, chosen=replace(saved.chosen, threshold=probe, method="manual"))
    results.append(watch("no_gate_low_threshold", gate_off(low), windows[0])[0])
    results += [watch(f"gate_{w}_low_threshold", low, w)[0] for w in windows]
    return {
        "bench": "gate",
        "video": str(video),
        "runtime": args.runtime,
        "threshold": saved.threshold,
        "video_threshold": saved.video_threshold,
        "min_duration_s": saved.min_duration_s,
        "merge_gap_s": saved.merge_gap_s,
        "probe_threshold": probe,
        "probe_quantile": args.probe_quantile,
        "i3d_clips_computed": recorder.computed,
        "i3d_s_per_clip": round(recorder.seconds / max(recorder.computed, 1), 3),
        "settings": results,
        "load": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "streams", "soak", "gate"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--video", type=Path)
    parser.add_argument(
        "--gate-windows",
        default="16,32,64,128",
        help="gate: trailing windows (clips) to compare, from the same features",
    )
    parser.add_argument("--synth-minutes", type=float, default=6.0, help="gate: length of the rendered normal plaza")
    parser.add_argument("--synth-seed", type=int, default=9001)
    parser.add_argument(
        "--probe-quantile",
        type=float,
        default=0.98,
        help="gate: also run at this quantile of the footage's clip scores as the curve threshold",
    )
    parser.add_argument(
        "--runtime",
        choices=["torch", "openvino"],
        default="torch",
        help="gate: I3D runtime (openvino: about half the CPU time, features equal to rounding)",
    )
    parser.add_argument("--work", type=Path, default=Path("bench-live"))
    parser.add_argument(
        "--trim-samples",
        action="store_true",
        help="soak: also report RSS after malloc_trim at each sample (live memory)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"latency": bench_latency, "streams": bench_streams, "soak": bench_soak, "gate": bench_gate}[args.what](
        args
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
