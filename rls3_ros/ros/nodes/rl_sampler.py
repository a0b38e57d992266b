"""``rl_sampler`` node: the RL agent and the RLS3 scheduler, driving the node graph.

The scheduler lives inside this node (design choice: one owner for the loop's state, so a
checkpoint is one atomic write; the other nodes stay stateless servers). A worker thread runs
exactly the in-process loop (``rls3_ros.loop.runner.LoopRunner`` with the same
``RLS3Env``/agents/``Scheduler``); only the stages are ROS clients:

- simulator: ``<ns>/<reset_service>`` (rls3_msgs/srv/ResetScene) and ``<ns>/<apply_service>``
  (rls3_msgs/srv/ApplyAction) of one ``sim_bridge`` per namespace in ``bridge_namespaces``
  (several bridges = a vectorised env, stepped in parallel threads);
- captions: ``caption_service`` (rls3_msgs/srv/CaptionScene) of ``caption_oracle``;
- reward J2 and evaluation: ``score_service`` (rls3_msgs/srv/ScoreSamples) of ``vlm_trainer``;
- fine-tuning: ``fine_tune_action`` (rls3_msgs/action/FineTune) of ``vlm_trainer``.

No callback ever blocks on a service call of this node: the calls are made from the worker
thread with ``call_async`` and waited on with a timeout while the executor (multi-threaded,
``run_node``) spins the responses in. When the loop ends (budget, early stopping, max
iterations) the node logs the summary, writes the run directory (metrics, plot, report) and
shuts down with exit code 0 (``exit_when_done``); any failure (a service that never appears,
a call that times out or answers success=false) ends the node with exit code 1 and the
reason in the log, so ``rls3 launch`` stops the graph with that reason.

Topics: publishes ``training_metrics`` (rls3_msgs/TrainingMetrics) after every episode and
every fine-tune.

Parameters: the fields of the run-configuration schema ``rls3_ros.loop.config`` (``GraphRunConfig``)
flattened, one parameter per key (``python -m rls3_ros.loop.config`` lists them with defaults,
ranges and docs; ``ros2 param describe`` shows the same description and range). They are the
``loop``/``env``/``agent``/``eval`` keys of ``rls3 train`` (``agent.k`` is ``miner_k``; ``seed``
seeds both the run and the scheduler; keys unset by default keep the sampler's own default),
plus the node's ``graph`` section (stage names, run directory, timeouts; declared through
``rls3_ros.ros.node_params.declare_config_parameters``). How the graph keys behave: the fixed
sets named by ``dataset_key`` are generated through the graph from fixed seeds and cached
(``RLS3_CACHE`` or ~/.cache/rls3_ros); relative stage names and ``bridge_namespaces`` resolve in
this node's namespace (a graph pushed into a namespace keeps working; a leading "/" makes one
absolute); ``resume`` needs the vlm_trainer started on the checkpoint's adapter (its ``adapter``
parameter); with ``bridge_lost`` "wait" a bridge that stops answering (died, killed) is waited for
up to ``bridge_wait`` s (restarted by ``rls3 launch --respawn-bridges``, a launch file's respawn
or an operator), the episode's scene is rebuilt on it and the lost move counts as invalid
("bridge_lost"); with "fail" the run stops with the reason (exit 1).
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence

import rclpy
from geometry_msgs.msg import Pose
from rls3_ros.ros.rosutil import SpinSafeActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rls3_msgs.action import FineTune
from rls3_msgs.msg import TrainingMetrics
from rls3_msgs.srv import ApplyAction, CaptionScene, ResetScene, ScoreSamples, SetAdapter

from rls3_ros.ros.conversions import msg_to_relation, msg_to_scene, sample_to_msg, scene_to_msg
from rls3_ros.core.image_codec import image_msg_to_rgb
from rls3_ros.ros.node_main import run_node
from rls3_ros.ros.node_params import config_table, declare_config_parameters, print_help_if_asked
from rls3_ros.loop.config import as_train_config, config_from_params, needs_validation, to_dict
from rls3_ros.loop.env import SimSource, SimStep, bounds_from_scene
from rls3_ros.loop.scheduler import Evaluator, SchedulerCallbacks, Trainer, TrainOutcome
from rls3_ros.loop.serving import ServedAdapterFile
from rls3_ros.core.scene import quat_to_matrix
from rls3_ros.vlm.interface import FineTuneResult, RelationScore, evaluation_of
from rls3_ros.ros.service_qos import SERVICE_QOS

class StageError(RuntimeError):
    """A graph stage failed (service missing, timeout, success=false)."""


def _join(ns: str, name: str) -> str:
    """``<ns>/<name>``, relative (resolved in the node's own namespace) unless ``ns`` starts with "/"."""
    if not ns.strip("/"):
        return name
    return f"{ns.rstrip('/')}/{name.lstrip('/')}"


class _Caller:
    """Blocking calls from a worker thread; the executor resolves the futures."""

    def __init__(self, node: Node, timeout: float, stop: threading.Event):
        self.node, self.timeout, self.stop = node, timeout, stop

    def wait(self, future, timeout: float, what: str):
        ev = threading.Event()
        future.add_done_callback(lambda _f: ev.set())
        deadline = time.monotonic() + timeout
        while not ev.wait(0.1):
            if self.stop.is_set():
                future.cancel()
                raise StageError(f"{what}: node shutting down")
            if time.monotonic() > deadline:
                future.cancel()
                raise StageError(f"{what}: no answer within {timeout:.0f} s")
        exc = future.exception()
        if exc is not None:
            raise StageError(f"{what}: {exc}")
        return future.result()

    def call(self, client, request, what: str, timeout: Optional[float] = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not client.service_is_ready():
            if self.stop.is_set():
                raise StageError(f"{what}: node shutting down")
            if time.monotonic() > deadline:
                raise StageError(f"{what}: service {client.srv_name} not available")
            client.wait_for_service(timeout_sec=0.2)
        return self.wait(client.call_async(request), timeout or self.timeout, what)


class RosSimSource(SimSource):
    """One sim_bridge reached through its ResetScene / ApplyAction services."""

    def __init__(self, caller: _Caller, reset_client, apply_client, bounds: Optional[Sequence[float]] = None,
                 name: str = "sim_bridge"):
        self.caller, self.reset_client, self.apply_client = caller, reset_client, apply_client
        self.bounds = list(bounds) if bounds and len(bounds) == 6 else None
        self.name = name
        self.renders = 0
        self._scene_types: List[str] = []
        self.on_lost, self.wait_s, self.log, self.losses = "fail", 300.0, None, 0  # set by RlSampler
        self._last_reset: Optional[ResetScene.Request] = None

    def _call(self, client, req, what: str):
        """A bridge call; with ``on_lost == "wait"`` a bridge that stops answering is waited for
        (returns None once it is back: the caller rebuilds its state)."""
        try:
            if self.on_lost == "wait" and not client.service_is_ready():
                raise StageError(f"{what}: service {client.srv_name} gone")
            return self.caller.call(client, req, what)
        except StageError as e:
            if self.on_lost != "wait" or self.caller.stop.is_set():
                raise
            self.losses += 1
            log = self.log or (lambda m: None)
            log(f"{self.name} lost ({e}); waiting up to {self.wait_s:.0f} s for it to come back (bridge_lost=wait)")
            t0 = time.monotonic()
            while not (client.service_is_ready() and self.reset_client.service_is_ready()):
                if self.caller.stop.is_set():
                    raise StageError(f"{what}: node shutting down") from None
                if time.monotonic() - t0 > self.wait_s:
                    raise StageError(f"{self.name} did not come back within {self.wait_s:.0f} s after: {e}") from None
                client.wait_for_service(timeout_sec=0.5)
            log(f"{self.name} is back after {time.monotonic() - t0:.1f} s; going on")
            return None

    def reset(self, seed, scene_type=None) -> SimStep:
        req = ResetScene.Request(seed=int(seed) % (2 ** 32), scene_type=scene_type or "")
        resp = None
        while resp is None:  # None: the bridge came back after a loss, ask again
            resp = self._call(self.reset_client, req, f"{self.name} reset_scene")
        if not resp.success:
            if scene_type:  # the bridge may not build that type: let it choose
                req.scene_type = ""
                resp = self.caller.call(self.reset_client, req, f"{self.name} reset_scene")
            if not resp.success:
                raise StageError(f"{self.name} reset_scene failed: {resp.message}")
        self._last_reset = req
        self.renders += 1
        return SimStep(True, "", msg_to_scene(resp.scene), image_msg_to_rgb(resp.image))

    def apply(self, action) -> SimStep:
        pose = Pose()
        if action.position is not None:
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in action.position)
        half = float(action.yaw) / 2.0
        pose.orientation.z, pose.orientation.w = math.sin(half), math.cos(half)
        req = ApplyAction.Request(action_type=action.action_type, object_id=action.object_id,
                                  container_object_id=action.container_object_id, target_pose=pose,
                                  receptacle_id=action.receptacle_id)
        resp = self._call(self.apply_client, req, f"{self.name} apply_action")
        if resp is None:  # the bridge was lost and is back (a new process): rebuild the episode's scene
            if self._last_reset is not None:
                while self._call(self.reset_client, self._last_reset, f"{self.name} reset_scene") is None:
                    pass
            return SimStep(False, "bridge_lost", None, None)  # type: ignore[arg-type]
        self.renders += 1
        if not resp.success:
            if resp.reason == "bad_request" or resp.message.startswith("bad request"):
                # e.g. no receptacle under the target: the agent's move is invalid, the scene unchanged
                return SimStep(False, "bad_request", None, None)  # type: ignore[arg-type]
            raise StageError(f"{self.name} apply_action failed: {resp.message}")
        return SimStep(bool(resp.valid), resp.reason, msg_to_scene(resp.scene), image_msg_to_rgb(resp.image))

    def placement_bounds(self, scene):
        if self.bounds:
            return tuple(self.bounds[:3]), tuple(self.bounds[3:])
        return bounds_from_scene(scene)


def relation_score_from_msg(m) -> RelationScore:
    return RelationScore(sample_id=m.sample_id, caption=m.caption, terms=list(m.terms), predicted=m.predicted,
                         loss=float(m.loss), correct=bool(m.correct), confidence=float(m.confidence))


class RosScorer:
    def __init__(self, caller: _Caller, client, chunk: int):
        self.caller, self.client, self.chunk = caller, client, max(1, int(chunk))

    def __call__(self, samples):
        out: List[RelationScore] = []
        for i in range(0, len(samples), self.chunk):
            req = ScoreSamples.Request(samples=[sample_to_msg(s) for s in samples[i:i + self.chunk]])
            resp = self.caller.call(self.client, req, "vlm_trainer score_samples")
            if not resp.success:
                raise StageError(f"score_samples failed: {resp.message}")
            out.extend(relation_score_from_msg(m) for m in resp.scores)
        return out


class RosTrainer(Trainer):
    def __init__(self, node: Node, caller: _Caller, action_client, timeout: float):
        self.node, self.caller, self.client, self.timeout = node, caller, action_client, timeout

    def fine_tune(self, samples, steps, iteration) -> TrainOutcome:
        if not self.client.wait_for_server(timeout_sec=self.caller.timeout):
            raise StageError("fine_tune action server not available")
        goal = FineTune.Goal(iteration=int(iteration), steps=int(steps), use_buffer=False,
                             samples=[sample_to_msg(s) for s in samples], clear_buffer=False)
        losses: List[float] = []

        def feedback(fb):
            losses.append(float(fb.feedback.loss))

        handle = self.caller.wait(self.client.send_goal_async(goal, feedback_callback=feedback),
                                  self.caller.timeout, "fine_tune goal")
        if not handle.accepted:
            raise StageError("fine_tune goal rejected by vlm_trainer")
        res = self.caller.wait(handle.get_result_async(), self.timeout, "fine_tune result").result
        if not res.success:
            raise StageError(f"fine_tune failed: {res.message}")
        self.node.get_logger().info(f"fine-tune {iteration}: {res.samples_used} samples, loss {res.final_loss:.3f}, "
                                    f"adapter {res.adapter_path}")
        return TrainOutcome(FineTuneResult(steps=int(steps), samples_used=int(res.samples_used),
                                           final_loss=float(res.final_loss), losses=losses), res.adapter_path)


class RosEvaluator(Evaluator):
    def __init__(self, scorer: RosScorer, splits):
        self.scorer, self.splits = scorer, splits

    def evaluate(self, split):
        data = self.splits.get(split)
        if not data:
            return None
        return evaluation_of(self.scorer(data))


class RlSampler(Node):
    """The agent + scheduler of the RLS3 loop over the node graph (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("rl_sampler", **kwargs)
        self.p = declare_config_parameters(self)
        self.group = ReentrantCallbackGroup()
        self._stop = threading.Event()
        self.caller = _Caller(self, float(self.p["service_timeout"]), self._stop)
        self.metrics_pub = self.create_publisher(TrainingMetrics, "training_metrics", 10)
        namespaces = list(self.p["bridge_namespaces"]) or [""]
        bounds = [float(v) for v in self.p["placement_bounds"]]
        self.sources = []
        for i, ns in enumerate(namespaces):
            rc = self.create_client(ResetScene, _join(ns, self.p["reset_service"]), callback_group=self.group, qos_profile=SERVICE_QOS)
            ac = self.create_client(ApplyAction, _join(ns, self.p["apply_service"]), callback_group=self.group, qos_profile=SERVICE_QOS)
            self.sources.append(RosSimSource(self.caller, rc, ac, bounds, name=f"sim_bridge[{ns or '/'}]"))
            self.sources[-1].on_lost, self.sources[-1].wait_s = self.p["bridge_lost"], float(self.p["bridge_wait"])
            self.sources[-1].log = self.get_logger().warning
        self.caption_client = self.create_client(CaptionScene, self.p["caption_service"], callback_group=self.group, qos_profile=SERVICE_QOS)
        self.score_client = self.create_client(ScoreSamples, self.p["score_service"], callback_group=self.group, qos_profile=SERVICE_QOS)
        self.fine_tune_client = SpinSafeActionClient(self, FineTune, self.p["fine_tune_action"], callback_group=self.group)
        self.promote_client = self.create_client(SetAdapter, self.p["promote_service"], callback_group=self.group,
                                                 qos_profile=SERVICE_QOS)
        self.exit_code = 0
        self.summary: Dict[str, Any] = {}
        self.runner = None
        self._worker = threading.Thread(target=self._work, name="rl_sampler-loop", daemon=True)
        self._worker.start()

    def config(self) -> Dict[str, Any]:
        """The run configuration in the same shape as ``rls3 train``'s config.yaml."""
        p = self.p
        cfg = to_dict(config_from_params(p))
        cfg.pop("graph")
        cfg["run"] = {"agent": p["agent"], "seed": int(p["seed"]), "backend": "ros", "image_size": "bridge",
                      "n_envs": len(self.sources), "vlm": "vlm_trainer", "graph": True,
                      "bridge_namespaces": list(p["bridge_namespaces"])}
        return cfg

    # ------------------------------------------------------------------ worker
    def captioner(self, scene):
        resp = self.caller.call(self.caption_client, CaptionScene.Request(scene=scene_to_msg(scene), max_pairs=0),
                                "caption_oracle caption_scene")
        if not resp.success:
            raise StageError(f"caption_scene failed: {resp.message}")
        return [msg_to_relation(m) for m in resp.relations]

    def _wait_for_graph(self) -> None:
        deadline = time.monotonic() + float(self.p["wait_for_services"])
        clients = [(s.reset_client, s.name) for s in self.sources] + [(s.apply_client, s.name) for s in self.sources]
        clients += [(self.caption_client, "caption_oracle"), (self.score_client, "vlm_trainer")]
        for c, name in clients:
            while not c.wait_for_service(timeout_sec=0.2):
                if self._stop.is_set():
                    raise StageError("node shutting down")
                if time.monotonic() > deadline:
                    raise StageError(f"service {c.srv_name} ({name}) did not appear within {self.p['wait_for_services']} s")
        while not self.fine_tune_client.wait_for_server(timeout_sec=0.2):
            if self._stop.is_set():
                raise StageError("node shutting down")
            if time.monotonic() > deadline:
                raise StageError(f"action {self.p['fine_tune_action']} did not appear")

    def _work(self) -> None:
        log = self.get_logger()
        try:
            self._wait_for_graph()
            log.info(f"graph ready: {len(self.sources)} sim_bridge(s), agent {self.p['agent']}")
            self.summary = self._run_loop()
            log.info(f"done ({self.summary['stop_reason']}): {self.summary['iterations']} fine-tunes, "
                     f"{self.summary['valid_samples']} valid samples, {self.summary['renders']} renders; "
                     f"test accuracy base {self.summary['base_accuracy']:.3f} -> {self.summary['final_accuracy']:.3f}; "
                     f"run directory {self.summary['run_dir']}")
        except Exception as e:  # noqa: BLE001 - reported, then the node exits with code 1
            if self._stop.is_set():
                return  # shutting down (Ctrl-C): the context may be gone, nothing to report
            self.exit_code = 1
            log.error(f"RLS3 loop failed: {type(e).__name__}: {e}")
            log.debug(traceback.format_exc())
        if bool(self.p["exit_when_done"]) or self.exit_code:
            if rclpy.ok(context=self.context):
                self.context.try_shutdown()

    def _run_loop(self) -> Dict[str, Any]:
        from rls3_ros.loop.datasets import cached_split, replay_pool, term_counts
        from rls3_ros.loop.env import RLS3Env
        from rls3_ros.loop.runner import LoopRunner
        from rls3_ros.loop.run_dir import RunDir, new_run_dir, write_yaml

        p = self.p
        cfg = self.config()
        run = RunDir(p["run_dir"] or new_run_dir())
        if not p["resume"]:
            write_yaml(run.config_path, cfg)
        self.get_logger().info(f"run directory {run.path}")
        ev = cfg["eval"]
        key = str(p["dataset_key"])
        log = self.get_logger().info
        src0 = self.sources[0]
        config = as_train_config(cfg)  # the typed run configuration the loop reads
        needs_val = needs_validation(config)
        splits = {"test": cached_split(src0, self.captioner, "test", int(ev["test_scenes"]), key,
                                       int(ev["moves_per_scene"]), int(ev["test_per_term"]), log=log),
                  "val": cached_split(src0, self.captioner, "val", int(ev["val_scenes"]), key,
                                      int(ev["moves_per_scene"]), int(ev["val_per_term"]), log=log)
                  if needs_val else []}
        from rls3_ros.loop.datasets import cached_tail
        from rls3_ros.loop.runner import TAIL_PER_COMBO, VAL_TAIL_PER_COMBO

        if int(ev["tail_scenes"]):
            splits["tail"] = cached_tail(src0, self.captioner, "tail", int(ev["tail_scenes"]), key,
                                         per_combo=TAIL_PER_COMBO, log=log)
        if needs_val and int(ev["val_tail_scenes"]):
            splits["val"] = list(splits["val"]) + cached_tail(src0, self.captioner, "val_tail", int(ev["val_tail_scenes"]),
                                                              key, per_combo=VAL_TAIL_PER_COMBO, log=log)
        replay = replay_pool(src0, self.captioner, int(ev["replay_scenes"]), key, int(ev["moves_per_scene"]),
                             float(ev["replay_rare_keep"]), log=log) if float(p["replay_fraction"]) > 0 else []
        log(f"test set: {sum(len(s.relations) for s in splits['test'])} relations {term_counts(splits['test'])}")
        for s in self.sources:
            s.renders = 0
        scorer = RosScorer(self.caller, self.score_client, int(p["score_chunk"]))
        envs = [RLS3Env.from_config(config.env, src, self.captioner, scorer, T=config.loop.T, T0=config.loop.T0,
                                    seed=config.run.seed * 1000 + i, run_id=f"ros{config.run.seed}e{i}")
                for i, src in enumerate(self.sources)]
        node = self

        class _Publish(SchedulerCallbacks):
            def on_episode(self, sch, rec):
                node._publish(sch, rec.j2)

            def on_iteration(self, sch, info):
                node._publish(sch, float("nan"), info)

            def on_promotion(self, sch, decision):
                node._promote(decision.candidate)

        runner = LoopRunner(config, run, envs, RosTrainer(self, self.caller, self.fine_tune_client,
                                                       float(p["fine_tune_timeout"])),
                            RosEvaluator(scorer, splits), replay,
                            callbacks=[_Publish(), ServedAdapterFile(run.path, log=log)], progress=False, log=log)
        self.runner = runner
        try:
            if p["resume"]:
                runner.resume()
            return runner.run_loop()
        finally:
            runner.close()

    def _promote(self, path: str) -> None:
        """Have the trainer announce an adapter that passed the promotion gate (the query server serves it)."""
        try:
            res = self.caller.call(self.promote_client, SetAdapter.Request(path=path), "promote")
        except StageError as e:
            self.get_logger().error(f"promoted adapter {path!r} not announced: {e}")
            return
        if not res.success:
            self.get_logger().error(f"promoted adapter {path!r} not announced: {res.message}")

    def _publish(self, sch, j2: float, info=None) -> None:
        last = info or (sch.history[-1] if sch.history else None)
        m = TrainingMetrics()
        m.header.stamp = self.get_clock().now().to_msg()
        m.iteration = int(sch.iteration)
        m.episode = int(sch.episodes)
        m.generated_samples = int(sch.renders)
        m.valid_samples = int(sch.valid_samples)
        m.batch_size = len(sch.batch)
        m.loss = float(last.fine_tune_loss) if last else float("nan")
        m.extrinsic_reward = float(j2)
        m.test_accuracy = float(last.test_accuracy) if last else float("nan")
        if last:
            m.term_names = list(last.test_per_term)
            m.term_accuracy = [float(v) for v in last.test_per_term.values()]
            m.adapter_path = last.adapter_path
        self.metrics_pub.publish(m)

    def close(self) -> None:
        self._stop.set()
        if self.runner is not None:
            self.runner.sched.request_stop("shutdown")
        self._worker.join(timeout=5.0)


_holder: Dict[str, RlSampler] = {}


def _factory() -> RlSampler:
    node = RlSampler()
    _holder["node"] = node
    return node


_factory.__name__ = "rl_sampler"


def main(args=None) -> int:
    if print_help_if_asked("rl_sampler", config_table(), args):
        return 0
    code = run_node(_factory, args)
    node = _holder.get("node")
    if code == 0 and node is not None and node.exit_code:
        code = node.exit_code
    return code


if __name__ == "__main__":
    raise SystemExit(main())
