"""trainer_node: `svrl train` as a ROS 2 node, for training against simulators over topics (docs/sim_training.md).

A thin wrapper, not a second trainer: it builds svrl_trainer's GrpoTrainer from the same YAML config and
`KEY=VALUE` overrides `svrl train --config ... --set ...` takes, runs it, and reports through ROS:

- progress on `/diagnostics` (one status, `trainer_node: training`, every `diagnostics_period_s` and after
  every step): state, step, sampled and held-out success, kept groups, lost episodes, the last checkpoint;
- every checkpoint the run writes, announced on `svrl/checkpoint` (svrl_interfaces/PolicyCheckpoint,
  reliable + transient-local depth 1, so a policy_server that starts later still hears the newest):
  the policy folder, the step, its content id, action space and interface fingerprint
  (checkpoint_guard.py). A policy_server with `follow_checkpoints` loads it between goals when it passes
  the guard: the transfer loop sim -> robot without a restart.

The environment backend is the config's (`env.backend`): `ros` trains on simulator instances over topics
(the `sim_training` profile), `sim`/`toy` in-process. Training runs on the main thread; the executor spins
on another, so diagnostics keep flowing during long rollouts. Ctrl-C / SIGTERM end the run like `svrl train`
(the last complete checkpoint stays; `resume: true` continues it). A bad config or a run folder that holds
another run ends the node at once with one line and exit code 2. When training ends the node keeps serving
its diagnostics and the latched announcement until stopped (`exit_when_done: true` exits with 0 instead).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from svrl_interfaces.msg import PolicyCheckpoint

from svrl_ros import topics
from svrl_ros.checkpoint_guard import CheckpointRefused
from svrl_ros.diagnostics import diagnostic_array
from svrl_ros.node_runner import BAD_CONFIGURATION, run_node
from svrl_ros.training_progress import FAILED, Announcement, TrainingProgress

# Latched: a policy_server started after the announcement still receives the newest checkpoint.
ANNOUNCE_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (values typed like YAML, as `svrl train --set`) -> a dict; ValueError names a bad one."""
    overrides: dict[str, Any] = {}
    for item in items:
        if not str(item).strip():
            continue  # the parameter's default ([""]: ROS cannot type an empty list)
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"overrides: expected KEY=VALUE (e.g. env.backend=ros), got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"overrides: the value of {item!r} is not valid YAML: {error}") from error
    return overrides


def resolve_config(config: str) -> Path:
    """A train YAML path, or the name of one shipped in svrl_trainer/configs/ (`tiny`, `paper`)."""
    config = config.strip()
    if not config:
        raise ValueError("parameter config is empty: name a train YAML or a shipped config (tiny, paper)")
    path = Path(config)
    if path.is_file():
        return path
    import svrl_trainer

    shipped = Path(svrl_trainer.__file__).parent / "configs" / f"{config}.yaml"
    if shipped.is_file():
        return shipped
    raise ValueError(f"parameter config: {config} is neither a file nor a config in {shipped.parent}")


def announcement_msg(announcement: Announcement, stamp: Any) -> PolicyCheckpoint:
    msg = PolicyCheckpoint()
    msg.header.stamp = stamp
    msg.path = announcement.path
    msg.step = announcement.step
    msg.checkpoint_id = announcement.checkpoint_id
    msg.action_space = announcement.action_space
    msg.codec_fingerprint = announcement.codec_fingerprint
    msg.run_dir = announcement.run_dir
    return msg


class TrainerNode(Node):
    """Parameters, the two publishers and the diagnostics timer; `train()` runs GrpoTrainer."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("trainer_node", **node_kwargs)
        self._declare_parameters()
        from svrl_trainer.config import load_train_config  # no torch: the config module imports nothing heavy

        config_path = resolve_config(str(self.get_parameter("config").value))
        overrides = parse_overrides(list(self.get_parameter("overrides").value or []))
        for name in ("init_checkpoint", "out_dir"):  # the two a profile's user sets most: plain parameters
            if value := str(self.get_parameter(name).value).strip():
                overrides[name] = value
        self.config = load_train_config(config_path, overrides)  # TrainConfigError is a ValueError: exit 2
        self.progress = TrainingProgress(
            self.config.out_dir, self.config.total_steps, self.config.env.backend
        )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._checkpoint_pub = self.create_publisher(PolicyCheckpoint, topics.POLICY_CHECKPOINT, ANNOUNCE_QOS)
        self._publish_lock = threading.Lock()
        period = float(self.get_parameter("diagnostics_period_s").value)
        self.create_timer(period, self.publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"trainer_node: GRPO from {config_path} ({len(overrides)} override(s)), env backend "
            f"{self.config.env.backend}, run folder {self.config.out_dir}"
        )

    def _declare_parameters(self) -> None:
        def declare(name: str, value: Any, description: str, **kwargs: Any) -> None:
            self.declare_parameter(name, value, ParameterDescriptor(description=description, **kwargs))

        declare(
            "config",
            "",
            "train YAML, as `svrl train --config`, or a shipped one by name (tiny)",
            read_only=True,
        )
        self.declare_parameter(
            "overrides",
            [""],
            ParameterDescriptor(
                description="KEY=VALUE overrides of the config, as `svrl train --set` (empty strings ignored)",
                type=ParameterType.PARAMETER_STRING_ARRAY,
                read_only=True,
            ),
        )
        declare("init_checkpoint", "", "policy GRPO starts from (empty: the config's)", read_only=True)
        declare("out_dir", "", "run folder (empty: the config's)", read_only=True)
        declare(
            "resume", False, "continue the run in out_dir from its last complete checkpoint", read_only=True
        )
        declare("overwrite", False, "clear a previous run in out_dir first", read_only=True)
        declare(
            "diagnostics_period_s",
            1.0,
            "seconds between /diagnostics reports (one is also sent after every step)",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.05, to_value=60.0, step=0.0)],
        )
        declare("exit_when_done", False, "exit (code 0) when training ends instead of serving until stopped")

    # -- reporting (any thread) ---------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        stamp = self.get_clock().now().to_msg()
        name = f"{self.get_name()}: training"
        msg = diagnostic_array(stamp, name, "svrl_trainer", *self.progress.status())
        with self._publish_lock:
            self._diagnostics_pub.publish(msg)

    def announce(self, announcement: Announcement) -> None:
        with self._publish_lock:
            self._checkpoint_pub.publish(announcement_msg(announcement, self.get_clock().now().to_msg()))
        self.get_logger().info(
            f"checkpoint of step {announcement.step} announced on {topics.POLICY_CHECKPOINT}: "
            f"{announcement.checkpoint_id} ({announcement.path})"
        )

    # -- the run (main thread) --------------------------------------------------------------------------
    def train(self) -> int:
        """Build GrpoTrainer and run it; the exit code (2: bad config or run folder, 1: it could not start
        or failed, e.g. simulator instances that do not answer, 0: done)."""
        from svrl_trainer.train import GrpoTrainer

        log = self.get_logger()
        try:
            trainer = GrpoTrainer(
                self.config,
                resume=bool(self.get_parameter("resume").value),
                overwrite=bool(self.get_parameter("overwrite").value),
            )
        except (
            ValueError,
            KeyError,
        ) as error:  # RunExistsError, ResumeConfigError, bad options, unknown tasks
            return self._fail(f"cannot start: {error}", 2)
        except Exception as error:  # e.g. RosEnv: the sim instances do not answer
            return self._fail(f"cannot start: {type(error).__name__}: {error}", 1)
        try:
            self.progress.started(trainer.step)
            self.publish_diagnostics()

            def on_step(metrics: dict[str, Any]) -> None:
                self.progress.on_step(metrics)
                self.publish_diagnostics()

            def on_checkpoint(path: Path, metrics: dict[str, Any]) -> None:
                try:
                    announcement = self.progress.on_checkpoint(path, metrics)
                except CheckpointRefused as error:  # unreadable right after saving: say so, keep training
                    log.error(f"checkpoint {path} not announced: {error}")
                    return
                self.announce(announcement)

            trainer.train(progress=on_step, on_checkpoint=on_checkpoint)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            log.error(traceback.format_exc())
            return self._fail(f"{type(error).__name__}: {error}", 1)
        finally:
            trainer.close()
        self.progress.finished()
        self.publish_diagnostics()
        log.info(f"training finished at step {trainer.step}; run folder {trainer.out_dir}")
        return 0

    def _fail(self, reason: str, code: int) -> int:
        self.progress.failed(reason)
        self.publish_diagnostics()
        self.get_logger().fatal(reason)
        return code


def _spin_and_train(executor: Executor, node: TrainerNode) -> int:
    """The executor on a thread (timers, publishing), training here; then serve until stopped or exit.

    Ctrl-C and SIGTERM raise KeyboardInterrupt here, in the training thread, as for `svrl train` (the last
    complete checkpoint stays). rclpy's own handlers would only shut the context down and leave the training
    loop running into a dead publisher, so they are replaced once rclpy is up.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def spin() -> None:
        # Ctrl-C / SIGTERM shut the context down: the main thread ends the run
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    spinner = threading.Thread(target=spin, name="trainer_node_executor", daemon=True)
    spinner.start()
    code = node.train()
    if code or node.progress.state == FAILED or bool(node.get_parameter("exit_when_done").value):
        executor.shutdown(timeout_sec=1.0)
        return code
    spinner.join()  # until Ctrl-C shuts the context down
    return 0


def main(args: list[str] | None = None) -> None:
    code = run_node(TrainerNode, "trainer_node", args=args, fatal=(BAD_CONFIGURATION,), spin=_spin_and_train)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
