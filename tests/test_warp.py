"""MJX's Warp implementation (--mjx-impl warp) on the CPU: parity with C MuJoCo and MJX-JAX, zero copy
into torch, overflow reporting, and the one-line refusals.

Warp builds its kernels once per machine (minutes on a busy 2-core CPU, then seconds from its kernel
cache), so the file shares one env of each kind and compiles as few programs as it can.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mjx_env.config import CommandConfig, TaskConfig, WarpConfig
from mjx_env.errors import UserError
from mjx_env.physics import MjxPhysics, _import_mjx

_import_mjx()
from mujoco.mjx import warp as mjxw  # noqa: E402

needs_warp = pytest.mark.skipif(not mjxw.WARP_INSTALLED,
                                reason='warp-lang is not installed (pip install -e ".[warp]")')

CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
N = 16      # the batch of tests/test_backends.py: MJX-JAX's step is then one cached program


@pytest.fixture(scope="module")
def envs():
    from mjx_env.env import Go2Env
    if not mjxw.WARP_INSTALLED:
        pytest.skip('warp-lang is not installed (pip install -e ".[warp]")')
    out = {"warp": Go2Env(N, "mjx", CFG, mjx_impl="warp"), "jax": Go2Env(N, "mjx", CFG),
           "mujoco": Go2Env(N, "mujoco", CFG)}
    yield out
    for env in out.values():
        env.close()


@needs_warp
@pytest.mark.slow       # Warp's kernel build and two MJX compiles: minutes on 2 cores
def test_warp_matches_c_mujoco_and_mjx_jax_through_a_landing(envs):
    """Same states and actions on the three: 16 robots dropped from the reset height land on their
    feet and stand (zero actions), 30 steps; env 3 gets a NaN action at step 10 (reset there, the
    others untouched), as on the other backends.

    Measured on this machine (WarpConfig's 20 solver iterations): Warp against C MuJoCo at most
    9e-7 in the observations and 8e-7 in qpos over these 30 steps (bound 1e-5, tests/test_backends.py's
    first-steps bound); MJX-JAX itself is 3.5e-5 from Warp (and C) by step 28 in its float32 solve,
    hence 1e-4 against it. Not asserted: with random actions some envs depart from C by up to 0.09
    at their first contact (README, "MJX's Warp implementation").
    """
    states = {k: env.reset(jax.random.PRNGKey(1)) for k, env in envs.items()}
    for t in range(30):
        a = np.zeros((N, 12), np.float32)
        if t == 10:
            a[3, 0] = np.nan
        a = jnp.asarray(a)
        states = {k: envs[k].step(s, a) for k, s in states.items()}
        w = states["warp"]
        for ref, tol in (("mujoco", 1e-5), ("jax", 1e-4)):
            r = states[ref]
            np.testing.assert_allclose(w.obs, r.obs, atol=tol, err_msg=f"{ref} step {t}")
            np.testing.assert_allclose(w.qpos, r.qpos, atol=tol, err_msg=f"{ref} step {t}")
            np.testing.assert_allclose(w.reward, r.reward, atol=tol / 10, err_msg=f"{ref} step {t}")
            np.testing.assert_array_equal(w.terminated, r.terminated)
            np.testing.assert_array_equal(w.bad_action, r.bad_action)
        if t == 10:
            assert np.flatnonzero(np.asarray(w.bad_action)).tolist() == [3]
            assert bool(w.done[3]) and int(w.episode_step[3]) == 0
    heights = np.asarray(states["warp"].qpos[:, 2])
    assert 0.22 < heights.min() and heights.max() < 0.34        # landed and standing, not fallen through
    envs["warp"].check_overflow()                                 # no contact was dropped


@needs_warp
@pytest.mark.slow       # Warp's kernel build and two MJX compiles: minutes on 2 cores
def test_torch_sees_warp_state_without_copy(envs):
    from bridge.vec_env import Go2VecEnv
    vec = Go2VecEnv(envs["warp"], seed=0, log_every=4)
    obs, rew, dones, extras = vec.step(torch.zeros(N, 12))
    s = vec.state
    for tensor, array in [(obs["policy"], s.obs), (obs["critic"], s.critic_obs), (rew, s.reward),
                          (dones, s.done), (vec.episode_length_buf, s.episode_step)]:
        assert tensor.data_ptr() == array.unsafe_buffer_pointer()


@needs_warp
@pytest.mark.slow       # Warp's kernel build and two MJX compiles: minutes on 2 cores
def test_buffer_overflow_is_reported_in_one_line(envs):
    """Buffers far too small (a tenth of a contact per world): Warp sets its overflow bits and the
    env stops with one line instead of stepping on without those contacts."""
    from mjx_env.env import Go2Env
    env = Go2Env(2, "mjx", CFG, model=envs["warp"].model, mjx_impl="warp",
                 warp=WarpConfig(buffer_margin=0.1, overflow_check_every=1))
    assert env.physics.naconmax < 2 * 4           # fewer slots than the feet on the ground
    s = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(UserError, match=r"^MuJoCo Warp's buffers overflowed \(.*(BROADPHASE|NARROWPHASE).*raise "
                                        r"WarpConfig.buffer_margin") as exc:
        for _ in range(30):                   # the robots fall onto their feet
            s = env.step(s, jnp.zeros((2, 12)))
    assert "\n" not in str(exc.value)


def test_randomize_under_warp_is_refused_in_one_line(monkeypatch):
    import dataclasses
    from mjx_env.env import Go2Env
    monkeypatch.setattr(mjxw, "WARP_INSTALLED", True)
    cfg = CFG.replace(randomization=dataclasses.replace(CFG.randomization, enabled=True))
    with pytest.raises(UserError, match="--randomize with --mjx-impl warp is refused"):
        Go2Env(2, "mjx", cfg, mjx_impl="warp")


def test_phi_refuses_warp_in_one_line():
    from mjx_env.model import load_go2
    with pytest.raises(UserError, match="not reverse-differentiable"):
        MjxPhysics(load_go2(None, CFG.env), 4, differentiable=True, impl="warp", num_envs=1)


@pytest.mark.parametrize("argv, says", [
    (["--backend", "mujoco", "--mjx-impl", "warp"], "--mjx-impl warp chooses MJX's implementation: add --backend mjx"),
    (["--mjx-impl", "cuda"], "unknown --mjx-impl 'cuda': choose jax or warp"),
])
def test_train_refuses_bad_impl_in_one_line(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(mjxw, "WARP_INSTALLED", True)     # the refusal must not depend on the extra
    import train
    assert train.main(argv + ["-B", "2", "--max_iterations", "1", "--log_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("script", ["train", "play", "collect_trajectories", "bench"])
def test_missing_extra_is_one_line_naming_the_install(script, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(mjxw, "WARP_INSTALLED", False)    # as when warp-lang fails to import
    mod = __import__(script)
    argv = {"train": ["--backend", "mjx", "--log_root", str(tmp_path)],
            "play": ["--backend", "mjx"],
            "collect_trajectories": ["--backend", "mjx", "--out", str(tmp_path / "d.npz")],
            "bench": ["--backends", "mjx", "--json", str(tmp_path / "b.json")]}[script]
    assert mod.main(argv + ["--mjx-impl", "warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "mujoco-mjx[warp]"' in err[0], err
