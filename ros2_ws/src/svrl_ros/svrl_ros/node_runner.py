"""How every svrl node's `main` runs it: init, build, spin, and always end cleanly.

Why one function: the rules are subtle and were copied node by node. A node that cannot be built from its
parameters must exit with a one-line reason and a non-zero code (a launch file shows it; a traceback hides
it); Ctrl-C and SIGTERM are the normal way a node ends, not an error; a callback still running when Ctrl-C
shut the context down may raise, and that loses nothing; and whatever happens the node is destroyed and the
context shut down, so DDS participants never outlive the process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


@dataclass(frozen=True)
class FatalError:
    """An exception that ends the node with `exit_code` and one log line (`prefix` + the message).

    `while_building`: only while the node is constructed (a ValueError from its parameters is a bad
    configuration; the same type raised later by a callback is a bug and keeps its traceback).
    """

    types: tuple[type[BaseException], ...]
    exit_code: int = 2
    prefix: str = ""
    while_building: bool = False


BAD_CONFIGURATION = FatalError((ValueError,), 2, "bad configuration: ", while_building=True)


def run_node(
    make_node: Callable[[], Node],
    logger_name: str,
    *,
    args: list[str] | None = None,
    fatal: Sequence[FatalError] = (BAD_CONFIGURATION,),
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
    spin: Callable[[Executor, Node], int | None] | None = None,
    before_destroy: Callable[[Node], None] | None = None,
) -> int:
    """Run one node until it is stopped; returns the process exit code (0 when stopped normally).

    `spin` replaces `executor.spin()` for nodes that start threads first or stop on their own (it may return
    an exit code); `before_destroy` runs while the node still exists (e.g. a recorder finalising its dataset).
    """
    rclpy.init(args=args)
    node: Node | None = None
    code = 0
    built = False
    try:
        node = make_node()
        built = True
        executor = make_executor()
        executor.add_node(node)
        if spin is None:
            executor.spin()
        else:
            code = spin(executor, node) or 0
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:
        for rule in fatal:
            if isinstance(error, rule.types) and not (rule.while_building and built):
                rclpy.logging.get_logger(logger_name).fatal(f"{rule.prefix}{error}")
                code = rule.exit_code
                break
        else:
            if rclpy.ok():
                raise
            # else: a callback was running when Ctrl-C shut the context down; nothing is lost
    finally:
        if node is not None:
            try:
                if before_destroy is not None:
                    before_destroy(node)
            finally:
                node.destroy_node()
        rclpy.try_shutdown()
    return code
