"""Subprocess for the SIGKILL tests: records episodes of `steps` ticks forever (or one long one), printing
"<episodes done> <steps appended> <monotonic>" after every tick so the parent knows what it kills."""
from __future__ import annotations

import sys
import time

from recorder.store import DatasetStore
from tests.recorder.helpers import CAMS, image, tick


def main(root: str, steps: int) -> None:
    store = DatasetStore(root)
    imgs = [{c: image(i, k, 120, 160) for k, c in enumerate(CAMS)} for i in range(16)]
    done = 0
    while True:
        w = store.new_episode(CAMS, task="crash test", control_hz=100)
        for i in range(steps):
            w.append(tick(i, dt=0.01, images=imgs[i % 16]))
            print(done, i + 1, time.monotonic(), flush=True)
            time.sleep(0.004)
        w.stop()
        done += 1
        print(done, 0, time.monotonic(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
