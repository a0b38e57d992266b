"""``spatial_query`` node: answers spatial questions with the (fine-tuned) spatial VLM.

A lifecycle node (``rclpy.lifecycle``): parameters are read and topics created on
*configure*, the model (base + adapter) is loaded on *activate* and freed on *deactivate*.
With ``autostart`` (default) it configures and activates itself, so it works without a
lifecycle manager.

Services
- ``~/query`` (rls3_msgs/srv/SpatialQuery): ``where`` / ``check`` / ``what`` on the image in
  the request, or — when the request image is empty (width 0) — on the camera-topic frame
  nearest to ``header.stamp`` (within ``frame_tolerance``; the latest frame when the stamp
  is zero). The answer copies the header of the image used. Every bad request (unknown
  query type, bad image, image smaller than 16x16 px, empty/unknown object name, subject
  that is the reference, unparsable relation, no model yet, node not active) gets
  ``success=false`` and a reason; the node lives on. Without a matching scene state, names
  with words the model never learnt are refused (``SpatialVLM.unknown_words``).
- ``~/set_adapter`` (rls3_msgs/srv/SetAdapter): switch the LoRA adapter ("" = base). The path
  is untrusted input (see "Adapters from the network" below); a refusal says why and keeps the
  active adapter.

Hot swap: a new adapter is loaded into a *new* model instance off the query path, then the
model reference is replaced under a lock. Queries in flight finish on the old instance, later
ones use the new one: no query fails during a swap. The swap callbacks (``~/set_adapter``,
``adapter`` announcements) are coroutines that run the load on a worker thread and await it, so
the executor keeps answering queries (on the old adapter) while an adapter loads.

Bounded work per request (untrusted input: limits are checked before work, and a big request
never holds up small ones):
- Queries run on a pool of ``query_threads`` executor threads (a reentrant callback group), so a
  big request's transfer, conversion and encoder pass overlap other queries; only the model's own
  passes are serialised per model instance (its lock), and a request holds that lock only for
  them: names, relation and candidates are checked before it (``answers.check_query``), the
  grounded model's image features computed before it (``answers.prepare_image``), the 3D points
  after it.
- Before any conversion: the texts and the 'what' candidates (``answers.check_limits``: 200
  characters, 256 candidates; a 'what' without candidates takes the scene state's objects, at most
  256 of them), the image size from the Image header or, for a compressed frame, from its PNG/JPEG
  header (``image_codec.check_image_msg``: ``max_image_side``, ``max_image_pixels``; a frame that
  decodes to more is refused undecoded). Camera frames over the limits are not buffered: a
  placeholder keeps their stamp and reason, and a query for them is answered with it.
- Scene states with more than ``max_scene_objects`` objects are dropped on arrival (throttled
  warning), on the object count read from the serialized message (``cdr_peek``): before rclpy
  deserializes them (a 10,000-object message held the GIL 1.1 s in deserialization).
- Each request has a deadline (``query_deadline`` s from its callback start): a request still
  waiting for the model then is answered ``success=false`` "deadline exceeded ..." instead of
  queueing on. Every limit is a read-only parameter (a remote ``set_parameters`` cannot raise it).

Adapters from the network: a ROS 2 domain without SROS2 authenticates nobody, so a path from
``~/set_adapter`` or an ``adapter`` announcement is checked before any work
(``rls3_ros.vlm.adapter_trust``): it must resolve (symlinks, ``..``) to a directory inside
``adapter_roots`` (a missing and a forbidden path get the same refusal, which never tells whether
a path exists); ``rls3_adapter.json`` must record the served base's fingerprint (an adapter of
another base, e.g. announced by a trainer of another model, is refused and the node serves on);
files read must be regular files (a FIFO, device or symlink is refused without being opened for a
blocking read) within size caps (``max_adapter_mb``); ``adapter_config.json`` must be a plain LoRA
config (rank <= ``max_adapter_rank``, finite alpha, target modules of the served model, no
option that selects code or heavy work); weights only as safetensors (never a pickle). The
checked files are copied to a private directory and loaded from there, by a worker thread given
``adapter_load_timeout`` s: a stuck read answers with a timeout reason while queries go on.
``model``, ``adapter`` and the adapter limits are read-only after start (``set_parameters`` on
them is refused): a ``py:`` model spec runs code and only comes from the operator's command
line or params file.

Topics
- subscribes ``<image_topic>`` (sensor_msgs/Image, or sensor_msgs/CompressedImage with
  ``image_transport`` "compressed"; QoS ``image_qos``; incompatible QoS is logged),
  ``scene_state`` (rls3_msgs/SceneState: object names for validation, candidates
  and annotation boxes), ``adapter`` (rls3_msgs/AdapterInfo, transient local; when
  ``follow_adapter_topic``).
- publishes ``~/annotated`` (sensor_msgs/Image, when ``publish_annotated``): the image with
  the boxes of the named objects (when the matching scene state knows them, solid), the
  model's own predicted boxes and points (dashed, with their confidence), the answer text and
  its confidence.
- subscribes ``camera_info_topic`` (sensor_msgs/CameraInfo) and, when ``depth_topic`` is set,
  a depth image (sensor_msgs/Image 32FC1 [m] / 16UC1 [mm], aligned with the colour image).

Object locations (``subject_location`` / ``reference_location`` of every answer; for "what"
the subject is the best candidate): 2D box, point and confidence from the model's own grounding
(``SpatialVLM.locate``; the grounded model's attention map). A model without grounding answers
with ``found=false`` and says so in ``message`` (the query still succeeds). With intrinsics and a
depth, also a 3D point in the camera optical frame (``point_3d``, the image's header); where
intrinsics and depth come from: ``rls3_ros.ros.grounding_msgs``.

Parameters (defaults)
- ``model`` ("grounded:serving", read-only): model spec for ``rls3_ros.vlm.answers.load_model``. The
  default is the serving base trained on every relation (models/grounded_serving/README.md,
  per-term accuracy there); "grounded" is the deliberately weak base the RLS3 loop starts from,
  the one to serve together with the loop's adapters (an adapter only loads on its own base).
- ``adapter`` ("", read-only): adapter directory to load at activation ("" = base model); it is
  an adapter root itself and gets the same checks.
- ``adapter_roots`` (["runs"], read-only): directories adapters may be loaded from (relative ones
  resolved against the working directory at start; ``runs/`` holds the loop's and the training
  graph's adapters, ``runs/adapters`` the trainer's default ``adapter_dir``). A list, or one
  string with ``:``-separated paths.
- ``adapter_load_timeout`` (60.0, read-only): seconds an adapter's files may take to read.
- ``max_adapter_rank`` (256, read-only), ``max_adapter_mb`` (256, read-only): largest LoRA rank
  and adapter weights file accepted.
- ``autostart`` (true): configure + activate at start.
- ``image_topic`` ("image_raw"), ``image_qos`` ("sensor_data" | "reliable" | "system_default").
- ``image_transport`` ("raw"): "raw" subscribes ``image_topic`` as sensor_msgs/Image,
  "compressed" as sensor_msgs/CompressedImage (jpeg/png, e.g. a camera's or a replayed bag's
  ``.../image_raw/compressed``: give that topic as ``image_topic``). Compressed frames are
  buffered as received and decoded (``rls3_ros.core.image_codec``, as the bag reader does) only when a
  query uses one; headers are untouched. A frame that does not decode answers
  ``success=false`` ("bad compressed image: ...") and the node stays up.
- ``frame_buffer`` (30): camera frames kept, looked up by stamp.
- ``frame_tolerance`` (0.1): max |stamp difference| [s] when a request names a stamp.
- ``scene_topic`` ("scene_state"). A scene state whose camera info has no image size or focal
  length (or NaN/inf numbers) is dropped on arrival with a throttled warning; it never reaches
  a query.
- ``scene_tolerance`` (0.1): max |stamp difference| [s] between the image a query uses (request
  image or camera frame) and the scene state used for it (object names, 'what' candidates,
  annotation boxes). Without a scene state that close, the query is answered from the image
  alone (names not checked against a scene) and the answer's ``message`` says so.
- ``follow_adapter_topic`` (true): switch to adapters announced on ``adapter_topic`` ("adapter").
- ``publish_annotated`` (false).
- ``load_retry_period`` (5.0): seconds between attempts while the model cannot be loaded.
- ``swap_mode`` ("reload"): how a swap builds the new instance: "reload" (fresh model
  from the spec) or "copy" (deep copy of the current one, falling back to reload).
- ``locate_objects`` (true): fill the object locations of each answer.
- ``camera_info_topic`` ("camera_info"): intrinsics for the 3D points (QoS ``image_qos``).
- ``depth_topic`` (""): depth images for the 3D points ("" = none: depth from the request's
  depth image or the scene state's object poses only).
- ``torch_threads`` (0): torch intra-op threads (0 = torch default). On a CPU shared with
  other busy processes, 1 avoids OpenMP stalls (measured: ~0.4 ms vs ~100 ms per query of a
  tiny model at load average 6 on 2 cores).
- ``query_threads`` (4, read-only): executor threads answering queries in parallel (topics and
  swaps share them).
- ``query_deadline`` (10.0, read-only): seconds a request may take until it holds the model;
  later it is answered "deadline exceeded".
- ``max_image_side`` (4096, read-only), ``max_image_pixels`` (2097152 = 2048 x 1024, a 1920x1080
  frame fits; read-only): largest request image, camera frame (raw or compressed: its header
  size), depth image and camera_info image size accepted. Requests of ~20 MB and more (e.g. a
  2048x2048 image with a 32FC1 depth image) were measured to delay other clients' calls by ~2 s
  on loopback DDS whether the node accepts them or not (lost fragments are repaired late), hence
  the default.
- ``max_scene_objects`` (256, read-only): scene states with more objects are dropped.
"""

from __future__ import annotations

import collections
import copy
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Deque, Optional, Tuple

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.serialization import deserialize_message
from rclpy.task import Future
from rls3_msgs.msg import AdapterInfo, SceneState as SceneStateMsg
from rls3_msgs.srv import SetAdapter, SpatialQuery
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from rls3_ros.ros.annotate import draw_annotation, find_object, scene_object_names
from rls3_ros.ros.cdr_peek import scene_state_prefix
from rls3_ros.ros.conversions import msg_to_scene, stamp_to_ns
from rls3_ros.ros.grounding_msgs import GroundingInputs, labelled_locations, locate, set_locations
from rls3_ros.core.image_codec import (
    ImageConversionError,
    ImageLimits,
    check_image_msg,
    image_msg_to_rgb,
    numpy_to_image_msg,
)
from rls3_ros.ros.node_main import run_node
from rls3_ros.core.scene import SceneState
from rls3_ros.vlm.adapter_trust import (
    AdapterLimits,
    AdapterPolicy,
    AdapterRefused,
    BaseIdentity,
    StagedAdapter,
    base_identity,
    load_staged,
    parse_roots,
    refusal_reason,
    stage_adapter_bounded,
)
from rls3_ros.vlm.answers import (
    QueryAnswer,
    QueryError,
    QueryRequest,
    answer_query,
    check_limits,
    check_query,
    load_model,
    prepare_image,
)
from rls3_ros.vlm.interface import SpatialVLM
from rls3_ros.ros.service_qos import SERVICE_QOS

IMAGE_QOS = {
    "sensor_data": qos_profile_sensor_data,
    "reliable": QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST),
    "system_default": qos_profile_system_default,
}
IMAGE_TRANSPORTS = {"raw": Image, "compressed": CompressedImage}
ADAPTER_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


@dataclass
class LoadedModel:
    """A model instance with its own inference lock (queries on one instance are serialised)."""

    model: SpatialVLM
    adapter: str
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class RefusedFrame:
    """A camera frame over the image limits, kept in the frame buffer instead of its pixels: its
    header (for lookups by stamp) and why it cannot be used."""

    header: Header
    reason: str


MAX_QUERY_THREADS = 64


def _is_empty_image(msg: Image) -> bool:
    return msg.width == 0 and msg.height == 0 and len(msg.data) == 0


def _shown(path: str) -> str:
    """A requested path for messages and logs (repr, cut at 200 characters)."""
    path = str(path)
    return repr(path) if len(path) <= 200 else repr(path[:200]) + "..."


def _set_torch_threads(node, n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)
        node.get_logger().info(f"torch intra-op threads: {n}")


class SpatialQueryNode(LifecycleNode):
    """Lifecycle node answering ``~/query`` with a SpatialVLM (see module docstring)."""

    def __init__(self, node_name: str = "spatial_query", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        d = self._declare
        d("model", "grounded:serving", "model spec: 'grounded:serving' (default: trained on every relation), 'grounded' "
                                       "(the weak base of the RLS3 loop), 'embedded', a model directory / HF id, or "
                                       "py:<module>:<fn>[:<arg>] (read-only: set at start only)", read_only=True)
        d("adapter", "", "LoRA adapter directory loaded at activation ('' = base model)", read_only=True)
        d("adapter_roots", ["runs"], "directories adapters may be loaded from (set_adapter, announcements)",
          read_only=True, dynamic_typing=True)
        d("adapter_load_timeout", 60.0, "seconds an adapter's files may take to read", read_only=True)
        d("max_adapter_rank", 256, "largest LoRA rank accepted", read_only=True)
        d("max_adapter_mb", 256, "largest adapter weights file accepted [MiB]", read_only=True)
        d("autostart", True, "configure and activate at start (no lifecycle manager needed)")
        d("image_topic", "image_raw", "camera topic used when a request has no image")
        d("image_qos", "sensor_data", "QoS of the camera subscription: sensor_data | reliable | system_default")
        d("image_transport", "raw", "camera message type: raw (sensor_msgs/Image) | compressed (sensor_msgs/CompressedImage)")
        d("frame_buffer", 30, "camera frames kept for lookup by stamp")
        d("frame_tolerance", 0.1, "max |stamp difference| [s] between a requested stamp and a buffered frame")
        d("scene_topic", "scene_state", "scene states (object names, boxes)")
        d("scene_tolerance", 0.1, "max |stamp difference| [s] between a query's image and the scene state used for it")
        d("follow_adapter_topic", True, "switch to adapters announced by the trainer")
        d("adapter_topic", "adapter", "topic of the trainer's adapter announcements")
        d("publish_annotated", False, "publish ~/annotated images of each answer")
        d("load_retry_period", 5.0, "seconds between model load attempts while it cannot be loaded")
        d("swap_mode", "reload", "reload (fresh instance from the spec) | copy (deep copy, fallback reload)")
        d("torch_threads", 0, "torch intra-op threads (0 = torch default); 1 avoids stalls on a busy shared CPU")
        d("locate_objects", True, "answer with the subject's and reference's locations (2D box/point, 3D point)")
        d("camera_info_topic", "camera_info", "camera intrinsics for the 3D points of the object locations")
        d("depth_topic", "", "depth images (32FC1 m / 16UC1 mm) for the 3D points ('' = none)")
        d("query_threads", 4, "executor threads answering queries in parallel", read_only=True)
        d("query_deadline", 10.0, "seconds a request may take until it holds the model; then 'deadline exceeded'",
          read_only=True)
        d("max_image_side", 4096, "largest image side [px] accepted (request, camera frame, depth, camera_info)",
          read_only=True)
        d("max_image_pixels", 2048 * 1024, "largest image width x height [px] accepted", read_only=True)
        d("max_scene_objects", 256, "scene states with more objects are dropped", read_only=True)
        _set_torch_threads(self, int(self._p("torch_threads")))
        # read once: the model spec (py: runs code) is the operator's, never a later parameter change
        self._model_spec = str(self._p("model"))
        self._start_cwd = os.getcwd()
        self._adapter_policy: Optional[AdapterPolicy] = None  # built on configure
        self._base: Optional[BaseIdentity] = None  # the served base (adapters must record it)

        self._model_lock = threading.Lock()  # guards self._loaded (the reference swap)
        self._loaded: Optional[LoadedModel] = None
        self._wanted_adapter = ""  # adapter to load with the model (activation, announcements before ready)
        self._active = False
        self._load_status = "not loaded (node not active)"
        self._load_stop = threading.Event()
        self._load_thread: Optional[threading.Thread] = None
        self._frames: Deque = collections.deque(maxlen=30)  # Image or CompressedImage (image_transport)
        self._scenes: Deque[Tuple[int, SceneState]] = collections.deque(maxlen=30)  # (stamp ns, valid scene)
        self._n_bad_scenes = 0
        self._n_refused_frames = 0
        self._limits = ImageLimits()  # from max_image_side / max_image_pixels on configure
        self._grounding = GroundingInputs()
        self._buf_lock = threading.Lock()
        self._subs = []
        self._annotated_pub = None
        self._n_queries = 0
        self._n_failed = 0

        self._query_group = ReentrantCallbackGroup()
        self._swap_group = MutuallyExclusiveCallbackGroup()
        self._topic_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SpatialQuery, "~/query", self._on_query, callback_group=self._query_group, qos_profile=SERVICE_QOS)
        self.create_service(SetAdapter, "~/set_adapter", self._on_set_adapter, callback_group=self._swap_group, qos_profile=SERVICE_QOS)

        if self.get_parameter("autostart").value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def _declare(self, name, default, description, read_only=False, dynamic_typing=False):
        self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=read_only,
                                                                  dynamic_typing=dynamic_typing))

    def _p(self, name):
        return self.get_parameter(name).value

    def query_threads(self) -> int:
        """Executor threads for ``run_node`` (``query_threads``, clamped to 1 .. 64)."""
        return max(1, min(MAX_QUERY_THREADS, int(self._p("query_threads"))))

    def _limit_settings(self) -> list:
        """Errors of the limit parameters; sets the image limits when they are valid."""
        errors = []
        if not 1 <= int(self._p("query_threads")) <= MAX_QUERY_THREADS:
            errors.append(f"query_threads must be 1 .. {MAX_QUERY_THREADS}")
        deadline = float(self._p("query_deadline"))
        if not (deadline > 0 and deadline < float("inf")):
            errors.append("query_deadline must be a finite number of seconds > 0")
        side, pixels = int(self._p("max_image_side")), int(self._p("max_image_pixels"))
        if side < 16:
            errors.append("max_image_side must be >= 16 (the smallest image answered is 16x16 px)")
        if pixels < 256:
            errors.append("max_image_pixels must be >= 256 (16x16 px)")
        if int(self._p("max_scene_objects")) < 1:
            errors.append("max_scene_objects must be >= 1")
        if not errors:
            self._limits = ImageLimits(side, pixels)
            self._grounding.limits = self._limits
        return errors

    # -- lifecycle transitions -------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters; create the camera, scene-state and adapter subscriptions and
        the annotated publisher. No model is loaded yet."""
        errors = []
        if not str(self._p("model")).strip():
            errors.append("model must not be empty (e.g. 'embedded')")
        if self._p("image_qos") not in IMAGE_QOS:
            errors.append(f"image_qos {self._p('image_qos')!r} unknown; use one of {', '.join(IMAGE_QOS)}")
        if self._p("image_transport") not in IMAGE_TRANSPORTS:
            errors.append(f"image_transport {self._p('image_transport')!r} unknown; use one of {', '.join(IMAGE_TRANSPORTS)}")
        if int(self._p("frame_buffer")) < 1:
            errors.append("frame_buffer must be >= 1")
        if float(self._p("frame_tolerance")) < 0:
            errors.append("frame_tolerance must be >= 0")
        if float(self._p("scene_tolerance")) < 0:
            errors.append("scene_tolerance must be >= 0")
        if float(self._p("load_retry_period")) <= 0:
            errors.append("load_retry_period must be > 0")
        if self._p("swap_mode") not in ("reload", "copy"):
            errors.append("swap_mode must be 'reload' or 'copy'")
        errors += self._limit_settings()
        errors += self._adapter_settings()
        if errors:
            for e in errors:
                self.get_logger().error(f"bad parameter: {e}")
            return TransitionCallbackReturn.FAILURE
        with self._buf_lock:
            self._frames = collections.deque(maxlen=int(self._p("frame_buffer")))
            self._scenes = collections.deque(maxlen=int(self._p("frame_buffer")))
        image_topic = self._p("image_topic")
        events = SubscriptionEventCallbacks(incompatible_qos=lambda ev: self._incompatible_qos(image_topic, ev))
        self._subs = [
            self.create_subscription(
                IMAGE_TRANSPORTS[self._p("image_transport")], image_topic, self._on_image, IMAGE_QOS[self._p("image_qos")],
                callback_group=self._topic_group, event_callbacks=events,
            ),
            self.create_subscription(SceneStateMsg, self._p("scene_topic"), self._on_scene_raw, 10,
                                     callback_group=self._topic_group, raw=True),  # object count read before deserializing
        ]
        self._grounding.resize(int(self._p("frame_buffer")))
        if self._p("locate_objects"):
            qos = IMAGE_QOS[self._p("image_qos")]
            self._subs.append(self.create_subscription(CameraInfo, self._p("camera_info_topic"), self._grounding.on_camera_info,
                                                       qos, callback_group=self._topic_group))
            if str(self._p("depth_topic")).strip():
                self._subs.append(self.create_subscription(Image, self._p("depth_topic"), self._grounding.on_depth, qos,
                                                           callback_group=self._topic_group))
        if self._p("follow_adapter_topic"):
            self._subs.append(
                self.create_subscription(AdapterInfo, self._p("adapter_topic"), self._on_adapter_announced, ADAPTER_QOS,
                                         callback_group=self._swap_group)
            )
        if self._p("publish_annotated"):
            self._annotated_pub = self.create_lifecycle_publisher(Image, "~/annotated", 5)
        self.get_logger().info(
            f"configured: model={self._p('model')!r} adapter={self._p('adapter')!r} image_topic={image_topic!r} "
            f"({self._p('image_transport')}, {self._p('image_qos')}) follow_adapter_topic={self._p('follow_adapter_topic')}"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start loading base model + adapter on a background thread (retried every
        ``load_retry_period`` s until it works); queries answer "not ready" meanwhile."""
        self._active = True
        with self._model_lock:
            self._wanted_adapter = str(self._p("adapter")).strip()
        self._start_loader()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop loading, free the model; queries answer "not active" until reactivated."""
        self._active = False
        self._stop_loader()
        self._free_model()
        self.get_logger().info("deactivated: model freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy subscriptions and publishers, drop buffered frames and scenes."""
        self._destroy_entities()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything (from any state)."""
        self._active = False
        self._stop_loader()
        self._free_model()
        self._destroy_entities()
        return super().on_shutdown(state)

    def close(self) -> None:
        """Called by ``run_node`` on exit."""
        self._active = False
        self._stop_loader()
        self._free_model()

    def _destroy_entities(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._annotated_pub is not None:
            self.destroy_lifecycle_publisher(self._annotated_pub)
            self._annotated_pub = None
        with self._buf_lock:
            self._frames.clear()
            self._scenes.clear()
        self._grounding.clear()

    def _adapter_settings(self) -> list:
        """Errors of the adapter parameters; builds the adapter policy (roots resolved against the
        working directory at start, plus the start-up ``adapter`` itself)."""
        try:
            roots = list(parse_roots(self._p("adapter_roots")))
            startup = str(self._p("adapter")).strip()
            if startup:
                roots.append(os.path.join(self._start_cwd, startup))
            rank, mb, timeout = self._p("max_adapter_rank"), self._p("max_adapter_mb"), self._p("adapter_load_timeout")
            if not 1 <= int(rank) <= 4096:
                return [f"max_adapter_rank must be in 1..4096 (got {rank})"]
            if not 1 <= int(mb) <= 65536:
                return [f"max_adapter_mb must be in 1..65536 (got {mb})"]
            if not float(timeout) > 0:
                return [f"adapter_load_timeout must be > 0 (got {timeout})"]
            limits = AdapterLimits(max_rank=int(rank), max_weights_bytes=int(mb) << 20)
            self._adapter_policy = AdapterPolicy.for_roots(roots, base_dir=self._start_cwd, limits=limits)
        except (ValueError, TypeError) as e:
            return [str(e)]
        return []

    def _stage(self, path: str) -> StagedAdapter:
        """The checked, staged copy of adapter ``path`` (AdapterRefused with a reason otherwise)."""
        if self._adapter_policy is None:
            raise AdapterRefused("node not configured: no adapter roots")
        return stage_adapter_bounded(path, self._adapter_policy, self._base, float(self._p("adapter_load_timeout")))

    # -- model loading -----------------------------------------------------------------------
    def _start_loader(self) -> None:
        self._stop_loader()
        self._load_stop = threading.Event()
        self._load_thread = threading.Thread(target=self._load_loop, args=(self._load_stop,), daemon=True, name="vlm-loader")
        self._load_thread.start()

    def _stop_loader(self) -> None:
        self._load_stop.set()
        t = self._load_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30.0)
        self._load_thread = None

    def _free_model(self) -> None:
        with self._model_lock:
            self._loaded = None
        self._load_status = "not loaded (node not active)"
        gc.collect()

    def _load_loop(self, stop: threading.Event) -> None:
        spec = self._model_spec
        period = float(self._p("load_retry_period"))
        attempt = 0
        while not stop.is_set():
            attempt += 1
            self._load_status = f"loading model {spec!r} (attempt {attempt})"
            t0 = time.monotonic()
            try:
                model = load_model(spec)
                self._base = base_identity(model)  # before any adapter: what announced adapters must fit
            except Exception as e:  # noqa: BLE001 - any failure: report and retry
                self._load_status = (f"model {spec!r} not available (attempt {attempt}: {type(e).__name__}: {e}); "
                                     f"retrying every {period:.1f} s")
                self.get_logger().warning(self._load_status)
                stop.wait(period)
                continue
            while not stop.is_set():
                with self._model_lock:
                    want = self._wanted_adapter
                active = ""
                if want:
                    try:
                        with self._stage(want) as staged:
                            active = load_staged(model, staged)
                    except Exception as e:  # noqa: BLE001
                        model.reset_adapter()
                        self.get_logger().error(f"adapter {_shown(want)} not loaded ({refusal_reason(e)}); "
                                                "serving the base model")
                with self._model_lock:
                    if self._wanted_adapter != want:  # an announcement arrived meanwhile
                        continue
                    if stop.is_set():
                        return
                    self._loaded = LoadedModel(model, active)
                self._load_status = "ready"
                self.get_logger().info(
                    f"model ready: model={spec!r} adapter={active!r} ({time.monotonic() - t0:.2f} s, attempt {attempt})"
                )
                return

    def _current(self) -> Optional[LoadedModel]:
        with self._model_lock:
            return self._loaded

    def _build_swapped(self, current: LoadedModel, staged: Optional[StagedAdapter]) -> SpatialVLM:
        """A new model instance with the checked adapter ``staged`` (None = base), built off the query path."""
        if self._p("swap_mode") == "copy":
            try:
                with current.lock:
                    new = copy.deepcopy(current.model)
                new.reset_adapter()
                if staged is not None:
                    load_staged(new, staged)
                return new
            except AdapterRefused:
                raise
            except Exception as e:  # noqa: BLE001 - fall back to a fresh instance
                self.get_logger().warning(f"swap by copy failed ({type(e).__name__}: {e}); reloading the model")
        new = load_model(self._model_spec)
        if staged is not None:
            load_staged(new, staged)
        return new

    def _swap_adapter(self, path: str) -> Tuple[bool, str, str]:
        """(success, message, active adapter) of switching to ``path``; the old model stays on failure."""
        current = self._current()
        if not self._active:
            return False, "node is not active", ""
        if current is None:
            return False, f"model not ready: {self._load_status}", ""
        path = path.strip()
        t0 = time.monotonic()
        staged = None
        try:
            if path:  # every check (roots, files, limits, base) before any work, the read bounded in time
                staged = self._stage(path)
            new = self._build_swapped(current, staged)
        except AdapterRefused as e:
            return False, f"adapter {_shown(path)} refused: {e}; kept adapter {current.adapter!r}", current.adapter
        except Exception as e:  # noqa: BLE001
            return (False, f"cannot load adapter {_shown(path)}: {refusal_reason(e)}; kept adapter {current.adapter!r}",
                    current.adapter)
        finally:
            if staged is not None:
                staged.cleanup()
        active = staged.source if staged is not None else ""
        with self._model_lock:
            if not self._active:
                return False, "node was deactivated during the swap", ""
            self._loaded = LoadedModel(new, active)
        self.get_logger().info(f"adapter switched: {current.adapter!r} -> {active!r} ({time.monotonic() - t0:.2f} s)")
        return True, f"adapter {active!r} active", active

    # -- callbacks ---------------------------------------------------------------------------
    def _incompatible_qos(self, topic, event) -> None:
        self.get_logger().warning(
            f"incompatible QoS on {topic!r}: a publisher offers a QoS this subscription ({self._p('image_qos')}) "
            f"cannot match (policy {getattr(event, 'last_policy_kind', '?')}); no frames will arrive. "
            "Set image_qos to match the camera (e.g. 'reliable' or 'sensor_data')."
        )

    def _on_image(self, msg) -> None:  # Image or CompressedImage
        """Buffer a camera frame; one over the image limits (Image header size, compressed stream
        header size) is kept as a ``RefusedFrame`` (stamp + reason, no pixels)."""
        try:
            check_image_msg(msg, self._limits)
        except ImageConversionError as e:
            self._n_refused_frames += 1
            kind = "compressed image" if isinstance(msg, CompressedImage) else "image"
            msg = RefusedFrame(msg.header, f"bad {kind}: {e}")
            self.get_logger().warning(f"camera frame refused: {msg.reason} ({self._n_refused_frames} so far)",
                                      throttle_duration_sec=5.0)
        with self._buf_lock:
            self._frames.append(msg)

    def _drop_scene(self, stamp_ns: int, scene_id: str, n_objects: int, limit: int) -> None:
        self._n_bad_scenes += 1
        self.get_logger().warning(
            f"dropped scene_state (stamp {stamp_ns / 1e9:.3f}, scene {scene_id[:80]!r}): {n_objects} objects > "
            f"max_scene_objects {limit} ({self._n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)

    def _on_scene_raw(self, data: bytes) -> None:
        """A serialized scene state: one with more than ``max_scene_objects`` objects is dropped on
        its CDR object count, before deserialization (rclpy would hold the GIL ~0.1 ms per object)."""
        limit = int(self._p("max_scene_objects"))
        prefix = scene_state_prefix(data)
        if prefix is not None and prefix.n_objects > limit:
            self._drop_scene(prefix.sec * 10**9 + prefix.nanosec, prefix.scene_id, prefix.n_objects, limit)
            return
        try:
            msg = deserialize_message(data, SceneStateMsg)
        except Exception as e:  # noqa: BLE001 - malformed bytes: drop them
            self._n_bad_scenes += 1
            self.get_logger().warning(f"dropped scene_state: cannot deserialize ({type(e).__name__}) "
                                      f"({self._n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)
            return
        self._on_scene(msg)

    def _on_scene(self, msg: SceneStateMsg) -> None:
        """Keep a scene state only if it converts (usable camera info, finite numbers) and has at
        most ``max_scene_objects`` objects (counted before conversion): a bad one is dropped here,
        so it can never fail or stall a later query."""
        limit = int(self._p("max_scene_objects"))
        if len(msg.objects) > limit:
            self._drop_scene(stamp_to_ns(msg.header.stamp), msg.scene_id, len(msg.objects), limit)
            return
        try:
            scene = msg_to_scene(msg)
        except Exception as e:  # noqa: BLE001 - MessageConversionError and anything else: drop it
            self._n_bad_scenes += 1
            self.get_logger().warning(
                f"dropped scene_state (stamp {stamp_to_ns(msg.header.stamp) / 1e9:.3f}, scene {msg.scene_id[:80]!r}): "
                f"{' '.join(str(e).split())[:300]} ({self._n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)
            return
        with self._buf_lock:
            self._scenes.append((stamp_to_ns(msg.header.stamp), scene))

    async def _off_executor(self, fn, *args):
        """``fn(*args)`` on a worker thread, awaited: the executor serves other callbacks
        (queries) while this coroutine is suspended. The worker wakes the executor when done
        (an awaited rclpy Future is only polled when the executor wakes up)."""
        done: Future = Future()
        executor = self.executor

        def work() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - re-raised in the awaiting coroutine
                done.set_exception(e)
            if executor is not None:
                try:
                    executor.wake()
                except Exception:  # noqa: BLE001 - executor shut down meanwhile
                    pass

        threading.Thread(target=work, daemon=True, name="adapter-swap").start()
        return await done

    async def _on_adapter_announced(self, msg: AdapterInfo) -> None:
        with self._model_lock:
            cur = self._loaded
            if cur is None:  # not loaded yet: the loader picks this adapter up
                self._wanted_adapter = msg.path
        if cur is None:
            self.get_logger().info(f"announced adapter {_shown(msg.path)} (iteration {msg.iteration}) will be loaded "
                                   "with the model")
            return
        if cur.adapter == msg.path:
            return
        ok, message, _ = await self._off_executor(self._swap_adapter, msg.path)
        # one logging call site per severity: rclpy refuses a call site whose severity changes
        if ok:
            self.get_logger().info(f"announced adapter (iteration {msg.iteration}): {message}")
        else:
            self.get_logger().error(f"announced adapter (iteration {msg.iteration}) not loaded: {message}")

    async def _on_set_adapter(self, req: SetAdapter.Request, resp: SetAdapter.Response) -> SetAdapter.Response:
        try:
            resp.success, resp.message, resp.active_adapter = await self._off_executor(self._swap_adapter, req.path)
        except Exception as e:  # noqa: BLE001 - never raise out of a callback
            resp.success, resp.message = False, f"internal error: {type(e).__name__}: {e}"
        if not resp.success:
            self.get_logger().warning(f"set_adapter {_shown(req.path)} failed: {resp.message}")
        return resp

    def _frame_for(self, stamp_ns: int) -> Tuple[Optional[object], str]:
        topic = self.resolve_topic_name(str(self._p("image_topic")))
        with self._buf_lock:
            frames = list(self._frames)
        if not frames:
            return None, (f"request has no image and no frame was received on {topic!r} "
                          f"(QoS {self._p('image_qos')}); send an image or check the camera topic")
        if stamp_ns == 0:
            return frames[-1], ""
        best = min(frames, key=lambda f: abs(stamp_to_ns(f.header.stamp) - stamp_ns))
        dt = abs(stamp_to_ns(best.header.stamp) - stamp_ns) / 1e9
        if dt > float(self._p("frame_tolerance")):
            lo = min(stamp_to_ns(f.header.stamp) for f in frames) / 1e9
            hi = max(stamp_to_ns(f.header.stamp) for f in frames) / 1e9
            return None, (f"no frame on {topic!r} within {float(self._p('frame_tolerance')):.3f} s of stamp "
                          f"{stamp_ns / 1e9:.3f} (buffer holds {len(frames)} frames, {lo:.3f}..{hi:.3f})")
        return best, ""

    def _scene_for(self, stamp_ns: int) -> Tuple[Optional[SceneState], str]:
        """(the scene state nearest ``stamp_ns`` within ``scene_tolerance``, or None and why not)."""
        with self._buf_lock:
            scenes = list(self._scenes)
        topic = self.resolve_topic_name(str(self._p("scene_topic")))
        if not scenes:
            return None, f"no scene_state received on {topic!r}"
        tol = float(self._p("scene_tolerance"))
        best_ns, best = min(scenes, key=lambda s: abs(s[0] - stamp_ns))
        dt = abs(best_ns - stamp_ns) / 1e9
        if dt <= tol:
            return best, ""
        return None, (f"no scene_state on {topic!r} within {tol:.3f} s of the image stamp {stamp_ns / 1e9:.3f} "
                      f"(nearest {dt:.3f} s away)")

    def _on_query(self, req: SpatialQuery.Request, resp: SpatialQuery.Response) -> SpatialQuery.Response:
        t0 = time.monotonic()
        try:
            self._answer(req, resp, t0 + float(self._p("query_deadline")))
        except Exception as e:  # noqa: BLE001 - never raise out of a callback
            resp.success, resp.message = False, f"internal error: {type(e).__name__}: {e}"
            self.get_logger().error(f"query failed internally: {resp.message}")
        self._n_queries += 1
        if not resp.success:
            self._n_failed += 1
            if self._loaded is None or not self._active:  # a client polling a loading node: keep the log short
                self.get_logger().info(f"query rejected: {resp.message}", throttle_duration_sec=2.0)
            else:
                self.get_logger().info(f"query {req.query_type[:40]!r} rejected: {resp.message}")
        else:
            self.get_logger().debug(f"query {req.query_type[:40]!r} answered in {1e3 * (time.monotonic() - t0):.1f} ms")
        return resp

    def _answer(self, req: SpatialQuery.Request, resp: SpatialQuery.Response, deadline: float) -> None:
        """Answer ``req`` into ``resp``: limits first (texts, candidates, image header size), then
        the conversion and the lock-free image work, then the model under its lock (waited for
        until ``deadline``, time.monotonic()), then the 3D points and the annotation."""
        resp.header = req.header
        if not self._active:
            state = self._state_machine.current_state[1] if hasattr(self, "_state_machine") else "?"
            resp.success, resp.message = False, (f"node is not active (lifecycle state {state!r}); "
                                                 "configure and activate it or start it with autostart:=true")
            return
        loaded = self._current()
        if loaded is None:
            resp.success, resp.message = False, f"model not ready: {self._load_status}"
            return
        resp.adapter = loaded.adapter
        q = QueryRequest(req.query_type, req.subject, req.reference, req.relation, list(req.candidates))
        try:
            check_limits(q)  # texts and candidates: before anything is converted
        except QueryError as e:
            resp.success, resp.message = False, str(e)
            return
        if _is_empty_image(req.image):
            frame, why = self._frame_for(stamp_to_ns(req.header.stamp))
            if frame is None:
                resp.success, resp.message = False, why
                return
        else:
            frame = req.image
        resp.header = frame.header if (frame.header.frame_id or stamp_to_ns(frame.header.stamp)) else req.header
        if isinstance(frame, RefusedFrame):  # a camera frame over the limits (checked on arrival)
            resp.success, resp.message = False, frame.reason
            return
        kind = "compressed image" if isinstance(frame, CompressedImage) else "image"
        try:
            check_image_msg(frame, self._limits)  # header sizes only: before any conversion or decoding
            image = image_msg_to_rgb(frame)  # Image or CompressedImage
        except ImageConversionError as e:
            resp.success, resp.message = False, f"bad {kind}: {e}"
            return
        if not image.flags.writeable:  # a view of the message buffer; torch wants writable arrays
            image = image.copy()
        scene, no_scene = self._scene_for(stamp_to_ns(resp.header.stamp))
        names = scene_object_names(scene) if scene is not None else None
        defaults = [o.description or o.id for o in scene.objects] if scene is not None else None

        def object_key(name: str) -> str:  # "mug_1" and "red mug" name the same scene object
            o = find_object(scene, name)
            return f"id:{o.id}" if o is not None else name.strip().lower()

        checked = check_query(loaded.model, image, q, known_objects=names, default_candidates=defaults,
                              object_key=object_key)  # names, relation, candidates: no model pass, no lock
        if isinstance(checked, QueryAnswer):
            resp.success, resp.message = False, checked.message
            return
        prepare_image(loaded.model, image)  # per-image model work that needs no lock (big images: most of it)
        locate_wanted = bool(self._p("locate_objects"))
        waited = time.monotonic()
        if deadline - waited <= 0 or not loaded.lock.acquire(timeout=deadline - waited):
            resp.success, resp.message = False, (
                f"deadline exceeded: the request did not reach the model within query_deadline "
                f"{float(self._p('query_deadline')):g} s (waited {time.monotonic() - waited:.2f} s for it; "
                "the node is busy, retry later)")
            return
        located = None
        try:  # the model's own passes only: the answer and the grounding of its two objects
            ans = answer_query(loaded.model, image, q, checked=checked)
            if ans.success and locate_wanted:
                names2 = [self._located_subject(req, ans), req.reference.strip()]
                located = (names2, *locate(loaded.model, image, names2))
        finally:
            loaded.lock.release()
        resp.success, resp.message, resp.answer = ans.success, ans.message, ans.answer
        if ans.success and scene is None:
            resp.message = f"{ans.message}; answered from the image alone ({no_scene})"
        resp.adapter = loaded.adapter
        if not ans.success:
            return
        resp.terms = list(ans.terms)
        resp.confidence = float(ans.confidence)
        resp.term_names = list(ans.term_probabilities)
        resp.term_probabilities = [float(v) for v in ans.term_probabilities.values()]
        resp.holds = bool(ans.holds)
        resp.ranked_candidates = [c for c, _ in ans.ranked]
        resp.candidate_scores = [float(s) for _, s in ans.ranked]
        if located is not None:
            self._set_locations(req, resp, image, scene, *located)
        if self._annotated_pub is not None:
            self._publish_annotated(image, resp.header, scene, req, ans.answer, ans.confidence, ans.ranked,
                                    labelled_locations([resp.subject_location, resp.reference_location]))

    @staticmethod
    def _located_subject(req, ans) -> str:
        """The subject whose location an answer carries ('what': the best candidate)."""
        return ans.ranked[0][0] if req.query_type.strip().lower() == "what" and ans.ranked else req.subject.strip()

    def _set_locations(self, req, resp, image: np.ndarray, scene, names, locs, notes) -> None:
        """Fill the subject's and reference's locations (3D points from intrinsics and depth, outside
        the model lock); notes on what is missing go to ``message``."""
        set_locations(resp, image, names, locs, notes, resp.header, req.camera_info, req.depth, self._grounding, scene,
                      float(self._p("frame_tolerance")), self._limits.max_side)
        if notes:
            resp.message = f"{resp.message}; " + "; ".join(notes)

    def _publish_annotated(self, image: np.ndarray, header: Header, scene, req, text, confidence, ranked,
                           located=()) -> None:
        names = [req.subject, req.reference] if req.query_type.strip().lower() != "what" else [
            ranked[0][0] if ranked else "", req.reference]
        boxes = []
        for n in names:
            o = find_object(scene, n)
            if o is not None:
                boxes.append((n, tuple(int(v) for v in o.bbox)))
        try:
            self._annotated_pub.publish(numpy_to_image_msg(draw_annotation(image, boxes, text, confidence, located),
                                                           "rgb8", header))
        except Exception as e:  # noqa: BLE001 - annotation is best effort
            self.get_logger().warning(f"annotated image not published: {e}")


def main(args=None) -> int:
    # queries in parallel on query_threads executor threads (the model lock serialises only model passes)
    return run_node(SpatialQueryNode, args, num_threads=lambda node: node.query_threads())


if __name__ == "__main__":
    raise SystemExit(main())
