"""Episodes from a LeRobot v3.0 dataset folder: parquet frames, per-episode metadata, mp4 videos per camera.

State is `observation.state`, actions `action`, cameras the `observation.images.<cam>` video features; every
frame carries a task string (LeRobot's prompt). Segment text, where the dataset has it (our exporter's per-frame
`subtask_index` into `meta/subtasks.parquet`, -1 = no segment), is read as the frames' sub-tasks.
Frames are decoded with PyAV by seeking to the frame's timestamp in its episode's file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.episode_set import Episode, EpisodeDataError, EpisodeSet, NoEpisodesError

IMAGE_PREFIX = "observation.images."


def _read_table(paths: list[Path]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not paths:
        return None
    return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")


def _vectors(table, key: str) -> np.ndarray:
    col = table.column(key).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), -1).astype(np.float64)


def load_lerobot(root: Path, *, outcomes: Sequence[str] = (), quality: Sequence[str] = (),
                 names: Sequence[str] = ()) -> EpisodeSet:
    info = json.loads((root / "meta" / "info.json").read_text())
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise EpisodeDataError(f"{root}: LeRobot dataset {version}; only v3.0 is read. Convert it with LeRobot's "
                               f"v2.1 -> v3.0 converter (lerobot.datasets.v30.convert_dataset_v21_to_v30)")
    feats: dict[str, Any] = info.get("features", {})
    for k in ("observation.state", "action"):
        if k not in feats:
            raise EpisodeDataError(f"{root}: LeRobot dataset has no {k!r} feature (has {sorted(feats)})")
    image_feats = [k for k, v in feats.items() if k.startswith(IMAGE_PREFIX)]
    not_video = [k for k in image_feats if feats[k].get("dtype") != "video"]
    if not_video:
        raise EpisodeDataError(f"{root}: image features {not_video} are stored as images, not videos; only video "
                               f"features are read (re-encode the dataset as videos)")
    cams = tuple(k[len(IMAGE_PREFIX):] for k in image_feats)
    fps = float(info["fps"])

    data = _read_table(sorted((root / "data").glob("chunk-*/file-*.parquet")))
    ep_meta = _read_table(sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")))
    tasks_t = _read_table([root / "meta" / "tasks.parquet"])
    if data is None or ep_meta is None:
        raise EpisodeDataError(f"{root}: no data or episode parquet files; the dataset is incomplete")
    tasks = dict(zip(tasks_t.column("task_index").to_pylist(), tasks_t.column("task").to_pylist()))
    sub_path = root / "meta" / "subtasks.parquet"
    has_sub = "subtask_index" in data.column_names and sub_path.is_file()
    if has_sub:
        sub_t = _read_table([sub_path])
        subtasks = dict(zip(sub_t.column("subtask_index").to_pylist(), sub_t.column("subtask").to_pylist()))
        sub_idx = data.column("subtask_index").to_numpy()

    state, action = _vectors(data, "observation.state"), _vectors(data, "action")
    ep_idx = data.column("episode_index").to_numpy()
    frame_idx = data.column("frame_index").to_numpy()
    task_idx = data.column("task_index").to_numpy()
    rows = ep_meta.to_pylist()
    rows.sort(key=lambda r: r["episode_index"])

    def keep(r: dict) -> bool:
        if names and f"episode_{r['episode_index']}" not in {_canon(n) for n in names}:
            return False
        for key, wanted in (("workbench/outcome", outcomes), ("workbench/quality", quality)):
            if wanted:
                if key not in r:
                    what = key.split("/")[1]
                    how = " (training takes successes only unless told: --outcome all, the Train tab's 'All " \
                          "labels')" if what == "outcome" else ""
                    raise EpisodeDataError(f"{root}: this LeRobot dataset has no {what} labels; drop the {what} "
                                           f"filter{how}")
                if r[key] not in wanted:
                    return False
        return True

    eps, videos = [], []
    for r in filter(keep, rows):
        e = int(r["episode_index"])
        sel = np.flatnonzero(ep_idx == e)
        sel = sel[np.argsort(frame_idx[sel])]
        eid = f"episode_{e}"
        if len(sel) != int(r.get("length", len(sel))):
            raise EpisodeDataError(f"{root}: {eid} has {len(sel)} frames in data/ but length {r['length']} in "
                                   f"meta/episodes; the dataset is damaged")
        frame_tasks = tuple(tasks.get(int(t), "") for t in task_idx[sel])
        eps.append(Episode(
            id=eid, state=state[sel], actions=action[sel], task=frame_tasks[0] if frame_tasks else "",
            subtasks=tuple(subtasks.get(int(k)) for k in sub_idx[sel]) if has_sub else None,
            frame_tasks=frame_tasks, cameras=cams,
            control_hz=fps, outcome=str(r.get("workbench/outcome", "unlabeled")),
            quality=str(r.get("workbench/quality", "n/a"))))
        vids = {}
        for cam in cams:
            key = IMAGE_PREFIX + cam
            path = info["video_path"].format(video_key=key, chunk_index=int(r[f"videos/{key}/chunk_index"]),
                                             file_index=int(r[f"videos/{key}/file_index"]))
            vids[cam] = (str(root / path), float(r[f"videos/{key}/from_timestamp"]))
        videos.append(vids)
    if not eps:
        raise NoEpisodesError(f"{root}: no episodes of this LeRobot dataset match the selection "
                               f"(outcomes={list(outcomes)}, quality={list(quality)}, episodes={list(names)})")
    return EpisodeSet(str(root), "lerobot", tuple(eps), VideoFrames(tuple(videos), fps))


def _canon(name: str) -> str:
    return f"episode_{name}" if str(name).isdigit() else str(name)


class VideoFrames:
    """Decodes one frame per camera by timestamp; containers are opened per process on first use."""

    def __init__(self, videos: tuple[dict[str, tuple[str, float]], ...], fps: float) -> None:
        self.videos, self.fps = videos, fps
        self._pid = -1
        self._open: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"videos": self.videos, "fps": self.fps}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["videos"], d["fps"])

    def _container(self, path: str):
        import av

        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        c = self._open.get(path)
        if c is None:
            c = self._open[path] = av.open(path)
        return c

    def frames(self, episode: int, step: int) -> dict[str, np.ndarray]:
        return {cam: self._decode(path, t0 + step / self.fps) for cam, (path, t0) in self.videos[episode].items()}

    def _decode(self, path: str, ts: float) -> np.ndarray:
        c = self._container(path)
        stream = c.streams.video[0]
        tb = float(stream.time_base)
        target = ts / tb
        tol = 0.5 / (self.fps * tb)
        c.seek(max(0, int(target)), stream=stream, backward=True, any_frame=False)
        for frame in c.decode(stream):
            if frame.pts is not None and frame.pts >= target - tol:
                return frame.to_ndarray(format="rgb24")
        raise EpisodeDataError(f"{path}: no frame at {ts:.3f} s; the video is shorter than its episode metadata")
