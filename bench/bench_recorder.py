"""Recorder benchmark: 4 synthetic 640x480 cameras at 50 Hz, a 50 Hz control loop, for N seconds.

Prints, for our streaming writer and for an ALOHA-style buffer-then-save writer on the same feed:
frames dropped by the writer, camera drops/repeats seen in the episode, peak RSS, CPU use, MB per minute,
append cost in the control thread, achieved control rate, and the save latency after stop.

    python bench/bench_recorder.py --seconds 60            # both writers
    python bench/bench_recorder.py --seconds 60 --only ours
The baseline keeps every raw frame in RAM (as ALOHA does: ~11 GB per 60 s of 4 cameras); it is skipped or
shortened when the machine's available memory cannot hold it, and says so.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.cameras.config import SyntheticCameraConfig  # noqa: E402
from drivers.cameras.synthetic import SyntheticCamera  # noqa: E402
from drivers.clock import RealClock  # noqa: E402
from recorder.reader import EpisodeReader  # noqa: E402
from recorder.store import DatasetStore  # noqa: E402
from workbench.control import Tick  # noqa: E402

CAMS = ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]
HZ = 50


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)


@dataclass
class Result:
    name: str
    seconds: float
    steps: int
    rate_hz: float
    writer_dropped: int
    cam_dropped: dict
    cam_repeated: dict
    peak_rss_mb: float
    baseline_rss_mb: float
    cpu_pct: float
    mb_per_min: float
    append_p50_us: float
    append_p99_us: float
    save_latency_s: float
    note: str = ""


class AlohaStyleWriter:
    """What ALOHA 2 does: keep raw frames in lists during the episode, JPEG-compress, pad and write at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.images = {c: [] for c in CAMS}
        self.state = []
        self.seq = {c: [] for c in CAMS}

    def append(self, tick: Tick) -> None:
        for c in CAMS:
            self.images[c].append(tick.frames[c].image)
            self.seq[c].append(tick.frames[c].seq)
        self.state.append((tick.qpos, tick.qvel, tick.effort, tick.action))

    def stop(self) -> None:
        enc = {c: [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 50])[1] for im in self.images[c]]
               for c in CAMS}
        pad = max(len(b) for v in enc.values() for b in v)
        with h5py.File(self.path, "w", rdcc_nbytes=1024 ** 2 * 2) as root:
            root.attrs["sim"] = False
            root.attrs["compress"] = True
            obs = root.create_group("observations")
            st = np.array(self.state, dtype=np.float32)
            for i, k in enumerate(("qpos", "qvel", "effort")):
                obs.create_dataset(k, data=st[:, i])
            root.create_dataset("action", data=st[:, 3])
            img = obs.create_group("images")
            for c in CAMS:
                arr = np.zeros((len(enc[c]), pad), np.uint8)
                for i, b in enumerate(enc[c]):
                    arr[i, :len(b)] = b
                img.create_dataset(c, data=arr, chunks=(1, pad))
            root.create_dataset("compress_len", data=np.array([[len(b) for b in enc[c]] for c in CAMS]))
        fd = os.open(self.path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def run(kind: str, seconds: float, root: Path) -> Result:
    gc.collect()
    cams = {c: SyntheticCamera(SyntheticCameraConfig(c, 640, 480, HZ, seed=i)) for i, c in enumerate(CAMS)}
    for cam in cams.values():
        cam.connect()
    time.sleep(0.5)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    sampler = RssSampler()
    sampler.start()
    if kind == "ours":
        store = DatasetStore(root / "ours")
        writer = store.new_episode(CAMS, task="bench", control_hz=HZ)
        out_path = writer.final_path
    else:
        (root / "aloha").mkdir(parents=True, exist_ok=True)
        out_path = root / "aloha" / "episode_0.hdf5"
        writer = AlohaStyleWriter(out_path)
    clock = RealClock()
    q = np.zeros(14)
    n = int(seconds * HZ)
    append_us = np.empty(n)
    cpu0 = proc.cpu_times()
    t0 = clock.now()
    prev = float("nan")
    for i in range(n):
        start = clock.now()
        frames = {c: cam.latest() for c, cam in cams.items()}
        tick = Tick(i, start, time.time(), q, q, q, q, q, frames, None, [], start - prev)
        prev = start
        a = time.perf_counter()
        writer.append(tick)
        append_us[i] = (time.perf_counter() - a) * 1e6
        clock.sleep_until(t0 + (i + 1) / HZ)
    t_rec = clock.now() - t0
    s0 = time.monotonic()
    saved = writer.stop()
    save_latency = time.monotonic() - s0
    cpu1 = proc.cpu_times()
    sampler.stop.set()
    sampler.join()
    for cam in cams.values():
        cam.disconnect()
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t_rec + save_latency) * 100
    size = out_path.stat().st_size
    cam_dropped, cam_repeated = {}, {}
    if kind == "ours":
        for c in CAMS:
            cam_dropped[c] = int(saved.quality.check(f"dropped_frames/{c}").value)
            cam_repeated[c] = int(saved.quality.check(f"repeated_frames/{c}").value)
        wd = sum(writer.writer_dropped)
    else:
        for c in CAMS:
            d = np.diff(writer.seq[c])
            cam_dropped[c] = int(np.maximum(d - 1, 0).sum())
            cam_repeated[c] = int((d == 0).sum())
        wd = 0
    with EpisodeReader(out_path) as r:  # both files must be readable episodes of n steps
        assert r.info.steps == n, (r.info.steps, n)
        r.image(CAMS[0], n - 1)
    res = Result(kind, t_rec, n, (n - 1) / t_rec, wd, cam_dropped, cam_repeated, sampler.peak / 1e6, rss0 / 1e6,
                 cpu, size / 1e6 / (t_rec / 60), float(np.percentile(append_us, 50)),
                 float(np.percentile(append_us, 99)), save_latency)
    del writer
    gc.collect()
    return res


def show(r: Result) -> None:
    print(f"\n== {r.name}: {r.seconds:.1f} s, {r.steps} steps, control loop {r.rate_hz:.2f} Hz {r.note}")
    print(f"  frames dropped by the writer : {r.writer_dropped}")
    print(f"  camera drops / repeats seen  : " + ", ".join(f"{c} {r.cam_dropped[c]}/{r.cam_repeated[c]}" for c in CAMS))
    print(f"  peak RSS                     : {r.peak_rss_mb:.0f} MB (before recording {r.baseline_rss_mb:.0f} MB)")
    print(f"  CPU (process, % of one core) : {r.cpu_pct:.0f} %  (includes the 4 synthetic cameras)")
    print(f"  file size                    : {r.mb_per_min:.0f} MB per minute")
    print(f"  append() in control thread   : p50 {r.append_p50_us:.0f} us, p99 {r.append_p99_us:.0f} us")
    print(f"  save latency after stop      : {r.save_latency_s:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--only", choices=["ours", "aloha"])
    ap.add_argument("--dir", type=Path, help="where to write (default: a temporary folder, removed after)")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    print(f"recorder benchmark: 4 x 640x480 synthetic cameras at {HZ} Hz, {HZ} Hz control loop, "
          f"{os.cpu_count()} CPUs, writing to {root}")
    try:
        if args.only in (None, "ours"):
            show(run("ours", args.seconds, root))
        if args.only in (None, "aloha"):
            need = args.seconds * HZ * len(CAMS) * 640 * 480 * 3 * 1.3
            avail = psutil.virtual_memory().available
            seconds = args.seconds
            note = ""
            if need > 0.5 * avail:
                seconds = max(5.0, args.seconds * 0.5 * avail / need)
                note = (f"(shortened from {args.seconds:.0f} s: it would need ~{need / 1e9:.1f} GB RAM, "
                        f"{avail / 1e9:.1f} GB available)")
            r = run("aloha", seconds, root)
            r.note = note
            show(r)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
