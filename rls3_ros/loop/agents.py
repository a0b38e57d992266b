"""Samplers that drive :class:`~rls3_ros.loop.env.RLS3Env` episodes: SAC, PPO, random, miner.

Every agent exposes the same small interface, so the scheduler never knows which one runs:

- ``run(should_stop, safe_point)``: act in the env(s) until ``should_stop()`` is true;
  ``safe_point()`` is called whenever the agent's own state is consistent (after an SB3
  transition has been stored), so a pending checkpoint can be written there;
- ``save(directory)`` / ``load(directory)``: the agent's state (SB3 model + SAC replay buffer,
  or the RNG of the random agent / miner), in formats that cannot execute code when read
  (``rls3_ros.core.safe_state``: JSON + ``.npz`` without pickle). SB3's own ``save``/``load`` are
  not used: its ``.zip`` holds cloudpickled objects in ``data`` and its replay buffer is a pickle.
  What is stored of an SB3 model: every network and optimiser state dict and the torch variables
  SB3 names (``_get_torch_save_params``), and every attribute SB3 would save that is plain data
  (counters, progress, last observations, episode info buffers); what SB3 would pickle besides
  (spaces, schedules, classes) follows from the run's configuration, which builds the same model
  again before loading. Loading repeats what SB3's ``load`` does after reading its file (set the
  attributes, ``_setup_model``, ``set_parameters``, the torch variables, a new gSDE noise).

SAC (the paper's) and PPO come from stable-baselines3 with small nets (``net_arch`` [64, 64]).
Made able to move within a few hundred steps (measured: with ``ent_coef="auto"`` alpha starts
at 1.0 and ~645 updates left it >= 0.53, so SAC's policy stayed uniform): SAC's entropy
coefficient starts at 0.05 (``auto_0.05``, still tuned automatically), it takes 4 gradient steps
per env step, and its warm-up (``learning_starts``) is short. PPO collects 64 steps per update
(10 epochs) and uses a tanh-squashed gSDE policy (a clipped Gaussian put a third of its
coordinates on +-1). ``random`` samples the same Box
uniformly (the paper's baseline). ``miner`` is the non-RL baseline: per step it tries ``k``
random moves and keeps the one with the highest VLM loss (``RLS3Env.mine_step``).

Several envs (e.g. several ``sim_bridge``s) are stepped in parallel by :class:`ThreadVecEnv`
(one thread per env; their steps are I/O: renders and service calls).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence

import numpy as np

from rls3_ros.core.safe_state import StateError, dump_state, load_state, storable
from rls3_ros.loop.env import RLS3Env


def _noop() -> None:
    pass


def _write_agent_json(directory: str, info: dict) -> None:
    with open(os.path.join(directory, "agent.json"), "w") as f:
        json.dump(info, f)


def _check_agent_json(directory: str, name: str) -> None:
    """The saved agent is this kind of agent (a clear reason instead of a shape error later)."""
    try:
        with open(os.path.join(directory, "agent.json")) as f:
            saved = json.load(f).get("agent")
    except (OSError, ValueError, AttributeError) as e:
        raise StateError(f"agent/agent.json is unreadable ({type(e).__name__})") from None
    if saved != name:
        raise StateError(f"agent/agent.json holds a {saved!r} agent, not {name!r}")


class ThreadVecEnv:
    """SB3 ``DummyVecEnv`` whose ``step_wait`` steps every env in its own thread."""

    def __new__(cls, env_fns):
        from stable_baselines3.common.vec_env import DummyVecEnv

        class _ThreadVecEnv(DummyVecEnv):
            def __init__(self, fns):
                super().__init__(fns)
                self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.envs)), thread_name_prefix="rls3-env")

            def step_wait(self):
                if len(self.envs) == 1:
                    return super().step_wait()

                def one(i):
                    obs, rew, term, trunc, info = self.envs[i].step(self.actions[i])
                    done = term or trunc
                    info["TimeLimit.truncated"] = trunc and not term
                    if done:
                        info["terminal_observation"] = obs
                        obs, reset_info = self.envs[i].reset()
                        self.reset_infos[i] = reset_info
                    return obs, rew, done, info

                results = list(self._pool.map(one, range(len(self.envs))))
                for i, (obs, rew, done, info) in enumerate(results):
                    self.buf_rews[i], self.buf_dones[i], self.buf_infos[i] = rew, done, info
                    self._save_obs(i, obs)
                return (self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), list(self.buf_infos))

            def close(self):
                self._pool.shutdown(wait=False)
                super().close()

        return _ThreadVecEnv(env_fns)


class Agent:
    """Common interface (see module docstring)."""

    name = "agent"

    def __init__(self, envs: Sequence[RLS3Env], seed: int = 0, **kwargs):
        if not envs:
            raise ValueError("an agent needs at least one env")
        self.envs = list(envs)
        self.seed = int(seed)

    def run(self, should_stop: Callable[[], bool], safe_point: Callable[[], None] = _noop) -> None:
        raise NotImplementedError

    def save(self, directory: str) -> None:
        raise NotImplementedError

    def load(self, directory: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def overlap_job(self) -> Optional[Callable[[], None]]:
        """Work the agent can do while a move is simulated (the loop hands it to a source that has a
        worker: ``PrefetchSource.idle_jobs``); None for agents with nothing to overlap."""
        return None


class _LoopAgent(Agent):
    """Agents that need no learner: a plain loop per env (threads when several)."""

    def __init__(self, envs, seed=0, **kwargs):
        super().__init__(envs, seed)
        self.rngs = [np.random.default_rng([self.seed, i]) for i in range(len(self.envs))]
        self._lock = threading.Lock()

    def _act(self, i: int, env: RLS3Env):
        a = self.rngs[i].uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
        return env.step(a)

    def _loop(self, i, should_stop, safe_point):
        env = self.envs[i]
        env.reset()
        while not should_stop():
            _, _, term, trunc, _ = self._act(i, env)
            if term or trunc:
                with self._lock:
                    safe_point()
                if should_stop():
                    break
                env.reset()

    def run(self, should_stop, safe_point=_noop):
        if len(self.envs) == 1:
            self._loop(0, should_stop, safe_point)
            return
        errors: List[BaseException] = []

        def target(i):
            try:
                self._loop(i, should_stop, safe_point)
            except BaseException as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=target, args=(i,), name=f"rls3-{self.name}-{i}") for i in range(len(self.envs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        dump_state(directory, "rng", [r.bit_generator.state for r in self.rngs])
        _write_agent_json(directory, {"agent": self.name, "seed": self.seed})

    def load(self, directory):
        _check_agent_json(directory, self.name)
        states = load_state(directory, "rng")
        if not isinstance(states, list) or len(states) < len(self.rngs):
            raise StateError(f"agent/rng.json holds no RNG state for {len(self.rngs)} env(s)")
        for r, s in zip(self.rngs, states):
            r.bit_generator.state = s


class RandomAgent(_LoopAgent):
    """Uniform random actions in the same Box (the paper's baseline)."""

    name = "random"


class MinerAgent(_LoopAgent):
    """Hard-example miner (non-RL): best of ``k`` random moves by VLM loss, every step."""

    name = "miner"

    def __init__(self, envs, seed=0, *, k: int, **kwargs):
        """``k``: the schema's ``agent.k`` (rls3_ros.loop.config)."""
        super().__init__(envs, seed)
        if k < 1:
            raise ValueError(f"miner k must be >= 1 (got {k})")
        self.k = int(k)

    def _act(self, i, env):
        return env.mine_step(self.k, self.rngs[i])


class _SB3Agent(Agent):
    algo = None

    def __init__(self, envs, seed=0, net_arch=(64, 64), device="cpu", **kwargs):
        super().__init__(envs, seed)
        env_list = self.envs
        self.vec = ThreadVecEnv([(lambda e=e: e) for e in env_list])
        self.vec.seed(self.seed)
        self.kwargs = dict(kwargs)
        self.model = self._make(dict(net_arch=list(net_arch)), device)
        self._resumed = False

    def _make(self, policy_kwargs, device):
        raise NotImplementedError

    def run(self, should_stop, safe_point=_noop):
        from stable_baselines3.common.callbacks import BaseCallback

        agent = self

        class _Stop(BaseCallback):
            def _on_step(self) -> bool:
                if agent.safe_on_step:
                    safe_point()
                return not should_stop()

            def _on_rollout_end(self) -> None:
                if not agent.safe_on_step:
                    safe_point()

        self.model.learn(total_timesteps=10**12, callback=_Stop(), reset_num_timesteps=not self._resumed,
                         progress_bar=False)
        self._resumed = True

    # SAC stores its transition after on_step: checkpoint at rollout end (1 step) instead.
    safe_on_step = True

    def _saved_attributes(self):
        """(names SB3's ``save`` would write as ``data``, names of its torch state dicts / variables)."""
        m = self.model
        exclude = set(m._excluded_save_params()) | {"train"}  # "train": SAC's deferring wrapper
        state_dicts, variables = m._get_torch_save_params()
        exclude |= {n.split(".")[0] for n in state_dicts + variables}
        return [k for k in m.__dict__ if k not in exclude], variables

    def save(self, directory):
        """The model as ``model.json`` + ``model.npz`` (see the module docstring: no pickle)."""
        from stable_baselines3.common.save_util import recursive_getattr

        os.makedirs(directory, exist_ok=True)
        m = self.model
        names, variables = self._saved_attributes()
        data = {k: m.__dict__[k] for k in names if storable(m.__dict__[k])}
        dump_state(directory, "model", {
            "algo": type(m).__name__, "data": data, "from_config": sorted(set(names) - set(data)),
            "params": m.get_parameters(), "variables": {n: recursive_getattr(m, n) for n in variables}})
        _write_agent_json(directory, {"agent": self.name, "seed": self.seed, "num_timesteps": int(m.num_timesteps)})

    def load(self, directory):
        """Into the model this agent built from the run's configuration, as SB3's ``load`` would."""
        from stable_baselines3.common.save_util import recursive_setattr

        _check_agent_json(directory, self.name)
        state = load_state(directory, "model")
        m = self.model
        if not isinstance(state, dict) or state.get("algo") != type(m).__name__:
            raise StateError(f"agent/model.json does not hold a {type(m).__name__} model")
        data, params, variables = state.get("data"), state.get("params"), state.get("variables")
        if not isinstance(data, dict) or not isinstance(params, dict) or not isinstance(variables, dict):
            raise StateError("agent/model.json is malformed")
        names, wanted = self._saved_attributes()
        unknown = set(data) - set(names)
        if unknown or set(variables) != set(wanted):
            raise StateError(f"agent/model.json does not match this {type(m).__name__} model "
                             f"(attributes {sorted(unknown)[:3]}, variables {sorted(variables)})")
        m.__dict__.pop("train", None)  # SAC's deferring wrapper: wrapped again after loading
        m.__dict__.update(data)
        m._last_obs = None  # SB3 load(env=...) forces a reset: the next learn() starts an episode
        m.n_envs = self.vec.num_envs
        m._setup_model()
        m.set_parameters(params, exact_match=True, device="cpu")
        for name, value in variables.items():
            recursive_setattr(m, f"{name}.data", value.data)
        if m.use_sde:
            m.policy.reset_noise()
        self._resumed = True

    def close(self):
        self.vec.close()


# One gradient step on 256 transitions per env step (SB3's own SAC defaults) instead of 4 on 64: the
# same transitions seen per env step, 9.2 -> 3.5 ms of updates per step, loop 11.6 -> 15.8 valid
# samples/s (seed 3, idle machine); test accuracy at 200 samples, seeds 0-3: 0.586 / 0.484 / 0.530 /
# 0.490 against 0.473 / 0.551 / 0.510 / 0.586 with 4 x 64 (within the seeds' spread).
# Since then: one step on 512 every second env step (the same transitions seen per env step, half the
# per-step overhead): main-job config, seeds 0-2, 9.43 / 9.73 / 8.62 against 8.86 / 9.24 / 7.84 valid
# samples/s, test accuracy 0.696 / 0.571 / 0.603 against 0.652 / 0.551 / 0.565 (within the seeds' spread).
SAC_GRADIENT_STEPS, SAC_BATCH_SIZE, SAC_TRAIN_FREQ = 1, 512, 2


class SACAgent(_SB3Agent):
    """Soft Actor-Critic (the paper's agent).

    Its gradient steps can overlap the simulator (:meth:`overlap_job`): SB3 trains right after
    storing a transition; with a simulator worker the steps are deferred and run while the worker
    simulates the next move. The replay buffer they sample is the same (up to the last stored
    transition) and their number is the same; only the action of that next move comes from the
    policy before them (one step of policy lag). A deferred batch never waits longer: the next
    ``train`` call, ``run``'s end and ``save`` run it first. Adam is the fused CPU kernel (same
    update, one kernel instead of a Python loop over the parameters: -12 % per gradient step), and
    the gradient steps are :class:`~rls3_ros.loop.sac_update.SACUpdate` (SB3's update with less
    Python: -25 % per gradient step) whenever the model is one it covers.
    """

    name = "sac"
    safe_on_step = False

    def __init__(self, envs, seed=0, **kwargs):
        self._pending: Optional[tuple] = None
        self._overlap = False
        self._train_lock = threading.Lock()
        super().__init__(envs, seed, **kwargs)

    def _make(self, policy_kwargs, device):
        from stable_baselines3 import SAC

        k = self.kwargs
        model = SAC(
            "MlpPolicy",
            self.vec,
            learning_rate=float(k.get("learning_rate", 1e-3)),
            buffer_size=int(k.get("buffer_size", 20_000)),
            learning_starts=int(k["learning_starts"]),  # the schema's agent.learning_starts (always set)
            batch_size=int(k.get("batch_size", SAC_BATCH_SIZE)),
            gamma=float(k.get("gamma", 0.95)),
            train_freq=int(k.get("train_freq", SAC_TRAIN_FREQ)),
            gradient_steps=int(k.get("gradient_steps", SAC_GRADIENT_STEPS)),
            ent_coef=k.get("ent_coef", "auto_0.05"),
            policy_kwargs={**policy_kwargs, "optimizer_kwargs": {"fused": True}},
            seed=self.seed,
            device=device,
            verbose=0,
        )
        return self._defer_training(model)

    def _defer_training(self, model):
        from rls3_ros.loop.sac_update import SACUpdate, supports

        sb3_train = SACUpdate(model) if supports(model)[0] else model.train

        def train(gradient_steps: int, batch_size: int = 64) -> None:
            self.flush()
            if self._overlap:
                self._pending = (sb3_train, int(gradient_steps), int(batch_size))
            else:
                sb3_train(gradient_steps=gradient_steps, batch_size=batch_size)

        model.train = train
        return model

    def flush(self) -> None:
        """Run the deferred gradient steps now (no-op when none are pending)."""
        with self._train_lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                fn, steps, batch = pending
                fn(gradient_steps=steps, batch_size=batch)

    def overlap_job(self):
        self._overlap = True
        return self.flush

    def run(self, should_stop, safe_point=_noop):
        try:
            super().run(should_stop, safe_point)
        finally:
            self.flush()

    _BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    def save(self, directory):
        """Model + replay buffer (``replay_buffer.json`` + ``.npz``). The buffer is written up to its
        fill (the arrays are allocated for ``buffer_size`` transitions: 20000 x 94 floats twice,
        ~15 MB per checkpoint otherwise)."""
        self.flush()
        super().save(directory)
        rb = self.model.replay_buffer
        n = rb.buffer_size if rb.full else rb.pos
        arrays = {k: getattr(rb, k)[:n] for k in self._BUFFER_ARRAYS if getattr(rb, k, None) is not None}
        dump_state(directory, "replay_buffer", {"pos": int(rb.pos), "full": bool(rb.full),
                                                "buffer_size": int(rb.buffer_size), "arrays": arrays})

    def load(self, directory):
        super().load(directory)
        self.model = self._defer_training(self.model)
        if os.path.exists(os.path.join(directory, "replay_buffer.json")):
            st = load_state(directory, "replay_buffer")
            rb = self.model.replay_buffer
            arrays = st.get("arrays") if isinstance(st, dict) else None
            if not isinstance(arrays, dict) or st.get("buffer_size") != rb.buffer_size or \
                    not isinstance(st.get("pos"), int) or not 0 <= st["pos"] < rb.buffer_size:
                raise StateError("agent/replay_buffer.json does not match this SAC replay buffer")
            n = rb.buffer_size if st.get("full") else st["pos"]
            for k in self._BUFFER_ARRAYS:  # the allocated size again (a buffer saved up to its fill)
                live = getattr(rb, k, None)
                if live is None:
                    continue
                a = arrays.get(k)
                if not isinstance(a, np.ndarray) or a.shape != (n,) + live.shape[1:]:
                    raise StateError(f"agent/replay_buffer.npz: {k} has shape "
                                     f"{getattr(a, 'shape', None)}, not {(n,) + live.shape[1:]}")
                whole = np.zeros_like(live)
                whole[:n] = a
                setattr(rb, k, whole)
            rb.pos, rb.full = int(st["pos"]), bool(st.get("full"))


class PPOAgent(_SB3Agent):
    """Proximal Policy Optimisation (on-policy; a partial rollout is not checkpointed)."""

    name = "ppo"

    def _make(self, policy_kwargs, device):
        from stable_baselines3 import PPO

        k = self.kwargs
        n_steps = int(k.get("n_steps", 64))
        return PPO(
            "MlpPolicy",
            self.vec,
            learning_rate=float(k.get("learning_rate", 1e-3)),
            n_steps=n_steps,
            batch_size=int(k.get("batch_size", min(32, n_steps * len(self.envs)))),
            n_epochs=int(k.get("n_epochs", 10)),
            gamma=float(k.get("gamma", 0.95)),
            ent_coef=float(k.get("ent_coef", 0.0)),
            use_sde=True,  # state-dependent exploration with a tanh-squashed action: no mass piled on +-1
            policy_kwargs={**policy_kwargs, "squash_output": True},
            seed=self.seed,
            device=device,
            verbose=0,
        )
