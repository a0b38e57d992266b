"""``rls3 replay``: publish a bag's messages with their original timing.

    rls3 replay BAG [--rate R] [--loop] [--start-offset S] [--topics /a /b]
                    [--remap /old:=/new ...] [--clock [HZ]] [--wait-for-subscribers [S]]

- Raw CDR bytes from the bag are published as-is (``Publisher.publish(bytes)``): headers and
  stamps are untouched, nothing is deserialized on the way.
- Timing: message i is due at ``t0 + (bag_t[i] - bag_start) / rate`` on the monotonic clock;
  the player sleeps until then (coarse sleep, then a short fine wait) and publishes. The
  lateness of each publish is measured and summarised at the end (p50/p99/max in ms).
- ``--clock [HZ]`` publishes rosgraph_msgs/Clock (bag time, scaled by the rate) at HZ
  (default 100) and right before each message, so nodes with use_sim_time follow the bag.
- ``--start-offset S`` skips the bag's first S seconds; ``--loop`` starts over at the end;
  ``--topics`` keeps only those topics (names before remapping); ``--remap /a:=/b`` publishes
  topic /a as /b.
- Publisher QoS: reliable (serves reliable and best-effort subscribers), transient-local when
  the recorded publishers were, depth >= the recorded one; logged per topic.
- A bag is untrusted input, checked before anything is published (one-line refusal, exit 2):
  every replayed topic's type must be a ROS message type of an allowed interface package
  (:data:`rls3_ros.bags.checks.PUBLISHABLE_PACKAGES`; its Python class comes from a fixed
  mapping, :mod:`rls3_ros.ros.msg_types`: a name from the bag never selects a module to
  import; leave other topics out with ``--topics``); an output topic the project uses for
  other types (``image_raw`` carries Image or CompressedImage, ``camera_info`` CameraInfo,
  ``scene_state`` SceneState, ...) or that the graph already uses with another type is
  refused, remapped or not; the first message of each topic must decode as its declared type
  with this install's definition (what subscribers decode with). Later messages are checked
  too: one that does not decode is withheld, counted, and the run ends with exit 2.
- SIGINT/SIGTERM stop it between two messages (replay writes nothing, so nothing is left
  half-written). A missing/truncated/corrupted bag: one-line error, exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from rls3_ros.bags.bagio import BagError, BagReader, run_cli
from rls3_ros.bags.checks import expected_types, normalise_msgtype, payload_problem, printable, publishable_problem
from rls3_ros.bags.typestore import base_typestore, ensure_types

CLOCK_TYPE = "rosgraph_msgs/msg/Clock"


@dataclass
class ReplayOptions:
    bag: Path
    rate: float = 1.0
    loop: bool = False
    start_offset: float = 0.0
    topics: Optional[List[str]] = None
    remaps: Dict[str, str] = field(default_factory=dict)
    clock_hz: Optional[float] = None
    wait_for_subscribers: Optional[float] = None  # seconds to wait for >=1 subscriber per topic
    delivery_timeout: float = 2.0  # seconds to wait at the end for reliable subscribers to acknowledge
    qos_depth: int = 10


@dataclass
class ReplayResult:
    published: Dict[str, int]
    lateness_ms: Dict[str, float]
    loops: int
    interrupted: bool
    skipped: Dict[str, str]
    withheld: Dict[str, int] = field(default_factory=dict)  # messages not published: they do not decode


def _percentiles(late_ns: List[int]) -> Dict[str, float]:
    if not late_ns:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    a = np.asarray(late_ns, dtype=np.float64) / 1e6
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(a.size)}


def _sleep_until(deadline_ns: int, stop) -> bool:
    """Sleep until monotonic ``deadline_ns``; False if stopped first."""
    while True:
        if stop.is_set():
            return False
        left = deadline_ns - time.monotonic_ns()
        if left <= 0:
            return True
        if left > 2_000_000:
            stop.event.wait(min((left - 1_000_000) / 1e9, 0.1))
        elif left > 200_000:
            time.sleep((left - 100_000) / 1e9)
        # else: spin for the last 0.2 ms


def _refuse(what: str, reasons: List[str]) -> BagError:
    """One-line BagError listing ``reasons`` (at most 4 shown)."""
    shown = "; ".join(reasons[:4]) + (f"; and {len(reasons) - 4} more" if len(reasons) > 4 else "")
    return BagError(f"{what}: {shown}")


def check_bag_for_replay(bag: BagReader, opts: ReplayOptions):
    """Everything that can refuse a replay, done before anything is published (no rclpy).

    Returns (connections, output topic per connection id, the typestore of this install's
    definitions). Raises BagError (one line) when a selected topic's type name is not a ROS
    message type of an allowed interface package, when an output topic is one the project
    uses for other types (``image_raw`` carries Image or CompressedImage, ...), when two topics
    meet on one output name with different types, or when the first message of a topic does
    not decode as its declared type with this install's definition (the one subscribers use).
    """
    conns = bag.connections_for(opts.topics)
    if not conns:
        raise BagError(f"bag {str(opts.bag)!r} has no messages to replay")
    unknown_remaps = sorted(set(opts.remaps) - {c.topic for c in bag.connections})
    if unknown_remaps:
        raise BagError(f"--remap names no topic of the bag: {', '.join(printable(t) for t in unknown_remaps)}")
    refused: List[str] = []
    out_topic: Dict[int, str] = {}
    out_type: Dict[str, str] = {}
    for c in conns:
        name = opts.remaps.get(c.topic, c.topic)
        label = f"{printable(c.topic)} [{printable(c.msgtype)}]"
        problem = publishable_problem(c.msgtype)
        if problem is not None:
            refused.append(f"{label}: {problem}")
            continue
        msgtype = normalise_msgtype(c.msgtype)
        expected = expected_types(name)
        if expected is not None and msgtype not in expected:
            via = f" (remapped from {printable(c.topic)})" if name != c.topic else ""
            refused.append(f"{printable(name)}{via} carries {' or '.join(sorted(expected))} in this project, "
                           f"not {msgtype}: its subscribers would never receive it")
            continue
        if out_type.setdefault(name, msgtype) != msgtype:
            refused.append(f"{printable(name)} would carry both {out_type[name]} and {msgtype}")
            continue
        out_topic[c.id] = name
    if refused:
        raise _refuse(f"bag {str(opts.bag)!r}: refusing to replay (leave such topics out with --topics)", refused)

    store = base_typestore()  # this install's definitions: what the subscribers decode with
    try:
        ensure_types(store, sorted(set(out_type.values())))
    except KeyError as exc:
        raise BagError(f"bag {str(opts.bag)!r}: {printable(exc.args[0] if exc.args else exc, 200)}") from None
    mismatched: List[str] = []
    for c in conns:
        first = bag.first_message(c)
        if first is None:
            continue
        problem = payload_problem(store, first[1], normalise_msgtype(c.msgtype))
        if problem is not None:
            mismatched.append(f"{printable(c.topic)}: first message {problem}")
    if mismatched:
        raise _refuse(f"bag {str(opts.bag)!r}: payload does not match the declared type, nothing published", mismatched)
    return conns, out_topic, store


def _graph_conflicts(node, publishers: Dict[str, object], types: Dict[str, str]) -> List[str]:
    """Output topics that other endpoints on the graph use with another type."""
    resolved = {p.topic_name: name for name, p in publishers.items()}
    out = []
    for topic, seen in node.get_topic_names_and_types():
        name = resolved.get(topic)
        if name is None:
            continue
        other = sorted(t for t in seen if t != types[name])
        if other:
            out.append(f"{printable(topic)} is used with {printable(', '.join(other))} on the graph, not {types[name]}")
    return out


def replay(opts: ReplayOptions, ros_args: Optional[List[str]] = None, stop=None, log=print) -> ReplayResult:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from rls3_ros.ros import rosutil
    from rls3_ros.ros.msg_types import UnsupportedType, message_class

    if opts.rate <= 0:
        raise BagError("--rate must be > 0")
    if opts.start_offset < 0:
        raise BagError("--start-offset must be >= 0")
    own_stop = stop is None
    stop = stop if stop is not None else rosutil.StopFlag().install()
    context = rclpy.Context()
    published: Dict[str, int] = {}
    withheld: Dict[str, int] = {}
    late: List[int] = []
    skipped: Dict[str, str] = {}
    loops = 0
    node = None
    try:
        with BagReader(opts.bag) as bag:
            conns, out_topic, check_store = check_bag_for_replay(bag, opts)
            classes: Dict[str, object] = {}
            for c in conns:
                try:
                    classes[c.msgtype] = message_class(c.msgtype)
                except UnsupportedType as exc:
                    raise BagError(f"bag {str(opts.bag)!r}: cannot publish {printable(c.topic)}: {exc}") from None
            bag_start = bag.start_time
            first = bag_start + int(round(opts.start_offset * 1e9))
            if first > bag.end_time:
                raise BagError(f"--start-offset {opts.start_offset:g} s is past the end of the bag ({(bag.end_time - bag_start) / 1e9:.3f} s long)")

            rclpy.init(args=rosutil.init_args("rls3 replay", ros_args), context=context,
                       signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node("rls3_replayer", context=context)
            logger = node.get_logger()
            pubs: Dict[int, object] = {}
            by_topic: Dict[str, object] = {}
            topic_type: Dict[str, str] = {}
            for c in conns:
                name = out_topic[c.id]
                msgtype = normalise_msgtype(c.msgtype)
                if name not in by_topic:
                    recorded = list(getattr(c.ext, "offered_qos_profiles", []) or [])
                    qos = rosutil.publisher_qos_for(recorded, opts.qos_depth)
                    by_topic[name] = node.create_publisher(classes[c.msgtype], name, qos)
                    topic_type[name] = msgtype
                    published[name] = 0
                    logger.info(
                        f"publishing {printable(c.topic)}{' as ' + printable(name) if name != c.topic else ''} [{msgtype}] "
                        f"with QoS {rosutil.describe_qos(qos)} ({c.msgcount} messages in the bag)"
                    )
                pubs[c.id] = by_topic[name]
            clock_pub = None
            if opts.clock_hz is not None:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(
                    Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
                )
                logger.info(f"publishing /clock at {opts.clock_hz:g} Hz")

            def check_graph() -> None:
                conflicts = _graph_conflicts(node, by_topic, topic_type)
                if conflicts:
                    raise _refuse("refusing to replay onto a topic of another type", conflicts)

            check_graph()
            if opts.wait_for_subscribers:
                deadline = time.monotonic() + opts.wait_for_subscribers
                while not stop.is_set():
                    check_graph()
                    waiting = [t for t, p in by_topic.items() if p.get_subscription_count() == 0]
                    if not waiting:
                        break
                    if time.monotonic() > deadline:
                        logger.warning(f"no subscriber after {opts.wait_for_subscribers:g} s on {' '.join(waiting)}; replaying anyway")
                        break
                    stop.event.wait(0.02)
                check_graph()

            clock_period_ns = int(1e9 / opts.clock_hz) if opts.clock_hz else None
            conn_list = [c for c in conns if c.id in pubs]
            conn_type = {c.id: normalise_msgtype(c.msgtype) for c in conn_list}
            total = sum(c.msgcount for c in conn_list)
            logger.info(
                f"replaying {total} messages from {opts.bag} at rate {opts.rate:g}"
                + (f", from +{opts.start_offset:g} s" if opts.start_offset else "")
                + (", looping" if opts.loop else "")
            )

            from builtin_interfaces.msg import Time as _Time

            def publish_clock(bag_t: int) -> None:
                clock_pub.publish(Clock(clock=_Time(sec=int(bag_t // 1_000_000_000), nanosec=int(bag_t % 1_000_000_000))))

            while not stop.is_set():
                t0 = time.monotonic_ns()
                next_clock = t0
                n_loop = 0
                for conn, t, raw in bag.messages(conn_list, start=first):
                    due = t0 + int((t - first) / opts.rate)
                    # every message is checked before it is published (the first of each topic
                    # was checked before the node started): one that does not decode is withheld
                    problem = payload_problem(check_store, raw, conn_type[conn.id])
                    if problem is not None:
                        name = out_topic[conn.id]
                        withheld[name] = withheld.get(name, 0) + 1
                        if withheld[name] == 1:
                            logger.warning(f"withholding a message on {printable(conn.topic)} at {t}: {problem}")
                        continue
                    if clock_pub is not None:
                        # /clock ticks while waiting for this message
                        while next_clock < due and not stop.is_set():
                            if not _sleep_until(next_clock, stop):
                                break
                            now = time.monotonic_ns()
                            # never past the next message's time: /clock must not run backwards
                            publish_clock(min(first + int((now - t0) * opts.rate), t))
                            next_clock += clock_period_ns
                    if not _sleep_until(due, stop):
                        break
                    if clock_pub is not None:
                        publish_clock(t)
                    pubs[conn.id].publish(bytes(raw))
                    late.append(time.monotonic_ns() - due)
                    published[out_topic[conn.id]] += 1
                    n_loop += 1
                loops += 1
                if not opts.loop or stop.is_set():
                    break
                if n_loop == 0:
                    break
            interrupted = stop.is_set()
            if not interrupted and not rosutil.wait_for_delivery(list(pubs.values()) + ([clock_pub] if clock_pub else []),
                                                                 opts.delivery_timeout):
                logger.warning(f"not every reliable subscriber acknowledged the last messages within {opts.delivery_timeout:g} s")
            stats = _percentiles(late)
            logger.info(
                f"replay {'interrupted' if interrupted else 'done'}: "
                + ", ".join(f"{t}: {n}" for t, n in published.items())
                + f"; lateness p50 {stats['p50']:.3f} ms p99 {stats['p99']:.3f} ms max {stats['max']:.3f} ms"
                + (f"; withheld (do not decode): {', '.join(f'{t}: {n}' for t, n in withheld.items())}" if withheld else "")
            )
            return ReplayResult(published=published, lateness_ms=stats, loops=loops, interrupted=interrupted, skipped=skipped,
                                withheld=withheld)
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
        if own_stop:
            stop.restore()


def _parse_remap(items: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for it in items or []:
        if ":=" not in it:
            raise BagError(f"bad --remap {it!r}: use /old:=/new")
        a, b = it.split(":=", 1)
        if not a or not b:
            raise BagError(f"bad --remap {it!r}: use /old:=/new")
        out[a if a.startswith("/") else "/" + a] = b if b.startswith("/") else "/" + b
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rls3 replay", description="Replay a rosbag2 bag with its original timing (raw CDR).")
    p.add_argument("bag", help="rosbag2 directory, or a .mcap / .db3 file")
    p.add_argument("-r", "--rate", type=float, default=1.0, help="playback rate factor (default 1.0)")
    p.add_argument("-l", "--loop", action="store_true", help="start over at the end until stopped")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip the first S seconds of the bag")
    p.add_argument("--topics", nargs="+", default=None, help="replay only these topics")
    p.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish topic OLD as NEW")
    p.add_argument("--clock", nargs="?", type=float, const=100.0, default=None, metavar="HZ", help="publish /clock (default 100 Hz)")
    p.add_argument(
        "--wait-for-subscribers", nargs="?", type=float, const=10.0, default=None, metavar="S",
        help="wait up to S s (default 10) until every topic has a subscriber before starting",
    )
    p.add_argument("--qos-depth", type=int, default=10, help="publisher keep-last depth (default 10, at least the recorded one)")
    return p


def cli_replay(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rls3 replay``; returns the exit code (never raises, never a traceback)."""
    return run_cli("replay", build_parser(), argv, _replay_main)


def _replay_main(a: argparse.Namespace, ros_args: List[str]) -> int:
    if a.clock is not None and a.clock <= 0:
        raise BagError("--clock rate must be > 0")
    opts = ReplayOptions(
        bag=Path(a.bag),
        rate=a.rate,
        loop=a.loop,
        start_offset=a.start_offset,
        topics=a.topics,
        remaps=_parse_remap(a.remap),
        clock_hz=a.clock,
        wait_for_subscribers=a.wait_for_subscribers,
        qos_depth=a.qos_depth,
    )
    res = replay(opts, ros_args=ros_args or None)
    print(
        f"replayed {sum(res.published.values())} messages"
        f" lateness_p50_ms={res.lateness_ms['p50']:.3f} lateness_p99_ms={res.lateness_ms['p99']:.3f}"
        f" lateness_max_ms={res.lateness_ms['max']:.3f}"
        + (" (interrupted)" if res.interrupted else ""),
        flush=True,
    )
    if res.withheld:
        raise BagError(f"bag {str(opts.bag)!r}: withheld {sum(res.withheld.values())} message(s) that do not decode as their "
                       f"declared type ({', '.join(f'{printable(t)}: {n}' for t, n in res.withheld.items())})")
    return 0


def main() -> None:
    sys.exit(cli_replay())


if __name__ == "__main__":
    main()
