"""Small rclpy helpers shared by the nodes, the bag tools and the tests (imports rclpy)."""

from __future__ import annotations

import importlib
import signal
import threading
import time
from typing import Dict, List, Optional

from rclpy.action import ActionClient
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rls3_ros.bags.bagio import cli_boundary  # noqa: F401 - re-exported for the CLIs
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

_INFINITE = QosTime(2147483647, 4294967295)  # RMW_DURATION_INFINITE as rosbag2 writes it


def init_args(program: str, ros_args: Optional[List[str]] = None) -> List[str]:
    """The argv for ``rclpy.init``: the program name and only the ``--ros-args ...`` part.

    Never ``None``: rclpy would then parse ``sys.argv``, where our own options such as
    ``--remap /a:=/b`` look like rcl's deprecated remap syntax (a warning, and a real remap)."""
    return [program, *(ros_args or [])]


def import_msg_class(msgtype: str):
    """Python class of ``pkg/msg/Name`` (or ``pkg/Name``); ImportError with a clear reason."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ImportError(f"not a message type name: {msgtype!r}")
    pkg, kind, name = parts
    try:
        mod = importlib.import_module(f"{pkg}.{kind}")
    except Exception as exc:
        raise ImportError(f"message package {pkg!r} is not importable in this Python ({exc})") from None
    cls = getattr(mod, name, None)
    if cls is None:
        raise ImportError(f"{pkg}.{kind} has no {name}")
    return cls


def _time(d) -> QosTime:
    ns = int(getattr(d, "nanoseconds", 0))
    if ns <= 0:
        return QosTime(0, 0)
    if ns >= (1 << 62):
        return _INFINITE
    return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)


def profile_to_rosbags(p: QoSProfile) -> Qos:
    """rclpy QoSProfile -> rosbags Qos (stored in the bag's metadata as offered_qos_profiles)."""
    return Qos(
        history=QosHistory[HistoryPolicy(p.history).name],
        depth=int(p.depth),
        reliability=QosReliability[ReliabilityPolicy(p.reliability).name],
        durability=QosDurability[DurabilityPolicy(p.durability).name],
        deadline=_time(p.deadline),
        lifespan=_time(p.lifespan),
        liveliness=QosLiveliness[LivelinessPolicy(p.liveliness).name],
        liveliness_lease_duration=_time(p.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(p.avoid_ros_namespace_conventions),
    )


def describe_qos(p: QoSProfile) -> str:
    return (
        f"reliability={ReliabilityPolicy(p.reliability).name.lower()} "
        f"durability={DurabilityPolicy(p.durability).name.lower()} "
        f"history={HistoryPolicy(p.history).name.lower()} depth={p.depth}"
    )


def subscription_qos_for(publisher_profiles: List[QoSProfile], depth: int) -> QoSProfile:
    """A subscription QoS that matches every given publisher.

    reliable only if every publisher is reliable (a reliable subscription does not match a
    best-effort publisher), transient-local only if every publisher is (to get latched data
    without mismatching volatile ones), keep-last ``depth``.
    """
    rel = [ReliabilityPolicy(p.reliability) for p in publisher_profiles]
    dur = [DurabilityPolicy(p.durability) for p in publisher_profiles]
    reliable = bool(rel) and all(r == ReliabilityPolicy.RELIABLE for r in rel)
    transient = bool(dur) and all(d == DurabilityPolicy.TRANSIENT_LOCAL for d in dur)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def publisher_qos_for(recorded: List[Qos], depth: int = 10) -> QoSProfile:
    """A publisher QoS for replaying a topic recorded with ``recorded`` offered profiles.

    Reliable (serves reliable and best-effort subscribers alike), transient-local when every
    recorded publisher was (latched topics stay latched), keep-last max(depth, recorded depth).
    """
    transient = bool(recorded) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in recorded)
    rec_depth = max([int(q.depth) for q in recorded] + [0])
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(int(depth), rec_depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


class StopFlag:
    """SIGINT/SIGTERM set an event instead of raising in the middle of a write."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None
        self._old: Dict[int, object] = {}

    def install(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, _frame) -> None:
        self.signal = signum
        self.event.set()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()


def wait_for_delivery(publishers, timeout: float = 2.0) -> bool:
    """Wait (at most ``timeout`` s) until every reliable reader acknowledged every sample.

    A writer that goes away with unacknowledged samples loses them (Fast DDS does not
    linger), so a reliable subscriber would miss the last frames of a replay or a stream.
    Best-effort publishers count as delivered. Returns whether all were acknowledged."""
    from rclpy.duration import Duration

    end = time.monotonic() + max(0.0, float(timeout))
    while True:
        try:
            if all(p.wait_for_all_acked(Duration(seconds=0.1)) for p in publishers):
                return True
        except Exception:  # noqa: BLE001 - a publisher already destroyed: nothing left to deliver
            return True
        if time.monotonic() >= end:
            return False


class SpinSafeActionClient(ActionClient):
    """An ``ActionClient`` that can be created while another thread spins its node.

    rclpy 9's ``ActionClient.__init__`` registers the client with the node before it
    creates its lock, so an executor spinning in another thread can call
    ``get_num_entities`` on a half-built client, raise ``AttributeError: _lock`` and die
    (seen on a loaded machine: every later goal on that node timed out). Here the lock is
    made first and kept, and ``destroy`` does not free the handle under a spinning executor."""

    def __init__(self, *args, **kwargs) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        self._removed = False
        super().__init__(*args, **kwargs)

    def destroy(self) -> None:
        """Take the client off its node; its handle is freed with this object.

        rclpy's ``destroy`` frees the handle at once, while an executor spinning in another thread
        may hold it in the wait set it is building or waiting on ("action client pointer is
        invalid", then that executor's spin ends). Removed from the node, the client is in no later
        wait set, and the handle goes when the last reference (the caller's, or an executor
        iteration's) does."""
        with self._lock:
            if self._removed:
                return
            self._removed = True
        self._node.remove_waitable(self)

    def __setattr__(self, name, value) -> None:
        if name == "_lock" and "_lock" in self.__dict__:
            return  # keep the lock the spinning thread may already hold
        super().__setattr__(name, value)
