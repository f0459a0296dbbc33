"""LeRobotDataset v3 writer/reader: lossless round trip, LeRobot's layout, atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from svrl_policy.dataset import DatasetError, DatasetWriter, LeRobotDataset


def _episode(rng: np.random.Generator, T: int, size: int = 32) -> dict:
    return {
        "images": {c: rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8) for c in ("main", "wrist")},
        "proprio": rng.normal(size=(T, 15)).astype(np.float32),
        "actions": rng.normal(size=(T, 7)).astype(np.float32),
    }


def _write(root: Path, episodes: list[dict], **kw) -> Path:
    with DatasetWriter(root, image_shape=(32, 32), **kw) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(**ep, instruction=f"task {i % 2}", task_name=f"suite/t{i % 2}", success=i != 1)
    return root


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eps = [_episode(rng, T) for T in (5, 7, 3)]
    ds = LeRobotDataset(_write(tmp_path / "ds", eps))
    assert len(ds) == 15 and ds.num_episodes == 3 and ds.camera_names == ["main", "wrist"]
    assert ds.action_space == "ee_delta" and ds.fps == 10
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        for cam in ("main", "wrist"):
            np.testing.assert_array_equal(got["images"][cam], ep["images"][cam])
        np.testing.assert_array_equal(got["proprio"], ep["proprio"])
        np.testing.assert_array_equal(got["actions"], ep["actions"])
        assert got["instruction"] == f"task {i % 2}" and got["task_name"] == f"suite/t{i % 2}"
        assert got["success"] == (i != 1)
    frame = ds[6]  # episode 1, frame 1
    assert frame["episode_index"] == 1 and frame["frame_index"] == 1
    np.testing.assert_array_equal(frame["images"]["main"], eps[1]["images"]["main"][1])
    batch = ds.observations([0, 14])
    assert batch["images"]["wrist"].shape == (2, 32, 32, 3) and batch["instruction"] == ["task 0", "task 0"]


def test_files_follow_the_lerobot_v3_layout(tmp_path: Path) -> None:
    root = _write(tmp_path / "ds", [_episode(np.random.default_rng(1), 4)])
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["observation.images.main"] == {
        "dtype": "image",
        "shape": [32, 32, 3],
        "names": ["height", "width", "channels"],
    }
    assert info["features"]["observation.state"]["shape"] == [15]
    assert info["features"]["action"]["names"][-1] == "gripper"
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    img = data.column("observation.images.main")[0].as_py()
    assert img["bytes"][:8] == b"\x89PNG\r\n\x1a\n"  # LeRobot `image` dtype: {bytes, path} with PNG bytes
    assert b"huggingface" in data.schema.metadata
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert episodes[0]["dataset_from_index"] == 0 and episodes[0]["dataset_to_index"] == 4
    assert episodes[0]["tasks"] == ["task 0"]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert len(stats["action"]["q01"]) == 7 and np.array(stats["observation.images.main"]["mean"]).shape == (
        3,
        1,
        1,
    )


def test_data_files_rotate_and_still_read_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    eps = [_episode(rng, 6) for _ in range(4)]
    root = _write(tmp_path / "ds", eps, data_file_size_mb=0.01)
    assert len(list((root / "data/chunk-000").glob("file-*.parquet"))) > 1
    ds = LeRobotDataset(root)
    np.testing.assert_array_equal(ds.episode(3)["actions"], eps[3]["actions"])


def test_an_exception_leaves_nothing_behind(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with (
        pytest.raises(RuntimeError, match="expert crashed"),
        DatasetWriter(tmp_path / "ds", image_shape=(32, 32)) as w,
    ):
        w.add_episode(**_episode(rng, 3), instruction="x")
        raise RuntimeError("expert crashed")
    assert list(tmp_path.iterdir()) == []


def test_writer_validates_episodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w = DatasetWriter(tmp_path / "ds", image_shape=(32, 32))
    ep = _episode(rng, 3)
    with pytest.raises(DatasetError, match=r"images\['main'\] must be uint8"):
        w.add_episode(**{**ep, "images": {**ep["images"], "main": ep["images"]["main"][:2]}}, instruction="x")
    with pytest.raises(DatasetError, match="NaN"):
        w.add_episode(**{**ep, "actions": np.full((3, 7), np.nan, np.float32)}, instruction="x")
    with pytest.raises(DatasetError, match="cameras"):
        w.add_episode(**{**ep, "images": {"main": ep["images"]["main"]}}, instruction="x")
    w.abort()
    _write(tmp_path / "ds", [ep])
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path / "ds")


def test_reader_errors_name_the_problem(tmp_path: Path) -> None:
    root = _write(tmp_path / "ds", [_episode(np.random.default_rng(5), 3)])
    with pytest.raises(DatasetError, match="does not exist"):
        LeRobotDataset(tmp_path / "nope")
    (root / "meta/tasks.parquet").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"tasks\.parquet is not a readable parquet file"):
        LeRobotDataset(root)
    (root / "meta/info.json").unlink()
    with pytest.raises(DatasetError, match=r"info\.json is missing"):
        LeRobotDataset(root)


def test_older_versions_and_video_datasets_are_rejected_with_a_fix(tmp_path: Path) -> None:
    root = _write(tmp_path / "ds", [_episode(np.random.default_rng(6), 3)])
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="convert_dataset_v21_to_v30"):
        LeRobotDataset(root)
    info["features"]["observation.images.main"]["dtype"] = "video"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="stored as video"):
        LeRobotDataset(root)


def test_reads_a_dataset_written_the_way_lerobot_and_hf_datasets_write_it(tmp_path: Path) -> None:
    """Variable-length list columns, a pandas-index tasks table, no svrl columns, other camera names/dims."""
    import io

    import pyarrow as pa
    from PIL import Image

    rng = np.random.default_rng(7)
    root = tmp_path / "foreign"
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    frames = rng.integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    data = pa.table(
        {
            "observation.images.front": pa.array(
                [{"bytes": png(f), "path": f"f{i}.png"} for i, f in enumerate(frames)], struct
            ),
            "observation.state": pa.array(
                rng.normal(size=(5, 6)).astype(np.float32).tolist(), pa.list_(pa.float32())
            ),
            "action": pa.array(rng.normal(size=(5, 6)).astype(np.float32).tolist(), pa.list_(pa.float32())),
            "timestamp": pa.array([0.0, 0.1, 0.0, 0.1, 0.2], pa.float32()),
            "frame_index": [0, 1, 0, 1, 2],
            "episode_index": [0, 0, 1, 1, 1],
            "index": [0, 1, 2, 3, 4],
            "task_index": [0, 0, 1, 1, 1],
        }
    )
    pq.write_table(data, root / "data/chunk-000/file-000.parquet")
    pq.write_table(
        pa.table({"task_index": [0, 1], "__index_level_0__": ["grab it", "push it"]}),
        root / "meta/tasks.parquet",
    )
    episodes = {"episode_index": [0, 1], "tasks": [["grab it"], ["push it"]], "length": [2, 3],
                "dataset_from_index": [0, 2], "dataset_to_index": [2, 5]}  # fmt: skip
    pq.write_table(pa.table(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0", "fps": 10, "total_episodes": 2, "total_frames": 5,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            "observation.images.front": {"dtype": "image", "shape": [24, 40, 3], "names": ["height", "width", "channels"]},
            "observation.state": {"dtype": "float32", "shape": [6], "names": None},
            "action": {"dtype": "float32", "shape": [6], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{k: scalar for k in ("frame_index", "episode_index", "index", "task_index")},
        },
    }  # fmt: skip
    (root / "meta/info.json").write_text(json.dumps(info))

    ds = LeRobotDataset(root)
    assert ds.camera_names == ["front"] and ds.proprio.shape == (5, 6) and ds.num_episodes == 2
    ep = ds.episode(1)
    assert ep["instruction"] == "push it" and ep["success"] is True
    np.testing.assert_array_equal(ep["images"]["front"], frames[2:])


def test_commit_publishes_each_episode_and_a_crash_keeps_the_committed_ones(tmp_path: Path) -> None:
    """Long recordings commit after every episode: the dataset on disk is always complete and loadable."""
    rng = np.random.default_rng(8)
    eps = [_episode(rng, T) for T in (3, 4, 5)]
    root = tmp_path / "ds"
    w = DatasetWriter(root, image_shape=(32, 32))
    w.add_episode(**eps[0], instruction="a")
    w.commit()
    assert LeRobotDataset(root).num_episodes == 1
    w.add_episode(**eps[1], instruction="b")
    w.commit()
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 2 and sorted(p.name for p in (root / "data/chunk-000").iterdir()) == [
        "file-000.parquet",
        "file-001.parquet",
    ]
    w.add_episode(**eps[2], instruction="c")  # then the process dies, or the session aborts
    w.abort()
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 2 and [e.instruction for e in ds.episodes] == ["a", "b"]
    np.testing.assert_array_equal(ds.episode(1)["images"]["wrist"], eps[1]["images"]["wrist"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no stage or old copy left behind
    with pytest.raises(DatasetError, match="nothing to commit"):
        DatasetWriter(tmp_path / "empty", image_shape=(32, 32)).commit()
