"""``vlm_trainer`` node: buffers captioned samples, scores them (the RL reward) and
fine-tunes the spatial VLM with LoRA, announcing the adapters that passed the promotion gate.

Topics
- subscribes ``samples`` (rls3_msgs/Sample, from the caption oracle): valid, captioned
  samples go into a bounded buffer (oldest dropped first; drops are counted and logged).
- publishes ``training_metrics`` (rls3_msgs/TrainingMetrics) after every fine-tune and
  ``adapter`` (rls3_msgs/AdapterInfo, transient local, depth 1: late joiners such as a
  restarted ``spatial_query`` get the latest adapter).

Services / actions
- ``~/score_samples`` (rls3_msgs/srv/ScoreSamples): per-relation loss / correctness /
  confidence of the current model on the given samples (the RL extrinsic reward).
- ``~/promote`` (rls3_msgs/srv/SetAdapter): announce one of the adapters this node saved on the
  adapter topic, i.e. have ``spatial_query`` serve it. The ``rl_sampler`` calls it for every adapter
  that passed the promotion gate (``rls3_ros.loop.promotion``); a path this node did not save (or
  that is not a checked adapter of this base under ``adapter_dir``) is refused with a reason.
- ``~/fine_tune`` (rls3_msgs/action/FineTune): LoRA fine-tuning on the buffer and/or the
  goal's samples. Feedback: step, total steps, loss. Cancel stops training at the next step
  (no adapter saved, the served model unchanged). Result: adapter path, samples used, final
  loss, per-term accuracy on the training batch. One goal at a time (others are rejected).
  Training runs on its own executor thread on a *second instance* of the model
  (``train_instance``), so ``~/score_samples`` keeps answering with the current model and
  cancel stays responsive; the tuned instance replaces the served one when training succeeds.
  Adapters are saved atomically (written to a temporary directory, then renamed) as
  ``<adapter_dir>/iter_XXXX`` (``_N`` suffix if that name exists), each with an
  ``rls3_adapter.json`` recording the base's fingerprint and family (``spatial_query`` only
  loads adapters that record its own base). The goal carries no model spec or path: nothing in
  it selects code or files.

Parameters: the table ``PARAMETERS`` below (name, default, type, range, read-only, doc), declared
from it (``rls3_ros.ros.node_params``); ``ros2 param describe``, ``--help`` and the table in
``docs/vlm_nodes.md`` show the same. ``model`` is read once at start: a ``py:`` spec runs code, so
only the operator's command line or params file sets it (``set_parameters`` on it is refused, and
every model instance the node builds later, e.g. a fine-tune goal's training instance, uses the
start-up spec). ``adapter`` is checked like every adapter (``rls3_ros.vlm.adapter_trust``: inside
``adapter_roots``, regular files within the caps, a plain LoRA config, safetensors weights,
``rls3_adapter.json`` with this base's fingerprint); a refused one stops the node at start (one
line, exit code 2). ``bag``: its valid, captioned samples are read at start (in bag-time order,
with :mod:`rls3_ros.bags.sample_reader`, the reader of ``rls3 finetune --bag``) into the sample
buffer (bounded by ``buffer_size``: the newest are kept, drops logged); a fine-tune goal with
``use_buffer`` trains on them as on live samples, which keep arriving on ``samples_topic``. A
missing, truncated or corrupted bag, a bag without a Sample topic or without any valid captioned
sample stops the node at start (one line, exit code 2).
"""

from __future__ import annotations

import collections
import copy
import math
import os
import threading
import time
from typing import Deque, Dict, List, Optional

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rls3_msgs.action import FineTune
from rls3_msgs.msg import AdapterInfo, RelationScore as RelationScoreMsg, Sample as SampleMsg, TrainingMetrics
from rls3_msgs.srv import ScoreSamples, SetAdapter
from std_msgs.msg import Header

from rls3_ros.ros.conversions import msg_to_sample
from rls3_ros.ros.node_main import NodeStartupError, run_node
from rls3_ros.ros.node_params import Param, declare_parameters, print_help_if_asked
from rls3_ros.core.scene import Sample
from rls3_ros.vlm.adapter_trust import (
    AdapterLimits,
    AdapterPolicy,
    base_identity,
    load_staged,
    parse_roots,
    refusal_reason,
    stage_adapter_bounded,
    write_adapter_meta,
)
from rls3_ros.vlm.answers import load_model
from rls3_ros.vlm.interface import SpatialVLM
from rls3_ros.ros.service_qos import SERVICE_QOS

PARAMETERS = [
    Param("model", "grounded:serving", "model spec: 'grounded:serving' (default, the model spatial_query serves), "
                                       "'grounded', 'embedded', a model directory / HF id, or py:<module>:<fn>[:<arg>] "
                                       "(rls3_ros.vlm.answers.load_model; set at start only)", read_only=True),
    Param("adapter", "", "adapter to start from ('' = base model; checked like every adapter, a refused one stops "
                         "the node at start)", read_only=True),
    Param("adapter_dir", "runs/adapters", "directory for saved adapters (iter_XXXX; made absolute)", read_only=True),
    Param("announce", "promoted", "promoted: announce adapters through ~/promote (after the promotion gate) | "
                                  "every: announce every saved adapter at once (unvalidated)",
          choices=("promoted", "every"), read_only=True),
    Param("adapter_roots", ["runs"], "directories adapters may be loaded from, besides adapter_dir and adapter "
                                     "(relative ones resolved against the working directory at start)",
          read_only=True, dynamic_typing=True),
    Param("adapter_load_timeout", 60.0, "seconds an adapter's files may take to read", low=0, low_open=True,
          read_only=True),
    Param("max_adapter_rank", 256, "largest LoRA rank accepted", low=1, read_only=True),
    Param("max_adapter_mb", 256, "largest adapter weights file accepted [MiB]", low=1, read_only=True),
    Param("buffer_size", 2000, "max buffered samples (oldest dropped first)", low=1),
    Param("default_steps", 100, "optimiser steps when a goal asks for 0", low=1),
    Param("batch_size", 0, "LoRA fine-tuning batch size (0 = the model's default)", low=0),
    Param("learning_rate", 0.0, "LoRA learning rate (0 = the model's default)", low=0),
    Param("max_steps", 100000, "largest accepted number of steps", low=1),
    Param("max_train_samples", 0, "train on at most this many samples, newest first (0 = all)", low=0),
    Param("score_chunk", 64, "samples per model.score call", low=1),
    Param("max_score_samples", 4096, "largest accepted score request", low=1),
    Param("train_instance", "reload", "model trained: reload (new instance from the spec + the served adapter) | "
                                      "copy (deep copy) | in_place (the served model; scoring waits during training, "
                                      "a cancelled run leaves its partial update)",
          choices=("reload", "copy", "in_place")),
    Param("train_on_copy", True, "deprecated: false = train_instance in_place"),
    Param("samples_topic", "samples", "captioned samples to buffer"),
    Param("metrics_topic", "training_metrics", "TrainingMetrics output"),
    Param("adapter_topic", "adapter", "AdapterInfo announcements (transient local)"),
    Param("torch_threads", 0, "torch intra-op threads (0 = torch default); 1 avoids stalls on a busy shared CPU"),
    Param("bag", "", "rosbag2 bag (directory, .mcap or .db3) of rls3_msgs/Sample whose valid captioned samples "
                     "fill the buffer at start ('' = none)"),
    Param("bag_topic", "", "Sample topic of the bag ('' = every rls3_msgs/Sample topic)"),
]

ADAPTER_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


def _set_torch_threads(node, n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)
        node.get_logger().info(f"torch intra-op threads: {n}")


class VlmTrainer(Node):
    """Sample buffer + score service + fine-tune action around one SpatialVLM."""

    def __init__(self, node_name: str = "vlm_trainer", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self, PARAMETERS, self._check_across)
        _set_torch_threads(self, int(self._p("torch_threads")))
        # the bag is read before the model is loaded: a bad bag fails the start at once
        self._buffer: Deque[Sample] = collections.deque(maxlen=int(self._p("buffer_size")))
        self._from_bag = self._load_bag()

        self.adapter_dir = os.path.abspath(str(self._p("adapter_dir")))
        self._adapter_policy = self._make_adapter_policy()
        lora = {}
        if int(self._p("batch_size")) > 0:
            lora["batch_size"] = int(self._p("batch_size"))
        if float(self._p("learning_rate")) > 0:
            lora["learning_rate"] = float(self._p("learning_rate"))
        self._load_options = {"lora": lora} if lora else {}
        # read once: the model spec (py: runs code) is the operator's, never a later parameter change
        self._model_spec = spec = str(self._p("model"))
        t0 = time.monotonic()
        try:
            self._model: SpatialVLM = load_model(spec, "", self._load_options)
            self._base = base_identity(self._model)  # before any adapter: what every adapter must fit
        except Exception as e:  # noqa: BLE001 - turned into a one-line startup error
            raise NodeStartupError(f"cannot load model {spec!r}: {type(e).__name__}: {e}") from e
        start_adapter = str(self._p("adapter")).strip()
        if start_adapter:
            try:
                self._load_adapter(self._model, start_adapter)
            except Exception as e:  # noqa: BLE001 - turned into a one-line startup error
                raise NodeStartupError(f"cannot load model {spec!r} with adapter {start_adapter!r}: "
                                       f"{refusal_reason(e)}") from e
        self.get_logger().info(f"model {spec!r} loaded in {time.monotonic() - t0:.2f} s (adapter {self._model.adapter!r}"
                               f"{', options ' + repr(self._load_options) if self._load_options else ''})")

        self._serve_lock = threading.Lock()  # guards self._model (scoring and the swap)
        self._buf_lock = threading.Lock()
        self._received = 0
        self._valid = 0
        self._dropped = 0
        self._skipped = 0
        self._train_lock = threading.Lock()  # one fine-tune at a time
        self._cancel: Optional[threading.Event] = None
        self._cancel_asked = threading.Event()
        self._last_loss = math.nan

        self._score_group = MutuallyExclusiveCallbackGroup()
        self._topic_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self.create_subscription(SampleMsg, self._p("samples_topic"), self._on_sample, 100, callback_group=self._topic_group)
        self.create_service(ScoreSamples, "~/score_samples", self._on_score, callback_group=self._score_group, qos_profile=SERVICE_QOS)
        self._metrics_pub = self.create_publisher(TrainingMetrics, self._p("metrics_topic"), 10)
        self._adapter_pub = self.create_publisher(AdapterInfo, self._p("adapter_topic"), ADAPTER_QOS)
        self._saved: Dict[str, int] = {}  # adapters saved by this node -> iteration (what ~/promote may announce)
        self.create_service(SetAdapter, "~/promote", self._on_promote, callback_group=self._score_group,
                            qos_profile=SERVICE_QOS)
        self._action = ActionServer(
            self, FineTune, "~/fine_tune",
            execute_callback=self._execute, goal_callback=self._on_goal, cancel_callback=self._on_cancel,
            callback_group=self._action_group,
        )
        self.get_logger().info(
            f"vlm_trainer ready: buffer_size={self._p('buffer_size')} adapter_dir={self.adapter_dir!r} "
            f"default_steps={self._p('default_steps')} buffered={self.buffered()}"
        )

    def _make_adapter_policy(self) -> AdapterPolicy:
        """Where adapters may be loaded from: ``adapter_roots`` + ``adapter_dir`` + the start-up adapter."""
        try:
            roots = list(parse_roots(self._p("adapter_roots"))) + [self.adapter_dir]
            startup = str(self._p("adapter")).strip()
            if startup:
                roots.append(os.path.abspath(startup))
            return AdapterPolicy.for_roots(roots, limits=AdapterLimits(
                max_rank=int(self._p("max_adapter_rank")), max_weights_bytes=int(self._p("max_adapter_mb")) << 20))
        except (ValueError, TypeError) as e:
            raise NodeStartupError(str(e)) from None

    def _load_adapter(self, model: SpatialVLM, path: str) -> str:
        """Check (adapter_trust), stage and activate adapter ``path`` in ``model``; returns its path."""
        staged = stage_adapter_bounded(path, self._adapter_policy, self._base, float(self._p("adapter_load_timeout")))
        with staged:
            return load_staged(model, staged)

    def _p(self, name):
        return self.get_parameter(name).value

    @staticmethod
    def _check_across(values: dict) -> dict:
        """The checks a parameter's range cannot say (``ValueError``: one line per problem)."""
        errors = [f"{name} must not be empty" for name in ("model", "adapter_dir") if not str(values[name]).strip()]
        if str(values["bag_topic"]).strip() and not str(values["bag"]).strip():
            errors.append("bag_topic is set but bag is empty (give bag:=<path>)")
        if errors:
            raise ValueError("; ".join(errors))
        return values

    def _load_bag(self) -> int:
        """Fill the buffer with the valid, captioned samples of parameter ``bag``; returns how
        many were read into it. Raises NodeStartupError (one line) when the bag is unusable."""
        bag = str(self._p("bag")).strip()
        if not bag:
            return 0
        topic = str(self._p("bag_topic")).strip()
        from rls3_ros.bags.bagio import BagError
        from rls3_ros.bags.sample_reader import iter_samples

        t0 = time.monotonic()
        path = os.path.abspath(bag)
        read = uncaptioned = 0
        try:
            # the buffer is a bounded deque: a bag larger than buffer_size keeps its newest samples
            for s in iter_samples(path, topic=topic or None, only_valid=True):
                if not s.relations:
                    uncaptioned += 1
                    continue
                read += 1
                self._buffer.append(s)
        except Exception as e:  # noqa: BLE001 - any failure is a one-line startup error
            self._buffer.clear()
            why = str(e) if isinstance(e, BagError) else f"{type(e).__name__}: {e}"
            raise NodeStartupError(f"cannot read samples from bag {bag!r}: {' '.join(why.split())}") from None
        where = f"topic {topic!r}" if topic else "every rls3_msgs/Sample topic"
        if read == 0:
            raise NodeStartupError(f"bag {bag!r} ({where}) holds no valid captioned samples"
                                   f"{f' ({uncaptioned} valid without relations)' if uncaptioned else ''}")
        dropped = read - len(self._buffer)
        self.get_logger().info(
            f"loaded {len(self._buffer)} captioned samples from bag {path!r} ({where}) in {time.monotonic() - t0:.2f} s"
            f"{f'; {uncaptioned} without relations skipped' if uncaptioned else ''}"
            f"{f'; {dropped} oldest dropped (buffer_size {self._buffer.maxlen})' if dropped else ''}"
        )
        return len(self._buffer)

    def close(self) -> None:
        """Called by ``run_node`` on exit: stop a running fine-tune."""
        if self._cancel is not None:
            self._cancel.set()

    # -- samples ----------------------------------------------------------------------------
    def _on_sample(self, msg: SampleMsg) -> None:
        self._received += 1
        if not msg.valid or len(msg.relations) == 0:
            self._skipped += 1
            return
        try:
            sample = msg_to_sample(msg)
        except ValueError as e:
            self._skipped += 1
            self.get_logger().warning(f"sample {msg.sample_id!r} skipped: {e}", throttle_duration_sec=5.0)
            return
        self._valid += 1
        with self._buf_lock:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1
                self.get_logger().warning(
                    f"sample buffer full ({self._buffer.maxlen}): dropping the oldest ({self._dropped} dropped so far)",
                    throttle_duration_sec=10.0,
                )
            self._buffer.append(sample)

    def buffered(self) -> int:
        with self._buf_lock:
            return len(self._buffer)

    # -- score service ---------------------------------------------------------------------
    def _on_score(self, req: ScoreSamples.Request, resp: ScoreSamples.Response) -> ScoreSamples.Response:
        try:
            self._score(req, resp)
        except Exception as e:  # noqa: BLE001 - never raise out of a callback
            resp.success, resp.message = False, f"scoring failed: {type(e).__name__}: {e}"
        if not resp.success:
            self.get_logger().warning(f"score_samples: {resp.message}")
        return resp

    def _score(self, req: ScoreSamples.Request, resp: ScoreSamples.Response) -> None:
        n = len(req.samples)
        if n == 0:
            resp.success, resp.message = False, "no samples given"
            return
        if n > int(self._p("max_score_samples")):
            resp.success, resp.message = False, f"{n} samples > max_score_samples {self._p('max_score_samples')}; split the request"
            return
        samples: List[Sample] = []
        for i, m in enumerate(req.samples):
            try:
                samples.append(msg_to_sample(m))
            except ValueError as e:
                resp.success, resp.message = False, f"sample {i} ({m.sample_id!r}): bad image or scene: {e}"
                return
        n_rel = sum(len(s.relations) for s in samples)
        if n_rel == 0:
            resp.success, resp.message = False, "the samples carry no relations (caption them first)"
            return
        chunk = int(self._p("score_chunk"))
        scores = []
        with self._serve_lock:
            for i in range(0, len(samples), chunk):
                scores += self._model.score(samples[i : i + chunk])
        for s in scores:
            resp.scores.append(
                RelationScoreMsg(
                    sample_id=s.sample_id, caption=s.caption, terms=list(s.terms), predicted=s.predicted,
                    loss=float(s.loss), correct=bool(s.correct), confidence=float(s.confidence),
                )
            )
        resp.mean_loss = float(sum(s.loss for s in scores) / len(scores)) if scores else math.nan
        resp.accuracy = float(sum(s.correct for s in scores) / len(scores)) if scores else math.nan
        resp.success, resp.message = True, f"scored {len(scores)} relations of {n} samples"

    # -- fine-tune action ----------------------------------------------------------------------
    def _on_goal(self, goal: FineTune.Goal) -> GoalResponse:
        if self._train_lock.locked():
            self.get_logger().warning(f"fine_tune goal (iteration {goal.iteration}) rejected: a fine-tune is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        self._cancel_asked.set()  # a client's cancel (not the node shutting down): the goal ends CANCELED
        ev = self._cancel
        if ev is not None:
            ev.set()
        self.get_logger().info("fine_tune cancel requested")
        return CancelResponse.ACCEPT

    def _training_instance(self) -> Optional[SpatialVLM]:
        """A second model instance equal to the served one (None: train in place)."""
        mode = str(self._p("train_instance")) if self._p("train_on_copy") else "in_place"
        if mode == "in_place":
            return None
        with self._serve_lock:
            current = self._model
            adapter = current.adapter
            try:
                if mode == "copy":
                    return copy.deepcopy(current)
            except Exception as e:  # noqa: BLE001
                self.get_logger().warning(f"cannot deep-copy the model ({type(e).__name__}: {e}); reloading it instead")
        try:
            model = load_model(self._model_spec, "", self._load_options)
            if adapter:
                self._load_adapter(model, adapter)
            return model
        except Exception as e:  # noqa: BLE001
            self.get_logger().warning(f"cannot load a training instance ({type(e).__name__}: {e}); training in place")
            return None

    def _adapter_path(self, iteration: int) -> str:
        base = os.path.join(self.adapter_dir, f"iter_{iteration:04d}")
        path, k = base, 1
        while os.path.exists(path):
            k += 1
            path = f"{base}_{k}"
        return path

    def _execute(self, goal_handle) -> FineTune.Result:
        if not self._train_lock.acquire(blocking=False):
            goal_handle.abort()
            return FineTune.Result(success=False, message="a fine-tune is already running")
        cancel = threading.Event()
        self._cancel_asked.clear()
        self._cancel = cancel
        try:
            return self._fine_tune(goal_handle, cancel)
        except Exception as e:  # noqa: BLE001 - report, never raise out of the action
            self.get_logger().error(f"fine_tune failed: {type(e).__name__}: {e}")
            if goal_handle.is_active:
                goal_handle.abort()
            return FineTune.Result(success=False, message=f"fine-tune failed: {type(e).__name__}: {e}")
        finally:
            self._cancel = None
            self._train_lock.release()

    def _fine_tune(self, goal_handle, cancel: threading.Event) -> FineTune.Result:
        goal: FineTune.Goal = goal_handle.request
        steps = int(goal.steps) or int(self._p("default_steps"))
        if steps > int(self._p("max_steps")):
            goal_handle.abort()
            return FineTune.Result(success=False, message=f"steps {steps} > max_steps {self._p('max_steps')}")
        samples: List[Sample] = []
        if goal.use_buffer:
            with self._buf_lock:
                samples += list(self._buffer)
        for i, m in enumerate(goal.samples):
            try:
                samples.append(msg_to_sample(m))
            except ValueError as e:
                goal_handle.abort()
                return FineTune.Result(success=False, message=f"goal sample {i} ({m.sample_id!r}) unusable: {e}")
        samples = [s for s in samples if s.relations]
        cap = int(self._p("max_train_samples"))
        if cap and len(samples) > cap:
            samples = samples[-cap:]
        if not samples:
            goal_handle.abort()
            where = "buffer empty" if goal.use_buffer else "use_buffer is false"
            return FineTune.Result(success=False, message=f"no captioned samples to train on ({where}, {len(goal.samples)} in the goal)")

        # the model to train: a separate instance (scoring goes on with the served one) or the served one
        model, in_place = self._training_instance(), False
        if model is None:
            self._serve_lock.acquire()
            model, in_place = self._model, True
        t0 = time.monotonic()
        self.get_logger().info(f"fine-tune iteration {goal.iteration}: {steps} steps on {len(samples)} samples"
                               f"{' (in place)' if in_place else ''}")
        try:
            def progress(step: int, total: int, loss: float) -> None:
                if goal_handle.is_cancel_requested:
                    cancel.set()
                goal_handle.publish_feedback(FineTune.Feedback(step=int(step), total_steps=int(total), loss=float(loss)))

            result = model.fine_tune(samples, steps, progress=progress, cancel=cancel)
            if result.cancelled or goal_handle.is_cancel_requested or cancel.is_set():
                if in_place:
                    self.get_logger().warning("cancelled in-place fine-tune: the served model keeps the partial update")
                if self._cancel_asked.is_set():
                    # the cancel callback runs before rclpy marks the goal CANCELING: wait for that
                    # (a goal can only be CANCELED from CANCELING), else it would end ABORTED
                    deadline = time.monotonic() + 5.0
                    while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                        time.sleep(0.005)  # polls the goal state rclpy sets right after the callback
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()
                else:  # stopped by the node shutting down
                    goal_handle.abort()
                msg = f"cancelled after {result.steps}/{steps} steps; no adapter saved"
                self.get_logger().info(f"fine-tune iteration {goal.iteration} {msg}")
                return FineTune.Result(success=False, message=msg, samples_used=len(samples),
                                       final_loss=float(result.final_loss))
            path = model.save_adapter(self._adapter_path(int(goal.iteration)))
            # the base it fits, for every model family (spatial_query loads no adapter without it)
            write_adapter_meta(path, self._base.fingerprint, self._base.family, self._model_spec)
            ev = model.evaluate(samples)
            if not in_place:
                with self._serve_lock:
                    self._model = model
        finally:
            if in_place:
                self._serve_lock.release()

        if goal.clear_buffer:
            used = {id(s) for s in samples}
            with self._buf_lock:
                kept = [s for s in self._buffer if id(s) not in used]
                self._buffer.clear()
                self._buffer.extend(kept)
        self._last_loss = float(result.final_loss)
        names = sorted(ev.per_term)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._metrics_pub.publish(
            TrainingMetrics(
                header=header, iteration=int(goal.iteration), generated_samples=self._received,
                valid_samples=self._valid, batch_size=len(samples), loss=self._last_loss,
                extrinsic_reward=math.nan, test_accuracy=math.nan, term_names=names,
                term_accuracy=[float(ev.per_term[t]) for t in names], adapter_path=path,
            )
        )
        self._saved[os.path.realpath(path)] = int(goal.iteration)
        every = str(self._p("announce")) == "every"
        if every:
            self._adapter_pub.publish(AdapterInfo(header=header, path=path, iteration=int(goal.iteration),
                                                  test_accuracy=math.nan))
        dt = time.monotonic() - t0
        self.get_logger().info(
            f"fine-tune iteration {goal.iteration} done in {dt:.1f} s: loss {result.final_loss:.4f}, "
            f"train accuracy {ev.accuracy:.3f}, adapter {path!r} "
            + ("announced" if every else "saved (announced once ~/promote is called for it)")
        )
        goal_handle.succeed()
        return FineTune.Result(
            success=True, message=f"{result.steps} steps in {dt:.1f} s; train accuracy {ev.accuracy:.3f}",
            adapter_path=path, samples_used=len(samples), final_loss=float(result.final_loss),
            term_names=names, term_accuracy=[float(ev.per_term[t]) for t in names],
        )


    def _on_promote(self, req: SetAdapter.Request, resp: SetAdapter.Response) -> SetAdapter.Response:
        """Announce an adapter this node saved (the promotion gate passed it)."""
        path = str(req.path or "").strip()
        real = os.path.realpath(path) if path else ""
        iteration = self._saved.get(real)
        if iteration is None and real and os.path.dirname(real) == os.path.realpath(self.adapter_dir):
            try:  # saved by an earlier run of this node (a resumed graph): checked like any adapter
                with stage_adapter_bounded(path, self._adapter_policy, self._base,
                                           float(self._p("adapter_load_timeout"))):
                    iteration = 0
            except Exception as e:  # noqa: BLE001 - answered with the reason
                resp.success, resp.message = False, f"not promoted: {refusal_reason(e)}"
                return resp
        if iteration is None:
            resp.success = False
            resp.message = "not promoted: not an adapter this trainer saved (only its own adapters can be announced)"
            self.get_logger().warning(f"promote refused: {path!r} is not one of this trainer's adapters")
            return resp
        header = Header(stamp=self.get_clock().now().to_msg())
        self._adapter_pub.publish(AdapterInfo(header=header, path=path, iteration=int(iteration), test_accuracy=math.nan))
        self.get_logger().info(f"adapter {path!r} (iteration {iteration}) promoted and announced")
        resp.success, resp.message, resp.active_adapter = True, "announced", path
        return resp


def main(args=None) -> int:
    if print_help_if_asked("vlm_trainer", PARAMETERS, args):
        return 0
    return run_node(VlmTrainer, args)


if __name__ == "__main__":
    raise SystemExit(main())
