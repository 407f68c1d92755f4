"""The policy loop play.py and collect_trajectories.py share: devices, actor and env from a command's
flags; one policy step; the PD targets it applied (the task's own control law); jump commands on a
schedule; a progress bar."""
from __future__ import annotations

import sys

import numpy as np

from tools.cli import jump_schedule, randomization_config, untrained_commands


def episode_config(args, **command):
    """The TaskConfig play and collect run: episodes of --duration, each env's command held for its
    whole episode (never resampled), the perturbation flags' randomization, and `command`'s settings."""
    from mjx_env.config import CommandConfig, EnvConfig, TaskConfig
    return TaskConfig(randomization=randomization_config(args), env=EnvConfig(episode_length_s=args.duration),
                      command=CommandConfig(resampling_time_s=2 * args.duration + 1.0, random_resample_prob=0.0,
                                            **command))


class PolicyLoop:
    """`cfg`'s env, observed as the policy file says its actor reads (history, measured velocity)."""

    def __init__(self, args, cfg, checkpoint, num_envs: int):
        import jax
        from bridge.device import resolve
        from bridge.policy import load_actor
        from mjx_env.env import Go2Env

        devices = resolve(args.device if args.backend == "mjx" else "cpu", args.matmul_precision)
        self.actor = load_actor(checkpoint, num_actions=cfg.env.num_actions).to(devices.torch)  # where the env is
        self.inputs = self.actor.inputs                     # the env observes what the actor reads
        cfg = cfg.replace(obs=cfg.obs.with_actor_inputs(self.inputs.history_length, self.inputs.actor_lin_vel))
        self.jump_every, self.jump_height = jump_schedule(args, cfg), args.jump
        for note in untrained_commands(args):
            print(note, file=sys.stderr)
        self.env = Go2Env(num_envs, args.backend, cfg, xml_path=args.xml_path, device=devices.jax,
                          mjx_impl=getattr(args, "mjx_impl", "jax"))
        self.n = num_envs
        self._pd = jax.jit(jax.vmap(self.env.task.pd_targets))
        # The velocity estimator's error (m/s, body x y z), summed over the steps seen, if the actor has one.
        self.estimator = getattr(self.actor, "estimator", None) is not None
        self.estimator_error, self.estimator_steps = np.zeros(3), 0
        self.estimator_signed = np.zeros(3)     # estimate - true: whether a speed bias is the estimate's

    def task(self) -> str | None:
        """The task name the policy file records ("task" of a checkpoint or exported .pt, the ONNX
        metadata's "task"), or None for a file that names none."""
        saved = getattr(self.actor, "saved", None) or getattr(self.actor, "metadata", None) or {}
        task = saved.get("task")
        return task if isinstance(task, str) else None

    def actor_input(self, state):
        """What the actor reads: the observation, or its history as one row, oldest first."""
        from bridge.vec_env import to_torch
        if self.inputs.history_length == 1:
            return to_torch(state.obs)
        return to_torch(state.obs_history).flatten(1)

    def step(self, state):
        """The actor's action on its input, one env step."""
        import jax
        import torch
        with torch.inference_mode():
            x = self.actor_input(state)
            actions = self.actor(x)
            if self.estimator:
                self._score_estimate(state, self.actor.estimate(x))
        return self.env.step(state, jax.dlpack.from_dlpack(actions.contiguous()))

    def _score_estimate(self, state, estimate) -> None:
        o = self.env.cfg.obs
        true = np.asarray(state.critic_obs)[:, o.num_obs:o.num_obs + 3] / o.lin_vel_scale
        err = estimate.cpu().numpy() / o.lin_vel_scale - true
        self.estimator_error += np.abs(err).sum(0)
        self.estimator_signed += err.sum(0)
        self.estimator_steps += self.n

    def estimator_summary(self) -> dict:
        """Mean absolute and mean signed (estimate - true) error of the velocity estimate, per body
        axis (m/s); {} without an estimator."""
        if not self.estimator_steps:
            return {}
        e, b = self.estimator_error / self.estimator_steps, self.estimator_signed / self.estimator_steps
        return {"estimator_abs_error_m_s": {"x": e[0], "y": e[1], "z": e[2]},
                "estimator_bias_m_s": {"x": b[0], "y": b[1], "z": b[2]}}

    def pd_targets(self, state, new) -> np.ndarray:
        """The joint targets applied in the step from state to new (Go2Task.pd_targets)."""
        return np.asarray(self._pd(state.last_action, new.last_action))

    def jumps_due(self, state, running) -> np.ndarray:
        """Envs to command a jump now: running, not just reset, at a multiple of the schedule."""
        if not self.jump_every:
            return np.zeros(self.n, bool)
        step = np.asarray(state.episode_step)
        return running & ~np.asarray(state.done) & (step > 0) & (step % self.jump_every == 0)

    def command_jumps(self, state, mask):
        import jax.numpy as jnp
        return self.env.with_jump(state, jnp.asarray(mask), jnp.full(self.n, self.jump_height, jnp.float32))

    @staticmethod
    def progress(total: int, desc: str, hide: bool):
        from tqdm import tqdm
        return tqdm(total=total, unit="step", desc=desc, leave=False,
                    disable=True if hide else None)     # None: off when not a terminal
