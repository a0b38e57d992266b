"""The run configuration of the RLS3 loop: one typed schema (pydantic v2, no ROS).

Everything that configures the loop comes from here:

- ``rls3 train`` (``rls3_ros.cli.train``): :data:`DEFAULT_CONFIG` (the nested dict the files are
  merged onto) is :class:`TrainConfig`'s defaults, :func:`validate_config` checks ``config/train.yaml`` +
  ``--config`` + ``--set`` against it (a bad value names the key, the value and the allowed
  range; an unknown key is refused with the known ones) and the validated :class:`TrainConfig` is
  what flows down: ``run`` to the builders of ``rls3_ros.loop.runner``, ``env`` to
  ``RLS3Env.from_config``, ``loop`` to the ``Scheduler`` (a field added to a section reaches its
  consumer with no other edit);
- the ``rl_sampler`` node (``rls3_ros.ros.nodes.rl_sampler``): its ROS parameters are the fields of
  :class:`GraphRunConfig` flattened (:data:`NODE_PARAMS`: name, default, description from the
  field's doc, range from the field's constraints); a field added here becomes a node parameter
  with no other edit;
- ``rls3 launch training --resume``: :data:`RESUMED_PARAMS` maps a run's ``config.yaml`` back onto
  those parameters;
- ``config/train.yaml`` and the ``rl_sampler`` section of ``config/training.yaml`` are checked
  against it by the tests.

Sections: ``run`` (agent, seed, backend, ...), ``loop`` (``rls3_ros.loop.scheduler.SchedulerConfig``),
``env`` (``rls3_ros.loop.env.RLS3Env`` rewards), ``agent`` (sampler kwargs; each sampler takes the keys
tagged with its name, ``sac_*``/``ppo_*`` override one sampler's), ``eval`` (fixed sets) and, for
the node only, ``graph`` (services, namespaces, timeouts). A field whose default is ``None`` is
"not set": it is left out of the dict and the consumer keeps its own default.

``python -m rls3_ros.loop.config`` prints every key with its default, range and doc.
"""

from __future__ import annotations

import copy
import sys
import typing
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AGENTS = ("sac", "ppo", "random", "miner", "upper", "teacher")


def _f(default: Any, doc: str, *, node: bool = True, param: str = "", agents: Tuple[str, ...] = (), **constraints):
    """A schema field: ``doc`` becomes the node parameter's description; ``node=False`` keeps it
    out of the rl_sampler's parameters (in-process only); ``param`` renames its node parameter;
    ``agents`` names the samplers that take an ``agent`` key."""
    extra: Dict[str, Any] = {"node": node}
    if param:
        extra["param"] = param
    if agents:
        extra["agents"] = list(agents)
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunConfig(_Section):
    agent: Literal[AGENTS] = _f("sac", "sampler: sac | ppo | random | miner | upper | teacher (docs/learning.md)")
    seed: int = _f(0, "run seed")
    backend: str = _f("mujoco", "simulator backend (rls3_ros.sim.factory.make_backend)", node=False)
    image_size: int = _f(160, "px, square renders fed to the VLM", node=False, ge=16)
    scene_types: List[str] = _f([], "scene types ([] = all of the backend's)", node=False)
    n_envs: int = _f(1, "parallel simulators (one backend each)", node=False, ge=1)
    vlm: str = _f("grounded:serving", "model spec: grounded:serving (the served model) | grounded (the weak base of "
                  "the benchmark's from-scratch regime) | embedded | clip:/dir | ... | py:mod:fn", node=False)
    lora_learning_rate: Optional[float] = _f(None, "LoRA learning rate of the loop's fine-tunes (unset = the model "
                                             "family's default; grounded: 3e-3)", node=False, gt=0.0)
    lora_rank: Optional[int] = _f(None, "LoRA rank r of the loop's fine-tunes (unset = the model family's default; "
                                  "grounded: 8). docs/learning.md, recipe search: r 128 on every linear layer of "
                                  "grounded:serving is the servable form of a fine-tune of all its linear weights",
                                  node=False, ge=1, le=256)
    lora_alpha: Optional[int] = _f(None, "LoRA alpha (the update is scaled by alpha / r; unset = the model family's "
                                   "default; grounded: 16)", node=False, ge=1)
    torch_threads: int = _f(2, "torch intra-op threads", node=False, ge=1)
    sim_worker: bool = _f(True, "in-process loop: simulators in worker processes, the next episode's scene built "
                          "ahead (rls3_ros.loop.sim_worker); torch then keeps a core free (at most cores - 1 threads)",
                          node=False)
    freeze_parked: bool = _f(True, "mujoco: objects parked in the container are out of the physics (physics "
                             "revision 3, 2.5x cheaper steps); false = revision 2 (the learning benchmark's)", node=False)
    overlap_fine_tune: bool = _f(True, "in-process loop: fine-tune and evaluate on a second copy of the VLM in a "
                                 "background thread while the agent goes on sampling with the current adapter; "
                                 "the new adapter takes over E//2 episodes after the fine-tune started (false = "
                                 "the paper's loop: sampling waits for every fine-tune)", node=False)


class LoopConfig(_Section):
    """The loop section: what :class:`rls3_ros.loop.scheduler.Scheduler` takes (``SchedulerConfig`` is
    this model under its old name)."""

    T: int = _f(8, "agent steps per episode", ge=1)
    T0: int = _f(6, "valid samples per episode (ends the episode early), <= T", ge=1)
    E: int = _f(4, "episodes per fine-tuning iteration", ge=1)
    eta: float = _f(1.0, "fraction of an episode's valid samples entering the fine-tuning batch", gt=0.0, le=1.0)
    fine_tune_steps: int = _f(40, "optimiser steps per fine-tune", ge=1)
    fine_tune_steps_per_sample: float = _f(0.0, "when > 0: steps per generated sample in the batch instead of "
                                                "fine_tune_steps", ge=0.0)
    replay_fraction: float = _f(0.3, "share of each fine-tuning set drawn from base data", ge=0.0, lt=1.0)
    cumulative: bool = _f(False, "every fine-tune trains on all samples generated so far (+ replay), not only the "
                                 "latest batch: a capable base is not pulled toward one small batch")
    gate: bool = _f(True, "promotion gate: an adapter is served only if it beats the served model on the "
                           "validation split by a paired sign test (rls3_ros.loop.promotion)")
    gate_alpha: float = _f(0.05, "promotion gate: one-sided significance level of the paired test", gt=0.0, lt=1.0)
    budget_valid_samples: int = _f(1200, "stop after this many valid samples (0 = no limit)", ge=0)
    budget_renders: int = _f(0, "stop after this many renders (0 = no limit)", ge=0)
    max_iterations: int = _f(0, "stop after this many fine-tunes (0 = no limit)", ge=0)
    patience: int = _f(0, "early stopping patience in fine-tunes (0 = off)", ge=0)
    min_delta: float = _f(0.0, "validation-accuracy gain that counts as an improvement")
    seed: int = _f(0, "seed of the batch sub-sampling and replay draws (the node: its seed)", param="seed")
    adapter_scale: float = _f(1.0, "in-process loop: every fine-tuned adapter is averaged with the base before it is "
                                   "saved, gated and trained on (base + adapter_scale x delta; 1 = as trained): "
                                   "rls3_ros.loop.adapter_average", node=False, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _t0_within_t(self):
        if self.T0 > self.T:
            raise ValueError(f"T0 must be in [1, T] (got T0={self.T0}, T={self.T})")
        return self

    def steps_for(self, n_generated: int) -> int:
        """Optimiser steps of a fine-tune whose batch holds ``n_generated`` generated samples."""
        if self.fine_tune_steps_per_sample > 0:
            return max(1, int(round(self.fine_tune_steps_per_sample * n_generated)))
        return self.fine_tune_steps

    @property
    def batch_target(self) -> int:
        """Nominal fine-tuning batch size E * eta * T0."""
        return int(round(self.E * self.eta * self.T0))


class EnvConfig(_Section):
    """``rls3_ros.loop.env.RLS3Env``'s rewards and observation (``RLS3Env.from_config``)."""

    reward_valid: float = _f(0.1, "intrinsic reward of a valid sample", gt=0.0)
    reward_invalid: float = _f(-0.1, "intrinsic reward of an invalid move", lt=0.0)
    reward_no_relation: float = _f(0.0, "intrinsic reward of a valid sample without a relation")
    j2_metric: Literal["loss", "error"] = _f("loss", "extrinsic reward: loss | error")
    j2_weight: float = _f(1.0, "weight of J2 in the last step's reward")
    j2_clip: float = _f(3.0, "per-relation loss clip [nats]", gt=0.0)
    max_relations: int = _f(3, "relations kept per sample (0 = all)", ge=0)
    j2_per_step: bool = _f(False, "reward each valid sample with its own VLM loss at its step (not the paper's T:1)")
    j2_baseline: Literal["none", "iteration"] = _f("none", "none | iteration: J2 minus the running mean of the "
                                                           "current adapter's episodes")
    observe_vlm: bool = _f(False, "the agent observes the per-term validation error (evaluates val after every "
                                  "fine-tune)")
    n_categories: Optional[int] = _f(None, "object categories in the observation (unset = the env's, 16)", ge=1)


class AgentConfig(_Section):
    """Sampler kwargs; unset keys keep the sampler's default (``rls3_ros.loop.agents``, ``mode_samplers``)."""

    learning_starts: int = _f(16, "SAC warm-up steps", agents=("sac",), ge=0)
    k: int = _f(4, "miner: random candidates per step", param="miner_k", agents=("miner",), ge=1)
    ent_coef: Optional[Union[float, str]] = _f(None, "entropy coefficient (SAC: 'auto', 'auto_0.05', a number)",
                                               agents=("sac", "ppo"))
    gradient_steps: Optional[int] = _f(None, "SAC gradient steps per env step (default 1)", agents=("sac",), ge=1)
    train_freq: Optional[int] = _f(None, "SAC: env steps between two trainings (default 2)", agents=("sac",), ge=1)
    learning_rate: Optional[float] = _f(None, "SAC/PPO learning rate", agents=("sac", "ppo"), gt=0.0)
    batch_size: Optional[int] = _f(None, "SAC/PPO minibatch size (SAC default 512, PPO min(32, rollout))", agents=("sac", "ppo"), ge=1)
    gamma: Optional[float] = _f(None, "SAC/PPO discount", agents=("sac", "ppo"), ge=0.0, le=1.0)
    buffer_size: Optional[int] = _f(None, "SAC replay buffer size", agents=("sac",), ge=1)
    n_steps: Optional[int] = _f(None, "PPO rollout steps per env", agents=("ppo",), ge=1)
    n_epochs: Optional[int] = _f(None, "PPO epochs per rollout", agents=("ppo",), ge=1)
    epsilon: Optional[float] = _f(None, "mode samplers: share of uniform exploration", agents=("upper", "teacher"),
                                  ge=0.0, le=1.0)
    sharpness: Optional[float] = _f(None, "upper: exponent of the error-proportional policy", agents=("upper",),
                                    gt=0.0)
    temperature: Optional[float] = _f(None, "teacher: softmax temperature", agents=("teacher",), gt=0.0)
    alpha: Optional[float] = _f(None, "teacher: learning-progress smoothing", agents=("teacher",), gt=0.0, le=1.0)
    sac_ent_coef: Optional[Union[float, str]] = _f(None, "SAC only: overrides ent_coef")
    ppo_ent_coef: Optional[float] = _f(None, "PPO only: overrides ent_coef")
    sac_learning_rate: Optional[float] = _f(None, "SAC only: overrides learning_rate", gt=0.0)


class EvalConfig(_Section):
    """The fixed sets, generated once from fixed seeds and cached."""

    test_scenes: int = _f(150, "scenes of the fixed test set", ge=1)
    val_scenes: int = _f(48, "scenes of the validation set (used when patience > 0 or a sampler reads it)", ge=0)
    replay_scenes: int = _f(40, "scenes of the base replay pool", ge=0)
    replay_rare_keep: float = _f(0.0, "replay pool: keep probability of relations with a term other than left/right "
                                      "(the base's pre-training imbalance; 1.0 = natural distribution)",
                                 ge=0.0, le=1.0)
    moves_per_scene: int = _f(4, "random moves per scene for the fixed sets", ge=0)
    test_per_term: int = _f(80, "relations per term kept in the test set", ge=0)
    val_per_term: int = _f(30, "relations per term kept in the validation set", ge=0)
    tail_scenes: int = _f(0, "> 0: also evaluate the tail split after every fine-tune (loop/tail_split.py)", ge=0)
    val_tail_scenes: int = _f(0, "scenes of the tail generator added to the validation set", ge=0)
    extra_splits: List[Literal["tail", "val"]] = _f([], "splits evaluated after every fine-tune besides test")


class GraphConfig(_Section):
    """The rl_sampler node's own settings (services, namespaces, timeouts): not part of ``rls3 train``."""

    dataset_key: str = _f("ros-mujoco-160", "cache key of the fixed sets (change it with the bridges' backend or "
                                            "image size)")
    bridge_namespaces: List[str] = _f([""], "one sim_bridge per namespace, relative to the node's ('' = its own)")
    reset_service: str = _f("sim_bridge/reset_scene", "ResetScene service (relative to each bridge namespace)")
    apply_service: str = _f("sim_bridge/apply_action", "ApplyAction service (relative to each bridge namespace)")
    caption_service: str = _f("caption_oracle/caption_scene", "CaptionScene service")
    score_service: str = _f("vlm_trainer/score_samples", "ScoreSamples service")
    fine_tune_action: str = _f("vlm_trainer/fine_tune", "FineTune action")
    promote_service: str = _f("vlm_trainer/promote", "SetAdapter service announcing an adapter that passed the "
                                                     "promotion gate (the query server then serves it)")
    placement_bounds: List[float] = _f([], "[x0,y0,z0,x1,y1,z1] place-target box ([] or [0.0] = from the scene)")
    run_dir: str = _f("", "run directory ('' = runs/<timestamp>)")
    resume: bool = _f(False, "continue the run in run_dir from its last checkpoint")
    bridge_lost: Literal["fail", "wait"] = _f("fail", "a sim_bridge stops answering: fail (stop the run) | wait "
                                                      "(for it to come back)")
    bridge_wait: float = _f(300.0, "bridge_lost=wait: how long to wait for the bridge to come back [s]", gt=0.0)
    service_timeout: float = _f(60.0, "timeout of one service call [s]", gt=0.0)
    fine_tune_timeout: float = _f(1800.0, "timeout of one fine-tune [s]", gt=0.0)
    wait_for_services: float = _f(60.0, "how long to wait for the services at start [s]", gt=0.0)
    score_chunk: int = _f(32, "samples per ScoreSamples call", ge=1)
    exit_when_done: bool = _f(True, "shut down when the loop ends")

    @model_validator(mode="after")
    def _checks(self):
        if len(self.placement_bounds) not in (0, 1, 6):
            raise ValueError(f"placement_bounds needs 6 numbers or none (got {len(self.placement_bounds)})")
        if self.resume and not self.run_dir:
            raise ValueError("resume needs run_dir")
        return self


class TrainConfig(BaseModel):
    """The in-process loop's configuration (``rls3 train``, ``config/train.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    run: RunConfig = RunConfig()
    loop: LoopConfig = LoopConfig()
    env: EnvConfig = EnvConfig()
    agent: AgentConfig = AgentConfig()
    eval: EvalConfig = EvalConfig()


class GraphRunConfig(TrainConfig):
    """The rl_sampler node's configuration: the loop's plus the graph section."""

    graph: GraphConfig = GraphConfig()


# ---------------------------------------------------------------------- dicts
def to_dict(model: BaseModel) -> Dict[str, Any]:
    """A config model as the nested dict the loop reads (unset ``None`` keys left out)."""
    return {name: {k: v for k, v in sec.items() if v is not None} for name, sec in model.model_dump().items()}


DEFAULT_CONFIG: Dict[str, Any] = to_dict(TrainConfig())


def merge_config(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_config(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------- errors
def _is_list(ann) -> bool:
    return typing.get_origin(ann) in (list, List)


def _strip_optional(ann):
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is Union and len(args) == 1:
        return args[0]
    return ann


def _type_text(ann) -> str:
    ann = _strip_optional(ann)
    if typing.get_origin(ann) is Literal:
        return " | ".join(str(a) for a in typing.get_args(ann))
    if _is_list(ann):
        (item,) = typing.get_args(ann) or (Any,)
        return f"a list of: {_type_text(item).replace(' | ', ', ')}" if typing.get_origin(item) is Literal \
            else f"a list of {_type_text(item).replace('an ', '').replace('a ', '')}s"
    if typing.get_origin(ann) is Union:
        return " or ".join(_type_text(a) for a in typing.get_args(ann) if a is not type(None))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(ann, str(ann))


def bounds(field) -> Tuple[Optional[float], bool, Optional[float], bool]:
    """(low, low inclusive, high, high inclusive) of a field's numeric constraints."""
    lo = hi = None
    lo_inc = hi_inc = True
    for m in field.metadata:
        if isinstance(m, Ge):
            lo, lo_inc = m.ge, True
        elif isinstance(m, Gt):
            lo, lo_inc = m.gt, False
        elif isinstance(m, Le):
            hi, hi_inc = m.le, True
        elif isinstance(m, Lt):
            hi, hi_inc = m.lt, False
    return lo, lo_inc, hi, hi_inc


def interval_text(lo, lo_inc: bool, hi, hi_inc: bool, num: Callable[[Any], str] = str) -> str:
    """A range as text: ``in [0, 1)``, ``>= 1``, ``< 5`` ("" when unbounded); ``num`` formats the bounds."""
    if lo is not None and hi is not None:
        return f"in {'[' if lo_inc else '('}{num(lo)}, {num(hi)}{']' if hi_inc else ')'}"
    if lo is not None:
        return f"{'>=' if lo_inc else '>'} {num(lo)}"
    if hi is not None:
        return f"{'<=' if hi_inc else '<'} {num(hi)}"
    return ""


def allowed_text(field) -> str:
    """What a field accepts, e.g. ``an integer >= 1``, ``a number in (0, 1]``, ``loss | error``."""
    base = _type_text(field.annotation)
    text = interval_text(*bounds(field))
    return f"{base} {text}" if text else base


def _section_model(model_cls, section: str):
    f = model_cls.model_fields.get(section)
    return f.annotation if f is not None else None


def format_errors(err: ValidationError, model_cls=TrainConfig, key_name=None) -> str:
    """One line per problem: ``key must be <allowed> (got value)``; unknown keys with the known ones.

    ``key_name(section, key)`` names a key (default ``section.key``; the node uses its parameter names)."""
    key_name = key_name or (lambda s, k: f"{s}.{k}")
    out: List[str] = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        sec_cls = _section_model(model_cls, loc[0]) if loc else None
        if e["type"] == "extra_forbidden":
            if len(loc) == 1:
                out.append(f"unknown section {loc[0]!r} (known: {', '.join(model_cls.model_fields)})")
            else:
                known = ", ".join(key_name(loc[0], k) for k in sec_cls.model_fields) if sec_cls else "?"
                out.append(f"unknown key {key_name(loc[0], loc[1])} (known: {known})")
        elif len(loc) >= 2 and sec_cls is not None and loc[1] in sec_cls.model_fields:
            field = sec_cls.model_fields[loc[1]]
            value = e.get("input")
            if len(loc) > 2:  # an item of a list
                out.append(f"{key_name(loc[0], loc[1])} must be {allowed_text(field)} (got item {loc[2]}: "
                           f"{value!r})")
            else:
                out.append(f"{key_name(loc[0], loc[1])} must be {allowed_text(field)} (got {value!r})")
        elif len(loc) == 1 and e["type"] in ("model_type", "model_attributes_type", "dict_type"):
            out.append(f"section {loc[0]!r} must be a mapping (got {e.get('input')!r})")
        else:  # a check across keys (model validator): its own message
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            out.append(msg if not loc else f"{loc[0]}: {msg}")
    return "; ".join(out)


def validate_config(cfg: Dict[str, Any], model_cls=None) -> BaseModel:
    """The config as a model (``model_cls``, default :class:`TrainConfig`); ``ValueError("bad configuration:
    ...")`` naming every bad or unknown key."""
    model_cls = model_cls or TrainConfig
    try:
        return model_cls.model_validate(cfg)
    except ValidationError as e:
        raise ValueError("bad configuration: " + format_errors(e, model_cls)) from None


def as_train_config(cfg: Union[TrainConfig, Mapping[str, Any]]) -> TrainConfig:
    """The run configuration as the model the loop reads: a :class:`TrainConfig` as it is, a nested dict
    (a run's ``config.yaml``, a test's or a benchmark's dict) validated once here. The rl_sampler node's
    dict names the ROS graph in its ``run`` section (``graph: true``; backend and image size are the
    bridges'): of that section only the sampler and the seed configure the loop."""
    if isinstance(cfg, TrainConfig):
        return cfg
    if (cfg.get("run") or {}).get("graph"):
        cfg = {**cfg, "run": {k: cfg["run"][k] for k in ("agent", "seed")}}
        cfg.pop("graph", None)
    return validate_config(dict(cfg))


def needs_validation(cfg: Union[TrainConfig, Mapping[str, Any]]) -> bool:
    """Whether a run needs the validation set (early stopping, the promotion gate, a sampler or
    observation that reads the validation error, or an extra ``val`` split)."""
    c = as_train_config(cfg)
    return bool(c.loop.patience or c.loop.gate or c.run.agent in ("upper", "teacher") or c.env.observe_vlm
                or "val" in c.eval.extra_splits)


# ---------------------------------------------------------------------- samplers
AGENT_KEYS: Dict[str, Tuple[str, ...]] = {  # which keys of the ``agent`` section each sampler takes
    a: tuple(k for k, f in AgentConfig.model_fields.items() if a in (f.json_schema_extra or {}).get("agents", ()))
    for a in AGENTS}
AGENT_SECTION_KEYS = sorted(AgentConfig.model_fields)


def agent_kwargs(cfg: Union[TrainConfig, Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``agent`` section's keys that the configured sampler takes (``sac_*``/``ppo_*`` prefixed
    keys override the shared ones for that algorithm, so SAC's and PPO's entropy settings differ);
    unset keys (``None``, or absent from a dict) are left to the sampler."""
    if isinstance(cfg, TrainConfig):
        cfg = to_dict(cfg)
    name = cfg["run"]["agent"]
    sec = {k: v for k, v in (cfg.get("agent") or {}).items() if v is not None}
    out = {k: v for k, v in sec.items() if k in AGENT_KEYS.get(name, ())}
    for k, v in sec.items():
        if k.startswith(name + "_") and k[len(name) + 1:] in AGENT_KEYS.get(name, ()):
            out[k[len(name) + 1:]] = v
    return out


# ---------------------------------------------------------------------- node parameters
class NodeParam(typing.NamedTuple):
    name: str
    default: Any  # None: unset (declared with dynamic typing, or typed when ``array_type`` is set)
    description: str  # the field's doc + what it accepts
    targets: Tuple[Tuple[str, str], ...]  # (section, key) the parameter fills
    kind: str  # bool | int | float | str | list_int | list_float | list_str | any
    low: Optional[float]
    high: Optional[float]


def _kind(ann) -> str:
    ann = _strip_optional(ann)
    if typing.get_origin(ann) is Literal:
        return "str"
    if _is_list(ann):
        (item,) = typing.get_args(ann) or (str,)
        return "list_" + ("str" if typing.get_origin(item) is Literal else _kind(item))
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(ann, "any")


def node_params(model_cls=GraphRunConfig) -> Dict[str, NodeParam]:
    """The rl_sampler's ROS parameters: every field of ``model_cls`` not marked ``node=False``,
    named by the field (or its ``param``), the defaults of fields sharing a name must agree."""
    out: Dict[str, NodeParam] = {}
    for sec_name, sec_field in model_cls.model_fields.items():
        sec_cls = sec_field.annotation
        for key, f in sec_cls.model_fields.items():
            extra = f.json_schema_extra or {}
            if not extra.get("node", True):
                continue
            name = extra.get("param") or key
            default = copy.deepcopy(f.default)
            if name in out:
                if out[name].default != default:
                    raise RuntimeError(f"node parameter {name!r} fills {out[name].targets} and {sec_name}.{key} "
                                       "with different defaults")
                out[name] = out[name]._replace(targets=out[name].targets + ((sec_name, key),))
                continue
            lo, _, hi, _ = bounds(f)
            out[name] = NodeParam(name, default, f"{f.description} ({allowed_text(f)})", ((sec_name, key),),
                                  _kind(f.annotation), lo, hi)
    return out


NODE_PARAMS: Dict[str, NodeParam] = node_params()
# a run's config.yaml -> the rl_sampler parameters that continue it (graph section excluded: it is the launch's)
RESUMED_PARAMS: Dict[Tuple[str, str], str] = {t: p.name for p in NODE_PARAMS.values() for t in p.targets
                                              if t[0] in TrainConfig.model_fields}


def config_from_params(values: Dict[str, Any]) -> GraphRunConfig:
    """The node's configuration from its parameter values (``None`` = unset); ``ValueError`` with
    the parameter names on a bad value."""
    nested: Dict[str, Dict[str, Any]] = {}
    for name, value in values.items():
        p = NODE_PARAMS[name]
        if value is None:
            continue
        if p.kind.startswith("list_"):
            value = list(value)
        for sec, key in p.targets:
            nested.setdefault(sec, {})[key] = value
    try:
        return GraphRunConfig.model_validate(nested)
    except ValidationError as e:
        names = {t: p.name for p in NODE_PARAMS.values() for t in p.targets}
        raise ValueError(format_errors(e, GraphRunConfig, lambda s, k: names.get((s, k), k))) from None


def describe(model_cls=None) -> str:
    """Every key of ``model_cls`` (default :class:`GraphRunConfig`) with its default, what it accepts and
    its doc (``python -m rls3_ros.loop.config``)."""
    model_cls = model_cls or GraphRunConfig
    lines = []
    for sec_name, sec_field in model_cls.model_fields.items():
        lines.append(f"{sec_name}:")
        for key, f in sec_field.annotation.model_fields.items():
            extra = f.json_schema_extra or {}
            where = "" if extra.get("node", True) else "  [rls3 train only]"
            param = f"  [node: {extra['param']}]" if extra.get("param") and extra["param"] != key else ""
            lines.append(f"  {key}: {f.default!r}  # {allowed_text(f)}; {f.description}{where}{param}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
    sys.exit(0)
