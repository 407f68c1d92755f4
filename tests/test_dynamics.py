"""Φ (mjx_env/dynamics.py): the env's physics, its control law, its gradients, and its input checks.

States come from the shipped walking policy (feet in contact, legs moving). Shapes are kept
small and shared (B = 2, H = 16) so that each compiled program is built once for the module.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridge.policy import load_actor
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.dynamics import Go2Dynamics
from mjx_env.env import Go2Env
from mjx_env.errors import UserError

B, H = 2, 16
CFG = TaskConfig(command=CommandConfig(fixed=(0.6, 0.0, 0.0, 0.3, 0.0)))


@pytest.fixture(scope="module")
def walk():
    """60 control steps of the shipped policy walking at 0.6 m/s (C MuJoCo backend, quick to build)."""
    env, actor = Go2Env(B, "mujoco", CFG), load_actor()
    s = env.reset(jax.random.PRNGKey(3))
    xs, lasts, acts = [], [], []
    for _ in range(60):
        with torch.no_grad():
            a = actor(torch.from_numpy(np.asarray(s.obs))).numpy()
        xs.append(np.concatenate([s.qpos, s.qvel], axis=1))
        lasts.append(np.asarray(s.last_action))
        acts.append(a)
        s = env.step(s, jnp.asarray(a))
        assert not bool(s.done.any())
    env.close()
    return np.stack(xs, 1), np.stack(lasts, 1), np.stack(acts, 1)    # (B, 60, 37), (B, 60, 12) x 2


@pytest.fixture(scope="module")
def dyn():
    return Go2Dynamics(cfg=CFG)


def window(walk, start, h=H):
    x, last, acts = walk
    return jnp.asarray(x[:, start]), jnp.asarray(last[:, start]), jnp.asarray(acts[:, start:start + h])


def test_rollout_is_the_env_mjx_step(walk, dyn):
    """Φ from a walking state equals the MJX env stepped with the same actions (the same program)."""
    x0, u_prev, U = window(walk, 30)
    env = Go2Env(B, "mjx", CFG)
    s = env.reset(jax.random.PRNGKey(0))
    s = s.replace(qpos=x0[:, :19], qvel=x0[:, 19:], last_action=u_prev)
    states = [x0]
    for t in range(H):
        s = env.step(s, U[:, t])
        assert not bool(s.done.any())
        states.append(jnp.concatenate([s.qpos, s.qvel], axis=1))
    X = dyn.rollout(x0, u_prev, U)
    assert X.shape == (B, H + 1, 37) and X.dtype == jnp.float32
    np.testing.assert_array_equal(X[:, 0], x0)
    np.testing.assert_allclose(X, jnp.stack(states, 1), rtol=0, atol=1e-6)
    # it moved: the base travelled forward and the legs swung
    assert float(jnp.min(X[:, -1, 0] - X[:, 0, 0])) > 0.05
    assert float(jnp.max(jnp.abs(X[:, 1:, 25:37]))) > 1.0


def test_latency_step_t_applies_action_t_minus_1(walk, dyn):
    x0, u_prev, U = window(walk, 30)
    X = dyn.rollout(x0, u_prev, U)
    # the last action of the window never reaches the states (it would drive step H+1)
    X_last = dyn.rollout(x0, u_prev, U.at[:, -1].add(1.0))
    np.testing.assert_array_equal(X_last, X)
    # u_prev drives the first step; U[:, 0] only the second
    X_prev = dyn.rollout(x0, u_prev + 0.5, U)
    X_first = dyn.rollout(x0, u_prev, U.at[:, 0].add(0.5))
    assert float(jnp.max(jnp.abs(X_prev[:, 1] - X[:, 1]))) > 1e-2
    np.testing.assert_array_equal(X_first[:, 1], X[:, 1])
    assert float(jnp.max(jnp.abs(X_first[:, 2] - X[:, 2]))) > 1e-2


def test_scan_solver_equals_mjx_while_loop(walk, dyn):
    """The scan solver of mjx_patch gives MJX's own (while_loop) physics, from a state in contact."""
    from mujoco import mjx

    from mjx_env.physics import MjxPhysics

    x0, u_prev, _ = window(walk, 30)
    ctrl = jax.vmap(dyn.task.pd_targets)(u_prev, u_prev)
    upstream = MjxPhysics(dyn.model, CFG.env.substeps)
    upstream._step = mjx.step
    ours = jax.jit(dyn.physics.advance)(x0[:, :19], x0[:, 19:], ctrl)
    theirs = jax.jit(upstream.advance)(x0[:, :19], x0[:, 19:], ctrl)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert dyn.physics.mx.opt.iterations == 4 and dyn.physics.mx.opt.ls_iterations == 8


@pytest.mark.parametrize("which, bad, needle", [
    ("x0", np.zeros((B, 36), np.float32), r"x0 must have shape \(B, 37\)"),
    ("x0", np.zeros((37,), np.float32), r"x0 must have shape \(B, 37\)"),
    ("u_prev", np.zeros((B + 1, 12), np.float32), r"u_prev must have shape \(B, 12\) = \(2, 12\)"),
    ("U", np.zeros((B, H, 11), np.float32), r"U must have shape \(B, H, 12\)"),
    ("U", np.zeros((B, 0, 12), np.float32), r"U must have shape \(B, H, 12\)"),
    ("U", np.zeros((B, H, 12), np.int32), "U must be float32 or float64, got int32"),
    ("x0", np.zeros((B, 37), np.complex64), "x0 must be float32 or float64"),
    ("U", "actions", "U must be float32 or float64"),
    ("U", np.full((B, H, 12), np.nan, np.float32), "U holds NaN or inf"),
    ("x0", np.full((B, 37), np.inf, np.float32), "x0 holds NaN or inf"),
    ("u_prev", np.full((B, 12), -np.inf, np.float32), "u_prev holds NaN or inf"),
])
def test_bad_input_is_one_clear_error(walk, dyn, which, bad, needle):
    args = dict(zip(("x0", "u_prev", "U"), window(walk, 30)))
    args[which] = bad
    with pytest.raises(UserError, match=needle) as info:
        dyn.rollout(**args)
    assert len(str(info.value).splitlines()) == 1
    assert info.value.__cause__ is None and info.value.__context__ is None
