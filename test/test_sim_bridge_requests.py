"""sim_bridge's per-request work, in this process (no DDS peer needed): topics without a
subscriber are not published, and the heap is trimmed after every reset but only every
TRIM_EVERY_MOVES-th move."""

from __future__ import annotations

import pytest

from ros_harness import poll_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bridge(ros_env):
    import rclpy
    from rclpy.parameter import Parameter

    from rls3_ros.ros.nodes.sim_bridge import SimBridge

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SimBridge(context=ctx, parameter_overrides=[Parameter("image_size", value=32)])
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        ctx.try_shutdown()


def _swap(bridge):
    from rls3_msgs.srv import ApplyAction

    oid = next(o.id for o in bridge.backend.state().objects if o.active)
    return bridge._on_apply(ApplyAction.Request(action_type="swap", object_id=oid), ApplyAction.Response())


def _record_publishes(bridge):
    sent = {"image_raw": 0, "camera_info": 0, "scene_state": 0}
    for pub, topic in ((bridge.image_pub, "image_raw"), (bridge.info_pub, "camera_info"), (bridge.scene_pub, "scene_state")):
        real = pub.publish

        def publish(msg, _real=real, _topic=topic):
            sent[_topic] += 1
            _real(msg)

        pub.publish = publish
    return sent


def test_topics_without_subscribers_are_skipped_but_the_answer_carries_scene_and_image(bridge):
    from rclpy.qos import qos_profile_sensor_data
    from rls3_msgs.msg import SceneState
    from sensor_msgs.msg import CameraInfo, Image

    sent = _record_publishes(bridge)
    r = _swap(bridge)
    assert r.success, r.message
    assert (r.image.width, r.image.height, len(r.image.data)) == (32, 32, 32 * 32 * 3)
    assert r.scene.header.stamp == r.image.header.stamp and len(r.scene.objects) > 0
    assert sent == {"image_raw": 0, "camera_info": 0, "scene_state": 0}

    # a subscriber of each topic (same context: matched within this process)
    bridge.create_subscription(Image, "image_raw", lambda m: None, qos_profile_sensor_data)
    bridge.create_subscription(CameraInfo, "camera_info", lambda m: None, qos_profile_sensor_data)
    bridge.create_subscription(SceneState, "scene_state", lambda m: None, 10)
    pubs = (bridge.image_pub, bridge.info_pub, bridge.scene_pub)
    poll_until(lambda: all(p.get_subscription_count() for p in pubs), 20, "the subscriptions to be matched", 0.05)
    assert _swap(bridge).success
    assert sent == {"image_raw": 1, "camera_info": 1, "scene_state": 1}


def test_heap_is_trimmed_after_resets_and_every_nth_move(bridge, monkeypatch):
    import rls3_ros.ros.nodes.sim_bridge as sb
    from rls3_msgs.srv import ResetScene

    trims = []
    monkeypatch.setattr(sb, "trim_heap", lambda: trims.append(1))
    assert bridge._on_reset(ResetScene.Request(seed=3), ResetScene.Response()).success
    assert len(trims) == 1
    for _ in range(sb.TRIM_EVERY_MOVES - 1):
        assert _swap(bridge).success
    assert len(trims) == 1
    assert _swap(bridge).success
    assert len(trims) == 2
    bridge.trim_memory = False
    for _ in range(sb.TRIM_EVERY_MOVES):
        _swap(bridge)
    assert len(trims) == 2
