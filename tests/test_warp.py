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
    hence 1e-4 against it. Random actions: the next test.
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
def test_warp_matches_c_mujoco_under_random_actions_at_the_same_solver_cap(envs):
    """Random actions (std 0.3) through the landing, 25 steps. With the same 20 solver iterations
    (WarpConfig) C MuJoCo and Warp agree to 1e-6 (measured 9.4e-7 in the observations); C with the
    model's 4 stops its solve early at the hard landing and lands elsewhere (measured 0.09 in the
    observations at step 7, the first contact): the departure is C's truncated solve, not Warp's."""
    from conftest import c_model_at_warp_cap
    from mjx_env.env import Go2Env
    c20 = Go2Env(N, "mujoco", CFG, model=c_model_at_warp_cap(CFG.env))
    run = {"warp": envs["warp"], "c4": envs["mujoco"], "c20": c20}
    states = {k: env.reset(jax.random.PRNGKey(1)) for k, env in run.items()}
    rng = np.random.default_rng(0)
    c4_gap = 0.0
    for t in range(25):
        a = jnp.asarray(rng.normal(0, 0.3, (N, 12)).astype(np.float32))
        states = {k: run[k].step(s, a) for k, s in states.items()}
        w, r = states["warp"], states["c20"]
        np.testing.assert_allclose(w.obs, r.obs, atol=5e-6, err_msg=f"step {t}")
        np.testing.assert_allclose(w.qpos, r.qpos, atol=5e-6, err_msg=f"step {t}")
        c4_gap = max(c4_gap, float(jnp.abs(w.obs - states["c4"].obs).max()))
    c20.close()
    assert c4_gap > 1e-2          # why the bound needs equal caps: C at 4 iterations departs
    envs["warp"].check_overflow()


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


@needs_warp
def test_bench_warp_caps_reach_the_solver():
    """bench.py --warp-caps ITER LS times Warp at other solver caps: they reach the model Warp steps
    (and only Warp's; the default is WarpConfig's)."""
    import argparse
    import bench
    from bridge import device as devmod
    devices = devmod.resolve("cpu", "highest")
    for caps, want in ((None, (WarpConfig().iterations, WarpConfig().ls_iterations)), ([7, 3], (7, 3))):
        env = bench.make_env("warp", 2, CFG, argparse.Namespace(threads=None, warp_caps=caps), devices)
        assert (env.physics.mx.opt.iterations, env.physics.mx.opt.ls_iterations) == want
        env.close()
    env = bench.make_env("mjx", 2, CFG, argparse.Namespace(threads=None, warp_caps=[7, 3]), devices)
    assert (env.physics.mx.opt.iterations, env.physics.mx.opt.ls_iterations) == (4, 8)   # the model's
    env.close()


@needs_warp
@pytest.mark.slow       # a second Warp program (per-env model fields): a minute or two on 2 cores
def test_randomized_warp_matches_c_mujoco_with_the_same_draws(envs):
    """--randomize under Warp, with the shipped walker's draws (README, "The drift"): the per-env model
    fields (masses, inertias, centre of mass, gains, friction, friction loss, damping, armature, the
    feet's torsional and rolling friction in condim-6 contacts) reach Warp's kernels as they reach C
    MuJoCo's per-env models. Same draws (same key), random actions through the landing then standing,
    40 steps, C at Warp's caps. Measured: at most 2.6e-6 in the observations with the default draws,
    4.0e-6 with these over 60 steps (friction loss needs the 20 line-search iterations: at 8 both
    solvers stop short of their answer, 6.5e-4 apart in 4 steps)."""
    import dataclasses
    from conftest import c_model_at_warp_cap
    from mjx_env.env import Go2Env
    recipe = dict(kp_scale_range=(0.75, 1.25), joint_frictionloss_range=(0.0, 0.4), drift_accel_range=(-1.0, 1.0),
                  drift_yaw_accel_range=(-1.5, 1.5))        # train.py --dr-range ... of the shipped recipe
    rolling = dict(foot_rolling_friction_range=(0.0, 0.02), foot_torsional_friction_range=(0.0, 0.04))
    cfg, no_rolling = (CFG.replace(randomization=dataclasses.replace(CFG.randomization, enabled=True, **recipe, **extra))
                       for extra in (rolling, {}))
    run = {"warp": Go2Env(N, "mjx", cfg, model=envs["warp"].model, mjx_impl="warp"),
           "c": Go2Env(N, "mujoco", cfg, model=c_model_at_warp_cap(cfg.env)), "nominal": envs["warp"],
           "c_no_rolling": Go2Env(N, "mujoco", no_rolling, model=c_model_at_warp_cap(cfg.env))}
    states = {k: env.reset(jax.random.PRNGKey(1)) for k, env in run.items()}
    for name in states["warp"].dr:
        np.testing.assert_array_equal(states["warp"].dr[name], states["c"].dr[name])
    assert float(jnp.ptp(states["warp"].dr["joint_frictionloss"])) > 0.1        # draws that differ per env
    assert float(jnp.ptp(states["warp"].dr["foot_rolling_friction"])) > 0.005  # of U[0, 0.02]
    rng = np.random.default_rng(0)
    for t in range(40):
        a = jnp.asarray(rng.normal(0, 0.3 if t < 30 else 0.0, (N, 12)).astype(np.float32))
        states = {k: run[k].step(s, a) for k, s in states.items()}
        w, r = states["warp"], states["c"]
        np.testing.assert_allclose(w.obs, r.obs, atol=2e-5, err_msg=f"step {t}")
        np.testing.assert_allclose(w.qpos, r.qpos, atol=2e-5, err_msg=f"step {t}")
    # the draws changed Warp's physics: the nominal Warp env from the same start is elsewhere, and so
    # is C without the feet's rolling friction (the condim-6 contacts act under Warp too)
    assert float(jnp.abs(states["warp"].qpos - states["nominal"].qpos).max()) > 1e-3
    assert float(jnp.abs(states["warp"].qpos - states["c_no_rolling"].qpos).max()) > 1e-3
    run["warp"].check_overflow()
    for k in ("c", "c_no_rolling", "warp"):
        run[k].close()


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
