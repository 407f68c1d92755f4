"""The policy loop play.py and collect_trajectories.py share: devices, actor and env from a command's
flags; one policy step; the PD targets it applied (the task's own control law); jump commands on a
schedule; a progress bar."""
from __future__ import annotations

import numpy as np

from tools.cli import jump_schedule


class PolicyLoop:
    def __init__(self, args, cfg, checkpoint, num_envs: int):
        import jax
        from bridge.device import resolve
        from bridge.policy import load_actor
        from mjx_env.env import Go2Env

        self.jump_every, self.jump_height = jump_schedule(args, cfg), args.jump
        devices = resolve(args.device if args.backend == "mjx" else "cpu", args.matmul_precision)
        self.actor = load_actor(checkpoint, cfg.obs.num_obs, cfg.env.num_actions).to(devices.torch)  # where the env is
        self.env = Go2Env(num_envs, args.backend, cfg, xml_path=args.xml_path, device=devices.jax)
        self.n = num_envs
        self._pd = jax.jit(jax.vmap(self.env.task.pd_targets))

    def step(self, state):
        """The actor's action on state.obs, one env step."""
        import jax
        import torch
        from bridge.vec_env import to_torch
        with torch.inference_mode():
            actions = self.actor(to_torch(state.obs))
        return self.env.step(state, jax.dlpack.from_dlpack(actions.contiguous()))

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
