"""Call /test/set_adapter with each path given on the command line and print the answers."""

import sys

import rclpy
from rls3_msgs.srv import SetAdapter


def main(paths):
    rclpy.init()
    node = rclpy.create_node("adapter_client")
    client = node.create_client(SetAdapter, "/test/set_adapter")
    if not client.wait_for_service(timeout_sec=30.0):
        print("NO SERVICE", flush=True)
        return 1
    for p in paths:
        fut = client.call_async(SetAdapter.Request(path=p))
        rclpy.spin_until_future_complete(node, fut, timeout_sec=30.0)
        r = fut.result()
        print(f"ANSWER path={p!r} success={r.success} active={r.active_adapter!r} message={r.message!r}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
