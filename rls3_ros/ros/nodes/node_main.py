"""The one ``main`` every rls3_ros node uses: init, spin on a multi-threaded executor, shut down."""

from __future__ import annotations

import sys
from typing import Callable, List, Optional

import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


class NodeStartupError(RuntimeError):
    """A node cannot start (bad parameters, missing model ...): logged and exit code 2, no traceback."""


def run_node(factory: Callable[[], Node], args: Optional[List[str]] = None, num_threads: int = 4) -> int:
    """Create the node from ``factory`` and spin it until Ctrl-C or shutdown; return an exit code.

    ``NodeStartupError`` raised by the factory is reported on stderr as one line (exit 2), so a
    launcher shows why a node did not start instead of a traceback. ``num_threads`` <= 1: a
    single-threaded executor (a node whose callbacks run one at a time anyway saves the thread
    pool's hand-off on every request).
    """
    label = getattr(factory, "__name__", "node")
    try:
        rclpy.init(args=args)
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable/invalid --params-file (RCLError)
        print(f"[{label}] startup failed: cannot initialise ROS from the command line "
              f"({' '.join(str(e).split())})", file=sys.stderr, flush=True)
        return 2
    node = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor() if num_threads <= 1 else MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            executor.shutdown()
    except NodeStartupError as e:
        print(f"[{label}] startup failed: {e}", file=sys.stderr, flush=True)
        code = 2
    except (ParameterException, NameValidationException) as e:  # wrongly typed parameter, bad remap ...
        print(f"[{label}] startup failed: bad parameter or name: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # noqa: BLE001 - shutdown must go on
                    print(f"[{node.get_name()}] error while closing: {e}", file=sys.stderr, flush=True)
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return code
