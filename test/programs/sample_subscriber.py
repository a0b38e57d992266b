"""Receive one sample on /test/samples, convert it to core types and print what arrived."""

import sys

import rclpy
from rls3_msgs.msg import Sample

from rls3_ros.ros.conversions import msg_to_sample
from sample_factory import digest


def main():
    rclpy.init()
    node = rclpy.create_node("sample_subscriber")
    got = []
    node.create_subscription(Sample, "/test/samples", got.append, 10)
    print("SUBSCRIBER READY", flush=True)
    while rclpy.ok() and not got:
        rclpy.spin_once(node, timeout_sec=0.1)
    s = msg_to_sample(got[0])
    r = s.relations[0]
    print(f"RECEIVED id={s.sample_id} shape={s.image.shape} sha={digest(s.image)} "
          f"stamp={got[0].header.stamp.sec}.{got[0].header.stamp.nanosec:09d} caption={r.caption!r} "
          f"objects={len(s.scene.objects)}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
