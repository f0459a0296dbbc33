"""Rollout videos of greedy evaluation episodes, as animated GIFs (Pillow only: no codec to install).

The rollout engine observes at chunk boundaries only (that is when the policy looks), so a video
holds one frame per action chunk, both cameras side by side, with the outcome in the file name. The
episodes are the task's first evaluation initial states under greedy decoding, i.e. exactly the ones
counted in the evaluation report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from svrl_trainer.catalog import TaskRef
from svrl_trainer.rollout import EpisodeSpec, max_chunks_for


def record_eval_videos(
    engine,
    tasks: list[TaskRef],
    *,
    per_task: int,
    chunk_length: int,
    out_dir: Path,
    seconds_per_chunk: float = 0.4,
) -> list[Path]:
    """Roll out `per_task` evaluation episodes per task greedily and write one GIF each."""
    specs = [EpisodeSpec(t.name, s) for t in tasks for s in t.eval_states[:per_task]]
    if not specs:
        return []
    batch = engine.collect(
        specs,
        temperature=0.0,
        max_chunks=max_chunks_for(max(t.max_steps for t in tasks), chunk_length),
        keep_observations=True,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, seen = [], {}
    for i, spec in enumerate(batch.specs):
        index = seen[spec.task] = seen.get(spec.task, -1) + 1
        frames = [
            np.concatenate([batch.images[cam][i, c] for cam in sorted(batch.images)], axis=1)
            for c in range(int(batch.num_chunks[i]))
        ]
        outcome = "success" if batch.success[i] else "fail"
        path = out_dir / f"{spec.task.replace('/', '__')}_{index:02d}_{outcome}.gif"
        write_gif_atomic(path, frames, seconds_per_chunk)
        written.append(path)
    return written


def write_gif_atomic(path: Path, frames: list[np.ndarray], seconds_per_frame: float) -> None:
    from PIL import Image

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(1000 * seconds_per_frame),
        loop=0,
    )
    tmp.replace(path)
