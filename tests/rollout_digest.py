"""SHA-256 of a rollout of the default env: every output of every step, bit for bit.

Used to show that an option which is off leaves the env unchanged. The digest covers the State
fields the env had before the jump option (a new field adds to the pytree, so it is left out).
It goes through random command resampling, a time-out and a non-finite action (which ends
that env's episode and resets it).

    PYTHONPATH=. python tests/rollout_digest.py        # prints the digest of each backend
"""
from __future__ import annotations

import hashlib

import numpy as np

FIELDS = ("qpos", "qvel", "last_action", "commands", "jump_steps", "episode_step", "key", "obs", "critic_obs",
          "reward", "terminated", "time_out", "done", "diverged", "bad_action", "reward_terms", "episode_sums",
          "final_episode_sums", "final_episode_length", "metrics")


def _update(h, state) -> None:
    for name in FIELDS:
        v = getattr(state, name)
        items = sorted(v.items()) if isinstance(v, dict) else [("", v)]
        for k, x in items:
            x = np.asarray(x)
            h.update(f"{name}/{k}:{x.dtype}:{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())


def rollout_digest(backend: str, cfg=None, n: int = 8, steps: int = 60) -> tuple[str, dict]:
    """(hex digest, counts of the events the rollout went through)."""
    import jax
    import jax.numpy as jnp

    from mjx_env.env import Go2Env

    env = Go2Env(n, backend, cfg)
    h = hashlib.sha256()
    s = env.reset(jax.random.PRNGKey(7))
    _update(h, s)
    # Staggered episode counters: resampling at 200 steps and a time-out at 1000 fall inside the rollout.
    s = s.replace(episode_step=jnp.asarray((np.arange(n) * 131 + 150) % 1000, jnp.int32).at[1].set(990))
    rng = np.random.default_rng(0)
    events = dict(resampled=0, terminated=0, time_out=0, bad_action=0)
    for t in range(steps):
        a = rng.normal(0.0, 0.6, (n, 12)).astype(np.float32)
        if t == 10:
            a[3, 5] = np.nan
        prev, s = s, env.step(s, jnp.asarray(a))
        _update(h, s)
        events["resampled"] += int(np.sum(np.any(np.asarray(s.commands != prev.commands), axis=1) & ~np.asarray(s.done)))
        for k in ("terminated", "time_out", "bad_action"):
            events[k] += int(np.sum(np.asarray(getattr(s, k))))
    env.close()
    return h.hexdigest(), events


if __name__ == "__main__":
    for backend in ("mujoco", "mjx"):
        print(backend, *rollout_digest(backend))
