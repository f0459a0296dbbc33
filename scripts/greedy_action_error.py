"""How far a checkpoint's greedy actions are from the expert's, on frames of a demonstration dataset.

A continuous check of a behaviour-cloned base that answers long before task success does: if the error of the
first action of a chunk is as large as the action itself, the policy has not learned where to go. For a
checkpoint with an auxiliary focus head (`--aux-weight`) on data with focus.* columns, it also prints how far
the head's estimate of the object and target offsets is from the truth; for one with text keypoints on data
with the focus pixel columns (`--keypoint-weight`), how far keypoints 0 and 1 of each camera are from where
the object and target appear.

    .venv/bin/python scripts/greedy_action_error.py --ckpt runs/base_v3/ckpt2000 --data runs/base_v3/data/pretrain
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from svrl_policy.dataset import LeRobotDataset
from svrl_policy.policy import Policy
from svrl_trainer.sft import AUX_SCALE_M, DemoFrames, in_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--frames", type=int, default=256, help="frames drawn at random (seed 0)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.from_pretrained(args.ckpt).eval()
    demos = DemoFrames([LeRobotDataset(args.data)], policy.config.chunk_len)
    frames = np.random.default_rng(0).integers(0, len(demos), args.frames)
    targets = demos.targets[frames].reshape(len(frames), policy.config.chunk_len, -1)
    predicted = np.concatenate(
        [
            policy.sample(demos.observations(frames[i : i + 32]), 0.0).actions
            for i in range(0, len(frames), 32)
        ]
    )
    error = np.abs(predicted - targets)
    print(f"{args.ckpt} on {len(frames)} frames of {args.data}")

    def mm(values: np.ndarray) -> str:
        return " ".join(f"{v * 1000:.2f}" for v in values)

    print(f"  first action |error| x y z (mm): {mm(error[:, 0, :3].mean(0))}")
    print(f"  first action |target| x y z (mm): {mm(np.abs(targets[:, 0, :3]).mean(0))}")
    print(f"  first action |error| yaw (mrad): {error[:, 0, 5].mean() * 1000:.1f}")
    print(f"  gripper sign wrong, whole chunk: {(error[:, :, 6] > 1).mean():.3f}")
    pixels = demos.focus_pixels(policy.config.cameras)
    wants_focus = policy.config.aux_dim and demos.focus is not None
    wants_points = policy.config.text_keypoints >= 2 and pixels is not None
    if not (wants_focus or wants_points):
        return
    estimates, points = [], []
    with torch.no_grad():
        for i in range(0, len(frames), 32):
            inputs = policy.preprocess(demos.observations(frames[i : i + 32]), train=False)
            out = policy.forward_with_aux(inputs)
            if wants_focus:
                estimates.append(out.focus.numpy() * AUX_SCALE_M)
            if wants_points:
                points.append(out.text_keypoints[:, :, :2].numpy())
    if wants_focus:
        truth = demos.focus[frames]
        focus_error = np.abs(np.concatenate(estimates) - truth)
        print(f"  focus object |error| x y z (mm): {mm(focus_error[:, :3].mean(0))}")
        print(f"  focus object |offset| x y z (mm): {mm(np.abs(truth[:, :3]).mean(0))}")
        print(f"  focus target |error| x y z (mm): {mm(focus_error[:, 3:].mean(0))}")
        # Frames while the object is still > 5 cm away horizontally: where finding it is the whole job.
        far = np.linalg.norm(truth[:, :2], axis=1) > 0.05
        if far.any():
            guess = np.abs(truth[far, :2] - np.median(truth[far, :2], axis=0)).mean(0)
            print(
                f"  approach frames ({far.sum()}): object |error| x y (mm) {mm(focus_error[far, :2].mean(0))}, "
                f"|offset| {mm(np.abs(truth[far, :2]).mean(0))}, best constant's error {mm(guess)}"
            )
    if wants_points:
        # Text keypoints 0 and 1 of each camera against where the object and target appear (in pixels).
        half = policy.config.image_size / 2
        found, truth_px = np.concatenate(points), pixels[frames] / policy.config.center_crop
        for c, cam in enumerate(policy.config.cameras):
            for k, what in enumerate(("object", "target")):
                seen = in_view(truth_px[:, c, k])
                if not seen.any():
                    continue
                err = np.linalg.norm(found[seen, c, k] - truth_px[seen, c, k], axis=1).mean() * half
                const = (
                    np.linalg.norm(
                        truth_px[seen, c, k] - np.median(truth_px[seen, c, k], axis=0), axis=1
                    ).mean()
                    * half
                )
                print(
                    f"  keypoint {cam}/{what} ({seen.sum()} in view): {err:.1f} px off, best constant {const:.1f} px"
                )


if __name__ == "__main__":
    main()
