"""`svrl record`: record demonstrations from the robot graph's topics into a dataset `svrl sft` trains on.

Registered from svrl.cli's table; nothing here imports rclpy until the command runs, so `svrl --help`
works without ROS. The recording itself is `episode_recorder` (a node) over `recording.RecordingSession`.
"""

from __future__ import annotations

import argparse
import sys

from svrl_ros.recording import KEEPS, SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record demonstrations (teleoperated, scripted, or operator interventions) from the ROS topics",
        description="Record frames (both cameras, joint states, the arm's commands turned back into ee_delta "
        "actions, who was in control) from a running robot graph into a LeRobotDataset v3 folder. Episodes "
        "are split by the svrl/record/{start,stop,discard}_episode services (std_srvs/Trigger) or by "
        "ExecuteInstruction goals. Ctrl-C closes the open episode and writes the dataset.",
    )
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--instruction", required=True, help="the task instruction the demonstrations show")
    p.add_argument(
        "--task-name", default=None, help="task name kept in meta/svrl.json (default: instruction)"
    )
    p.add_argument(
        "--split", choices=SPLITS, default="service", help="episodes by start/stop service or by goal"
    )
    p.add_argument(
        "--keep",
        choices=KEEPS,
        default="all",
        help="write every episode, or only those with a teleop takeover",
    )
    p.add_argument(
        "--interventions",
        action="store_true",
        help="record interventions: same as --split goals --keep interventions",
    )
    p.add_argument("--control-rate-hz", type=float, default=10.0, help="arm_controller's rate (dataset fps)")
    p.add_argument(
        "--image-tolerance-s",
        type=float,
        default=None,
        help="max |image stamp - joint state stamp| for a frame (default: half a control period)",
    )
    p.add_argument(
        "--default-mode",
        choices=("policy", "teleop"),
        default=None,
        help="who controls the arm until svrl/arm_mode is heard (an arm_controller that does not publish it)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="resize every camera's images to H x W (needed when the cameras differ in size; default: as sent)",
    )
    p.add_argument("--min-frames", type=int, default=1, help="episodes with fewer frames are not written")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.add_argument("--progress-period-s", type=float, default=5.0, help="a progress line this often (s)")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from svrl_policy.dataset import DatasetError
    from svrl_ros.recording import RecordingSession

    split, keep = ("goals", "interventions") if args.interventions else (args.split, args.keep)
    try:
        session = RecordingSession(
            args.out,
            args.instruction,
            split=split,
            keep=keep,
            fps=round(args.control_rate_hz),
            image_tolerance_s=args.image_tolerance_s,
            default_mode=args.default_mode,
            task_name=args.task_name,
            overwrite=args.overwrite,
            min_frames=args.min_frames,
            image_size=tuple(args.image_size) if args.image_size else None,
        )
    except (ValueError, DatasetError) as error:
        print(f"svrl record: {error}", file=sys.stderr)
        return 2
    from svrl_ros.episode_recorder import run

    return run(session, progress_period_s=args.progress_period_s)
