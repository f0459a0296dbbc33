"""`svrl up`: start a stack profile's node graph without `ros2 launch` (pip installs, CI, laptops).

Behaves like launch where it matters to an operator: every node's output is prefixed with its name,
Ctrl-C stops all nodes with SIGINT (then SIGKILL after a grace period), and if any node exits on its
own the others are stopped too and the command fails, so a half-running stack is never left behind.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from svrl_ros.stack import (
    ProfileError,
    apply_remaps,
    load_profile,
    node_command,
    parameter_file_paths,
    params_file_content,
    with_namespace,
)

STOP_GRACE_S = 10.0


def _relay(prefix: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{prefix}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def run_stack(
    profile_name: str,
    overrides: list[str] | tuple[str, ...] = (),
    remaps: list[str] | tuple[str, ...] = (),
    namespace: str = "",
) -> int:
    try:
        profile = with_namespace(apply_remaps(load_profile(profile_name, overrides), remaps), namespace)
        started = [n for n in profile.nodes if not n.full_ros_only]
        for node in started:  # a missing parameter file stops here, before any node starts
            parameter_file_paths(node)
    except ProfileError as error:
        print(f"svrl up: {error}", file=sys.stderr)
        return 2
    skipped = [n.key for n in profile.nodes if n.full_ros_only]
    print(f"svrl up: profile {profile.name} ({profile.path}): {', '.join(n.key for n in started)}")
    if skipped:
        print(f"svrl up: skipped (need a full ROS 2 install; use ros2 launch): {', '.join(skipped)}")
        if profile.svrl_up_note:
            print(f"svrl up: {profile.svrl_up_note}")
    stop_requested = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop_requested.set())
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="svrl_up_") as tmp:
        for node in started:
            params = Path(tmp) / f"{node.key}.yaml"  # keys are unique; names are unique per namespace only
            params.write_text(params_file_content(profile, node))
            proc = subprocess.Popen(
                node_command(node, params), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            threading.Thread(target=_relay, args=(node.key, proc.stdout), daemon=True).start()
            procs[node.key] = proc
        exit_code = 0
        while not stop_requested.is_set():
            exited = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
            if exited:
                print(f"svrl up: node(s) exited on their own: {exited}; stopping the rest", file=sys.stderr)
                exit_code = 1
                break
            time.sleep(0.2)
        _stop_all(procs)
    return exit_code


def _stop_all(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"svrl up: {name} ignored SIGINT for {STOP_GRACE_S:.0f} s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def handle_up(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.checkpoint:  # shorthand, same as the launch file's checkpoint:= argument
        overrides.append(f"policy_server.checkpoint={args.checkpoint}")
    return run_stack(
        args.profile,
        overrides,
        list(getattr(args, "remap", None) or []),
        getattr(args, "namespace", "") or "",
    )
