"""Publish one captioned sample (224x224 image) on /test/samples until stopped."""

import sys

import rclpy
from rls3_msgs.msg import Sample

from rls3_ros.ros.conversions import sample_to_msg
from rls3_ros.ros.node_main import run_node
from sample_factory import make_sample


def sample_publisher():
    node = rclpy.create_node("sample_publisher")
    pub = node.create_publisher(Sample, "/test/samples", 10)
    msg = sample_to_msg(make_sample())
    node.create_timer(0.05, lambda: pub.get_subscription_count() > 0 and pub.publish(msg))
    print("PUBLISHER READY", flush=True)
    return node


if __name__ == "__main__":
    sys.exit(run_node(sample_publisher))
