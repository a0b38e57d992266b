"""Arrival probe: subscribe (raw CDR) to topics and log when each message arrives.

    python -m rls3_ros.ros.probe --topic /cam/image_raw:sensor_msgs/msg/Image ... \
        --out arrivals.json [--count N] [--timeout S]

Writes JSON ``{"arrivals": [[topic, monotonic_ns, nbytes, crc32, first 64 bytes hex], ...]}`` when N messages
arrived, on timeout, or on SIGINT/SIGTERM. Prints ``PROBE READY`` once subscribed. Used by the
bag tests and benchmark to measure replay timing from a separate process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--topic", action="append", required=True, help="TOPIC:pkg/msg/Type (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=0, help="exit after this many messages (0 = until stopped)")
    p.add_argument("--count-topic", default="", help="count only this topic's messages toward --count")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--best-effort", action="store_true")
    a = p.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from rls3_ros.ros.rosutil import StopFlag, import_msg_class

    stop = StopFlag().install()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("rls3_probe")
    arrivals: List[list] = []
    counted = [0]
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT if a.best_effort else ReliabilityPolicy.RELIABLE)
    for spec in a.topic:
        topic, msgtype = spec.rsplit(":", 1)

        def cb(data: bytes, _t=topic) -> None:
            arrivals.append([_t, time.monotonic_ns(), len(data), zlib.crc32(data), data[:64].hex()])
            if a.count_topic and _t != a.count_topic:
                return
            counted[0] += 1
            if a.count and counted[0] >= a.count:
                stop.set()

        node.create_subscription(import_msg_class(msgtype), topic, cb, qos, raw=True)
    print("PROBE READY", flush=True)
    deadline = time.monotonic() + a.timeout
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        with open(a.out, "w") as f:
            json.dump({"arrivals": arrivals}, f)
        print(f"PROBE DONE received={len(arrivals)}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
