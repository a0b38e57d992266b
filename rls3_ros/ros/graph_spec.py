"""The node graphs as plain data: which nodes, their namespaces, parameters, remappings, respawn.

One description for both ways of starting a graph: ``rls3 launch`` (``rls3_ros.ros.launcher``,
each node a ``python -m`` process) and ``ros2 launch rls3_ros <graph>.launch.py`` (the files in
``launch/`` turn every :class:`NodeSpec` into a ``launch_ros`` Node with :func:`launch_node_kwargs`).
No ROS import here: the tests check both against this module.

Every name a node uses is relative, so a graph pushed into a namespace (``namespace``) keeps
working with any number of bridges: ``<namespace>/sim<i>/sim_bridge``, ``<namespace>/rl_sampler``
(whose ``bridge_namespaces`` ``sim<i>`` resolve inside ``<namespace>``), ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rls3_ros.sim.raster_threads import shared_raster_threads

GRAPHS = ("training", "query")
PACKAGE = "rls3_ros"


@dataclass
class NodeSpec:
    name: str  # node name (as in the params file)
    module: str  # python -m <module>; its console script is the module's last part
    namespace: str = ""  # full namespace, no leading "/" ("" = root)
    params: Dict[str, Any] = field(default_factory=dict)  # parameter overrides (typed values), after the files
    remappings: List[Tuple[str, str]] = field(default_factory=list)
    required_exit_ok: bool = False  # a clean exit (0) of this node ends the graph successfully
    respawn: bool = False  # started again when it dies (instead of stopping the graph)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def executable(self) -> str:
        return self.module.rsplit(".", 1)[-1]


def join_ns(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _remaps(pairs: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(a, b) for a, b in pairs if b and b != a]


def training_graph(bridges: int = 1, namespace: str = "", image_topic: str = "image_raw", agent: str = "",
                   run_dir: str = "", resume=None, respawn_bridges: bool = False) -> List[NodeSpec]:
    """``bridges`` sim_bridges (namespaces sim0.. when > 1), caption_oracle, vlm_trainer, rl_sampler.

    ``resume``: a ``rls3_ros.ros.launcher.ResumeInfo`` (the run's directory, bridge count, rl_sampler
    settings and the checkpoint's adapter); ``respawn_bridges``: a dying bridge is restarted and
    rl_sampler waits for it (``bridge_lost: wait``)."""
    if resume is not None:
        bridges, run_dir = resume.n_envs, resume.run_dir
    if bridges < 1:
        raise ValueError("--bridges must be >= 1")
    own = [f"sim{i}" for i in range(bridges)] if bridges > 1 else [""]
    cam = _remaps([("image_raw", image_topic)])
    bridge_params: Dict[str, Any] = {}
    if shared_raster_threads(bridges):  # several bridges share the cores: their renderers too
        bridge_params["render_threads"] = shared_raster_threads(bridges)
    nodes = [NodeSpec("sim_bridge", "rls3_ros.ros.nodes.sim_bridge", join_ns(namespace, n),
                      {"seed": 100 + i, **bridge_params}, list(cam), respawn=respawn_bridges) for i, n in enumerate(own)]
    oracle = NodeSpec("caption_oracle", "rls3_ros.ros.nodes.caption_oracle", join_ns(namespace), remappings=list(cam))
    trainer = NodeSpec("vlm_trainer", "rls3_ros.ros.nodes.vlm_trainer", join_ns(namespace))
    sampler = NodeSpec("rl_sampler", "rls3_ros.ros.nodes.rl_sampler", join_ns(namespace), required_exit_ok=True)
    sampler.params["bridge_namespaces"] = own  # relative: resolved in the sampler's namespace
    if run_dir:
        sampler.params["run_dir"] = run_dir
        trainer.params["adapter_dir"] = os.path.join(run_dir, "adapters")
    if resume is not None:  # the run's own settings, from its config.yaml
        sampler.params.update(resume.sampler_values)
        sampler.params["resume"] = True
        if resume.adapter:
            trainer.params["adapter"] = resume.adapter
    if respawn_bridges:
        sampler.params["bridge_lost"] = "wait"
    if agent:
        sampler.params["agent"] = agent
    return nodes + [oracle, trainer, sampler]


def query_graph(with_sim: bool = False, namespace: str = "", adapter: str = "", image_topic: str = "image_raw",
                scene_topic: str = "scene_state") -> List[NodeSpec]:
    """spatial_query (+ a sim_bridge as a demo camera with ``with_sim``)."""
    remaps = _remaps([("image_raw", image_topic), ("scene_state", scene_topic)])
    query = NodeSpec("spatial_query", "rls3_ros.ros.nodes.spatial_query", join_ns(namespace), remappings=list(remaps))
    if adapter:
        query.params["adapter"] = adapter
    sim = [NodeSpec("sim_bridge", "rls3_ros.ros.nodes.sim_bridge", join_ns(namespace), remappings=list(remaps))]
    return (sim if with_sim else []) + [query]


def graph_nodes(graph: str, bridges: int = 1, with_sim: bool = False, run_dir: str = "", **kw) -> List[NodeSpec]:
    """The nodes of ``graph`` (``training`` or ``query``)."""
    if graph == "training":
        return training_graph(bridges, run_dir=run_dir, **kw)
    if graph == "query":
        return query_graph(with_sim, **kw)
    raise ValueError(f"unknown graph {graph!r} (known: {', '.join(GRAPHS)})")


def parse_set(item: str) -> Tuple[str, str, Any]:
    """``NODE.PARAM=VALUE`` -> (node, param, value parsed as YAML, as ROS parses ``-p``)."""
    import yaml

    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ValueError(f"--set expects NODE.PARAM=VALUE, got {item!r}")
    key, val = item.split("=", 1)
    node, param = key.split(".", 1)
    try:
        value = yaml.safe_load(val)
    except yaml.YAMLError:
        value = val
    return node, param, val if value is None else value


def apply_node_sets(specs: Sequence[NodeSpec], sets: Sequence[Tuple[str, str, Any]]) -> None:
    """Override parameters by node name or label (``sim0/sim_bridge``, with or without the graph's
    namespace); an unknown node is refused."""
    for node, param, value in sets:
        node = node.strip("/")
        hit = [s for s in specs if s.name == node or s.label == node or s.label.endswith("/" + node)]
        if not hit:
            raise ValueError(f"no node {node!r} in this graph ({', '.join(s.label for s in specs)})")
        for s in hit:
            s.params[param] = value


def launch_node_kwargs(spec: NodeSpec, params_files: Sequence[str]) -> Dict[str, Any]:
    """Keyword arguments of ``launch_ros.actions.Node`` for ``spec`` (the launch files use this)."""
    params: List[Any] = list(params_files) + ([dict(spec.params)] if spec.params else [])
    return {"package": PACKAGE, "executable": spec.executable, "name": spec.name,
            "namespace": "/" + spec.namespace if spec.namespace else "/", "parameters": params,
            "remappings": list(spec.remappings), "respawn": spec.respawn, "output": "screen"}


def stops_graph(spec: NodeSpec) -> bool:
    """Whether this node's exit ends the graph (every node but a respawned one)."""
    return not spec.respawn


def launch_actions(specs: Sequence[NodeSpec], params_files: Sequence[str]) -> list:
    """The launch file's actions: a ``launch_ros`` Node per spec, and a shutdown of the launch when a
    node that :func:`stops_graph` exits (rl_sampler at the end of its budget, or any failure).
    ``launch``/``launch_ros`` are imported here only: they exist in a ROS 2 install, not on PyPI."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    actions: list = []
    for spec in specs:
        node = Node(**launch_node_kwargs(spec, params_files))
        actions.append(node)
        if stops_graph(spec):
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.label} exited"))])))
    return actions


def bool_arg(text: Optional[str]) -> bool:
    return str(text or "").strip().lower() in ("1", "true", "yes", "on")
