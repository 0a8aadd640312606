"""Samples/s of the pi0 training data loader alone (no model): JPEG decode, resize-with-pad to 224, augmentation,
transforms and collation in DataLoader workers, 3 cameras, batch 8 and 32, 0/1/2 workers.

    MUJOCO_GL=osmesa python bench/bench_loader.py                  # records a sim dataset first (320x240 cameras)
    python bench/bench_loader.py --dataset data/cube --frame 640x480   # + the same frames re-encoded at 640x480

Prints the median of --rounds timed runs per setting (after a warm-up that starts the workers).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.model_config import Pi0Config  # noqa: E402
from finetune.data import DataConfig, build_training_data  # noqa: E402


def upscaled_copy(src: Path, dst: Path, size: tuple[int, int]) -> Path:
    """The source episodes with every frame resized to `size` (w, h) and re-encoded (JPEG q50) by our writer."""
    from recorder.quality import QualityThresholds
    from recorder.reader import EpisodeReader
    from recorder.store import DatasetStore
    from tests.recorder.helpers import tick

    store = DatasetStore(dst)
    for p in sorted(src.glob("episode_*.hdf5")):
        with EpisodeReader(p) as r:
            cams, n = r.info.cameras, r.info.steps
            w = store.new_episode(cams, task=r.info.task, control_hz=50,
                                  thresholds=QualityThresholds(min_length_s_fail=0.0, min_length_s_warn=0.0))
            for i in range(n):
                w.append(tick(i, cams=cams, images={c: cv2.resize(r.image(c, i), size) for c in cams}))
            w.stop()
    return dst


def measure(dataset: Path, tok, batch: int, workers: int, rounds: int, steps: int) -> float:
    model = Pi0Config.variant("pi0_dummy")  # 224 px, 3 camera slots, 32-dim, horizon 50
    data = build_training_data(DataConfig(str(dataset), val_fraction=0.0), model, tok, batch_size=batch,
                               num_workers=workers, seed=0)
    rates = []
    for r in range(rounds):
        it = data.iterator(r * (steps + 2))
        next(it), next(it)  # warm-up: workers started and their prefetch filled
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        rates.append(steps * batch / (time.perf_counter() - t0))
        del it
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="a dataset folder (default: record 3 x 4 s on the sim rig)")
    ap.add_argument("--frame", default="", help="also measure with frames re-encoded at WxH, e.g. 640x480")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=192, help="samples per timed run")
    args = ap.parse_args()
    from tests.finetune.data_helpers import record_sim, tiny_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    tok = tiny_tokenizer(work / "sp")
    ds = Path(args.dataset) if args.dataset else record_sim(work / "sim", episodes=3, seconds=4.0)
    sets = [("recorded", ds)]
    if args.frame:
        w, h = (int(x) for x in args.frame.split("x"))
        sets.append((f"{w}x{h}", upscaled_copy(ds, work / f"up_{w}x{h}", (w, h))))
    for name, path in sets:
        print(f"dataset {name}: {path}")
        print("batch  workers  samples/s (median)")
        for batch in (8, 32):
            for workers in (0, 1, 2):
                rate = measure(path, tok, batch, workers, args.rounds, max(1, args.samples // batch))
                print(f"{batch:5d}  {workers:7d}  {rate:10.1f}", flush=True)


if __name__ == "__main__":
    main()
