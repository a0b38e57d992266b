"""Publish one captioned sample (224x224 image) on /test/samples until stopped."""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rls3_msgs.msg import Sample

from rls3_ros.nodes.conversions import sample_to_msg
from sample_factory import make_sample


def main():
    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    pub = node.create_publisher(Sample, "/test/samples", 10)
    msg = sample_to_msg(make_sample())
    node.create_timer(0.05, lambda: pub.get_subscription_count() > 0 and pub.publish(msg))
    print("PUBLISHER READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
