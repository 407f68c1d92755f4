"""Go2Env: the batched functional environment, over either physics backend.

    env = Go2Env(num_envs=4096, backend="mjx")
    state = env.reset(jax.random.PRNGKey(0))
    state = env.step(state, actions)          # actions: (num_envs, 12)

reset and step are pure functions of their inputs; finished envs are reset inside step.
With mjx_impl="warp" (MJX's Warp implementation), step also reads Warp's buffer-overflow bits on
the host every WarpConfig.overflow_check_every steps and stops with one line if contacts were lost.
"""
from __future__ import annotations

import jax
import numpy as np

from mjx_env.config import TaskConfig, WarpConfig
from mjx_env.errors import UserError
from mjx_env.model import Go2Model, load_go2
from mjx_env.physics import BACKENDS, MjxPhysics, MujocoPhysics, check_impl, warp_overflow_names
from mjx_env.randomize import write_fields
from mjx_env.task import Go2Task


class Go2Env:
    def __init__(self, num_envs: int = 4096, backend: str = "mjx", cfg: TaskConfig | None = None,
                 xml_path=None, nthread: int | None = None, model: Go2Model | None = None,
                 device: jax.Device | None = None, mjx_impl: str = "jax", warp: WarpConfig | None = None):
        """mjx_impl: MJX's implementation, "jax" (default) or "warp" (backend "mjx" only)."""
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        check_impl(mjx_impl, backend)
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise UserError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.cfg = cfg or TaskConfig()
        self.cfg.validate()
        self.num_envs = int(num_envs)
        self.backend = backend
        self.mjx_impl = mjx_impl
        self.warp = warp or WarpConfig()
        # Every array of the state is committed to this device, so that arrays arriving from
        # torch (committed too) never change the jit cache key: one compilation per function.
        # The mujoco backend steps on the host, so its task arrays stay on the CPU as well.
        self.device = device or (jax.devices()[0] if backend == "mjx" else jax.devices("cpu")[0])
        self.model = model or load_go2(xml_path, self.cfg.env)
        self.task = Go2Task(self.model, self.cfg)
        substeps = self.cfg.env.substeps
        task = self.task

        def reset(key):
            return jax.vmap(task.reset)(jax.random.split(key, self.num_envs))

        rand = task.randomizer
        randomized = self.cfg.randomization.enabled
        self.dr_fields = jax.jit(jax.vmap(rand.fields))   # per-env model fields of the draws

        def before(state, action):
            state = jax.vmap(task.push)(state)
            action, bad = jax.vmap(task.clean_action)(action)
            return state, action, bad, jax.vmap(task.ctrl)(state, action)

        def after(state, action, bad, qpos, qvel):
            return jax.vmap(task.after_physics)(state, action, bad, qpos, qvel)

        self.with_commands = jax.jit(jax.vmap(task.with_commands))
        self.with_jump = jax.jit(jax.vmap(task.with_jump))     # (state, jump (n,) bool, height (n,))
        reset_jit = jax.jit(reset)
        self.reset = lambda key: reset_jit(jax.device_put(key, self.device))
        if backend == "mjx" and mjx_impl == "warp":
            self.physics = MjxPhysics(self.model, substeps, device=self.device,
                                      mj_model=rand.mjx_model(self.model.mj_model), impl="warp",
                                      num_envs=self.num_envs, warp=self.warp)

            def step_checked(state, action):
                state, action, bad, ctrl = before(state, action)
                fields = jax.vmap(rand.fields)(state.dr) if randomized else None
                qpos, qvel, overflow = self.physics.advance_checked(state.qpos, state.qvel, ctrl, fields)
                return after(state, action, bad, qpos, qvel), overflow

            self.step_checked = jax.jit(step_checked)
            self._overflow = []            # overflow scalars of the steps not yet read

            def step(state, action):
                # committed like the JAX implementation's (below): one program for every caller
                state, overflow = self.step_checked(state, jax.device_put(action, self.device))
                # Keep the device scalar and read the lot every few steps, when long computed:
                # the hot step itself never waits on the host.
                self._overflow.append(overflow)
                if len(self._overflow) >= self.warp.overflow_check_every:
                    self.check_overflow()
                return state

            self.step = step
        elif backend == "mjx":
            self.physics = MjxPhysics(self.model, substeps, device=self.device,
                                      mj_model=rand.mjx_model(self.model.mj_model))

            def step(state, action):
                state, action, bad, ctrl = before(state, action)
                fields = jax.vmap(rand.fields)(state.dr) if randomized else None
                qpos, qvel = self.physics.advance(state.qpos, state.qvel, ctrl, fields)
                return after(state, action, bad, qpos, qvel)

            # An action from torch (DLPack) arrives committed to its device, one made with jnp or
            # numpy does not, and the two lower to different programs (two compiles of the same
            # step); step commits it, so every caller (and bench.py's ahead-of-time compile of
            # step_jit) shares one program. Committing a committed array is free.
            self.step_jit = jax.jit(step)
            self.step = lambda state, action: self.step_jit(state, jax.device_put(action, self.device))
        else:
            self.physics = MujocoPhysics(self.model, substeps, self.num_envs, nthread, per_env_models=randomized,
                                         contact_model=rand.contact_model)
            before_jit, after_jit = jax.jit(before), jax.jit(after)
            self._last_state = None

            def step(state, action):
                if randomized:
                    self._write_models(state)
                state, action, bad, ctrl = before_jit(state, jax.device_put(action, self.device))
                qpos, qvel = self.physics.advance(np.asarray(state.qpos), np.asarray(state.qvel),
                                                  np.asarray(ctrl))
                qpos, qvel = jax.device_put((qpos, qvel), self.device)
                new = after_jit(state, action, bad, qpos, qvel)
                self._last_state = new
                return new

            self.step = step

    def check_overflow(self) -> None:
        """mjx_impl="warp": raise one line if any step since the last check overflowed Warp's
        contact or constraint buffers (the physics of those steps lost contacts)."""
        pending, self._overflow = self._overflow, []
        if not pending:
            return
        bits = int(np.bitwise_or.reduce(np.asarray(jax.device_get(pending), dtype=np.int64)))
        if bits:
            p = self.physics
            raise UserError(f"MuJoCo Warp's buffers overflowed ({warp_overflow_names(bits)}; naconmax={p.naconmax} "
                            f"for {self.num_envs} envs, njmax={p.njmax}): contacts or constraints were dropped; "
                            "raise WarpConfig.buffer_margin (mjx_env/config.py)")

    def _write_models(self, state) -> None:
        """mujoco backend: bring each env's MjModel to its state's draws. After our own step only the
        envs reset in it drew anew; any other state (a reset, one set by a tool) is written whole."""
        if state is self._last_state:
            rows = np.flatnonzero(np.asarray(state.done))
        else:
            rows = np.arange(self.num_envs)
        if rows.size:
            fields = jax.device_get(self.dr_fields(state.dr))
            write_fields(self.physics.models, fields, rows)

    @property
    def num_obs(self) -> int:
        return self.cfg.obs.num_obs

    @property
    def num_privileged_obs(self) -> int:
        return self.cfg.obs.num_privileged_obs

    @property
    def num_actions(self) -> int:
        return self.cfg.env.num_actions

    @property
    def max_episode_length(self) -> int:
        return self.cfg.env.max_episode_length

    def close(self):
        if hasattr(self.physics, "close"):
            self.physics.close()
