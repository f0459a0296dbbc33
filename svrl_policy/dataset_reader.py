"""`LeRobotDataset`: read a LeRobotDataset v3 directory of image features (layout: `svrl_policy.dataset`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svrl_policy.dataset_format import (
    EXTRA_DTYPES,
    INDEX_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    SVRL_META_PATH,
    TASKS_PATH,
    DatasetError,
    decode_png,
)
from svrl_policy.features import (
    ACTION_DIMS,
    LEROBOT_ACTION,
    LEROBOT_IMAGE_PREFIX,
    LEROBOT_STATE,
    OBS_IMAGES,
    OBS_INSTRUCTION,
    OBS_PROPRIO,
    lerobot_image_key,
)


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    start: int  # global frame index of the first frame
    stop: int  # one past the last
    instruction: str
    task_name: str
    success: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)  # svrl.json's free-form episode fields

    @property
    def length(self) -> int:
        return self.stop - self.start


class LeRobotDataset:
    """Read a LeRobotDataset v3 directory with image (not video) camera features.

    Numeric columns are loaded into memory; PNG frames stay in memory-mapped parquet buffers and are
    decoded on access, so large datasets do not need RAM for every decoded frame.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset directory {self.root} does not exist")
        self.info = self._read_info()
        self.features: dict[str, Any] = self.info["features"]
        self.fps = int(self.info["fps"])
        self.camera_names = [
            k[len(LEROBOT_IMAGE_PREFIX) :] for k in self.features if k.startswith(LEROBOT_IMAGE_PREFIX)
        ]
        videos = [
            k
            for k in self.features
            if k.startswith(LEROBOT_IMAGE_PREFIX) and self.features[k]["dtype"] == "video"
        ]
        if videos:
            raise DatasetError(
                f"{self.root}: cameras {videos} are stored as video. svrl reads image datasets (PNG in parquet); "
                "re-record with image storage (LeRobot: `use_videos=False`) or decode the videos to frames first."
            )
        if LEROBOT_ACTION not in self.features:
            raise DatasetError(f"{self.root / INFO_PATH}: features has no {LEROBOT_ACTION!r}")
        self.action_space = self.info.get("svrl", {}).get("action_space") or _guess_action_space(
            self.features
        )
        self.stats = self._read_json(STATS_PATH) if (self.root / STATS_PATH).exists() else {}
        self.svrl_meta: dict[str, Any] = (
            self._read_json(SVRL_META_PATH) if (self.root / SVRL_META_PATH).exists() else {}
        )
        self.tasks = self._read_tasks()
        self._load_data()
        self.episodes = self._read_episodes()

    # ------------------------------------------------------------------ loading
    def _read_json(self, rel: str) -> Any:
        path = self.root / rel
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: {self.root} is not a complete LeRobotDataset v3 directory"
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc})") from exc

    def _read_parquet(self, path: Path, **kw: Any) -> pa.Table:
        if not path.is_file():
            raise DatasetError(f"{path} is missing: the dataset is incomplete (re-copy or re-record it)")
        try:
            return pq.read_table(path, memory_map=True, **kw)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{path} is not a readable parquet file ({exc}); it may be truncated") from exc

    def _read_info(self) -> dict[str, Any]:
        info = self._read_json(INFO_PATH)
        version = str(info.get("codebase_version", ""))
        if not version.startswith("v3."):
            raise DatasetError(
                f"{self.root / INFO_PATH}: codebase_version {version!r}; svrl reads LeRobotDataset v3.x. Convert "
                "older datasets with LeRobot's `convert_dataset_v21_to_v30` script."
            )
        for key in ("fps", "features", "data_path", "total_frames", "total_episodes"):
            if key not in info:
                raise DatasetError(f"{self.root / INFO_PATH}: missing key {key!r}")
        return info

    def _read_tasks(self) -> dict[int, str]:
        table = self._read_parquet(self.root / TASKS_PATH)
        names = table.column_names
        task_col = (
            "task" if "task" in names else ("__index_level_0__" if "__index_level_0__" in names else None)
        )
        if task_col is None or "task_index" not in names:
            raise DatasetError(
                f"{self.root / TASKS_PATH}: needs columns task_index and task (or a pandas index)"
            )
        return dict(
            zip(table.column("task_index").to_pylist(), table.column(task_col).to_pylist(), strict=True)
        )

    def _load_data(self) -> None:
        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root / 'data'} holds no chunk-*/file-*.parquet files")
        tables = [self._read_parquet(f) for f in files]
        try:
            table = pa.concat_tables(tables)
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{self.root}: data files have different schemas ({exc})") from exc
        missing = [k for k in (*self.features, *INDEX_COLUMNS) if k not in table.column_names]
        if missing:
            raise DatasetError(f"{self.root}: data files lack columns {missing} declared in {INFO_PATH}")
        self._table = table
        self.index = table.column("index").to_numpy()
        order = np.argsort(self.index, kind="stable")
        if not np.array_equal(self.index[order], np.arange(len(self.index))):
            raise DatasetError(
                f"{self.root}: frame 'index' column is not 0..N-1 (duplicate or missing frames)"
            )
        self._order = order  # row of global frame i
        self.episode_index = table.column("episode_index").to_numpy()[order]
        self.frame_index = table.column("frame_index").to_numpy()[order]
        self.task_index = table.column("task_index").to_numpy()[order]
        self.actions = _fixed_list_to_numpy(table.column(LEROBOT_ACTION))[order]
        self.proprio = (
            _fixed_list_to_numpy(table.column(LEROBOT_STATE))[order]
            if LEROBOT_STATE in self.features
            else None
        )
        # Other per-frame scalar features (e.g. a recording's `control_source`), by name.
        self.extra: dict[str, np.ndarray] = {
            key: table.column(key).to_numpy()[order]
            for key, ft in self.features.items()
            if key not in (*INDEX_COLUMNS, LEROBOT_ACTION, LEROBOT_STATE)
            and ft.get("dtype") in EXTRA_DTYPES
            and list(ft.get("shape", [])) == [1]
        }
        if len(self.index) != int(self.info["total_frames"]):
            raise DatasetError(
                f"{self.root}: {len(self.index)} frames in data files but info.json says total_frames="
                f"{self.info['total_frames']}"
            )

    def _read_episodes(self) -> list[EpisodeInfo]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root / 'meta/episodes'} holds no episode metadata files")
        cols = ["episode_index", "dataset_from_index", "dataset_to_index"]
        rows: list[dict[str, Any]] = []
        for f in files:
            t = self._read_parquet(f)
            if any(c not in t.column_names for c in cols):
                raise DatasetError(f"{f}: needs columns {cols}")
            keep = [c for c in (*cols, "tasks", "svrl/task_name", "svrl/success") if c in t.column_names]
            rows += t.select(keep).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        svrl_rows = {int(e["episode_index"]): e for e in self.svrl_meta.get("episodes", [])}
        episodes = []
        for i, r in enumerate(rows):
            start, stop = int(r["dataset_from_index"]), int(r["dataset_to_index"])
            if r["episode_index"] != i or not 0 <= start < stop <= len(self.index):
                raise DatasetError(
                    f"{self.root}: episode metadata row {r['episode_index']} has a bad frame range"
                )
            if not (self.episode_index[start:stop] == i).all():
                raise DatasetError(f"{self.root}: frames {start}..{stop} do not all belong to episode {i}")
            instruction = self.tasks.get(int(self.task_index[start]))
            if instruction is None:
                raise DatasetError(
                    f"{self.root}: task_index {int(self.task_index[start])} not in {TASKS_PATH}"
                )
            # svrl's fields: meta/svrl.json, else the `svrl/*` columns of datasets written before it; an
            # episode appended by another tool has neither (a demonstration: successful, named by its task).
            own = svrl_rows.get(i, {})
            episodes.append(
                EpisodeInfo(
                    index=i,
                    start=start,
                    stop=stop,
                    instruction=instruction,
                    task_name=own.get("task_name") or r.get("svrl/task_name") or instruction,
                    success=bool(own.get("success", r.get("svrl/success", True))),
                    metadata=own.get("metadata", {}),
                )
            )
        if len(episodes) != int(self.info["total_episodes"]):
            raise DatasetError(
                f"{self.root}: {len(episodes)} episodes in meta/episodes but total_episodes={self.info['total_episodes']}"
            )
        return episodes

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        shape = self.features[lerobot_image_key(self.camera_names[0])]["shape"]
        return int(shape[0]), int(shape[1])

    def images(self, camera: str, frames: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decoded frames uint8[n, H, W, 3] of one camera at global frame indices."""
        key = lerobot_image_key(camera)
        if key not in self.features:
            raise DatasetError(f"no camera {camera!r} in {self.root} (has {self.camera_names})")
        column = self._table.column(key)
        rows = self._order[np.asarray(frames, dtype=np.int64)]
        out = []
        for r in rows:
            item = column[int(r)].as_py()
            data = item.get("bytes") if isinstance(item, dict) else None
            if data is None:
                path = item.get("path") if isinstance(item, dict) else None
                if not path or not (self.root / path).is_file():
                    raise DatasetError(
                        f"frame {int(r)} of {camera!r} has neither PNG bytes nor a readable path"
                    )
                data = (self.root / path).read_bytes()
            out.append(decode_png(data))
        return np.stack(out)

    def observations(self, frames: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Batched observation dict (docs/contracts.md) for global frame indices."""
        frames = np.asarray(frames, dtype=np.int64)
        obs: dict[str, Any] = {
            OBS_IMAGES: {cam: self.images(cam, frames) for cam in self.camera_names},
            OBS_INSTRUCTION: [self.tasks[int(t)] for t in self.task_index[frames]],
        }
        if self.proprio is not None:
            obs[OBS_PROPRIO] = self.proprio[frames]
        return obs

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One frame: the single-observation dict plus its action and indices."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        i = int(i) % len(self)
        obs = self.observations([i])
        out: dict[str, Any] = {
            OBS_IMAGES: {k: v[0] for k, v in obs[OBS_IMAGES].items()},
            OBS_INSTRUCTION: obs[OBS_INSTRUCTION][0],
            "action": self.actions[i],
            "episode_index": int(self.episode_index[i]),
            "frame_index": int(self.frame_index[i]),
        }
        if self.proprio is not None:
            out[OBS_PROPRIO] = self.proprio[i]
        return out

    def episode(self, i: int) -> dict[str, Any]:
        """All frames of episode i, in the same form `DatasetWriter.add_episode` takes."""
        ep = self.episodes[i]
        frames = np.arange(ep.start, ep.stop)
        return {
            "images": {cam: self.images(cam, frames) for cam in self.camera_names},
            "proprio": self.proprio[ep.start : ep.stop] if self.proprio is not None else None,
            "actions": self.actions[ep.start : ep.stop],
            "instruction": ep.instruction,
            "task_name": ep.task_name,
            "success": ep.success,
            "episode_index": ep.index,
            "extra": {k: v[ep.start : ep.stop] for k, v in self.extra.items()},
        }


def _fixed_list_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    return np.asarray(arr.to_pylist(), dtype=np.float32)  # variable-size lists (other writers)


def _guess_action_space(features: Mapping[str, Any]) -> str:
    dim = int(features[LEROBOT_ACTION]["shape"][0])
    for space, d in ACTION_DIMS.items():
        if d == dim:
            return space
    return f"unknown_{dim}d"
