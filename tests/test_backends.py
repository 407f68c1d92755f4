"""The two physics backends run the same task: standing still, and step-by-step parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import MJX_BATCH as N
from mjx_env.config import TaskConfig
from mjx_env.env import Go2Env

CFG = TaskConfig()


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_standing_with_zero_actions(backend):
    # conftest's shared MJX env (the default config, MJX_BATCH envs): one compile for the run
    env = Go2Env(N, backend, CFG)
    s = env.reset(jax.random.PRNGKey(0))
    zeros = jnp.zeros((N, 12))
    heights = []
    for _ in range(int(5.0 / CFG.env.dt)):
        s = env.step(s, zeros)
        assert not bool(s.done.any())
        heights.append(np.asarray(s.qpos[:, 2]))
    heights = np.array(heights)
    # Settled: between 0.22 and 0.34 m, and barely moving over the last second.
    assert 0.22 < heights[-1].min() and heights[-1].max() < 0.34, heights[-1].mean()
    assert np.abs(heights[-1] - heights[-50]).max() < 0.01
    env.close()


def test_backend_parity_over_50_steps():
    """Same states, same actions: float32 MJX against float64 C MuJoCo.

    Both start each control period cold (no solver warm-start) from the same float32 state, so
    the only difference is arithmetic precision. Measured on this machine: one-step obs
    difference ~3e-9, after 50 steps ~1.5e-5. The bounds leave an order of magnitude or more.
    """
    n = N
    mjx_env, mj_env = Go2Env(n, "mjx", CFG), Go2Env(n, "mujoco", CFG)
    s1 = mjx_env.reset(jax.random.PRNGKey(1))
    s2 = mj_env.reset(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    for t in range(50):
        a = jnp.asarray(rng.normal(0.0, 0.3, (n, 12)), jnp.float32)
        s1, s2 = mjx_env.step(s1, a), mj_env.step(s2, a)
        tol = 1e-5 if t < 2 else 1e-3
        np.testing.assert_allclose(s1.obs, s2.obs, atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(s1.critic_obs, s2.critic_obs, atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(s1.reward, s2.reward, atol=tol * 0.1, err_msg=f"step {t}")
        np.testing.assert_array_equal(s1.terminated, s2.terminated)
        np.testing.assert_array_equal(s1.time_out, s2.time_out)
    # the actions really moved the robots (a parity of two frozen states would prove nothing)
    assert float(jnp.abs(s1.obs[:, 23:35]).max()) > 0.01   # joints moving faster than 0.2 rad/s
    mj_env.close()
