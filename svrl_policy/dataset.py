"""Demonstration datasets in the LeRobotDataset v3 layout (parquet + PNG frames), written and read here.

    root/
      meta/info.json                                  codebase_version "v3.0", fps, features, path templates
      meta/stats.json                                 min/max/mean/std/count/q01..q99 of every feature
      meta/tasks.parquet                              task_index, task (the pandas index, as LeRobot reads it)
      meta/episodes/chunk-000/file-000.parquet        one row per episode: length, data file, frame range,
                                                      stats/<feature>/<stat> of the episode
      meta/svrl.json                                  svrl-only fields: per-episode task name, success, ...
      data/chunk-{chunk:03d}/file-{file:03d}.parquet  one row per frame; images as {bytes: PNG, path}

Images use LeRobot's `image` dtype (PNG bytes in a struct column), so no video codec is needed and the files
load with `lerobot.datasets.LeRobotDataset` as well as with svrl's `LeRobotDataset`.

LeRobot must be able to *extend* the dataset too (append episodes, delete, merge), so the episodes table
holds exactly the columns LeRobot 0.4.x writes (an extra column breaks reopening once LeRobot has added a
file without it), with per-episode stats of every feature, images included (`svrl_policy.dataset_stats`:
LeRobot rebuilds `stats.json` from those rows). svrl-only episode fields live in `meta/svrl.json`; datasets
written before that kept them as `svrl/*` columns, which the reader still takes.

The writer stages the whole dataset in a hidden sibling directory and renames it into place when the
`with` block exits cleanly, so readers never see a half-written dataset. This module needs only numpy,
pyarrow and Pillow (the simulator imports it without torch).

Modules: `dataset_format` (paths, constants, PNG frames, atomic files), `dataset_writer` (`DatasetWriter`),
`dataset_reader` (`LeRobotDataset`), `dataset_stats` (LeRobot's statistics); this one re-exports their
public names, so `from svrl_policy.dataset import ...` is the one import callers need.
"""

from __future__ import annotations

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
    decode_png,
    encode_png,
    hf_features_metadata,
    write_json_atomic,
    write_parquet_atomic,
)
from svrl_policy.dataset_reader import EpisodeInfo, LeRobotDataset
from svrl_policy.dataset_writer import DatasetWriter

__all__ = [
    "CHUNKS_SIZE",
    "CODEBASE_VERSION",
    "DATA_FILE_SIZE_MB",
    "DATA_PATH",
    "EPISODES_PATH",
    "EXTRA_DTYPES",
    "IMAGE_STRUCT",
    "INDEX_COLUMNS",
    "INFO_PATH",
    "STATS_PATH",
    "SVRL_META_PATH",
    "TASKS_PATH",
    "DatasetError",
    "DatasetWriter",
    "EpisodeInfo",
    "LeRobotDataset",
    "decode_png",
    "encode_png",
    "hf_features_metadata",
    "write_json_atomic",
    "write_parquet_atomic",
]
