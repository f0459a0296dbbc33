"""`svrl sim show`: one picture with the first frame of every task of a suite, labelled.

A quick visual check that layouts are sensible and that the cameras see what a policy needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def suite_montage(
    suite: str,
    out: str | Path,
    image_size: int = 128,
    split: str = "eval",
    index: int = 0,
    cameras: tuple[str, ...] = ("main", "wrist"),
    columns: int = 3,
) -> Path:
    """Render init state `index` of every task in `suite` and write a labelled PNG grid to `out`."""
    from PIL import Image, ImageDraw

    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState, tasks_in_suite

    tasks = tasks_in_suite(suite)
    env = SimEnv(image_size=image_size, cameras=cameras)
    label_h = 28
    tiles = []
    for task in tasks:
        obs, _ = env.reset(task.name, InitState(split, index))
        row = np.concatenate([obs["images"][c] for c in cameras], axis=1)
        tile = Image.new("RGB", (row.shape[1], row.shape[0] + label_h), "white")
        tile.paste(Image.fromarray(row), (0, label_h))
        draw = ImageDraw.Draw(tile)
        draw.text((3, 1), task.name, fill="black")
        draw.text((3, 14), task.instruction[: row.shape[1] // 6], fill=(70, 70, 70))
        tiles.append(tile)
    env.close()
    cols = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w + (cols - 1) * 4, rows * h + (rows - 1) * 4), (200, 200, 200))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * (w + 4), (k // cols) * (h + 4)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
