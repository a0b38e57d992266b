"""The one ``main`` every rls3_ros node uses: init, spin on a multi-threaded executor, shut down.

Stopping: SIGINT (Ctrl-C, ``kill -INT``) and SIGTERM stop a node cleanly (the node's ``close``,
then ``destroy_node``) with exit code 0, however the node was started. A shell starts a
background job (``node &`` in a script) with SIGINT ignored, and a parent may hand down SIGINT or
SIGTERM blocked: ``run_node`` unblocks both and installs its own handlers before ROS starts, so a
node started that way stops on ``kill -INT`` like one started in a terminal. A node that cannot
start exits with 2 (one line on stderr).
"""

from __future__ import annotations

import signal
import sys
from typing import Callable, List, Optional, Union

import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


class NodeStartupError(RuntimeError):
    """A node cannot start (bad parameters, missing model ...): logged and exit code 2, no traceback."""


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def install_stop_signals() -> None:
    """SIGINT and SIGTERM unblocked and handled (KeyboardInterrupt in the main thread), whatever
    disposition the process inherited (a background job's ignored SIGINT, a blocked mask).
    rclpy's own handlers, installed by ``rclpy.init`` afterwards, chain to these."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def run_node(factory: Callable[[], Node], args: Optional[List[str]] = None,
             num_threads: Union[int, Callable[[Node], int]] = 4) -> int:
    """Create the node from ``factory`` and spin it until SIGINT/SIGTERM or shutdown; return an
    exit code (0 after a stop signal).

    ``NodeStartupError`` raised by the factory is reported on stderr as one line (exit 2), so a
    launcher shows why a node did not start instead of a traceback. ``num_threads`` <= 1: a
    single-threaded executor (a node whose callbacks run one at a time anyway saves the thread
    pool's hand-off on every request); a callable gets the created node and returns the count
    (e.g. from a parameter).
    """
    label = getattr(factory, "__name__", "node")
    install_stop_signals()
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
        threads = int(num_threads(node)) if callable(num_threads) else int(num_threads)
        executor = SingleThreadedExecutor() if threads <= 1 else MultiThreadedExecutor(num_threads=threads)
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
