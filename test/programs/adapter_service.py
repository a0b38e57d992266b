"""Serve rls3_msgs/srv/SetAdapter on /test/set_adapter: accepts existing directories only."""

import os
import sys

import rclpy
from rls3_msgs.srv import SetAdapter

from rls3_ros.ros.node_main import run_node


def adapter_service():
    node = rclpy.create_node("adapter_service")
    state = {"active": ""}

    def handle(req, res):
        if req.path and not os.path.isdir(req.path):
            res.success, res.message = False, f"no adapter directory {req.path!r}"
        else:
            state["active"] = req.path
            res.success, res.message = True, "ok"
        res.active_adapter = state["active"]
        return res

    node.create_service(SetAdapter, "/test/set_adapter", handle)
    print("SERVICE READY", flush=True)
    return node


if __name__ == "__main__":
    sys.exit(run_node(adapter_service))
