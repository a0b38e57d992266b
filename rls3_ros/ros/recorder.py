"""``rls3 record``: record ROS 2 topics to a rosbag2 bag (MCAP or sqlite3) via rosbags.

    rls3 record --topics /camera/image_raw /scene_state --out run1 [--storage mcap|sqlite3]
                [--duration S] [--max-messages N] [--qos-depth 100] [--queue-mb 256]
    rls3 record --all --out run2

How it works
- A node ``rls3_recorder`` looks up each requested topic's type on the graph
  (``get_topic_names_and_types``, polled until it appears) and subscribes with ``raw=True``:
  the callback gets the serialized CDR bytes, which go to the bag unchanged. Bag time = the
  message's receive time (system clock, ns). The type name comes from an unauthenticated graph:
  its Python class is taken only from the allow-list of interface packages
  (:mod:`rls3_ros.ros.msg_types`); a topic of any other type is not recorded (one error line).
- QoS: the subscription matches every publisher seen at subscription time (reliable only if
  all are reliable, transient-local only if all are); a topic is subscribed once its publisher
  count held for one discovery round, so publishers of one process discovered one by one are
  all seen. The choice is logged per topic (a warning when the publishers' QoS is mixed), and
  the publishers' own profiles are stored as ``offered_qos_profiles`` in metadata.yaml.
- Memory is bounded: callbacks only append to a byte-bounded queue; a writer thread drains it
  into rosbags' ``Writer``. A full queue drops the message and counts it (reported at the end
  and as ``dropped=`` in the summary line).
- Message definitions are embedded (from the project typestore: standard types + rls3_msgs,
  other installed packages from their .msg files), so other rosbag2 tools read the bag.
- SIGINT/SIGTERM, ``--duration`` or ``--max-messages`` stop it cleanly: the queue is drained,
  the bag finished (index + metadata.yaml) in ``OUT.partial/`` and only then renamed to
  ``OUT``. A killed (-9) run leaves only ``OUT.partial``.
- Disk full (ENOSPC), file too large (EFBIG, a file size limit) or another storage write error:
  what reached the file is kept at ``OUT``, one line says how much, exit 2. MCAP drops the
  chunk it was writing and is closed after its last complete chunk with its summary and
  metadata.yaml (the dropped chunk left room for them); sqlite3 keeps what its once-a-second
  commits made durable and gets its metadata row and metadata.yaml. When even that does not
  fit, the file is only made readable (MCAP: DataEnd + footer, readers scan it; no
  metadata.yaml). Any other writer failure removes ``OUT.partial``.

Exit code 0 on a complete bag, 2 on bad arguments / unusable output / a writer failure.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

from rls3_ros.bags.bagio import STORAGES, AtomicBagWriter, BagError, run_cli
from rls3_ros.bags.checks import printable, publishable_problem

DEFAULT_EXCLUDE = ("/rosout", "/parameter_events")
CHECKPOINT_PERIOD_S = 1.0  # sqlite3 commits / MCAP buffer flushes while recording


class ByteBoundedQueue:
    """FIFO bounded by total payload bytes (and item count); ``put`` never blocks."""

    def __init__(self, max_bytes: int, max_items: int = 100_000):
        self.max_bytes = int(max_bytes)
        self.max_items = int(max_items)
        self._items: Deque[Tuple[object, int]] = collections.deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._closed = False
        self.high_water_bytes = 0
        self.high_water_items = 0

    def put(self, item: object, nbytes: int, force: bool = False) -> bool:
        with self._cv:
            if not force and (self._bytes + nbytes > self.max_bytes or len(self._items) >= self.max_items):
                return False
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self.high_water_bytes = max(self.high_water_bytes, self._bytes)
            self.high_water_items = max(self.high_water_items, len(self._items))
            self._cv.notify()
            return True

    def get(self, timeout: float = 0.1):
        """Next item, or None on timeout; raises EOFError once closed and empty."""
        with self._cv:
            if not self._items:
                if self._closed:
                    raise EOFError
                self._cv.wait(timeout)
                if not self._items:
                    if self._closed:
                        raise EOFError
                    return None
            item, n = self._items.popleft()
            self._bytes -= n
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class BagWriterThread(threading.Thread):
    """Owns the bag (sqlite3 objects must stay in one thread): opens it, drains a queue of
    ("topic", name, type, qos) / ("msg", name, t_ns, bytes) into it, and closes it (or aborts
    it when :attr:`abort_requested` is set or writing fails)."""

    def __init__(self, writer: AtomicBagWriter, queue: ByteBoundedQueue):
        super().__init__(name="bag_writer", daemon=True)
        self.writer = writer
        self.queue = queue
        self.error: Optional[BaseException] = None
        self.written = 0
        self.opened = threading.Event()
        self.abort_requested = False
        self.path: Optional[Path] = None
        self.failure = ""  # one line: why writing stopped and what was kept

    def run(self) -> None:
        try:
            self.writer.open()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.opened.set()
            return
        self.opened.set()
        next_checkpoint = time.monotonic() + CHECKPOINT_PERIOD_S
        try:
            while True:
                try:
                    item = self.queue.get(0.1)
                except EOFError:
                    break
                if self.abort_requested:
                    continue
                if item is not None and item[0] == "msg":
                    _, topic, t, data = item
                    self.writer.write(topic, t, data)
                    self.written += 1
                elif item is not None:
                    _, topic, msgtype, qos = item
                    with self.writer.lock:
                        self.writer.add_topic(topic, msgtype, qos)
                    self.writer.checkpoint()
                if time.monotonic() >= next_checkpoint:
                    # what is committed/flushed survives a later disk-full or file-size failure
                    self.writer.checkpoint()
                    next_checkpoint = time.monotonic() + CHECKPOINT_PERIOD_S
            if self.abort_requested:
                self.writer.abort()
            else:
                self.path = self.writer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            if self.abort_requested or not isinstance(exc, Exception):
                self.writer.abort()
                self.failure = f"writing {self.writer.out} stopped: {exc.__class__.__name__}"
            elif self.writer.is_open:
                self.failure = self.writer.fail(exc)  # disk full / file too large: keeps what was written
            else:
                self.failure = str(exc)  # close() already kept (or dropped) the bag and said so


@dataclass
class RecordOptions:
    out: Path
    topics: List[str] = field(default_factory=list)
    record_all: bool = False
    storage: str = "mcap"
    duration: Optional[float] = None
    max_messages: Optional[int] = None
    qos_depth: int = 100
    queue_bytes: int = 256 * 1024 * 1024
    exclude: Tuple[str, ...] = DEFAULT_EXCLUDE
    discovery_period: float = 0.1


@dataclass
class RecordResult:
    path: Optional[Path]
    counts: Dict[str, int]
    received: int
    dropped: int
    elapsed_s: float
    queue_high_water_bytes: int
    complete: bool
    error: str = ""


def _make_node(opts: RecordOptions, queue: ByteBoundedQueue, store, store_lock, stop, ros_context=None):
    from rclpy.node import Node

    from rls3_ros.ros import rosutil
    from rls3_ros.ros.msg_types import UnsupportedType, message_class
    from rls3_ros.bags.typestore import ensure_type

    class RecorderNode(Node):
        """Subscribes (raw CDR) to the chosen topics as they appear and feeds the writer queue.

        Parameters: none (the CLI options configure it; see the module docstring).
        """

        def __init__(self) -> None:
            super().__init__("rls3_recorder", context=ros_context)
            self.subscribed: Dict[str, str] = {}
            self.skipped: Dict[str, str] = {}
            self.counts: Dict[str, int] = {}
            self.received = 0
            self.dropped = 0
            self.closed = False  # set once the final drain is over: later callbacks are ignored
            self.sub_qos: Dict[str, object] = {}
            self.checked_publishers: set = set()
            self.name_tries: Dict[tuple, int] = {}
            self.pub_counts: Dict[str, int] = {}
            self._lock = threading.Lock()
            self._warned_wait = False
            self._t0 = time.monotonic()
            self.discover()
            self.timer = self.create_timer(opts.discovery_period, self.discover)

        def wanted(self, topic: str) -> bool:
            if opts.record_all:
                return topic not in opts.exclude or topic in opts.topics
            return topic in opts.topics

        def discover(self) -> None:
            for topic, types in self.get_topic_names_and_types():
                if topic in self.subscribed:
                    self.check_new_publishers(topic)
                    continue
                if topic in self.skipped or not self.wanted(topic):
                    continue
                n_pubs = self.count_publishers(topic)
                if n_pubs == 0:
                    continue  # only subscribers so far: wait for a publisher to match its QoS
                if self.pub_counts.get(topic) != n_pubs:
                    # publishers of one process are discovered one by one: subscribe once the
                    # count held for a discovery round, so the QoS matches all of them
                    self.pub_counts[topic] = n_pubs
                    continue
                allowed = [t for t in types if publishable_problem(t) is None]
                if len(types) > 1:
                    self.get_logger().warning(
                        f"{printable(topic)} has several types {printable(', '.join(types), 300)}; "
                        f"recording {printable(allowed[0]) if allowed else 'none of them'}")
                self.subscribe(topic, allowed[0] if allowed else types[0])
            missing = [t for t in opts.topics if t not in self.subscribed and t not in self.skipped]
            if missing and not self._warned_wait and time.monotonic() - self._t0 > 5.0:
                self._warned_wait = True
                self.get_logger().warning(f"still waiting for publishers on {' '.join(missing)}")

        def check_new_publishers(self, topic: str) -> None:
            """Warn (once per publisher) when a publisher that joined later cannot match the
            subscription's QoS: its messages would otherwise be missing silently."""
            from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

            qos = self.sub_qos[topic]
            for info in self.get_publishers_info_by_topic(topic):
                key = (topic, bytes(info.endpoint_gid))
                if key in self.checked_publishers:
                    continue
                tries = self.name_tries.get(key, 0)
                if "_UNKNOWN_" in info.node_name and tries < 10:
                    self.name_tries[key] = tries + 1  # discovery has not told the node name yet
                    continue
                self.checked_publishers.add(key)
                p = info.qos_profile
                problems = []
                if qos.reliability == ReliabilityPolicy.RELIABLE and p.reliability == ReliabilityPolicy.BEST_EFFORT:
                    problems.append("it offers best_effort, the recording subscription is reliable")
                if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and p.durability == DurabilityPolicy.VOLATILE:
                    problems.append("it offers volatile, the recording subscription is transient_local")
                if problems:
                    self.get_logger().warning(
                        f"QoS MISMATCH on {topic}: new publisher {info.node_namespace.rstrip('/')}/{info.node_name}: "
                        + "; ".join(problems) + " -> its messages are NOT recorded (restart the recording to include it)"
                    )

        def subscribe(self, topic: str, msgtype: str) -> None:
            try:
                # the type name comes from the graph (untrusted): a class only from the allow-list
                cls = message_class(msgtype)
                with store_lock:
                    ensure_type(store, msgtype)
            except (UnsupportedType, KeyError) as exc:
                reason = printable(exc.args[0] if exc.args else exc, 300)
                self.skipped[topic] = reason
                self.get_logger().error(f"cannot record {printable(topic)} [{printable(msgtype)}]: {reason}")
                return
            infos = self.get_publishers_info_by_topic(topic)
            profiles = [i.qos_profile for i in infos]
            qos = rosutil.subscription_qos_for(profiles, opts.qos_depth)
            pub_desc = ", ".join(sorted({rosutil.describe_qos(p).rsplit(" history", 1)[0] for p in profiles})) or "none seen"
            mixed = len({(int(p.reliability), int(p.durability)) for p in profiles}) > 1
            offered = [rosutil.profile_to_rosbags(p) for p in profiles]
            queue.put(("topic", topic, msgtype, offered), 0, force=True)
            self.counts[topic] = 0

            _topic = topic

            def callback(data: bytes, info) -> None:  # two required args: rclpy passes MessageInfo
                t = int(info.get("received_timestamp", 0)) if info else 0
                if t <= 0:
                    t = time.time_ns()
                with self._lock:
                    if self.closed:
                        return
                    if opts.max_messages is not None and self.received >= opts.max_messages:
                        stop.set()
                        return
                    self.received += 1
                    if queue.put(("msg", _topic, t, data), len(data)):
                        self.counts[_topic] += 1
                    else:
                        self.dropped += 1
                        if self.dropped == 1 or self.dropped % 100 == 0:
                            self.get_logger().warning(f"writer queue full: dropped {self.dropped} message(s) so far")
                    if opts.max_messages is not None and self.received >= opts.max_messages:
                        stop.set()

            self.create_subscription(cls, topic, callback, qos, raw=True)
            self.subscribed[topic] = msgtype
            self.sub_qos[topic] = qos
            self.checked_publishers.update((topic, bytes(i.endpoint_gid)) for i in infos)
            text = (f"recording {topic} [{msgtype}] with QoS {rosutil.describe_qos(qos)} "
                    f"(publishers: {len(profiles)}, offered {pub_desc}{'; MIXED QoS' if mixed else ''})")
            # one call site per severity: rclpy refuses a call site whose severity changes
            # (ValueError: Logger severity cannot be changed between calls)
            if mixed:
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)

    return RecorderNode()


def record(opts: RecordOptions, ros_args: Optional[List[str]] = None, stop=None, ready: Optional[threading.Event] = None) -> RecordResult:
    """Record until ``stop`` (a StopFlag; SIGINT/SIGTERM by default), duration or max messages."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from rls3_ros.ros import rosutil

    if opts.storage not in STORAGES:
        raise BagError(f"unknown storage {opts.storage!r} (use {' or '.join(STORAGES)})")
    if not opts.topics and not opts.record_all:
        raise BagError("nothing to record: give --topics or --all")
    bad = [t for t in opts.topics if not re.fullmatch(r"/?[A-Za-z~_{][A-Za-z0-9_/{}~]*", t)]
    if bad:
        raise BagError(f"invalid topic name(s): {' '.join(bad)}")
    opts.topics = [t if t.startswith("/") else "/" + t for t in opts.topics]

    writer = AtomicBagWriter(opts.out, storage=opts.storage)  # raises BagError if OUT exists
    own_stop = stop is None
    stop = stop if stop is not None else rosutil.StopFlag().install()
    context = rclpy.Context()
    rclpy.init(args=rosutil.init_args("rls3 record", ros_args), context=context,
               signal_handler_options=SignalHandlerOptions.NO)
    queue = ByteBoundedQueue(opts.queue_bytes)
    node = None
    thread = None
    t_start = time.monotonic()
    try:
        thread = BagWriterThread(writer, queue)
        thread.start()
        thread.opened.wait()
        if thread.error is not None:
            raise thread.error
        node = _make_node(opts, queue, writer.typestore, writer.lock, stop, context)
        log = node.get_logger()
        log.info(
            f"recording to {opts.out} ({opts.storage}): "
            + ("all topics" if opts.record_all else " ".join(opts.topics))
            + (f", for {opts.duration:g} s" if opts.duration else "")
            + (f", up to {opts.max_messages} messages" if opts.max_messages else "")
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        if ready is not None:
            ready.set()
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
            if opts.duration is not None and time.monotonic() - t_start >= opts.duration:
                break
            if thread.error is not None:
                break
        # drain: take what DDS already delivered (a stop must not lose received samples)
        drain_end = time.monotonic() + 1.0
        quiet = 0
        while quiet < 3 and time.monotonic() < drain_end and thread.error is None:
            before = node.received
            executor.spin_once(timeout_sec=0.02)
            quiet = quiet + 1 if node.received == before else 0
        with node._lock:
            node.closed = True
        elapsed = time.monotonic() - t_start
        for sub in list(node.subscriptions):
            node.destroy_subscription(sub)
        executor.shutdown(timeout_sec=1.0)
        queue.close()
        thread.join()
        if thread.error is not None:
            received = node.received
            raise BagError(f"{thread.failure or thread.error} ({received} message(s) had been received)")
        path = thread.path
        result = RecordResult(
            path=path,
            counts=dict(node.counts),
            received=node.received,
            dropped=node.dropped,
            elapsed_s=elapsed,
            queue_high_water_bytes=queue.high_water_bytes,
            complete=True,
        )
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(result.counts.items())) or "no topics"
        log.info(
            f"bag complete: {path} — {sum(result.counts.values())} messages in {elapsed:.1f} s ({per_topic}); "
            f"dropped={result.dropped}; queue high water {queue.high_water_bytes / 1e6:.1f} MB"
        )
        if node.skipped:
            log.warning("not recorded: " + "; ".join(f"{t}: {r}" for t, r in node.skipped.items()))
        return result
    except BaseException:
        if thread is not None:
            thread.abort_requested = True
            queue.close()
            thread.join(timeout=30.0)
        writer.abort()
        raise
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
        if own_stop:
            stop.restore()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rls3 record", description="Record ROS 2 topics to a rosbag2 bag (MCAP by default).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics to record (waits until they appear)")
    what.add_argument("-a", "--all", action="store_true", help="record every topic (except /rosout, /parameter_events)")
    p.add_argument("-o", "--out", required=True, help="output bag directory (must not exist)")
    p.add_argument("-s", "--storage", choices=sorted(STORAGES), default="mcap", help="storage plugin (default mcap)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--max-messages", type=int, default=None, help="stop after N messages (all topics)")
    p.add_argument("--qos-depth", type=int, default=100, help="subscription keep-last depth (default 100)")
    p.add_argument("--queue-mb", type=float, default=256.0, help="writer queue budget in MB (default 256)")
    return p


def cli_record(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rls3 record``; returns the exit code (never raises, never a traceback)."""
    return run_cli("record", build_parser(), argv, _record_main)


def _record_main(a: argparse.Namespace, ros_args: List[str]) -> int:
    if a.duration is not None and a.duration <= 0:
        raise BagError("--duration must be > 0")
    if a.max_messages is not None and a.max_messages <= 0:
        raise BagError("--max-messages must be > 0")
    if a.qos_depth <= 0 or a.queue_mb <= 0:
        raise BagError("--qos-depth and --queue-mb must be > 0")
    opts = RecordOptions(
        out=Path(a.out),
        topics=list(a.topics or []),
        record_all=bool(a.all),
        storage=a.storage,
        duration=a.duration,
        max_messages=a.max_messages,
        qos_depth=a.qos_depth,
        queue_bytes=int(a.queue_mb * 1024 * 1024),
    )
    res = record(opts, ros_args=["--ros-args", *ros_args[1:]] if ros_args else None)
    print(
        f"recorded {sum(res.counts.values())} messages to {res.path} dropped={res.dropped}",
        flush=True,
    )
    return 0


def main() -> None:
    sys.exit(cli_record())


if __name__ == "__main__":
    main()
