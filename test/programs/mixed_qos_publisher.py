"""Two publishers on one topic, one reliable and one best-effort (a camera driver and a debug
tool, say), plus a plain reliable topic: what ``rls3 record`` has to survive and record.

    python mixed_qos_publisher.py --topic /mix/chatter --plain /mix/plain --count 40 [--rate 50]

The two publishers of ``--topic`` send ``reliable <i>`` and ``best_effort <i>`` (std_msgs/String),
``--plain`` sends ``plain <i>``. Prints ``PUBLISHERS READY`` once created, waits (up to
``--wait`` s) until each publisher has a matched subscriber, publishes ``--count`` of each at
``--rate`` Hz, prints ``PUBLISHED <count>`` and stays up (reliable resends) until SIGINT/SIGTERM.
"""

import argparse
import signal
import sys
import threading
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--topic", required=True)
    p.add_argument("--plain", required=True)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--wait", type=float, default=60.0)
    a = p.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("mixed_qos_publisher")
    pubs = {
        "reliable": node.create_publisher(String, a.topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)),
        "best_effort": node.create_publisher(String, a.topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)),
        "plain": node.create_publisher(String, a.plain, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)),
    }
    print("PUBLISHERS READY", flush=True)
    deadline = time.monotonic() + a.wait
    while not stop.is_set() and time.monotonic() < deadline:
        if all(pub.get_subscription_count() > 0 for pub in pubs.values()):
            break
        stop.wait(0.02)
    print("MATCHED " + " ".join(f"{k}={pub.get_subscription_count()}" for k, pub in pubs.items()), flush=True)
    for i in range(a.count):
        if stop.is_set():
            break
        for kind, pub in pubs.items():
            pub.publish(String(data=f"{kind} {i}"))
        stop.wait(1.0 / a.rate)
    print(f"PUBLISHED {a.count}", flush=True)
    stop.wait()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
