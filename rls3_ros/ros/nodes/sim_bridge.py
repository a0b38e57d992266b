"""sim_bridge node: owns one simulator backend, resets scenes and applies moves on request.

Parameters: the table ``PARAMETERS`` below (name, default, type, range, doc), declared from it
(``rls3_ros.ros.node_params``); ``ros2 param describe``, ``--help`` and the table in
``docs/simulator.md`` show the same.

Memory: every reset builds a new MuJoCo model (8-20 MB of decoded textures, plus the renderer's
copies) and frees the old one; a move allocates the render and the image messages. With glibc's
default of up to 8 malloc arenas per core, those frees stayed in fragmented per-thread arenas and
the bridge's RSS ratcheted up (325 -> 574 MB in 50 requests, 722 MB after 30 more resets). ``main``
caps the arenas at 2 (``mallopt(M_ARENA_MAX)``, before any thread starts; an explicit
``MALLOC_ARENA_MAX`` in the environment wins) and ``trim_memory``
hands the freed pages back after each reset (a whole model was freed) and after every
``TRIM_EVERY_MOVES``-th move (a move frees only its render and messages, which malloc reuses for
the next one; a trim walks every arena, ~0.3 ms, 2 % of a 224 px move): RSS stays flat (``test/test_sim_bridge_soak.py``,
``rls3 bench soak``).

Services (relative, so bridges run side by side in namespaces):
  ~/reset_scene  (rls3_msgs/srv/ResetScene)   build the scene of a seed; answers scene + image
  ~/apply_action (rls3_msgs/srv/ApplyAction)  move one object; answers valid/reason + scene + image
Topics (published after every reset/apply, one shared header stamp):
  image_raw (sensor_msgs/Image, rgb8), camera_info (sensor_msgs/CameraInfo),
  scene_state (rls3_msgs/SceneState)

The backend runs every simulator call on its own thread; callbacks never raise: failures
answer success=false with the reason in ``message``.
"""

from __future__ import annotations

import math
import threading
from typing import List, Optional

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rls3_msgs.msg import SceneState as SceneStateMsg
from rls3_msgs.srv import ApplyAction, ResetScene
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from rls3_ros.ros.conversions import camera_info_msg, scene_to_msg
from rls3_ros.core.image_codec import numpy_to_image_msg
from rls3_ros.ros.node_main import NodeStartupError, run_node
from rls3_ros.ros.node_params import Param, declare_parameters, print_help_if_asked
from rls3_ros.sim.backend import ACTION_TYPES, BAD_REQUEST, MoveAction
from rls3_ros.ros.service_qos import SERVICE_QOS

ALL_SCENE_TYPES = ["kitchen", "living_room", "bedroom", "dining_room"]
MALLOC_ARENAS = 2
TRIM_EVERY_MOVES = 16
_M_ARENA_MAX = -8  # glibc mallopt parameter

PARAMETERS = [
    Param("backend", "mujoco", "simulator backend: mujoco | ai2thor"),
    Param("scene_types", ALL_SCENE_TYPES, "scene types reset draws from (kitchen, living_room, bedroom, dining_room)"),
    Param("image_size", 224, "square image size [px]"),
    Param("seed", 0, "seed of the scene built at startup", low=0),
    Param("camera_distance", [1.6, 1.9], "camera distance range to the workspace [m] (mujoco)"),
    Param("camera_height", [1.45, 1.75], "camera height range [m] (mujoco)"),
    Param("fovy", [56.0, 62.0], "vertical field-of-view range [deg] (mujoco)"),
    Param("min_visible_fraction", 0.3, "occlusion threshold of the validity check"),
    Param("image_qos", "sensor_data", "QoS of image_raw and camera_info", choices=("sensor_data", "reliable"),
          fold_case=True),
    Param("frame_id", "world", "frame of the scene_state / image headers"),
    Param("local_executable_path", "", "ai2thor only: path of a local AI2-THOR Unity build"),
    Param("trim_memory", True, f"return freed heap to the OS after every reset and every {TRIM_EVERY_MOVES}th move "
                               "(glibc malloc_trim; see Memory in the module doc)"),
    Param("render_threads", 0, "llvmpipe raster threads of this process (0 = Mesa's default, one per core; set "
                               "before its first GL context): a graph of N > 1 bridges on C cores gives each C // N "
                               "(rls3_ros.sim.raster_threads: 2 bridges on 2 cores 1.55-1.60 x one bridge with 1 "
                               "each, 1.42-1.55 with Mesa's 2)"),
]


def _libc():
    try:
        import ctypes

        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim  # noqa: B018 - glibc only (musl / macOS: no trimming, nothing to do)
        return lib
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where that is not glibc or
    where the user chose a cap with ``MALLOC_ARENA_MAX`` (theirs is kept)."""
    import os

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    lib = _libc()
    return bool(lib is not None and lib.mallopt(_M_ARENA_MAX, int(n)) == 1)


def trim_heap() -> None:
    """Give free heap pages of every arena back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


def _yaw_from_quat(x: float, y: float, z: float, w: float) -> float:
    if x == y == z == w == 0.0:
        return 0.0
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class SimBridge(Node):
    """ROS face of one simulator backend (see module docstring for parameters and interfaces)."""

    def __init__(self, node_name: str = "sim_bridge", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.trim_memory = bool(p["trim_memory"])
        self._moves_since_trim = 0
        qos_name = str(p["image_qos"]).strip().lower()
        if qos_name == "sensor_data":
            image_qos = qos_profile_sensor_data
        else:  # "reliable" (checked against the table's choices)
            image_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.frame_id = str(p["frame_id"]) or "world"
        self.seed = int(p["seed"])
        backend_name = str(p["backend"]).strip().lower()
        params = dict(image_size=int(p["image_size"]), seed=self.seed, scene_types=list(p["scene_types"]))
        if backend_name == "mujoco":
            params.update(camera_distance=tuple(p["camera_distance"]), camera_height=tuple(p["camera_height"]),
                          fovy=tuple(p["fovy"]), min_visible_fraction=float(p["min_visible_fraction"]),
                          render_depth=False)  # depth is not published
        elif backend_name == "ai2thor":
            params.update(local_executable_path=str(p["local_executable_path"]),
                          min_visible_fraction=float(p["min_visible_fraction"]))
        from rls3_ros.sim.factory import make_backend
        from rls3_ros.sim.raster_threads import set_raster_threads

        threads = set_raster_threads(int(p["render_threads"]))
        if threads:
            self.get_logger().info(f"llvmpipe raster threads: {threads}")

        try:
            self.backend = make_backend(backend_name, **params)
        except (ValueError, RuntimeError, ImportError) as e:
            raise NodeStartupError(f"cannot create the {backend_name!r} backend: {e}") from e
        self._lock = threading.Lock()
        def qos_warning(topic: str):
            def cb(info) -> None:
                self.get_logger().warning(
                    f"a subscriber of {topic} requests a QoS incompatible with image_qos={qos_name!r} "
                    f"(policy {info.last_policy_kind}); it receives nothing - match the QoS or change image_qos")
            return PublisherEventCallbacks(incompatible_qos=cb)

        self.image_pub = self.create_publisher(Image, "image_raw", image_qos, event_callbacks=qos_warning("image_raw"))
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", image_qos,
                                              event_callbacks=qos_warning("camera_info"))
        self.scene_pub = self.create_publisher(SceneStateMsg, "scene_state", 10,
                                               event_callbacks=qos_warning("scene_state"))
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(ResetScene, "~/reset_scene", self._on_reset, callback_group=group, qos_profile=SERVICE_QOS)
        self.create_service(ApplyAction, "~/apply_action", self._on_apply, callback_group=group, qos_profile=SERVICE_QOS)
        try:
            scene = self.backend.reset(self.seed)
            self._publish(scene, self.backend.render().rgb)
        except Exception as e:  # noqa: BLE001 - report why the node cannot start
            self.backend.close()
            raise NodeStartupError(f"first scene (seed {self.seed}) failed: {e}") from e
        self.get_logger().info(
            f"sim_bridge ready: backend={backend_name} image_size={params['image_size']} image_qos={qos_name} "
            f"scene={scene.scene_id} services={self.resolve_service_name('~/reset_scene')}, "
            f"{self.resolve_service_name('~/apply_action')}")

    # ------------------------------------------------------------------ helpers
    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)

    def _publish(self, scene, rgb):
        """Publish image, camera info and scene with one header; return (scene_msg, image_msg).

        A topic nobody subscribes to is skipped: its message would reach no one (the topics are
        volatile, a later subscriber never gets it), yet rclpy would still convert and serialise
        it (the 150 kB image at 224 px) on every request. The service answer carries both anyway.
        """
        header = self._header()
        img = numpy_to_image_msg(rgb, "rgb8", header)
        scene_msg = scene_to_msg(scene, header)
        if self.image_pub.get_subscription_count():
            self.image_pub.publish(img)
        if self.info_pub.get_subscription_count():
            self.info_pub.publish(camera_info_msg(scene.camera, header))
        if self.scene_pub.get_subscription_count():
            self.scene_pub.publish(scene_msg)
        return scene_msg, img

    def _render_after_reset(self):
        """The render the reset just made (MuJoCo keeps it), else a new one."""
        last = getattr(self.backend, "last_render", None)
        render = last() if callable(last) else None
        return render if render is not None else self.backend.render()

    # ------------------------------------------------------------------ services
    def _on_reset(self, request: ResetScene.Request, response: ResetScene.Response) -> ResetScene.Response:
        try:
            scene_type: Optional[str] = request.scene_type or None
            if scene_type is not None and scene_type not in self.backend.scene_types:
                response.success = False
                response.message = (f"unknown scene_type {scene_type!r}; this bridge builds: "
                                    f"{', '.join(self.backend.scene_types)}")
                return response
            with self._lock:
                scene = self.backend.reset(int(request.seed), scene_type)
                render = self._render_after_reset()
                response.scene, response.image = self._publish(scene, render.rgb)
            response.success = True
            response.message = f"scene {scene.scene_id}"
        except Exception as e:  # noqa: BLE001 - a service never raises
            self.get_logger().error(f"reset_scene(seed={request.seed}) failed: {e}")
            response.success = False
            response.message = f"reset failed: {e}"
        if self.trim_memory:
            trim_heap()  # the previous scene's model and renderer were just freed
            self._moves_since_trim = 0
        return response

    def _on_apply(self, request: ApplyAction.Request, response: ApplyAction.Response) -> ApplyAction.Response:
        try:
            if request.action_type not in ACTION_TYPES:
                response.success = False
                response.message = f"unknown action_type {request.action_type!r} (known: {', '.join(ACTION_TYPES)})"
                return response
            p = request.target_pose.position
            o = request.target_pose.orientation
            pos = (float(p.x), float(p.y), float(p.z))
            if not all(math.isfinite(v) for v in pos + (o.x, o.y, o.z, o.w)):
                response.success = False
                response.message = "target_pose contains NaN/inf"
                return response
            action = MoveAction(
                action_type=request.action_type, object_id=request.object_id,
                container_object_id=request.container_object_id,
                position=pos if request.action_type != "swap" else None,
                yaw=_yaw_from_quat(o.x, o.y, o.z, o.w), receptacle_id=request.receptacle_id)
            with self._lock:
                result = self.backend.apply(action)
                response.scene, response.image = self._publish(result.scene, result.render.rgb)
            if result.reason == BAD_REQUEST:
                response.success = False
                response.message = f"bad request: {result.message}"
            else:
                response.success = True
                response.message = "valid" if result.valid else f"invalid: {result.reason}"
            response.valid = bool(result.valid)
            response.reason = result.reason
        except Exception as e:  # noqa: BLE001 - a service never raises
            self.get_logger().error(f"apply_action({request.action_type} {request.object_id}) failed: {e}")
            response.success = False
            response.valid = False
            response.message = f"apply failed: {e}"
        self._moves_since_trim += 1
        if self.trim_memory and self._moves_since_trim >= TRIM_EVERY_MOVES:
            trim_heap()
            self._moves_since_trim = 0
        return response

    def close(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()


def main(args: Optional[List[str]] = None) -> int:
    if print_help_if_asked("sim_bridge", PARAMETERS, args):
        return 0
    limit_malloc_arenas()  # before rclpy and the executor start their threads
    # one executor thread: both services share one mutually exclusive group (the backend is serial)
    return run_node(SimBridge, args, num_threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
