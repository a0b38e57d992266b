"""sim_bridge in real processes (two, in namespaces) answering service calls from this process."""

import math

import pytest
from ros_harness import NodeProcess, call_service, poll_until

BRIDGE = ["-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args"]


def _bridge(ns, seed, env, extra=()):
    return NodeProcess(BRIDGE + ["-r", f"__ns:=/{ns}", "-p", "image_size:=64", "-p", f"seed:={seed}", *extra],
                       env, f"bridge_{ns}")


def test_bridges_in_namespaces_answer_reset_and_apply(ros_env, rclpy_node):
    from rclpy.qos import qos_profile_sensor_data
    from rls3_msgs.msg import SceneState
    from rls3_msgs.srv import ApplyAction, ResetScene
    from sensor_msgs.msg import CameraInfo, Image

    node = rclpy_node
    got = {"image": [], "info": [], "scene": []}
    node.create_subscription(Image, "/a/image_raw", got["image"].append, qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "/a/camera_info", got["info"].append, qos_profile_sensor_data)
    node.create_subscription(SceneState, "/a/scene_state", got["scene"].append, 10)
    with _bridge("a", 1, ros_env) as a, _bridge("b", 2, ros_env, ["-p", "image_qos:=reliable"]) as b:
        a.wait_for_output("sim_bridge ready", timeout=60)
        b.wait_for_output("sim_bridge ready", timeout=60)
        ra = call_service(node, ResetScene, "/a/sim_bridge/reset_scene", ResetScene.Request(seed=5, scene_type="bedroom"))
        assert ra.success, ra.message
        assert ra.scene.scene_type == "bedroom" and ra.scene.seed == 5 and len(ra.scene.objects) == 3
        assert (ra.image.width, ra.image.height, ra.image.encoding) == (64, 64, "rgb8")
        assert ra.scene.header.stamp == ra.image.header.stamp and ra.scene.header.frame_id == "world"
        # the reset's own render is answered (no second render): the image a fresh render gives
        import numpy as np

        from rls3_ros.sim.factory import make_backend

        with make_backend("mujoco", image_size=64, seed=1, render_depth=False) as local:
            local.reset(5, "bedroom")
            want = local.render().rgb
        assert np.array_equal(np.frombuffer(bytes(ra.image.data), np.uint8).reshape(64, 64, 3), want)
        stamp = ra.image.header.stamp
        # the same frame went out on the topics with the one shared stamp
        poll_until(lambda: any(m.header.stamp == stamp for m in got["image"])
                   and any(m.header.stamp == stamp for m in got["info"])
                   and any(m.header.stamp == stamp for m in got["scene"]), 20, "published frame")
        info = next(m for m in got["info"] if m.header.stamp == stamp)
        assert info.width == 64 and info.k[0] > 0

        # the other bridge keeps its own scene
        rb = call_service(node, ResetScene, "/b/sim_bridge/reset_scene", ResetScene.Request(seed=5, scene_type="kitchen"))
        assert rb.success and rb.scene.scene_type == "kitchen"

        objs = ra.scene.objects
        req = ApplyAction.Request(action_type="teleport", object_id=objs[0].id)
        req.target_pose.position = objs[1].pose.position
        req.target_pose.orientation.w = 1.0
        r = call_service(node, ApplyAction, "/a/sim_bridge/apply_action", req)
        assert r.success and not r.valid and r.reason == "overlap", (r.message, r.reason)
        assert [o.pose.position for o in r.scene.objects] == [o.pose.position for o in objs]

        ok = None
        for o in objs:
            r = call_service(node, ApplyAction, "/a/sim_bridge/apply_action",
                             ApplyAction.Request(action_type="swap", object_id=o.id))
            assert r.success, r.message
            if r.valid:
                ok = r
                break
        assert ok is not None, "no valid swap"
        assert o.id in ok.scene.container_ids and ok.scene.header.stamp == ok.image.header.stamp

        bad = call_service(node, ApplyAction, "/a/sim_bridge/apply_action",
                           ApplyAction.Request(action_type="fly", object_id=objs[0].id))
        assert not bad.success and "fly" in bad.message
        bad = call_service(node, ApplyAction, "/a/sim_bridge/apply_action",
                           ApplyAction.Request(action_type="swap", object_id="ghost"))
        assert not bad.success and "ghost" in bad.message
        bad = call_service(node, ResetScene, "/a/sim_bridge/reset_scene", ResetScene.Request(seed=1, scene_type="garage"))
        assert not bad.success and "garage" in bad.message
        nan = ApplyAction.Request(action_type="teleport", object_id=objs[1].id)
        nan.target_pose.position.x = math.nan
        bad = call_service(node, ApplyAction, "/a/sim_bridge/apply_action", nan)
        assert not bad.success and "NaN" in bad.message
        assert a.alive() and b.alive()


def test_qos_mismatch_is_logged_not_silent(ros_env, rclpy_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    with _bridge("q", 0, ros_env) as q:  # sensor_data (best effort) images
        q.wait_for_output("sim_bridge ready", timeout=60)
        rclpy_node.create_subscription(Image, "/q/image_raw", lambda m: None,
                                       QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        q.wait_for_output(r"image_raw requests a QoS incompatible", timeout=30)


def test_bad_parameters_stop_the_bridge_with_a_reason(ros_env):
    with _bridge("c", 0, ros_env, ["-p", "image_qos:=loud"]) as c:
        assert c.wait(timeout=60) == 2
        assert "image_qos" in c.output()
