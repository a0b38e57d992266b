"""Serve rls3_msgs/srv/SetAdapter on /test/set_adapter: accepts existing directories only."""

import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rls3_msgs.srv import SetAdapter


def main():
    rclpy.init()
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
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
