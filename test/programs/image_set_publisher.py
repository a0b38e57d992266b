"""Publish the codec test images (every encoding x byte order x row padding) once on
/test/codec_images (reliable, transient local), after ``--subscribers`` readers matched.

Prints ``PUBLISHED n`` after publishing and ``ACKED n`` once every reader acknowledged them,
then spins until stopped. ``image_cases()`` is the set, shared with the test that checks it."""

import argparse
import sys

import numpy as np

TOPIC = "/test/codec_images"


def image_cases():
    """[(name, encoding, array, big_endian, step)], deterministic."""
    from rls3_ros.core.image_codec import ENCODINGS

    rng = np.random.default_rng(7)
    cases = []
    for encoding, (dtype, ch) in ENCODINGS.items():
        shape = (6, 5) if ch == 1 else (6, 5, ch)
        for big_endian in (False, True):
            for pad in (0, 6):
                if np.issubdtype(dtype, np.floating):
                    arr = rng.normal(size=shape).astype(dtype)
                else:
                    arr = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
                step = 5 * ch * np.dtype(dtype).itemsize + pad
                cases.append((f"{encoding}-{'be' if big_endian else 'le'}-pad{pad}", encoding, arr, big_endian, step))
    return cases


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--subscribers", type=int, default=1)
    a = p.parse_args(argv)

    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.ros.node_main import run_node

    cases = image_cases()
    msgs = [numpy_to_image_msg(arr, enc, Header(frame_id=name), Image, big_endian=be, step=step)
            for name, enc, arr, be, step in cases]

    def factory():
        node = rclpy.create_node("image_set_publisher")
        qos = QoSProfile(depth=len(msgs), reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = node.create_publisher(Image, TOPIC, qos)
        state = {"published": False, "acked": False}

        def tick():
            if not state["published"] and pub.get_subscription_count() >= a.subscribers:
                for m in msgs:
                    pub.publish(m)
                state["published"] = True
                print(f"PUBLISHED {len(msgs)}", flush=True)
            elif state["published"] and not state["acked"] and pub.wait_for_all_acked(Duration(seconds=0.05)):
                state["acked"] = True
                print(f"ACKED {len(msgs)}", flush=True)

        node.create_timer(0.05, tick)
        return node

    return run_node(factory)


if __name__ == "__main__":
    sys.exit(main())
