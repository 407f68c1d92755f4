"""The reward terms: one pure function each, all in one registry (REWARDS).

A term maps the quantities of a step to its unscaled value. Its scale lives in RewardConfig
(`scales`, and `jump_scales` when jumps are on) and is multiplied by dt, as in the reference.
The quantities, per env (see Go2Task.after_physics):
  height, lin_vel, ang_vel, dof_pos ...   the base and joints of the state reached (Go2Task.base)
  commands, last_action, jump_steps, jump_target   of the state the policy acted in
  action                                  the clipped action it took
Penalties (pauses_in_jump) count only while no jump window is open (jump_steps == 0); jump terms
exist only with CommandConfig.jumps_enabled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp

from mjx_env.config import TaskConfig


@dataclass(frozen=True)
class Term:
    fn: Callable                  # (q: dict, cfg: TaskConfig) -> () unscaled value
    pauses_in_jump: bool = False  # a penalty, off while the jump window is open
    jump: bool = False            # needs jumps on


# ---- walking (the seed's six terms) ----------------------------------------------------------
def tracking_lin_vel(q, cfg):
    return jnp.exp(-jnp.sum(jnp.square(q["commands"][:2] - q["lin_vel"][:2])) / cfg.reward.tracking_sigma)


def tracking_ang_vel(q, cfg):
    return jnp.exp(-jnp.square(q["commands"][2] - q["ang_vel"][2]) / cfg.reward.yaw_sigma)


def lin_vel_z(q, cfg):
    return jnp.square(q["lin_vel"][2])


def base_height(q, cfg):
    return jnp.square(q["height"] - q["commands"][3])


def action_rate(q, cfg):
    return jnp.sum(jnp.square(q["last_action"] - q["action"]))


def similar_to_default(q, cfg):
    return jnp.sum(jnp.abs(q["dof_pos"]))


# ---- jumps (the reference's four terms) ------------------------------------------------------
# The window counts down from N = jump_reward_steps; "peak" is lo*N <= counter < hi*N and the
# reference's "landing" is counter >= hi*N, i.e. the first part of the window.
def _peak(q, cfg):
    n, (lo, hi) = cfg.command.jump_reward_steps, cfg.reward.jump_peak_window
    return (q["jump_steps"] >= lo * n) & (q["jump_steps"] < hi * n)


def _landing(q, cfg):
    return q["jump_steps"] >= cfg.reward.jump_peak_window[1] * cfg.command.jump_reward_steps


def jump_height_tracking(q, cfg):
    return jnp.where(_peak(q, cfg), jnp.exp(-jnp.square(q["height"] - q["jump_target"])), 0.0)


def jump_height_achievement(q, cfg):
    near = jnp.abs(q["height"] - q["jump_target"]) < cfg.reward.jump_height_tolerance
    return (_peak(q, cfg) & near).astype(jnp.float32)


def jump_speed(q, cfg):
    r = cfg.reward
    # The cap keeps exp finite for a nearly diverged state; a real jump is far below it.
    v_z = jnp.minimum(q["lin_vel"][2], r.jump_speed_vz_cap)
    return jnp.where(_peak(q, cfg), r.jump_speed_gain * jnp.exp(v_z), 0.0)


def jump_landing(q, cfg):
    return jnp.where(_landing(q, cfg), -jnp.square(q["height"] - cfg.reward.base_height_target), 0.0)


REWARDS = {
    "tracking_lin_vel": Term(tracking_lin_vel),
    "tracking_ang_vel": Term(tracking_ang_vel),
    "lin_vel_z": Term(lin_vel_z, pauses_in_jump=True),
    "base_height": Term(base_height, pauses_in_jump=True),
    "action_rate": Term(action_rate, pauses_in_jump=True),
    "similar_to_default": Term(similar_to_default, pauses_in_jump=True),
    "jump_height_tracking": Term(jump_height_tracking, jump=True),
    "jump_height_achievement": Term(jump_height_achievement, jump=True),
    "jump_speed": Term(jump_speed, jump=True),
    "jump_landing": Term(jump_landing, jump=True),
}


def active_scales(cfg: TaskConfig) -> dict:
    """Term -> scale x dt of every term that counts, in config order (the order rewards are summed)."""
    from mjx_env.errors import ConfigError

    pairs = cfg.reward.scales + (cfg.reward.jump_scales if cfg.command.jumps_enabled else ())
    unknown = sorted({k for k, _ in pairs} - set(REWARDS))
    if unknown:
        raise ConfigError(f"unknown reward term(s) {unknown}; known: {tuple(REWARDS)}")
    jump_terms = [k for k, _ in cfg.reward.scales if REWARDS[k].jump]
    if jump_terms and not cfg.command.jumps_enabled:
        raise ConfigError(f"reward term(s) {jump_terms} need jumps on (command.jumps_enabled)")
    return {k: v * cfg.env.dt for k, v in pairs if v != 0.0}


def scaled_terms(q: dict, cfg: TaskConfig, scales: dict) -> dict:
    """Each active term's value x its scale, with the penalties paused inside a jump window."""
    penalties_on = (q["jump_steps"] == 0).astype(jnp.float32)
    return {k: REWARDS[k].fn(q, cfg) * s * (penalties_on if REWARDS[k].pauses_in_jump else 1.0)
            for k, s in scales.items()}
