"""SACUpdate against stable-baselines3's own SAC.train on real SB3 models: from the same generator
states, the same gradient steps give the same parameters, target critic, entropy coefficient and
logged losses; models it does not cover are refused with the reason (the agent keeps SB3's)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from rls3_ros.loop.sac_update import SACUpdate, supports

OBS, ACT = 94, 6  # the loop's observation and action sizes


class FlatEnv(gym.Env):
    observation_space = gym.spaces.Box(-10, 10, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)

    def reset(self, seed=None, options=None):
        return np.zeros(OBS, np.float32), {}

    def step(self, action):
        return np.zeros(OBS, np.float32), 0.0, False, False, {}


def make_model(**kw):
    model = SAC("MlpPolicy", FlatEnv(), learning_rate=1e-3, batch_size=32, gamma=0.95,
                ent_coef=kw.pop("ent_coef", "auto_0.05"),
                policy_kwargs={"net_arch": [64, 64], "optimizer_kwargs": {"fused": True}}, seed=0, verbose=0, **kw)
    model.set_logger(configure(None, [""]))
    rng = np.random.default_rng(0)  # 300 transitions, a terminal every 10th
    for i in range(300):
        model.replay_buffer.add(rng.normal(size=(1, OBS)).astype(np.float32),
                                rng.normal(size=(1, OBS)).astype(np.float32),
                                rng.uniform(-1, 1, (1, ACT)).astype(np.float32), np.array([rng.normal()]),
                                np.array([i % 10 == 9]), [{}])
    return model


def state(model):
    tensors = [*model.actor.parameters(), *model.critic.parameters(), *model.critic_target.parameters(),
               model.log_ent_coef]
    return [t.detach().clone() for t in tensors]


def test_same_update_as_sb3_train_from_the_same_generator_states():
    sb3, ours = make_model(), make_model()
    update = SACUpdate(ours)
    start = state(ours)
    for call in range(3):
        np.random.seed(call)
        torch.manual_seed(call)
        sb3.train(gradient_steps=4, batch_size=32)
        np.random.seed(call)
        torch.manual_seed(call)
        update(gradient_steps=4, batch_size=32)
        for a, b in zip(state(sb3), state(ours)):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
        for k in ("train/actor_loss", "train/critic_loss", "train/ent_coef", "train/ent_coef_loss"):
            assert ours.logger.name_to_value[k] == pytest.approx(sb3.logger.name_to_value[k], rel=1e-4, abs=1e-6), k
    assert ours._n_updates == sb3._n_updates == 12
    moved = [float((a - b).abs().max()) for a, b in zip(start, state(ours))]
    assert min(moved[: len(list(ours.actor.parameters()))]) > 0  # every actor tensor was updated


@pytest.mark.parametrize("kw, why", [({"use_sde": True}, "gSDE"), ({"ent_coef": 0.1}, "a fixed entropy coefficient"),
                                     ({"optimize_memory_usage": True, "replay_buffer_kwargs": {"handle_timeout_termination": False}},
                                      "optimize_memory_usage")])
def test_models_it_does_not_cover_are_refused_with_the_reason(kw, why):
    model = make_model(**kw)
    assert supports(model) == (False, why)
    with pytest.raises(ValueError, match=why):
        SACUpdate(model)
