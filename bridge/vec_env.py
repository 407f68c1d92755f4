"""rsl_rl VecEnv over the JAX Go2Env, with DLPack zero-copy in both directions.

Observations, rewards, dones and time-outs handed to rsl_rl are torch views of the JAX
arrays of the new state (torch.from_dlpack), and the policy's actions enter JAX as a view
of the torch tensor (jax.dlpack.from_dlpack). Nothing crosses to the host in step(): the
per-term episode rewards are accumulated on the device, inside one jitted JAX function, and
handed to rsl_rl's logger once per rollout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from mjx_env.env import Go2Env


def to_torch(x: jax.Array) -> torch.Tensor:
    return torch.from_dlpack(x)


def to_jax(t: torch.Tensor) -> jax.Array:
    return jax.dlpack.from_dlpack(t.detach().contiguous())


def _tally(acc: jax.Array, final_episode_sums: dict, done, diverged, bad_action) -> jax.Array:
    # final_episode_sums is zero for envs that did not finish, so plain sums are right.
    sums = [v.sum() for v in final_episode_sums.values()]
    return acc + jnp.stack([x.astype(jnp.float32) for x in sums + [done.sum(), diverged.sum(), bad_action.sum()]])


class Go2VecEnv(VecEnv):
    def __init__(self, env: Go2Env, seed: int = 0, log_every: int = 24, lin_vel_group: bool = False):
        self.env = env
        # --estimator: the true body-frame velocity (scaled, from the critic's values) as its own
        # group, the estimator's regression target (bridge/estimator.py); no actor or critic reads it.
        self.lin_vel_group = lin_vel_group
        self.num_envs = env.num_envs
        self.num_actions = env.num_actions
        self.max_episode_length = env.max_episode_length
        self.cfg = env.cfg           # rsl_rl hands it to the logger; W&B stores it (dataclasses.asdict)
        self.state = env.reset(jax.random.PRNGKey(seed))
        # The device of the env's arrays is the device of the tensors rsl_rl gets.
        self.device = to_torch(self.state.reward).device
        self.log_every = max(1, int(log_every))   # = num_steps_per_env: one log entry per rollout
        self._steps = 0
        self._term_keys = [f"rew_{k}" for k in self.state.final_episode_sums]
        # Episode statistics of one rollout, summed on the env's device by one small jitted
        # function: [per-term sums of the episodes that ended..., episodes ended, diverged, bad actions].
        self._tally = jax.jit(_tally)
        self._zero = jax.device_put(jnp.zeros(len(self._term_keys) + 3, jnp.float32), self.state.reward.device)
        self._acc = self._zero
        self._last = torch.zeros(len(self._term_keys), device=self.device)
        self._episode_s = env.cfg.env.episode_length_s

    # ---- rsl_rl interface --------------------------------------------------------------------
    @property
    def episode_length_buf(self) -> torch.Tensor:
        return to_torch(self.state.episode_step)

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        # rsl_rl assigns random counters here (learn(init_at_random_ep_len=True)).
        steps = to_jax(value.to(self.device, torch.int32))
        self.state = self.state.replace(episode_step=jnp.asarray(steps, jnp.int32))

    def get_observations(self) -> TensorDict:
        return self._obs()

    def step(self, actions: torch.Tensor):
        # DLPack crossings per step: the action in; obs, critic obs, reward, done, time-out out.
        self.state = s = self.env.step(self.state, to_jax(actions.to(self.device, torch.float32)))
        self._acc = self._tally(self._acc, s.final_episode_sums, s.done, s.diverged, s.bad_action)
        extras = {"time_outs": to_torch(s.time_out)}
        self._steps += 1
        if self._steps % self.log_every == 0:
            extras["episode"] = self._flush()
        return self._obs(), to_torch(s.reward), to_torch(s.done), extras

    # ---- helpers -----------------------------------------------------------------------------
    def _obs(self) -> TensorDict:
        s, n = self.state, self.env.cfg.obs.num_obs
        # The actor's input: its history of observations, oldest first, as one row (a view: the
        # (envs, N, frame) array is contiguous); with no history, the observation itself.
        policy = to_torch(s.obs) if s.obs_history.shape[1] == 1 else to_torch(s.obs_history).flatten(1)
        groups = {"policy": policy, "critic": to_torch(s.critic_obs)}
        if self.lin_vel_group:
            groups["lin_vel"] = groups["critic"][:, n:n + 3]
        return TensorDict(groups, batch_size=[self.num_envs], device=self.device)

    def _flush(self) -> dict:
        # Mean over the episodes that ended in this rollout, per second of episode (as the
        # reference logs it); a rollout where none ended repeats the last value.
        acc = to_torch(self._acc)
        self._acc = self._zero
        k = len(self._term_keys)
        count = acc[k]
        mean = torch.where(count > 0, acc[:k] / count.clamp(min=1) / self._episode_s, self._last)
        self._last = mean
        out = {key: mean[i] for i, key in enumerate(self._term_keys)}
        out["diverged_envs"], out["bad_actions"] = acc[k + 1], acc[k + 2]
        out.update(self._randomization_stats())
        return out

    def _randomization_stats(self) -> dict:
        """Mean and spread over the envs of this iteration's randomization draws (TensorBoard)."""
        if not self.state.dr:
            return {}
        stats = self.env.task.randomizer.stats(self.state.dr)
        out = {}
        for k, v in stats.items():
            t = to_torch(v)
            out[f"dr_{k}_mean"], out[f"dr_{k}_std"] = t.mean(), t.std()
        return out

    def close(self) -> None:
        self.env.close()
