"""The LeRobotDataset v3 format as svrl writes and reads it: paths, constants, PNG frames, atomic files.

`svrl_policy.dataset` describes the layout; `dataset_writer` and `dataset_reader` use what is here.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot default)
DATA_FILE_SIZE_MB = 100  # a data file is closed once it holds this much (LeRobot default)
SVRL_META_PATH = "meta/svrl.json"
EXTRA_DTYPES = {"int64": (np.int64, pa.int64()), "float32": (np.float32, pa.float32())}

IMAGE_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


class DatasetError(ValueError):
    """A dataset directory is missing, malformed or inconsistent; the message names the file and the fix."""


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # compress_level=1: ~5x faster than the default and only slightly bigger on rendered frames.
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=4) + "\n")
    os.replace(tmp, path)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def hf_features_metadata(features: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The `huggingface` schema metadata that lets `datasets` decode the columns without being told."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif tuple(ft["shape"]) == (1,):
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {
                "feature": {"dtype": ft["dtype"], "_type": "Value"},
                "length": ft["shape"][0],
                "_type": "Sequence",
            }
    return json.dumps({"info": {"features": out}}).encode()
