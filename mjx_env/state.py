"""The environment state: one immutable pytree per env (batched by vmap)."""
from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    qpos: jax.Array            # (nq,) physics position state
    qvel: jax.Array            # (nv,) physics velocity state
    last_action: jax.Array     # (12,) clipped action of the previous step: the PD target now applied
    commands: jax.Array        # (5,) lin_vel_x, lin_vel_y, ang_vel, height, jump
    jump_steps: jax.Array      # () int32, steps left in the open jump window (0: closed)
    jump_target: jax.Array     # () float32, target base height of the latest jump command (m; 0 at reset)
    episode_step: jax.Array    # () int32, control steps since reset; callers may set it
    key: jax.Array             # (2,) uint32 PRNG key of this env
    obs: jax.Array             # (48,) policy observation (51 with the measured base velocity first)
    obs_history: jax.Array     # (history_length, 48) the last policy observations, oldest first
    critic_obs: jax.Array      # (52,) policy observation + privileged state
    reward: jax.Array          # () reward of the last step
    terminated: jax.Array      # () bool, fell (roll/pitch limit), diverged, or got a non-finite action
    time_out: jax.Array        # () bool, reached the episode length
    done: jax.Array            # () bool, terminated or time_out: the env was reset in this step
    diverged: jax.Array        # () bool, physics state was non-finite or absurd (env reset)
    bad_action: jax.Array      # () bool, the action held a NaN or inf (replaced by 0, env reset)
    reward_terms: dict         # term -> () this step's scaled reward
    episode_sums: dict         # term -> () running sum since reset
    final_episode_sums: dict   # term -> () sum of the episode that ended at this step (0 if none)
    final_episode_length: jax.Array  # () int32 length of the episode that ended here (0 if none)
    metrics: dict              # base lin_vel, ang_vel (base frame) and height of the state reached
    dr: dict                   # this episode's randomization draws ({} when randomization is off)
    push_countdown: jax.Array  # () int32, control steps to the next push (0 when pushes are off)

    def replace(self, **kw) -> "State":
        return dataclasses.replace(self, **kw)
