"""Behaviour: SFT on a few scripted svrl_sim demonstrations reaches non-zero success on its training tasks.

Bounded by iterations (500 SFT steps, one greedy episode per demo's init state), never by wall-clock time.
"""

from __future__ import annotations

from pathlib import Path

import torch

TASKS = ("goal/press_button", "goal/put_red_cube_on_plate")  # a reach-and-press and a pick-and-place
DEMOS_PER_TASK = 2
IMAGE_SIZE = 64


def test_sft_on_scripted_demos_succeeds_on_its_training_tasks(tmp_path: Path) -> None:
    from svrl_policy.policy import Policy
    from svrl_sim.demos import write_demos
    from svrl_sim.env import SimEnv
    from svrl_trainer.sft import SFTConfig, train_sft

    torch.set_num_threads(1)
    data = write_demos(tmp_path / "demos", list(TASKS), DEMOS_PER_TASK, image_size=IMAGE_SIZE, workers=1).out
    result = train_sft(
        SFTConfig(
            data=[data],
            out=tmp_path / "ck",
            preset="debug",
            steps=500,
            batch_size=32,
            lr=1e-3,
            warmup_steps=20,
            seed=0,
            progress=False,
        )
    )
    assert result.final_loss < 0.5 * result.first_loss, [h["loss"] for h in result.history]

    policy = Policy.from_pretrained(result.checkpoint)
    env = SimEnv(image_size=IMAGE_SIZE)
    successes = []
    for task in TASKS:
        for index in range(DEMOS_PER_TASK):  # the init states the demos were recorded from
            obs, info = env.reset(task, ("train", index))
            done = False
            while not done:
                chunk = policy.sample(obs, temperature=0.0).actions[0]  # (K, D), executed open loop
                obs, _, terminated, truncated, info = env.step_chunk(chunk)
                done = terminated or truncated
            successes.append(bool(info["success"]))
    env.close()
    assert sum(successes) >= 1, successes
