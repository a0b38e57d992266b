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
  is untrusted input; a refusal says why and keeps the active adapter. Loading, hot swap and the
  checks of adapters from the network: ``rls3_ros.ros.served_model``.

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
  decodes to more is refused undecoded). Camera frames over the limits and scene states with more
  than ``max_scene_objects`` objects are refused on arrival (``rls3_ros.ros.stamped_buffers``).
- Each request has a deadline (``query_deadline`` s from its callback start): a request still
  waiting for the model then is answered ``success=false`` "deadline exceeded ..." instead of
  queueing on. Every limit is a read-only parameter (a remote ``set_parameters`` cannot raise it).
``model``, ``adapter`` and the adapter limits are read-only after start too: a ``py:`` model spec
runs code and only comes from the operator's command line or params file.

Topics
- subscribes ``<image_topic>`` (sensor_msgs/Image, or sensor_msgs/CompressedImage with
  ``image_transport`` "compressed", decoded only when a query uses a frame; QoS ``image_qos``;
  incompatible QoS is logged), ``scene_state`` (rls3_msgs/SceneState: object names for
  validation, candidates and annotation boxes), ``adapter`` (rls3_msgs/AdapterInfo, transient
  local; when ``follow_adapter_topic``).
- publishes ``~/annotated`` (sensor_msgs/Image, when ``publish_annotated``): the image with
  the boxes of the named objects, the model's own predicted boxes and points, the answer text and
  its confidence (``rls3_ros.ros.query_response``).
- subscribes ``camera_info_topic`` (sensor_msgs/CameraInfo) and, when ``depth_topic`` is set,
  a depth image (sensor_msgs/Image 32FC1 [m] / 16UC1 [mm], aligned with the colour image).

Object locations (``subject_location`` / ``reference_location`` of every answer; for "what"
the subject is the best candidate): 2D box, point and confidence from the model's own grounding
(``SpatialVLM.locate``; the grounded model's attention map). A model without grounding answers
with ``found=false`` and says so in ``message`` (the query still succeeds). With intrinsics and a
depth, also a 3D point in the camera optical frame (``point_3d``, the image's header); where
intrinsics and depth come from: ``rls3_ros.ros.grounding_msgs``. With both objects' 3D points and
the camera pose (the request's ``camera_orientation``, else the scene state's camera), a 'where' answer takes the axes the measured policy says from the
geometry (``where_from_geometry``; ``answer_source`` "model+geometry", else "model").

Parameters: the table ``PARAMETERS`` below (name, default, type, range, read-only, doc), declared
from it (``rls3_ros.ros.node_params``); ``ros2 param describe``, ``--help`` and the table in
``docs/vlm_nodes.md`` show the same. Out-of-range values fail the *configure* transition ("bad
parameter: ..." logged, the node stays unconfigured and can be reconfigured); a wrongly typed value
stops the node at start.
"""

from __future__ import annotations

import math
import time

import numpy as np
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
from rls3_msgs.msg import AdapterInfo, SceneState as SceneStateMsg
from rls3_msgs.srv import SetAdapter, SpatialQuery
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from rls3_ros.core.image_codec import ImageConversionError, ImageLimits, check_image_msg, image_msg_to_rgb
from rls3_ros.ros.annotate import find_object, scene_object_names
from rls3_ros.ros.conversions import stamp_to_ns
from rls3_ros.ros.grounding_msgs import GroundingInputs, labelled_locations, locate, set_locations
from rls3_ros.ros.node_main import run_node
from rls3_ros.ros.node_params import Param, attach_ranges, check, declare, print_help_if_asked
from rls3_ros.ros.query_response import annotated_image, fill_answer, located_subject, request_camera, where_with_geometry
from rls3_ros.ros.served_model import ServedModel, await_off_executor, shown
from rls3_ros.ros.service_qos import SERVICE_QOS
from rls3_ros.ros.stamped_buffers import RefusedFrame, StampedBuffers
from rls3_ros.vlm.answers import QueryAnswer, QueryError, QueryRequest, answer_query, check_limits, check_query
from rls3_ros.vlm.answers import prepare_image

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
MAX_QUERY_THREADS = 64

PARAMETERS = [
    Param("model", "grounded:serving", "model spec (rls3_ros.vlm.answers.load_model): 'grounded:serving' (default: "
                                       "trained on every relation, models/grounded_serving/README.md), 'grounded' (the "
                                       "weak base of the RLS3 loop, to serve with the loop's adapters), 'embedded', a "
                                       "model directory / HF id, or py:<module>:<fn>[:<arg>]; set at start only",
          read_only=True),
    Param("adapter", "", "adapter directory loaded at activation ('' = base model); an adapter root itself, "
                         "checked like every adapter", read_only=True),
    Param("adapter_roots", ["runs"], "directories set_adapter and announcements may load adapters from (a list, or "
                                     "one ':'-separated string; relative ones resolved against the working directory "
                                     "at start)", read_only=True, dynamic_typing=True),
    Param("adapter_load_timeout", 60.0, "seconds an adapter's files may take to read", low=0, low_open=True,
          read_only=True),
    Param("max_adapter_rank", 256, "largest LoRA rank accepted", low=1, high=4096, read_only=True),
    Param("max_adapter_mb", 256, "largest adapter weights file accepted [MiB]", low=1, high=65536, read_only=True),
    Param("autostart", True, "configure and activate at start (no lifecycle manager needed)"),
    Param("image_topic", "image_raw", "camera topic used when a request has no image"),
    Param("image_qos", "sensor_data", "QoS of the camera (and camera_info, depth) subscriptions",
          choices=tuple(IMAGE_QOS)),
    Param("image_transport", "raw", "camera message type: raw (sensor_msgs/Image) | compressed "
                                    "(sensor_msgs/CompressedImage, jpeg/png, decoded only when a query uses it)",
          choices=tuple(IMAGE_TRANSPORTS)),
    Param("frame_buffer", 30, "camera frames (and scene states) kept for lookup by stamp", low=1),
    Param("frame_tolerance", 0.1, "max |stamp difference| [s] between a requested stamp and a buffered frame", low=0),
    Param("scene_topic", "scene_state", "scene states (object names, 'what' candidates, boxes)"),
    Param("scene_tolerance", 0.1, "max |stamp difference| [s] between a query's image and the scene state used for "
                                  "it (none that close: answered from the image alone, message says so)", low=0),
    Param("follow_adapter_topic", True, "switch to adapters announced by the trainer"),
    Param("adapter_topic", "adapter", "topic of the trainer's adapter announcements"),
    Param("publish_annotated", False, "publish ~/annotated images of each answer"),
    Param("load_retry_period", 5.0, "seconds between model load attempts while it cannot be loaded", low=0,
          low_open=True),
    Param("swap_mode", "reload", "how a swap builds the new instance: reload (fresh from the spec) | copy (deep "
                                 "copy of the current one, falling back to reload)", choices=("reload", "copy")),
    Param("torch_threads", 0, "torch intra-op threads (0 = torch default); 1 avoids OpenMP stalls on a busy shared "
                              "CPU (~0.4 ms vs ~100 ms per query of a tiny model at load 6 on 2 cores)"),
    Param("locate_objects", True, "answer with the subject's and reference's locations (2D box/point, 3D point)"),
    Param("where_from_geometry", True, "answer 'where' from the two located objects' 3D points where the measured "
                                       "policy says (rls3_ros.vlm.where_geometry: on/under from the text head, the "
                                       "other axes from the points with the camera pose: request camera_orientation or "
                                       "scene state; "
                                       "answer_source tells); false: the text head only"),
    Param("camera_info_topic", "camera_info", "camera intrinsics for the 3D points of the object locations"),
    Param("depth_topic", "", "depth images (32FC1 m / 16UC1 mm) for the 3D points ('' = none: the request's depth "
                             "image or the scene state's poses only)"),
    Param("query_threads", 4, "executor threads answering queries in parallel (topics and swaps share them)", low=1,
          high=MAX_QUERY_THREADS, read_only=True),
    Param("query_deadline", 10.0, "seconds a request may take until it holds the model; then 'deadline exceeded'",
          low=0, high=math.inf, low_open=True, high_open=True, read_only=True),
    Param("max_image_side", 4096, "largest image side [px] accepted (request, camera frame, depth, camera_info; "
                                  ">= 16: the smallest image answered is 16x16 px)", low=16, read_only=True),
    Param("max_image_pixels", 2048 * 1024, "largest image width x height [px] accepted (2048 x 1024: a 1920x1080 "
                                           "frame fits; ~20 MB requests delay other clients ~2 s on loopback DDS)",
          low=256, read_only=True),
    Param("max_scene_objects", 256, "scene states with more objects are dropped on arrival", low=1, read_only=True),
]


def _set_torch_threads(node, n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)
        node.get_logger().info(f"torch intra-op threads: {n}")


class SpatialQueryNode(LifecycleNode):
    """Lifecycle node answering ``~/query`` with a SpatialVLM (see module docstring)."""

    def __init__(self, node_name: str = "spatial_query", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare(self, PARAMETERS)  # checked on configure
        _set_torch_threads(self, int(self._p("torch_threads")))
        # read once: the model spec (py: runs code) is the operator's, never a later parameter change
        self._served = ServedModel(str(self._p("model")), self._p, self.get_logger())
        self._buffers = StampedBuffers(self.get_logger())
        self._limits = ImageLimits()  # from max_image_side / max_image_pixels on configure
        self._grounding = GroundingInputs()
        self._subs = []
        self._annotated_pub = None
        self._n_queries = 0
        self._n_failed = 0

        self._query_group = ReentrantCallbackGroup()
        self._swap_group = MutuallyExclusiveCallbackGroup()
        self._topic_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SpatialQuery, "~/query", self._on_query, callback_group=self._query_group,
                            qos_profile=SERVICE_QOS)
        self.create_service(SetAdapter, "~/set_adapter", self._on_set_adapter, callback_group=self._swap_group,
                            qos_profile=SERVICE_QOS)

        if self.get_parameter("autostart").value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def _p(self, name):
        return self.get_parameter(name).value

    def query_threads(self) -> int:
        """Executor threads for ``run_node`` (``query_threads``, clamped to 1 .. 64)."""
        return max(1, min(MAX_QUERY_THREADS, int(self._p("query_threads"))))

    # -- lifecycle transitions -------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the parameters (table ranges, then the adapter roots); create the camera,
        scene-state and adapter subscriptions and the annotated publisher. No model is loaded yet."""
        errors = [] if str(self._p("model")).strip() else ["model must not be empty (e.g. 'embedded')"]
        errors += check(self, PARAMETERS)
        if not errors:
            errors += self._served.configure(self._p("adapter_roots"), str(self._p("adapter")),
                                             self._p("max_adapter_rank"), self._p("max_adapter_mb"))
        if errors:
            for e in errors:
                self.get_logger().error(f"bad parameter: {e}")
            return TransitionCallbackReturn.FAILURE
        attach_ranges(self, PARAMETERS)
        self._limits = ImageLimits(int(self._p("max_image_side")), int(self._p("max_image_pixels")))
        self._grounding.limits = self._limits
        self._buffers.resize(int(self._p("frame_buffer")))
        image_topic = self._p("image_topic")
        events = SubscriptionEventCallbacks(incompatible_qos=lambda ev: self._incompatible_qos(image_topic, ev))
        self._subs = [
            self.create_subscription(
                IMAGE_TRANSPORTS[self._p("image_transport")], image_topic,
                lambda msg: self._buffers.add_frame(msg, self._limits), IMAGE_QOS[self._p("image_qos")],
                callback_group=self._topic_group, event_callbacks=events,
            ),
            self.create_subscription(  # raw: the object count is read before deserializing
                SceneStateMsg, self._p("scene_topic"),
                lambda data: self._buffers.add_scene_raw(data, int(self._p("max_scene_objects"))), 10,
                callback_group=self._topic_group, raw=True),
        ]
        self._grounding.resize(int(self._p("frame_buffer")))
        if self._p("locate_objects"):
            qos = IMAGE_QOS[self._p("image_qos")]
            self._subs.append(self.create_subscription(CameraInfo, self._p("camera_info_topic"),
                                                       self._grounding.on_camera_info, qos,
                                                       callback_group=self._topic_group))
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
        self._served.start(str(self._p("adapter")))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop loading, free the model; queries answer "not active" until reactivated."""
        self._served.free()
        self.get_logger().info("deactivated: model freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy subscriptions and publishers, drop buffered frames and scenes."""
        self._destroy_entities()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything (from any state)."""
        self._served.free()
        self._destroy_entities()
        return super().on_shutdown(state)

    def close(self) -> None:
        """Called by ``run_node`` on exit."""
        self._served.free()

    def _destroy_entities(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._annotated_pub is not None:
            self.destroy_lifecycle_publisher(self._annotated_pub)
            self._annotated_pub = None
        self._buffers.clear()
        self._grounding.clear()

    # -- callbacks ---------------------------------------------------------------------------
    def _incompatible_qos(self, topic, event) -> None:
        self.get_logger().warning(
            f"incompatible QoS on {topic!r}: a publisher offers a QoS this subscription ({self._p('image_qos')}) "
            f"cannot match (policy {getattr(event, 'last_policy_kind', '?')}); no frames will arrive. "
            "Set image_qos to match the camera (e.g. 'reliable' or 'sensor_data')."
        )

    async def _on_adapter_announced(self, msg: AdapterInfo) -> None:
        if self._served.want_if_loading(msg.path):  # not loaded yet: the loader picks this adapter up
            self.get_logger().info(f"announced adapter {shown(msg.path)} (iteration {msg.iteration}) will be loaded "
                                   "with the model")
            return
        cur = self._served.current()
        if cur is not None and cur.adapter == msg.path:
            return
        ok, message, _ = await await_off_executor(self, self._served.swap, msg.path)
        # one logging call site per severity: rclpy refuses a call site whose severity changes
        if ok:
            self.get_logger().info(f"announced adapter (iteration {msg.iteration}): {message}")
        else:
            self.get_logger().error(f"announced adapter (iteration {msg.iteration}) not loaded: {message}")

    async def _on_set_adapter(self, req: SetAdapter.Request, resp: SetAdapter.Response) -> SetAdapter.Response:
        try:
            resp.success, resp.message, resp.active_adapter = await await_off_executor(self, self._served.swap,
                                                                                       req.path)
        except Exception as e:  # noqa: BLE001 - never raise out of a callback
            resp.success, resp.message = False, f"internal error: {type(e).__name__}: {e}"
        if not resp.success:
            self.get_logger().warning(f"set_adapter {shown(req.path)} failed: {resp.message}")
        return resp

    def _frame_for(self, stamp_ns: int):
        return self._buffers.frame_for(stamp_ns, float(self._p("frame_tolerance")),
                                       self.resolve_topic_name(str(self._p("image_topic"))), self._p("image_qos"))

    def _scene_for(self, stamp_ns: int):
        return self._buffers.scene_for(stamp_ns, float(self._p("scene_tolerance")),
                                       self.resolve_topic_name(str(self._p("scene_topic"))))

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
            if self._served.current() is None or not self._served.active:  # a client polling a loading node
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
        if not self._served.active:
            state = self._state_machine.current_state[1] if hasattr(self, "_state_machine") else "?"
            resp.success, resp.message = False, (f"node is not active (lifecycle state {state!r}); "
                                                 "configure and activate it or start it with autostart:=true")
            return
        loaded = self._served.current()
        if loaded is None:
            resp.success, resp.message = False, f"model not ready: {self._served.status}"
            return
        resp.adapter = loaded.adapter
        q = QueryRequest(req.query_type, req.subject, req.reference, req.relation, list(req.candidates))
        try:
            check_limits(q)  # texts and candidates: before anything is converted
        except QueryError as e:
            resp.success, resp.message = False, str(e)
            return
        if req.image.width == 0 and req.image.height == 0 and len(req.image.data) == 0:  # no image: a camera frame
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
                names2 = [located_subject(req, ans), req.reference.strip()]
                located = (names2, *locate(loaded.model, image, names2))
        finally:
            loaded.lock.release()
        resp.success, resp.message, resp.answer = ans.success, ans.message, ans.answer
        if ans.success and scene is None:
            resp.message = f"{ans.message}; answered from the image alone ({no_scene})"
        resp.adapter = loaded.adapter
        if not ans.success:
            return
        fill_answer(resp, ans)
        if located is not None:
            self._set_locations(req, resp, image, scene, *located)
            if checked.qt == "where" and self._p("where_from_geometry"):
                try:
                    camera = request_camera(req, scene.camera if scene is not None else None)
                    note = where_with_geometry(resp, ans, camera, checked.subject, checked.reference)
                except ValueError as e:  # a malformed orientation: the text head's answer, and why
                    note = f"terms from the text head only: {e}"
                resp.message = f"{resp.message}; {note}" if note else resp.message
        if self._annotated_pub is not None:
            self._publish_annotated(image, resp.header, scene, req, resp.answer, resp.confidence, ans.ranked,
                                    labelled_locations([resp.subject_location, resp.reference_location]))

    def _set_locations(self, req, resp, image: np.ndarray, scene, names, locs, notes) -> None:
        """Fill the subject's and reference's locations (3D points from intrinsics and depth, outside
        the model lock); notes on what is missing go to ``message``."""
        set_locations(resp, image, names, locs, notes, resp.header, req.camera_info, req.depth, self._grounding, scene,
                      float(self._p("frame_tolerance")), self._limits.max_side)
        if notes:
            resp.message = f"{resp.message}; " + "; ".join(notes)

    def _publish_annotated(self, image: np.ndarray, header, scene, req, text, confidence, ranked, located=()) -> None:
        try:
            self._annotated_pub.publish(annotated_image(image, header, scene, req, text, confidence, ranked, located))
        except Exception as e:  # noqa: BLE001 - annotation is best effort
            self.get_logger().warning(f"annotated image not published: {e}")


def main(args=None) -> int:
    if print_help_if_asked("spatial_query", PARAMETERS, args):
        return 0
    # queries in parallel on query_threads executor threads (the model lock serialises only model passes)
    return run_node(SpatialQueryNode, args, num_threads=lambda node: node.query_threads())


if __name__ == "__main__":
    raise SystemExit(main())
