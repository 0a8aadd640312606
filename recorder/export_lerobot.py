"""Export episodes to a LeRobot v3.0 dataset folder (parquet frames, one mp4 per camera, meta/).

The task of every frame is the episode's task prompt (what a policy is prompted with). Segment text is exported
as its own per-frame field, `subtask_index` (-1 = no segment) into `meta/subtasks.parquet`: the operator's lane
where it covers a frame, else the demonstrator's. Training on segment text instead of the prompt (pi0's
high-level / low-level split) is an explicit choice, `task_source="segments"`, never a side effect. Videos are H.264 (yuv420p, GOP 2 for frame-accurate seeking), which
LeRobot's decoders (torchcodec, pyav) read; all episodes of a camera are concatenated in one file, and each
episode row says where it starts and ends (from/to timestamps).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drivers.arm import JOINT_NAMES, SIDES
from recorder.integrity import unreadable_reason
from recorder.reader import EpisodeInfo, EpisodeReader, read_info
from recorder.segments import subtask_per_step
from recorder.store import READ_ERRORS, StoreError

Progress = Callable[[str, float], None]  # (what, fraction done); raising from it cancels the export

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STATE_NAMES = [f"{side}_{j}" for side in SIDES for j in JOINT_NAMES]
_VECTOR_FEATURES = {  # LeRobot feature -> reader property
    "observation.state": "qpos",
    "observation.velocity": "qvel",
    "observation.effort": "effort",
    "action": "action",
}
_CODECS = ("libx264", "h264", "mpeg4")
_SCALARS = ("timestamp", "frame_index", "episode_index", "index", "task_index", "subtask_index")


TaskSource = Literal["task", "segments"]  # what `task_index` holds: the task prompt, or the segment text


class ExportError(StoreError):
    """The export cannot be made; the message names the episode or the folder and what to do."""


@dataclass
class ExportResult:
    root: Path
    episodes: int
    frames: int
    tasks: list[str]
    codec: str
    subtasks: list[str] = dataclasses.field(default_factory=list)


def _pick_codec(preferred: str | None) -> str:
    for c in ((preferred,) if preferred else ()) + _CODECS:
        if c in av.codecs_available:
            return c
    raise ExportError(f"no usable video encoder among {_CODECS} in this PyAV build")


def _stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    q = np.quantile(x, [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [int(x.shape[0])],
            "q01": q[0].tolist(), "q10": q[1].tolist(), "q50": q[2].tolist(), "q90": q[3].tolist(),
            "q99": q[4].tolist()}


def export_lerobot(episode_paths: Sequence[Path], out: Path, *, robot_type: str = "aloha", fps: int | None = None,
                   codec: str | None = None, crf: int = 23, overwrite: bool = False,
                   image_stats_every: int = 10, progress: Progress | None = None,
                   data_file_mb: float = 100.0, video_file_mb: float = 500.0,
                   task_source: TaskSource = "task") -> ExportResult:
    """Write the LeRobot dataset into a sibling `.partial` folder and move it to `out` only when complete: an
    error or a cancel (an exception raised by `progress(text, fraction)`) leaves any earlier export untouched.
    An existing `out` is replaced only with `overwrite`. Every episode is checked before anything is written."""
    out = Path(out).expanduser()
    if not episode_paths:
        raise ExportError("no episodes selected for export")
    if task_source not in ("task", "segments"):
        raise ExportError(f"task_source must be 'task' or 'segments', not {task_source!r}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another folder or overwrite it (CLI: --overwrite)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; choose a folder for the export")
    infos = _checked_infos(episode_paths)
    _check_writable(out)
    work = out.parent / f".{out.name}.partial"
    try:
        if work.exists():
            shutil.rmtree(work)
        result = _export(infos, work, robot_type, fps, codec, crf, image_stats_every,
                         progress or (lambda text, fraction: None), data_file_mb, video_file_mb, task_source)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except OSError as e:  # name the operator's folder, not our internal .partial one
        shutil.rmtree(work, ignore_errors=True)
        raise ExportError(f"writing the export to {out} failed: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dataclasses.replace(result, root=out)


def _checked_infos(paths: Sequence[Path]) -> list[EpisodeInfo]:
    """Read every episode's metadata first, so a damaged one stops the export before any work, by name."""
    infos, bad = [], []
    for p in paths:
        try:
            info = read_info(p)
        except READ_ERRORS as e:
            bad.append(f"{Path(p).name}: {unreadable_reason(Path(p), e)}")
            continue
        if info.problems:
            bad.append(f"{Path(p).name}: {'; '.join(info.problems)}")
        infos.append(info)
    if bad:
        raise ExportError("damaged episodes cannot be exported (leave them out, or `rm` them): " + " | ".join(bad))
    return infos


def _check_writable(out: Path) -> None:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {parent} for the export {out}: {e.strerror or e}") from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write the export to {out}: no write permission in {parent}")


def _export(infos: list[EpisodeInfo], out: Path, robot_type: str, fps: int | None, codec: str | None, crf: int,
            image_stats_every: int, progress: Progress, data_file_mb: float, video_file_mb: float,
            task_source: TaskSource) -> ExportResult:
    cams = infos[0].cameras
    for i in infos:
        if i.cameras != cams:
            raise ExportError(f"{i.name} has cameras {i.cameras}, the first episode {cams}")
    if fps is None:
        rates = {round(i.control_hz) for i in infos if i.control_hz}
        if len(rates) > 1:
            raise ExportError(f"episodes recorded at different rates {sorted(rates)}; pass fps")
        fps = rates.pop() if rates else 50
    codec = _pick_codec(codec)

    tasks: dict[str, int] = {}
    subtasks: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in _VECTOR_FEATURES}
    scal: dict[str, list] = {k: [] for k in _SCALARS}
    ep_rows: list[dict] = []
    start = 0
    data_files = _data_files([i.steps for i in infos], data_file_mb)
    for e, info in enumerate(infos):
        progress(f"reading {info.name}", 0.05 * e / len(infos))
        with EpisodeReader(info.path) as r:
            n = info.steps
            arrays = {k: getattr(r, prop).astype(np.float32) for k, prop in _VECTOR_FEATURES.items()}
        prompt = info.task or "unspecified task"
        sub = subtask_per_step(info.segments, n)
        per_step = [s or prompt for s in sub] if task_source == "segments" else [prompt] * n
        for s in per_step:
            tasks.setdefault(s, len(tasks))
        for s in sub:
            if s is not None:
                subtasks.setdefault(s, len(subtasks))
        for k, a in arrays.items():
            cols[k].append(a)
        scal["timestamp"].append(np.arange(n, dtype=np.float32) / fps)
        scal["frame_index"].append(np.arange(n, dtype=np.int64))
        scal["episode_index"].append(np.full(n, e, np.int64))
        scal["index"].append(np.arange(start, start + n, dtype=np.int64))
        scal["task_index"].append(np.array([tasks[s] for s in per_step], np.int64))
        scal["subtask_index"].append(np.array([-1 if s is None else subtasks[s] for s in sub], np.int64))
        data_chunk, data_file = _chunk_file(data_files[e])
        row = {"episode_index": e, "tasks": sorted(set(per_step), key=per_step.index),
               "subtasks": sorted({s for s in sub if s is not None}, key=sub.index), "length": n,
               "dataset_from_index": start, "dataset_to_index": start + n,
               "data/chunk_index": data_chunk, "data/file_index": data_file,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               "workbench/source": info.name, "workbench/outcome": info.outcome,
               "workbench/quality": info.quality.status if info.quality else "n/a"}
        for k, a in arrays.items():
            for stat, v in _stats(a).items():
                row[f"stats/{k}/{stat}"] = v
        ep_rows.append(row)
        start += n
    total = start

    # data parquet: episodes never split across files; a new file when the next one would pass data_file_mb
    for f in sorted(set(data_files)):
        eps = [e for e in range(len(infos)) if data_files[e] == f]
        table = {}
        for k in _VECTOR_FEATURES:
            a = np.concatenate([cols[k][e] for e in eps])
            table[k] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        for k, v in scal.items():
            table[k] = pa.array(np.concatenate([v[e] for e in eps]))
        chunk, file = _chunk_file(f)
        _write_parquet(pa.table(table), out / DATA_PATH.format(chunk_index=chunk, file_index=file))

    # videos
    features: dict = {}
    stats: dict = {}
    for k in _VECTOR_FEATURES:
        features[k] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES}
        stats[k] = _stats(np.concatenate(cols[k]))
    for c, cam in enumerate(cams):
        key = f"observation.images.{cam}"

        def cam_progress(e: int, c=c, cam=cam) -> None:  # videos are most of the work: 5 % .. 100 %
            progress(f"encoding {cam}: episode {e + 1}/{len(infos)}", 0.05 + 0.95 * (c + e / len(infos)) / len(cams))

        h, w, sampled, n_sampled, placed = _encode_camera(infos, cam, out, key, fps, codec, crf, image_stats_every,
                                                          cam_progress, video_file_mb)
        for row, (file, t0, t1) in zip(ep_rows, placed):
            chunk, file = _chunk_file(file)
            row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": t0, f"videos/{key}/to_timestamp": t1})
        features[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": h, "video.width": w, "video.codec": _codec_name(codec),
                                  "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                  "video.channels": 3, "has_audio": False}}
        px = sampled.reshape(-1, 3).astype(np.float64) / 255.0
        stats[key] = {s: np.asarray(v).reshape(3, 1, 1).tolist() for s, v in
                      (("min", px.min(0)), ("max", px.max(0)), ("mean", px.mean(0)), ("std", px.std(0)))}
        stats[key]["count"] = [n_sampled]
    for k in ("timestamp",):
        features[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index", "subtask_index"):
        features[k] = {"dtype": "int64", "shape": [1], "names": None}

    # meta
    meta = out / "meta"
    task_list = sorted(tasks, key=tasks.get)
    _write_tasks(task_list, meta / "tasks.parquet")
    subtask_list = sorted(subtasks, key=subtasks.get)
    _write_tasks(subtask_list, meta / "subtasks.parquet", "subtask")
    _write_parquet(pa.Table.from_pylist(ep_rows), meta / "episodes" / "chunk-000" / "file-000.parquet")
    info_json = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(infos),
        "total_frames": total, "total_tasks": len(task_list), "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_file_mb, "video_files_size_in_mb": video_file_mb, "fps": fps,
        "splits": {"train": f"0:{len(infos)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": features,
        "workbench": {"task_source": task_source,
                      "subtasks": "subtask_index -> meta/subtasks.parquet (-1: no segment); operator lane over "
                                  "the demonstrator's"},
    }
    (meta / "info.json").write_text(json.dumps(info_json, indent=2))
    (meta / "stats.json").write_text(json.dumps(stats, indent=1))
    return ExportResult(out, len(infos), total, task_list, codec, subtask_list)


def _codec_name(codec: str) -> str:
    return "h264" if codec in ("libx264", "h264") else codec


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_tasks(tasks: list[str], path: Path, kind: str = "task") -> None:
    """LeRobot reads tasks.parquet with pandas and expects the task string as the index (same for subtasks)."""
    t = pa.table({f"{kind}_index": pa.array(range(len(tasks)), pa.int64()), kind: pa.array(tasks, pa.string())})
    pandas_meta = {"index_columns": [kind], "column_indexes": [],
                   "columns": [{"name": f"{kind}_index", "field_name": f"{kind}_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": kind, "field_name": kind, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    _write_parquet(t.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def _encode_camera(infos: Sequence[EpisodeInfo], cam: str, root: Path, key: str, fps: int, codec: str, crf: int,
                   stats_every: int, progress: Callable[[int], None], file_mb: float
                   ) -> tuple[int, int, np.ndarray, int, list[tuple[int, float, float]]]:
    """Episodes concatenated into mp4 files of about `file_mb` each (a file is closed after the episode that takes
    it past the limit: episodes are never split). Returns the frame size, sampled pixels for the stats and, per
    episode, (running file number, from_timestamp, to_timestamp) within its file."""
    sampled: list[np.ndarray] = []
    placed: list[tuple[int, float, float]] = []
    file, container, stream, pts, path = -1, None, None, 0, None
    h = w = 0
    try:
        for e, info in enumerate(infos):
            progress(e)
            if container is None or path.stat().st_size > file_mb * 1e6:
                if container is not None:
                    _close(container, stream)
                file += 1
                chunk, index = _chunk_file(file)
                path = root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=index)
                path.parent.mkdir(parents=True, exist_ok=True)
                container, stream, pts = av.open(str(path), "w"), None, 0
            t0 = pts / fps
            with EpisodeReader(info.path) as r:
                for i, img in enumerate(r.images(cam)):
                    if stream is None:
                        h, w = img.shape[0] - img.shape[0] % 2, img.shape[1] - img.shape[1] % 2
                        stream = container.add_stream(codec, rate=fps)
                        stream.width, stream.height = w, h
                        stream.pix_fmt = "yuv420p"
                        stream.codec_context.gop_size = 2
                        if codec == "libx264":
                            stream.options = {"crf": str(crf), "preset": "veryfast"}
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
                    frame.pts = pts
                    pts += 1
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    if i % stats_every == 0:
                        sampled.append(img[::8, ::8].reshape(-1, 3))
            placed.append((file, t0, pts / fps))
        _close(container, stream)
        container = None
    finally:
        if container is not None:  # an error or a cancel: the caller removes the partial export
            container.close()
    return h, w, np.concatenate(sampled), len(sampled), placed


def _close(container, stream) -> None:
    if stream is not None:
        for packet in stream.encode():
            container.mux(packet)
    container.close()


def _chunk_file(n: int) -> tuple[int, int]:
    """The n-th file of a kind as (chunk_index, file_index): CHUNKS_SIZE files per chunk folder."""
    return divmod(n, CHUNKS_SIZE)


_ROW_BYTES = 4 * len(STATE_NAMES) * len(_VECTOR_FEATURES) + 8 * len(_SCALARS)  # float32 vectors + scalars


def _data_files(lengths: Sequence[int], file_mb: float) -> list[int]:
    """Running data-file number per episode: a new file when the next episode would take it past `file_mb`."""
    files, f, size = [], 0, 0
    for n in lengths:
        b = n * _ROW_BYTES
        if size and size + b > file_mb * 1e6:
            f, size = f + 1, 0
        files.append(f)
        size += b
    return files
