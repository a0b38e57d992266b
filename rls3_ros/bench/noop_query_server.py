"""A ``SpatialQuery`` service that answers at once (no model): the ROS round trip's floor.

``python -m rls3_ros.bench.noop_query_server`` serves ``/noop_query/query`` on a single-threaded
executor, as ``spatial_query`` does, and prints "ready" once it serves. The speed benchmark asks it
with the same client and the same image requests as the real node: what the real node adds over a
direct model call, minus this round trip, is the node's own work (message conversion, grounding,
the answer's fields).
"""

from __future__ import annotations

import sys


def main() -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.ros.service_qos import SERVICE_QOS

    rclpy.init()
    node = rclpy.create_node("noop_query")

    def answer(req, resp):
        resp.success = True
        resp.header = req.header
        return resp

    node.create_service(SpatialQuery, "~/query", answer, qos_profile=SERVICE_QOS)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    print("ready", flush=True)
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
