"""SAC's gradient steps for small MLP nets, with less Python per step than stable-baselines3's.

``SAC.train`` from SB3 spends ~3 ms per gradient step on the loop's [64, 64] nets, two thirds of
it Python: ``torch.distributions`` objects, module hooks, one polyak op per parameter, one
``.item()`` per loss, a replay sample per step. :class:`SACUpdate` is the same update on the same
objects (the model's actor, critic, target critic, optimizers, entropy coefficient and replay
buffer, so ``save``/``load`` and SB3's ``predict`` are unchanged):

- the replay batches of all the call's gradient steps are gathered at once (the buffer does not
  change between them; the indices are drawn as SB3 draws them, step by step);
- the squashed Gaussian is written out (``u = mu + std * eps``, ``a = tanh(u)``; log-prob
  ``-eps^2/2 - log std - log sqrt(2 pi) - log(1 - a^2 + 1e-6)`` summed over the action: SB3's
  ``SquashedDiagGaussianDistribution`` with its value and gradients);
- the actor runs once on observations and next observations together (the next half under
  ``detach``, as SB3's ``no_grad``);
- the target critic follows with one ``_foreach_lerp_`` (``t += tau (p - t)``, SB3's polyak);
- losses are logged as SB3 logs them (the call's means), read back once per call.

The order of the updates is SB3's: entropy coefficient, critic, then the actor against the
updated critic, then the target; so are the random draws (numpy's global generator for the
batches, torch's for the actions): from the same generator states the parameters after a call
are SB3's to float rounding (tested).
:func:`supports` says when a model is one this covers; anything else keeps SB3's ``train``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's sac.policies bounds
SQUASH_EPS = 1e-6  # SB3's SquashedDiagGaussianDistribution epsilon


def supports(model) -> tuple[bool, str]:
    """Whether :class:`SACUpdate` computes this model's update (and if not, why)."""
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.torch_layers import FlattenExtractor

    checks = [
        (not model.use_sde, "gSDE"),
        (type(model.replay_buffer) is ReplayBuffer, "a non-plain replay buffer"),
        (not model.replay_buffer.optimize_memory_usage, "optimize_memory_usage"),
        (model._vec_normalize_env is None, "VecNormalize"),
        (model.ent_coef_optimizer is not None, "a fixed entropy coefficient"),
        (isinstance(model.actor.features_extractor, FlattenExtractor), "a custom actor features extractor"),
        (isinstance(model.critic.features_extractor, FlattenExtractor), "a custom critic features extractor"),
        (not model.batch_norm_stats, "batch norm in the policy"),
        (not any(isinstance(mod, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase))
                 for mod in model.policy.modules()), "dropout or batch norm in the policy (train/eval modes differ)"),
        (int(model.target_update_interval) == 1, "target_update_interval != 1"),
        (str(model.device) == "cpu", "a non-CPU device"),
    ]
    for ok, what in checks:
        if not ok:
            return False, what
    return True, ""


def _skip_same_mode(policy) -> None:
    """``policy.set_training_mode`` returns at once when the policy is in that mode already.

    SB3 calls it before every ``predict`` (~0.7 ms: ``Module.train`` walks every submodule); with
    the nets this class covers (no batch norm, no dropout) the mode changes nothing computed, so
    :class:`SACUpdate` does not switch to training mode and predict's switch back is a no-op."""
    if getattr(policy, "_rls3_mode_skip", False):
        return
    full = policy.set_training_mode

    def set_training_mode(mode: bool) -> None:
        if policy.training != bool(mode):
            full(mode)

    policy.set_training_mode = set_training_mode
    policy._rls3_mode_skip = True


class SACUpdate:
    """``model.train``'s replacement for a model :func:`supports` accepts."""

    def __init__(self, model):
        ok, why = supports(model)
        if not ok:
            raise ValueError(f"SACUpdate does not cover {why}")
        self.model = model
        self._critic_params = list(model.critic.parameters())
        self._target_params = list(model.critic_target.parameters())
        _skip_same_mode(model.policy)

    def _sample(self, steps: int, b: int):
        rb = self.model.replay_buffer
        upper = rb.buffer_size if rb.full else rb.pos
        draws = [(np.random.randint(0, upper, size=b), np.random.randint(0, rb.n_envs, size=b)) for _ in range(steps)]
        inds, envs = np.concatenate([d[0] for d in draws]), np.concatenate([d[1] for d in draws])
        n = steps * b
        done = rb.dones[inds, envs] * (1 - rb.timeouts[inds, envs])
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return (as_t(rb.observations[inds, envs].reshape(n, -1)), as_t(rb.actions[inds, envs].reshape(n, -1)),
                as_t(rb.next_observations[inds, envs].reshape(n, -1)), as_t(done.reshape(n, 1)),
                as_t(rb.rewards[inds, envs].reshape(n, 1)))

    def _actor(self, obs):
        actor = self.model.actor
        h = actor.latent_pi(obs)
        mu = actor.mu(h)
        log_std = torch.clamp(actor.log_std(h), LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.randn_like(mu)
        a = torch.tanh(mu + torch.exp(log_std) * eps)
        log_prob = (-0.5 * eps * eps - log_std - LOG_SQRT_2PI - torch.log(1.0 - a * a + SQUASH_EPS)).sum(1, keepdim=True)
        return a, log_prob

    @staticmethod
    def _q(critic, obs, act):
        x = torch.cat([obs, act], dim=1)
        return [q(x) for q in critic.q_networks]

    def __call__(self, gradient_steps: int, batch_size: int = 64) -> None:
        m = self.model  # no set_training_mode(True): the nets compute the same in both modes (supports)
        m._update_learning_rate([m.actor.optimizer, m.critic.optimizer, m.ent_coef_optimizer])
        steps, b = int(gradient_steps), int(batch_size)
        obs_all, act_all, next_all, done_all, rew_all = self._sample(steps, b)
        gamma, tau, target_entropy = float(m.gamma), float(m.tau), float(m.target_entropy)
        logged = []
        for i in range(steps):
            s = slice(i * b, (i + 1) * b)
            obs, act, nxt, done, rew = obs_all[s], act_all[s], next_all[s], done_all[s], rew_all[s]
            a_both, logp_both = self._actor(torch.cat([obs, nxt]))
            actions_pi, log_prob = a_both[:b], logp_both[:b]
            next_actions, next_log_prob = a_both[b:].detach(), logp_both[b:].detach()

            ent_coef = torch.exp(m.log_ent_coef.detach())
            ent_coef_loss = -(m.log_ent_coef * (log_prob.detach() + target_entropy)).mean()
            m.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            m.ent_coef_optimizer.step()

            with torch.no_grad():
                next_q = torch.min(torch.cat(self._q(m.critic_target, nxt, next_actions), dim=1), dim=1, keepdim=True)[0]
                target_q = rew + (1.0 - done) * gamma * (next_q - ent_coef * next_log_prob)
            critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in self._q(m.critic, obs, act))
            m.critic.optimizer.zero_grad()
            critic_loss.backward()
            m.critic.optimizer.step()

            min_q_pi = torch.min(torch.cat(self._q(m.critic, obs, actions_pi), dim=1), dim=1, keepdim=True)[0]
            actor_loss = (ent_coef * log_prob - min_q_pi).mean()
            m.actor.optimizer.zero_grad()
            actor_loss.backward()
            m.actor.optimizer.step()

            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, tau)
            logged.append(torch.stack([ent_coef.reshape(()), actor_loss.detach(), critic_loss.detach(),
                                       ent_coef_loss.detach()]))
        m._n_updates += steps
        ent, actor_l, critic_l, ent_l = torch.stack(logged).mean(0).tolist()
        m.logger.record("train/n_updates", m._n_updates, exclude="tensorboard")
        m.logger.record("train/ent_coef", ent)
        m.logger.record("train/actor_loss", actor_l)
        m.logger.record("train/critic_loss", critic_l)
        m.logger.record("train/ent_coef_loss", ent_l)
