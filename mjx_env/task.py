"""The Go2 locomotion task in JAX, written once for both physics backends.

Everything here is per env and pure; Go2Env vmaps and jits it. A backend only answers
"advance the physics": (qpos, qvel, ctrl) -> (qpos, qvel) over one control period.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mjx_env.config import TaskConfig
from mjx_env.math import roll_pitch, rotate_inverse
from mjx_env.model import Go2Model
from mjx_env.randomize import LIN_VEL_NOISE_STREAM, NOISE_STREAM, PUSH_STREAM, Randomizer
from mjx_env.rewards import active_scales, scaled_terms
from mjx_env.state import State


class Go2Task:
    def __init__(self, model: Go2Model, cfg: TaskConfig):
        cfg.validate()
        self.cfg = cfg
        self.reward_scales = active_scales(cfg)
        self.qpos_idx = jnp.asarray(model.qpos_idx)
        self.qvel_idx = jnp.asarray(model.qvel_idx)
        self.bq = model.base_qpos_adr
        self.bv = model.base_qvel_adr
        self.default_angles = jnp.asarray(cfg.env.default_angles(), dtype=jnp.float32)
        self.init_qpos = jnp.asarray(model.init_qpos, dtype=jnp.float32)
        self.nv = model.nv
        self.commands_scale = jnp.asarray(cfg.obs.commands_scale, dtype=jnp.float32)
        self.randomizer = Randomizer(model, cfg)
        r, o = cfg.randomization, cfg.obs
        # legged_gym's noise vector: each term's noise times its observation scale, in obs order
        # (angular velocity, gravity, commands, joint positions, joint velocities, actions, phase).
        self.noise_vec = r.noise_level * jnp.concatenate([
            jnp.zeros(3 * o.actor_lin_vel),                       # the measured velocity has its own noise
            jnp.full(3, r.noise_ang_vel * o.ang_vel_scale), jnp.full(3, r.noise_gravity),
            jnp.zeros(cfg.command.num_commands), jnp.full(12, r.noise_dof_pos * o.dof_pos_scale),
            jnp.full(12, r.noise_dof_vel * o.dof_vel_scale), jnp.zeros(12), jnp.zeros(1)])

    # ---- commands ---------------------------------------------------------------------------
    def sample_commands(self, key: jax.Array) -> jax.Array:
        c = self.cfg.command
        if c.fixed is not None:
            return jnp.asarray(c.fixed, dtype=jnp.float32)
        lo = jnp.array([c.lin_vel_x_range[0], c.lin_vel_y_range[0], c.ang_vel_range[0], c.height_range[0]])
        hi = jnp.array([c.lin_vel_x_range[1], c.lin_vel_y_range[1], c.ang_vel_range[1], c.height_range[1]])
        u = jax.random.uniform(key, (4,), minval=lo, maxval=hi)
        if c.height_scales_velocity:
            # Velocity commands shrink near the nominal height (x0.5 there, x1 at the range's top).
            u = u.at[:3].multiply(c.velocity_scale(u[3]))
        return jnp.concatenate([u, jnp.zeros(1)])

    # ---- derived quantities -------------------------------------------------------------------
    def base(self, qpos, qvel):
        quat = qpos[self.bq + 3:self.bq + 7]
        quat = quat / jnp.linalg.norm(quat)
        return dict(
            height=qpos[self.bq + 2],
            quat=quat,
            lin_vel=rotate_inverse(quat, qvel[self.bv:self.bv + 3]),   # world -> base frame
            ang_vel=qvel[self.bv + 3:self.bv + 6],                      # free joint: already base frame
            gravity=rotate_inverse(quat, jnp.array([0.0, 0.0, -1.0])),
            dof_pos=qpos[self.qpos_idx] - self.default_angles,
            dof_vel=qvel[self.qvel_idx],
        )

    def observe(self, b: dict, commands, action, jump_steps, noise_key=None):
        """Policy and critic observations. With observation noise on (and a key), the policy's
        values get uniform noise as in legged_gym; the critic keeps the true ones."""
        o = self.cfg.obs
        phase = (jump_steps / self.cfg.command.jump_reward_steps).astype(jnp.float32)
        lin_vel = [b["lin_vel"] * o.lin_vel_scale] if o.actor_lin_vel else []
        policy = jnp.concatenate(lin_vel + [
            b["ang_vel"] * o.ang_vel_scale,
            b["gravity"],
            commands * self.commands_scale,
            b["dof_pos"] * o.dof_pos_scale,
            b["dof_vel"] * o.dof_vel_scale,
            action,
            phase[None],
        ])
        critic = jnp.concatenate([policy, b["lin_vel"] * o.lin_vel_scale, b["height"][None]])
        if o.actor_lin_vel and noise_key is not None:
            # A measured velocity is a noisy one (its own stream: the other noise is unchanged).
            u = jax.random.uniform(jax.random.fold_in(noise_key, LIN_VEL_NOISE_STREAM), (3,), minval=-1.0, maxval=1.0)
            policy = policy.at[:3].add(u * o.lin_vel_noise * o.lin_vel_scale)
        if self.cfg.randomization.obs_noise and noise_key is not None:
            u = jax.random.uniform(jax.random.fold_in(noise_key, NOISE_STREAM), policy.shape, minval=-1.0, maxval=1.0)
            policy = policy + u * self.noise_vec
        return policy, critic

    def history(self, obs) -> jax.Array:
        """A fresh history: every slot holds the episode's first observation."""
        return jnp.tile(obs[None], (self.cfg.obs.history_length, 1))

    @staticmethod
    def push_history(history, obs) -> jax.Array:
        """The oldest observation out, the newest in at the end."""
        return jnp.concatenate([history[1:], obs[None]])

    def refresh_obs(self, state: State, obs) -> jax.Array:
        """The history after a tool rewrote the newest observation: at an episode's start (nothing
        seen yet but that observation) every slot holds it, later only the newest slot changes."""
        return jnp.where(state.episode_step == 0, self.history(obs), state.obs_history.at[-1].set(obs))

    def reward_terms(self, b: dict, state: State, action) -> dict:
        """Scaled terms of a step from `state` with `action` to the state reached (base `b`)."""
        q = dict(b, commands=state.commands, action=action, last_action=state.last_action,
                 jump_steps=state.jump_steps, jump_target=state.jump_target)
        return scaled_terms(q, self.cfg, self.reward_scales)

    def command_jump(self, commands, jump_steps, jump_target, jump, height):
        """Where `jump`, a jump command of target base height `height` (m), as the reference does:
        it shows in commands[4] for one step, opens a window of jump_reward_steps unless one is
        open (a second command inside it does not restart it), and sets the target height."""
        commands = commands.at[4].set(jnp.where(jump, height, commands[4]))
        jump_steps = jnp.where(jump & (jump_steps == 0), self.cfg.command.jump_reward_steps, jump_steps)
        return commands, jump_steps, jnp.where(jump, height, jump_target).astype(jnp.float32)

    @staticmethod
    def metrics(b: dict) -> dict:
        """What evaluation reads of the state a step reached (before any auto-reset)."""
        return {"lin_vel": b["lin_vel"], "ang_vel": b["ang_vel"], "height": b["height"]}

    # ---- reset / step -------------------------------------------------------------------------
    def reset(self, key: jax.Array) -> State:
        r = self.cfg.randomization
        # Randomization draws come from streams folded out of the key: the seed's stream is kept.
        dr = self.randomizer.sample(key) if r.enabled else {}
        push_countdown = self.randomizer.push_interval(jax.random.fold_in(key, PUSH_STREAM)) if r.push else jnp.zeros((), jnp.int32)
        noise_key = key
        key, k_cmd = jax.random.split(key)
        commands = self.sample_commands(k_cmd)
        if self.cfg.command.fixed is None and self.cfg.command.reset_height_to_nominal:
            commands = commands.at[3].set(self.cfg.command.nominal_height)
        qpos, qvel = self.init_qpos, jnp.zeros(self.nv, jnp.float32)
        zeros_a = jnp.zeros(self.cfg.env.num_actions, jnp.float32)
        jump_steps, jump_target = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
        obs, critic = self.observe(self.base(qpos, qvel), commands, zeros_a, jump_steps, noise_key)
        sums = {k: jnp.zeros((), jnp.float32) for k in self.reward_scales}
        f = jnp.zeros((), bool)
        metrics = {k: jnp.zeros_like(v) for k, v in self.metrics(self.base(qpos, qvel)).items()}
        return State(metrics=metrics, qpos=qpos, qvel=qvel, last_action=zeros_a, commands=commands, jump_steps=jump_steps,
                     jump_target=jump_target,
                     episode_step=jnp.zeros((), jnp.int32), key=key, obs=obs, obs_history=self.history(obs),
                     critic_obs=critic,
                     reward=jnp.zeros((), jnp.float32), terminated=f, time_out=f, done=f, diverged=f, bad_action=f,
                     reward_terms=dict(sums), episode_sums=dict(sums), final_episode_sums=dict(sums),
                     final_episode_length=jnp.zeros((), jnp.int32), dr=dr, push_countdown=push_countdown)

    def with_commands(self, state: State, commands) -> State:
        """Set an env's commands and refresh its observation to show them (tools, not training)."""
        obs, critic = self.observe(self.base(state.qpos, state.qvel), commands, state.last_action,
                                   state.jump_steps)
        return state.replace(commands=commands, obs=obs, obs_history=self.refresh_obs(state, obs), critic_obs=critic)

    def with_jump(self, state: State, jump, height) -> State:
        """Command a jump where `jump` (tools: play, data collection), shown in the observation."""
        commands, jump_steps, jump_target = self.command_jump(state.commands, state.jump_steps, state.jump_target,
                                                              jump, height)
        obs, critic = self.observe(self.base(state.qpos, state.qvel), commands, state.last_action, jump_steps)
        return state.replace(commands=commands, jump_steps=jump_steps, jump_target=jump_target, obs=obs,
                             obs_history=self.refresh_obs(state, obs), critic_obs=critic)

    def push(self, state: State) -> State:
        """Before the physics: the episode's drift (if drawn), and a kick of the base when this env's
        push timer runs out (pushes on)."""
        if self.randomizer.drifts:
            state = state.replace(qvel=self.randomizer.drift(state.dr, state.qpos, state.qvel))
        if not self.cfg.randomization.push:
            return state
        qvel, countdown = self.randomizer.push(state.key, state.qvel, state.push_countdown)
        return state.replace(qvel=qvel, push_countdown=countdown)

    def clean_action(self, action):
        """Non-finite entries become 0 (the default pose), then the reference's clip."""
        finite = jnp.isfinite(action)
        clip = self.cfg.env.clip_actions
        return jnp.clip(jnp.where(finite, action, 0.0), -clip, clip), ~jnp.all(finite)

    def ctrl(self, state: State, action) -> jax.Array:
        """PD targets for this control period, in actuator (= action) order."""
        return self.pd_targets(state.last_action, action)

    def pd_targets(self, last_action, action) -> jax.Array:
        """The control law (also Φ's): with latency, step t's targets come from action t-1."""
        e = self.cfg.env
        applied = last_action if e.simulate_action_latency else action
        return self.default_angles + e.action_scale * applied

    def after_physics(self, state: State, action, bad_action, qpos, qvel) -> State:
        """Reward and termination on the state reached, then commands, then auto-reset."""
        e, c = self.cfg.env, self.cfg.command
        key, k_cmd, k_resample, k_jump, k_jump_cmd, k_reset = jax.random.split(state.key, 6)

        finite = jnp.all(jnp.isfinite(qpos)) & jnp.all(jnp.isfinite(qvel))
        diverged = ~finite | (jnp.max(jnp.abs(qvel)) > e.max_abs_qvel) \
            | (jnp.max(jnp.abs(qpos[self.bq:self.bq + 2])) > e.max_abs_base_xy)
        # Keep NaN out of everything computed below; a diverged env is reset anyway.
        qpos = jnp.where(finite, qpos, self.init_qpos)
        qvel = jnp.where(finite, qvel, 0.0)

        b = self.base(qpos, qvel)
        terms = self.reward_terms(b, state, action)
        terms = {k: jnp.where(diverged | bad_action, 0.0, v) for k, v in terms.items()}
        reward = sum(terms.values()) if terms else jnp.zeros(())

        episode_step = state.episode_step + 1
        roll, pitch = roll_pitch(b["quat"])
        fell = (jnp.abs(roll) > jnp.deg2rad(e.termination_roll_deg)) \
            | (jnp.abs(pitch) > jnp.deg2rad(e.termination_pitch_deg))
        # An env whose physics diverged, or whose policy output was not finite, starts over.
        terminated = fell | diverged | bad_action
        time_out = (episode_step >= e.max_episode_length) & ~terminated
        done = terminated | time_out

        # Commands for the next step: periodic and random resampling, then jumps.
        commands = state.commands
        resample = (episode_step % c.resample_every(e.dt) == 0) \
            | (jax.random.uniform(k_resample) < c.random_resample_prob)
        commands = jnp.where(resample, self.sample_commands(k_cmd), commands)
        jump_steps, jump_target = jnp.maximum(state.jump_steps - 1, 0), state.jump_target
        commands = commands.at[4].set(0.0)                      # a jump command lasts one step
        if c.jumps_enabled and c.fixed is None:
            jump = jax.random.uniform(k_jump) < c.jump_prob
            jump_cmd = jax.random.uniform(k_jump_cmd, minval=c.jump_range[0], maxval=c.jump_range[1])
            commands, jump_steps, jump_target = self.command_jump(commands, jump_steps, jump_target, jump, jump_cmd)

        sums = {k: state.episode_sums[k] + v for k, v in terms.items()}
        obs, critic = self.observe(b, commands, action, jump_steps, key)
        cont = state.replace(qpos=qpos, qvel=qvel, last_action=action, commands=commands,
                             jump_steps=jump_steps.astype(jnp.int32), jump_target=jump_target,
                             episode_step=episode_step, key=key, obs=obs, critic_obs=critic, episode_sums=sums,
                             obs_history=self.push_history(state.obs_history, obs))
        fresh = self.reset(k_reset).replace(key=key)
        new = jax.tree_util.tree_map(lambda r, k: jnp.where(done, r, k), fresh, cont)
        zero = jnp.zeros((), jnp.float32)
        return new.replace(
            metrics=self.metrics(b),
            reward=reward, terminated=terminated, time_out=time_out, done=done, diverged=diverged,
            bad_action=bad_action, reward_terms=terms,
            final_episode_sums={k: jnp.where(done, v, zero) for k, v in sums.items()},
            final_episode_length=jnp.where(done, episode_step, 0).astype(jnp.int32),
        )
