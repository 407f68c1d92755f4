"""Φ's VJP against central finite differences, in float64 (run by tests/test_dynamics.py).

    python tests/fd_float64.py OUT.npz           # sets JAX_ENABLE_X64=1 itself

x64 is a process-wide JAX switch, hence a script of its own. On a smooth segment (robots standing
after 1.2 s of zero actions, then small random actions, feet in contact) it draws a linear
functional w of the first states of an H = 32 window and a direction v in (x0 joint angles, u_prev,
U), and saves the inputs, <VJP(w), v> and the central differences of <w, X> along v.
"""
import os
import sys

os.environ["JAX_ENABLE_X64"] = "1"      # before JAX starts
import jax
import jax.numpy as jnp
import numpy as np

from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.dynamics import Go2Dynamics
from mjx_env.env import Go2Env

CFG = TaskConfig(command=CommandConfig(fixed=(0.6, 0.0, 0.0, 0.3, 0.0)))
B, H, EPS = 2, 32, (1e-5, 1e-6)


def main(out):
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    env = Go2Env(B, "mujoco", CFG)
    s = env.reset(jax.random.PRNGKey(3))
    for _ in range(60):
        s = env.step(s, jnp.zeros((B, 12)))
    env.close()
    rng = np.random.default_rng(7)
    x0 = np.concatenate([s.qpos, s.qvel], 1).astype(np.float64)
    u_prev, U = np.zeros((B, 12)), rng.normal(0.0, 0.1, (B, H, 12))
    w = np.zeros((B, H + 1, 37))
    w[:, 1:9] = rng.normal(size=(B, 8, 37))
    dx = np.zeros((B, 37))
    dx[:, 7:19] = rng.normal(size=(B, 12))           # joint angles: the base pose stays a unit quaternion
    v = [dx, rng.normal(size=(B, 12)), rng.normal(size=(B, H, 12))]

    dyn = Go2Dynamics(cfg=CFG)
    _, pullback = dyn.rollout_vjp(x0, u_prev, U)
    vjp = sum(float(np.vdot(g, t)) for g, t in zip(pullback(w), v))
    runs = [[a + sign * e * d for a, d in zip((x0, u_prev, U), v)] for e in EPS for sign in (1, -1)]
    X = np.asarray(dyn.rollout(*(np.concatenate(p) for p in zip(*runs))))
    L = (X.reshape(len(runs), B, H + 1, 37) * w).sum(axis=(1, 2, 3))
    fd = [(L[2 * i] - L[2 * i + 1]) / (2 * e) for i, e in enumerate(EPS)]
    np.savez(out, x0=x0, u_prev=u_prev, U=U, w=w, v_x0=v[0], v_u_prev=v[1], v_U=v[2],
             vjp=vjp, fd=np.array(fd), eps=np.array(EPS), dtype=str(dyn.dtype))


if __name__ == "__main__":
    main(sys.argv[1])
