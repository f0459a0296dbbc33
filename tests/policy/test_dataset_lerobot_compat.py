"""Datasets LeRobot can extend: per-episode stats of every feature, LeRobot's episodes columns, svrl.json.

LeRobot itself is not a test dependency: these tests check the layout LeRobot 0.4.x reads and writes
(svrl_policy/dataset_stats.py says what it is), and the numbers against numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svrl_policy.dataset import DatasetError, DatasetWriter, LeRobotDataset
from svrl_policy.dataset_stats import (
    QUANTILE_KEYS,
    STAT_KEYS,
    ChannelHistogram,
    image_sample_indices,
    numeric_stats,
)

EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"


def _episode(rng: np.random.Generator, T: int, size: int = 16) -> dict:
    return {
        "images": {c: rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8) for c in ("main", "wrist")},
        "proprio": rng.normal(size=(T, 15)).astype(np.float32),
        "actions": rng.normal(size=(T, 7)).astype(np.float32),
    }


def _write(root: Path, episodes: list[dict], **kw) -> Path:
    with DatasetWriter(root, image_shape=(16, 16), **kw) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(**ep, instruction=f"task {i % 2}", task_name=f"suite/t{i % 2}", success=i != 1)
    return root


def test_every_feature_has_per_episode_and_global_stats_in_lerobot_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eps = [_episode(rng, T) for T in (5, 1, 8)]
    root = _write(tmp_path / "ds", eps)
    info = json.loads((root / "meta/info.json").read_text())
    stats = json.loads((root / "meta/stats.json").read_text())
    rows = pq.read_table(root / EPISODES_FILE).to_pylist()
    for key, ft in info["features"].items():
        assert set(stats[key]) == set(STAT_KEYS), key
        for row in rows:
            assert all(f"stats/{key}/{s}" in row for s in STAT_KEYS), key
            if ft["dtype"] == "image":
                for s in STAT_KEYS:
                    shape = np.array(row[f"stats/{key}/{s}"]).shape
                    assert shape == ((1,) if s == "count" else (3, 1, 1)), (key, s, shape)
            else:
                assert np.array(row[f"stats/{key}/mean"]).shape == tuple(ft["shape"])
    # a 1-frame episode: quantiles are its mean (LeRobot's rule for < 2 samples)
    one = rows[1]
    for q in QUANTILE_KEYS:
        assert one[f"stats/action/{q}"] == pytest.approx(one["stats/action/mean"])
    # global numeric stats are exact over all frames
    actions = np.concatenate([e["actions"] for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q10"], np.quantile(actions, 0.10, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), rtol=1e-5)
    assert stats["index"]["max"] == [13] and stats["frame_index"]["count"] == [14]


def test_image_stats_are_exact_per_channel_quantiles_in_unit_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ep = _episode(rng, 6)
    ep["images"]["main"][..., 0] = rng.integers(0, 50, (6, 16, 16))  # red channel dark: stats per channel
    root = _write(tmp_path / "ds", [ep])
    row = pq.read_table(root / EPISODES_FILE).to_pylist()[0]
    frames = ep["images"]["main"][image_sample_indices(6)].reshape(-1, 3).astype(np.float64) / 255.0
    for q, key in zip((0.01, 0.1, 0.5, 0.9, 0.99), QUANTILE_KEYS, strict=True):
        got = np.array(row[f"stats/observation.images.main/{key}"]).reshape(3)
        np.testing.assert_allclose(got, np.quantile(frames, q, axis=0), atol=1e-9)
    np.testing.assert_allclose(
        np.array(row["stats/observation.images.main/mean"]).reshape(3), frames.mean(0), atol=1e-12
    )
    assert np.array(row["stats/observation.images.main/max"]).reshape(3)[0] < 50 / 255
    assert row["stats/observation.images.main/count"] == [6]


def test_histogram_quantiles_match_numpy_on_skewed_data() -> None:
    rng = np.random.default_rng(2)
    frames = (rng.beta(0.3, 3.0, size=(7, 9, 11, 3)) * 255).astype(np.uint8)
    hist = ChannelHistogram()
    hist.update(frames)
    got = hist.stats()
    flat = frames.reshape(-1, 3).astype(np.float64) / 255
    for q, key in zip((0.01, 0.1, 0.5, 0.9, 0.99), QUANTILE_KEYS, strict=True):
        np.testing.assert_allclose(np.array(got[key]).reshape(3), np.quantile(flat, q, axis=0), atol=1e-12)
    np.testing.assert_allclose(np.array(got["std"]).reshape(3), flat.std(0), atol=1e-12)


def test_episodes_table_has_only_lerobot_columns_with_lerobot_types(tmp_path: Path) -> None:
    """LeRobot concatenates every episodes file; one it appends must share our schema exactly."""
    root = tmp_path / "ds"
    with DatasetWriter(root, image_shape=(16, 16), extra_features={"control_source": "int64"}) as w:
        w.add_episode(
            **_episode(np.random.default_rng(3), 4), instruction="x", extra={"control_source": np.ones(4)}
        )
    info = json.loads((root / "meta/info.json").read_text())
    table = pq.read_table(root / EPISODES_FILE)
    head = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
    head += ["dataset_from_index", "dataset_to_index"]
    stats = [f"stats/{k}/{s}" for k in info["features"] for s in STAT_KEYS]
    assert table.column_names == [*head, *stats, "meta/episodes/chunk_index", "meta/episodes/file_index"]
    assert not any(name.startswith("svrl/") for name in table.column_names)
    # What LeRobot's metadata buffer builds for the same row: numpy stats -> .tolist() -> from_pydict.
    row = table.to_pylist()[0]
    lerobot_like = {}
    for name, value in row.items():
        if name.startswith("stats/") and not name.endswith("/count"):
            feature = name.split("/")[1]
            dtype = np.int64 if info["features"][feature]["dtype"] == "int64" and name.split("/")[2] in (
                "min", "max") else np.float64  # fmt: skip
            value = np.asarray(value, dtype=dtype).tolist()
        lerobot_like[name] = [value]
    assert pa.Table.from_pydict(lerobot_like).schema == table.schema


def test_svrl_fields_live_in_meta_svrl_json_and_extra_features_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "ds"
    with DatasetWriter(root, image_shape=(16, 16), extra_features={"control_source": "int64"}) as w:
        w.svrl_metadata["recording"] = {"dropped": {"no_image": 2}}
        w.add_episode(
            **_episode(rng, 5),
            instruction="pick",
            task_name="real/pick",
            success=False,
            extra={"control_source": np.array([0, 0, 1, 1, 0])},
            metadata={"takeovers": 1},
        )
    meta = json.loads((root / "meta/svrl.json").read_text())
    assert meta["recording"] == {"dropped": {"no_image": 2}}
    assert meta["episodes"] == [
        {"episode_index": 0, "task_name": "real/pick", "success": False, "metadata": {"takeovers": 1}}
    ]
    ds = LeRobotDataset(root)
    ep = ds.episode(0)
    assert ep["task_name"] == "real/pick" and ep["success"] is False
    assert ds.episodes[0].metadata == {"takeovers": 1}
    np.testing.assert_array_equal(ep["extra"]["control_source"], [0, 0, 1, 1, 0])
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["control_source"] == {"dtype": "int64", "shape": [1], "names": None}


def test_extra_feature_errors_name_the_problem(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(DatasetError, match="dtype 'str'"):
        DatasetWriter(tmp_path / "a", extra_features={"who": "str"})
    with pytest.raises(DatasetError, match="reserved"):
        DatasetWriter(tmp_path / "b", extra_features={"action": "int64"})
    w = DatasetWriter(tmp_path / "c", image_shape=(16, 16), extra_features={"control_source": "int64"})
    with pytest.raises(DatasetError, match="extra has columns"):
        w.add_episode(**_episode(rng, 3), instruction="x")
    with pytest.raises(DatasetError, match="3 finite values"):
        w.add_episode(**_episode(rng, 3), instruction="x", extra={"control_source": np.zeros(2)})
    with pytest.raises(DatasetError, match="fractions"):
        w.add_episode(**_episode(rng, 3), instruction="x", extra={"control_source": np.full(3, 0.5)})
    w.abort()


def test_reads_datasets_written_before_svrl_json(tmp_path: Path) -> None:
    """Older svrl datasets kept task name and success as `svrl/*` columns of the episodes table."""
    root = _write(tmp_path / "ds", [_episode(np.random.default_rng(6), 3) for _ in range(2)])
    (root / "meta/svrl.json").unlink()
    table = pq.read_table(root / EPISODES_FILE)
    table = table.append_column("svrl/task_name", pa.array(["old/a", "old/b"]))
    table = table.append_column("svrl/success", pa.array([True, False]))
    pq.write_table(table, root / EPISODES_FILE)
    ds = LeRobotDataset(root)
    assert [e.task_name for e in ds.episodes] == ["old/a", "old/b"]
    assert [e.success for e in ds.episodes] == [True, False]


def test_an_episode_appended_by_another_tool_reads_with_defaults(tmp_path: Path) -> None:
    """What LeRobot's `save_episode` leaves: a second episodes file, no svrl.json entry for the episode."""
    rng = np.random.default_rng(7)
    first = _write(tmp_path / "a", [_episode(rng, 3)])
    second = _write(tmp_path / "b", [_episode(rng, 3), _episode(rng, 4)])
    # graft b's episode 1 (frames 3..6) onto a as an appended data file + episodes file
    data = pq.read_table(second / "data/chunk-000/file-000.parquet").slice(3, 4)
    pq.write_table(data, first / "data/chunk-000/file-001.parquet")
    row = pq.read_table(second / EPISODES_FILE).slice(1, 1)
    pq.write_table(row, first / "meta/episodes/chunk-000/file-001.parquet")
    assert pq.read_table(first / EPISODES_FILE).schema == row.schema
    info = json.loads((first / "meta/info.json").read_text())
    (first / "meta/info.json").write_text(json.dumps({**info, "total_episodes": 2, "total_frames": 7}))
    tasks = pq.read_table(second / "meta/tasks.parquet")
    pq.write_table(tasks, first / "meta/tasks.parquet")
    ds = LeRobotDataset(first)
    assert ds.num_episodes == 2 and ds.episodes[1].length == 4
    assert ds.episodes[1].success is True and ds.episodes[1].task_name == "task 1"


def test_numeric_stats_refuses_empty_input() -> None:
    with pytest.raises(ValueError, match="T > 0"):
        numeric_stats(np.zeros((0, 3)))
