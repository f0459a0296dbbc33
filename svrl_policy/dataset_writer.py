"""`DatasetWriter`: episodes in, a LeRobotDataset v3 directory out (layout: `svrl_policy.dataset`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svrl_policy.dataset_format import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_SIZE_MB,
    DATA_PATH,
    EPISODES_PATH,
    EXTRA_DTYPES,
    IMAGE_STRUCT,
    INDEX_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    SVRL_META_PATH,
    TASKS_PATH,
    DatasetError,
    encode_png,
    hf_features_metadata,
    write_json_atomic,
    write_parquet_atomic,
)
from svrl_policy.dataset_stats import ChannelHistogram, image_sample_indices, numeric_stats
from svrl_policy.features import (
    ACTION_DIMS,
    ACTION_NAMES,
    LEROBOT_ACTION,
    LEROBOT_IMAGE_PREFIX,
    LEROBOT_STATE,
    PROPRIO_DIM,
    PROPRIO_NAMES,
    lerobot_image_key,
)


class DatasetWriter:
    """Write episodes of (images, proprio, actions, instruction) as a LeRobotDataset v3 directory.

    Use as a context manager: a clean exit finalises (meta files, then an atomic rename into `root`); an
    exception discards everything written so far.

    `extra_features` adds per-frame scalar columns (name -> "int64" or "float32"), e.g. who was in control
    of a recorded frame; they are ordinary LeRobot features (declared in info.json, with stats), which
    LeRobot's policies ignore because their names start with neither `observation.` nor `action`.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int = 10,
        camera_names: Sequence[str] = ("main", "wrist"),
        image_shape: tuple[int, int] = (128, 128),
        proprio_dim: int = PROPRIO_DIM,
        action_dim: int = 7,
        action_space: str = "ee_delta",
        robot_type: str = "svrl_sim",
        overwrite: bool = False,
        data_file_size_mb: float = DATA_FILE_SIZE_MB,
        extra_features: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.extra_features = dict(extra_features or {})
        reserved = {LEROBOT_ACTION, LEROBOT_STATE, *INDEX_COLUMNS}
        for name, dtype in self.extra_features.items():
            if dtype not in EXTRA_DTYPES:
                raise DatasetError(
                    f"extra feature {name!r}: dtype {dtype!r} is not one of {list(EXTRA_DTYPES)}"
                )
            if name in reserved or name.startswith(LEROBOT_IMAGE_PREFIX) or "/" in name:
                raise DatasetError(f"extra feature name {name!r} is reserved or contains '/'")
        if action_space not in ACTION_DIMS:
            raise DatasetError(f"action_space {action_space!r} is not one of {tuple(ACTION_DIMS)}")
        if action_dim != ACTION_DIMS[action_space]:
            raise DatasetError(
                f"action_dim={action_dim} but {action_space!r} actions have {ACTION_DIMS[action_space]}"
            )
        if not camera_names or len(set(camera_names)) != len(camera_names):
            raise DatasetError(f"camera_names must be unique and non-empty, got {list(camera_names)}")
        if self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise DatasetError(
                f"{self.root} already exists and is not empty; pass overwrite=True to replace it"
            )
        if (
            self.root.exists()
            and overwrite
            and any(self.root.iterdir())
            and not (self.root / INFO_PATH).exists()
        ):
            raise DatasetError(
                f"refusing to overwrite {self.root}: it has no {INFO_PATH}, so it is not a dataset"
            )
        self.fps = int(fps)
        self.camera_names = list(camera_names)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.proprio_dim = int(proprio_dim)
        self.action_dim = int(action_dim)
        self.action_space = action_space
        self.robot_type = robot_type
        self.max_file_bytes = int(data_file_size_mb * 1024 * 1024)

        self.features = self._features()
        self._schema = self._data_schema()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._stage = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.writing-", dir=self.root.parent))
        os.chmod(self._stage, 0o755)  # mkdtemp makes it private; datasets are shared
        self._writer: pq.ParquetWriter | None = None
        self._file = (0, 0)  # (chunk_index, file_index) of the open data file
        self._file_bytes = 0
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._columns: dict[
            str, list[np.ndarray]
        ] = {}  # numeric feature -> per-episode values (global stats)
        self._image_hist = {c: ChannelHistogram() for c in self.camera_names}
        self._svrl_episodes: list[dict[str, Any]] = []
        self.svrl_metadata: dict[str, Any] = {}  # written to meta/svrl.json (e.g. how a recording was made)
        self._total_frames = 0
        self._closed = False

    # ------------------------------------------------------------------ schema
    def _features(self) -> dict[str, dict[str, Any]]:
        h, w = self.image_shape
        feats: dict[str, dict[str, Any]] = {}
        for cam in self.camera_names:
            feats[lerobot_image_key(cam)] = {
                "dtype": "image",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
            }
        if self.proprio_dim:
            names = (
                list(PROPRIO_NAMES)
                if self.proprio_dim == PROPRIO_DIM
                else [f"state_{i}" for i in range(self.proprio_dim)]
            )
            feats[LEROBOT_STATE] = {"dtype": "float32", "shape": [self.proprio_dim], "names": names}
        feats[LEROBOT_ACTION] = {
            "dtype": "float32",
            "shape": [self.action_dim],
            "names": list(ACTION_NAMES[self.action_space]),
        }
        for name, dtype in self.extra_features.items():
            feats[name] = {"dtype": dtype, "shape": [1], "names": None}
        feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for key in ("frame_index", "episode_index", "index", "task_index"):
            feats[key] = {"dtype": "int64", "shape": [1], "names": None}
        return feats

    def _data_schema(self) -> pa.Schema:
        fields = [pa.field(lerobot_image_key(c), IMAGE_STRUCT) for c in self.camera_names]
        if self.proprio_dim:
            fields.append(pa.field(LEROBOT_STATE, pa.list_(pa.float32(), self.proprio_dim)))
        fields.append(pa.field(LEROBOT_ACTION, pa.list_(pa.float32(), self.action_dim)))
        fields += [pa.field(k, EXTRA_DTYPES[d][1]) for k, d in self.extra_features.items()]
        fields.append(pa.field("timestamp", pa.float32()))
        fields += [pa.field(k, pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")]
        return pa.schema(fields, metadata={"huggingface": hf_features_metadata(self.features)})

    # ------------------------------------------------------------------ writing
    def add_episode(
        self,
        *,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray | None,
        actions: np.ndarray,
        instruction: str,
        task_name: str | None = None,
        success: bool = True,
        extra: Mapping[str, np.ndarray] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one episode (T frames); returns its episode index.

        `extra` holds a [T] column per extra feature; `metadata` (JSON-able) is kept with the episode's
        svrl fields in meta/svrl.json.
        """
        if self._closed:
            raise DatasetError("this DatasetWriter is already finalised")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or actions.shape[0] == 0:
            raise DatasetError(f"actions must be float32[T>0, {self.action_dim}], got shape {actions.shape}")
        T = actions.shape[0]
        if not np.isfinite(actions).all():
            raise DatasetError("actions contain NaN/inf")
        if set(images) != set(self.camera_names):
            raise DatasetError(
                f"images has cameras {sorted(images)}, this dataset records {self.camera_names}"
            )
        for cam, img in images.items():
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.shape != (T, *self.image_shape, 3):
                raise DatasetError(
                    f"images[{cam!r}] must be uint8{[T, *self.image_shape, 3]}, got {img.dtype} {img.shape}"
                )
        if self.proprio_dim:
            if proprio is None:
                raise DatasetError(f"proprio is required: float32[{T}, {self.proprio_dim}]")
            proprio = np.asarray(proprio, dtype=np.float32)
            if proprio.shape != (T, self.proprio_dim) or not np.isfinite(proprio).all():
                raise DatasetError(
                    f"proprio must be finite float32[{T}, {self.proprio_dim}], got {proprio.shape}"
                )
        if not isinstance(instruction, str) or not instruction.strip():
            raise DatasetError("instruction must be a non-empty string")
        extra = dict(extra or {})
        if set(extra) != set(self.extra_features):
            raise DatasetError(
                f"extra has columns {sorted(extra)}, this dataset records {sorted(self.extra_features)}"
            )
        for name, values in extra.items():
            kind = EXTRA_DTYPES[self.extra_features[name]][0]
            column = np.asarray(values)
            if column.shape != (T,) or not np.isfinite(column.astype(np.float64)).all():
                raise DatasetError(f"extra[{name!r}] must be {T} finite values, got shape {column.shape}")
            if kind is np.int64 and not np.array_equal(column, np.round(column)):
                raise DatasetError(f"extra[{name!r}] is an int64 feature but holds fractions")
            extra[name] = column.astype(kind)
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"episode metadata must be JSON-serialisable ({exc})") from exc

        ep = len(self._episodes)
        task_index = self._tasks.setdefault(instruction, len(self._tasks))
        start = self._total_frames
        cols: dict[str, Any] = {}
        ep_stats: dict[str, dict[str, Any]] = {}
        for cam in self.camera_names:
            frames = np.asarray(images[cam])
            cols[lerobot_image_key(cam)] = pa.array(
                [
                    {"bytes": encode_png(frames[t]), "path": f"episode_{ep:06d}/{cam}/frame_{t:06d}.png"}
                    for t in range(T)
                ],
                type=IMAGE_STRUCT,
            )
            hist = ChannelHistogram()
            hist.update(frames[image_sample_indices(T)])
            ep_stats[lerobot_image_key(cam)] = hist.stats()
            self._image_hist[cam].merge(hist)
        numeric: dict[str, np.ndarray] = {}
        if self.proprio_dim:
            numeric[LEROBOT_STATE] = proprio
        numeric[LEROBOT_ACTION] = actions
        numeric.update(extra)
        numeric["timestamp"] = np.arange(T, dtype=np.float32) / np.float32(self.fps)
        numeric["frame_index"] = np.arange(T, dtype=np.int64)
        numeric["episode_index"] = np.full(T, ep, dtype=np.int64)
        numeric["index"] = np.arange(start, start + T, dtype=np.int64)
        numeric["task_index"] = np.full(T, task_index, dtype=np.int64)
        for key, values in numeric.items():
            if values.ndim == 2:
                cols[key] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
            else:
                cols[key] = pa.array(values)
            ep_stats[key] = numeric_stats(values)
            self._columns.setdefault(key, []).append(values)
        table = pa.Table.from_pydict(cols, schema=self._schema)

        if self._writer is not None and self._file_bytes >= self.max_file_bytes:
            self._close_data_file()
            chunk, file = self._file
            self._file = (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)
        if self._writer is None:
            path = self._stage / DATA_PATH.format(chunk_index=self._file[0], file_index=self._file[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self._schema)
            self._file_bytes = 0
        self._writer.write_table(table)
        self._file_bytes += table.nbytes

        self._episodes.append(
            {
                "episode_index": ep,
                "tasks": [instruction],
                "length": T,
                "data/chunk_index": self._file[0],
                "data/file_index": self._file[1],
                "dataset_from_index": start,
                "dataset_to_index": start + T,
                "_stats": ep_stats,
            }
        )
        self._svrl_episodes.append(
            {
                "episode_index": ep,
                "task_name": task_name or instruction,
                "success": bool(success),
                **({"metadata": metadata} if metadata else {}),
            }
        )
        self._total_frames += T
        return ep

    def _close_data_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ finalising
    def finalize(self) -> Path:
        """Write the meta files and move the dataset into place; returns the dataset root."""
        if self._closed:
            return self.root
        if not self._episodes:
            self.abort()
            raise DatasetError("no episodes were added; nothing to write")
        self._publish()
        self._closed = True
        return self.root

    def commit(self) -> Path:
        """Publish every episode added so far as a complete dataset at `root`, and go on writing.

        For long recordings: a process killed later loses only what came after its last commit, and
        `abort` then discards only that. The open data file is closed (the next episode starts a new one),
        the stage is published like `finalize` does, and writing goes on in a new stage made of hard links
        to the published files: no copy, and safe because a published file is never written again (data
        files are new files, meta files are replaced whole by a rename).
        """
        if self._closed:
            raise DatasetError("this DatasetWriter is already finalised")
        if not self._episodes:
            raise DatasetError("no episodes were added; nothing to commit")
        had_open_file = self._writer is not None
        self._publish()
        stage = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.writing-", dir=self.root.parent))
        os.chmod(stage, 0o755)
        for path in self.root.rglob("*"):
            if path.is_file():
                target = stage / path.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:  # a filesystem without hard links: copy
                    shutil.copy2(path, target)
        self._stage = stage
        if had_open_file:  # never reopen a published file: the next episode writes the next one
            chunk, file = self._file
            self._file = (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)
        return self.root

    def _publish(self) -> None:
        """Close the data file, write the meta files into the stage and rename the stage into `root`."""
        self._close_data_file()
        stage = self._stage
        write_parquet_atomic(stage / TASKS_PATH, self._tasks_table())
        write_parquet_atomic(
            stage / EPISODES_PATH.format(chunk_index=0, file_index=0), self._episodes_table()
        )
        write_json_atomic(stage / STATS_PATH, self._stats())
        write_json_atomic(stage / SVRL_META_PATH, {**self.svrl_metadata, "episodes": self._svrl_episodes})
        write_json_atomic(stage / INFO_PATH, self._info())
        if self.root.exists():
            old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.root, old)
            os.rename(stage, self.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, self.root)

    def abort(self) -> None:
        self._close_data_file()
        shutil.rmtree(self._stage, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()

    def _tasks_table(self) -> pa.Table:
        tasks = sorted(self._tasks, key=self._tasks.__getitem__)
        table = pa.table(
            {
                "task_index": pa.array([self._tasks[t] for t in tasks], pa.int64()),
                "task": pa.array(tasks, pa.string()),
            }
        )
        # LeRobot reads this with pandas and indexes it by task string (`tasks.loc[task].task_index`).
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": "task",
                    "field_name": "task",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "pandas_version": "2.0.0",
        }
        return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})

    def _episodes_table(self) -> pa.Table:
        """One row per episode, exactly the columns (names, order, types) LeRobot 0.4.x writes.

        LeRobot concatenates every episodes file when it opens a dataset, so a file it appends must have
        the same schema as ours: stats of every feature, in the order of info.json's features, and no
        other column (svrl's own fields are in meta/svrl.json).
        """
        rows = []
        for ep in self._episodes:
            row = {k: v for k, v in ep.items() if not k.startswith("_")}
            for key in self.features:
                for stat, value in ep["_stats"][key].items():
                    row[f"stats/{key}/{stat}"] = value
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
        return pa.Table.from_pylist(rows)

    def _stats(self) -> dict[str, Any]:
        """Dataset stats, exact over all frames (images: over every episode's sampled frames)."""
        stats: dict[str, Any] = {}
        for key in self.features:
            if key.startswith(LEROBOT_IMAGE_PREFIX):
                stats[key] = self._image_hist[key[len(LEROBOT_IMAGE_PREFIX) :]].stats()
            else:
                stats[key] = numeric_stats(np.concatenate(self._columns[key]))
        return stats

    def _info(self) -> dict[str, Any]:
        n_ep = len(self._episodes)
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n_ep,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": self.max_file_bytes // (1024 * 1024),
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{n_ep}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": self.features,
            "svrl": {"action_space": self.action_space, "camera_names": self.camera_names},
        }
