"""A camera-like test/benchmark stream: ``image_raw`` (rgb8) + ``scene_state`` at a fixed rate.

    python -m rls3_ros.ros.stream_publisher --prefix /cam --rate 60 --count 300 --size 224
        [--backend mujoco] [--wait-subscribers 10]

Frames are deterministic (:func:`frame`), so a bag can be checked message by message:
frame i has header.stamp = publish time and pixel data ``frame(i, size)``. With
``--backend NAME`` the images come from ``rls3_ros.sim.factory.make_backend(NAME)`` renders
(the simulator's real cost), rendered live for every frame; ``--rate 0`` publishes as fast as
frames are made (the simulator's full rate). Scene states then come from the backend. Prints ``STREAM READY``
when subscribers are matched and ``STREAM DONE published=N elapsed=S late_p99_ms=X`` at the
end. Publishing is paced on the monotonic clock (sleep until due).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import List, Optional

import numpy as np


def frame(i: int, size: int) -> np.ndarray:
    """Deterministic (size, size, 3) uint8 image number ``i``; its first 4 bytes encode ``i``."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx + i) % 256, (yy + 2 * i) % 256, (xx + yy + 3 * i) % 256], axis=2).astype(np.uint8)
    img.reshape(-1)[:4] = np.frombuffer(np.uint32(i).tobytes(), np.uint8)
    return img


def frame_index(img: np.ndarray) -> int:
    return int(np.frombuffer(np.ascontiguousarray(img).reshape(-1)[:4].tobytes(), np.uint32)[0])


def _scene(i: int, size: int, stamp_ns: int):
    from rls3_ros.core.scene import CameraModel, ObjectState, SceneState

    cam = CameraModel.look_at((0.0, -2.0, 1.5), (0.0, 0.0, 0.8), size, size, 60.0)
    objs = [
        ObjectState("mug_0", "mug", "red mug", (-0.3 + 0.001 * i, 0.0, 0.8), size=(0.1, 0.1, 0.12), bbox=(50, 80, 90, 120), active=True),
        ObjectState("lamp_0", "lamp", "lamp", (0.3, 0.1, 0.9), size=(0.2, 0.2, 0.4), bbox=(130, 60, 170, 130), active=True),
    ]
    return SceneState(f"stream-{i}", "kitchen", i, cam, objs, ["bowl_1"], stamp_ns=stamp_ns)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", default="/stream")
    p.add_argument("--rate", type=float, default=60.0)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backend", default="", help="render frames with this simulator backend")
    p.add_argument("--no-scene", action="store_true", help="publish only images")
    p.add_argument("--wait-subscribers", type=float, default=10.0, help="wait up to S s for subscribers on every topic")
    p.add_argument("--best-effort", action="store_true", help="publish images best-effort (like many camera drivers)")
    p.add_argument("--depth", type=int, default=10, help="publisher keep-last depth (default 10)")
    a = p.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rls3_msgs.msg import SceneState as SceneStateMsg
    from sensor_msgs.msg import Image

    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.ros.conversions import CAMERA_FRAME, header_from_ns, scene_to_msg
    from rls3_ros.ros.rosutil import wait_for_delivery

    backend = None
    if a.backend:
        from rls3_ros.sim.factory import make_backend  # the simulator layer's factory

        backend = make_backend(a.backend, image_size=a.size)
        backend.reset(seed=0)
        backend.render()  # warm the renderer up before timing starts

    rclpy.init()
    node = rclpy.create_node("rls3_stream_publisher")
    img_qos = QoSProfile(depth=a.depth, reliability=ReliabilityPolicy.BEST_EFFORT if a.best_effort else ReliabilityPolicy.RELIABLE)
    pub_img = node.create_publisher(Image, f"{a.prefix}/image_raw", img_qos)
    pub_scene = None if a.no_scene else node.create_publisher(SceneStateMsg, f"{a.prefix}/scene_state", a.depth)
    pubs = [x for x in (pub_img, pub_scene) if x is not None]
    deadline = time.monotonic() + a.wait_subscribers
    while any(x.get_subscription_count() == 0 for x in pubs) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("STREAM READY", flush=True)
    period = int(1e9 / a.rate) if a.rate > 0 else 0  # rate 0: as fast as frames can be made
    t0 = time.monotonic_ns()
    late = []
    render_ns = 0
    sent = 0
    try:
        for i in range(a.count):
            due = t0 + i * period
            left = due - time.monotonic_ns()
            if left > 0:
                time.sleep(left / 1e9)
            if backend is not None:
                r0 = time.monotonic_ns()
                img = np.ascontiguousarray(backend.render().rgb)
                scene = backend.state()
                render_ns += time.monotonic_ns() - r0
            else:
                img, scene = frame(i, a.size), None
            stamp = time.time_ns()
            pub_img.publish(numpy_to_image_msg(img, "rgb8", header_from_ns(stamp, CAMERA_FRAME), Image))
            if pub_scene is not None:
                if scene is None:
                    scene = _scene(i, a.size, stamp)
                else:
                    scene = dataclasses.replace(scene, stamp_ns=stamp)
                pub_scene.publish(scene_to_msg(scene))
            if period:
                late.append(time.monotonic_ns() - due)
            sent += 1
    except KeyboardInterrupt:
        pass
    elapsed = (time.monotonic_ns() - t0) / 1e9
    p99 = float(np.percentile(np.asarray(late) / 1e6, 99)) if late else 0.0
    # let reliable readers fetch the last samples before the writer goes away
    wait_for_delivery(pubs, 2.0)
    fps = sent / elapsed if elapsed > 0 else 0.0
    render_fps = sent / (render_ns / 1e9) if render_ns else 0.0
    print(f"STREAM DONE published={sent} elapsed={elapsed:.3f} fps={fps:.1f} render_fps={render_fps:.1f} late_p99_ms={p99:.3f}", flush=True)
    if backend is not None:
        backend.close()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
