"""Domain randomization, pushes and observation noise: ranges, per-env independence, both backends."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mjx_env.config import CommandConfig, RandomizationConfig, TaskConfig
from mjx_env.env import Go2Env
from mjx_env.errors import ConfigError, UserError
from mjx_env.randomize import DRAWS, FIELDS

# Joint friction loss left out of the parity configs: C MuJoCo and MJX 3.17 disagree on the
# friction-loss constraint itself by ~2e-3 in the observation after one step, with or without
# randomization and with 30 solver iterations as well (measured; see README).
DR = RandomizationConfig(enabled=True, joint_frictionloss_range=(0.0, 0.0))
CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0), randomization=DR)
DRAW_RANGE = {d.name: d.range for d in DRAWS}
# The rolling-friction and drift tests share one config and batch (each config and batch is a program
# of its own; the suite's persistent cache compiles a shared one once).
ROLL = CFG.replace(randomization=dataclasses.replace(
    DR, foot_torsional_friction_range=(0.0, 0.04), foot_rolling_friction_range=(0.0, 0.02), drift_accel_range=(-1.0, 1.0)))


def draws(state, i=None):
    return {k: np.asarray(v if i is None else v[i]) for k, v in state.dr.items()}


def test_draws_within_ranges_and_differ_between_envs():
    r = RandomizationConfig(enabled=True, foot_torsional_friction_range=(0.0, 0.04),
                            foot_rolling_friction_range=(0.0, 0.02), drift_accel_range=(-1.0, 1.0),
                            drift_yaw_accel_range=(-2.0, 2.0))
    env = Go2Env(64, "mujoco", TaskConfig(randomization=r))
    d = draws(env.reset(jax.random.PRNGKey(0)))
    ranges = dict(friction=r.friction_range, added_base_mass=r.added_base_mass_range,
                  base_com_offset=r.base_com_offset_range, link_mass_scale=r.link_mass_scale_range,
                  kp_scale=r.kp_scale_range, kd_scale=r.kd_scale_range,
                  joint_frictionloss=r.joint_frictionloss_range,
                  joint_damping_scale=r.joint_damping_scale_range,
                  joint_armature_scale=r.joint_armature_scale_range,
                  foot_torsional_friction=r.foot_torsional_friction_range,
                  foot_rolling_friction=r.foot_rolling_friction_range, drift_accel=r.drift_accel_range,
                  drift_yaw_accel=r.drift_yaw_accel_range)
    assert set(d) == set(ranges)
    for k, (lo, hi) in ranges.items():
        assert lo <= d[k].min() and d[k].max() <= hi, k
        # spread over the envs: a uniform draw over 64 envs covers most of its range
        assert np.ptp(d[k], axis=0).min() > 0.5 * (hi - lo), k
    env.close()


def test_fields_follow_the_draws():
    """The model fields of one env, recomputed by hand from its draws."""
    env = Go2Env(2, "mujoco", TaskConfig(randomization=RandomizationConfig(enabled=True)))
    s = env.reset(jax.random.PRNGKey(1))
    d = draws(s, 0)
    f = {k: np.asarray(v[0]) for k, v in env.dr_fields(s.dr).items()}
    m, rand = env.model.mj_model, env.task.randomizer
    base, dofs = rand.base_body, env.model.qvel_idx
    np.testing.assert_allclose(f["body_mass"][base], m.body_mass[base] * d["link_mass_scale"][base]
                               + d["added_base_mass"], rtol=1e-6)
    np.testing.assert_allclose(f["body_mass"][1:], (m.body_mass * d["link_mass_scale"])[1:] +
                               np.where(np.arange(1, m.nbody) == base, d["added_base_mass"], 0), rtol=1e-6)
    np.testing.assert_allclose(f["body_ipos"][base], m.body_ipos[base] + d["base_com_offset"], atol=1e-7)
    np.testing.assert_allclose(f["actuator_gainprm"][:, 0], 20.0 * d["kp_scale"], rtol=1e-6)
    np.testing.assert_allclose(f["actuator_biasprm"][:, 1], -20.0 * d["kp_scale"], rtol=1e-6)
    np.testing.assert_allclose(f["actuator_biasprm"][:, 2], -0.5 * d["kd_scale"], rtol=1e-6)
    np.testing.assert_allclose(f["dof_frictionloss"][dofs], d["joint_frictionloss"])
    np.testing.assert_allclose(f["dof_damping"][dofs], m.dof_damping[dofs] * d["joint_damping_scale"], rtol=1e-6)
    feet = [g for g in env.model.foot_geom_ids]
    np.testing.assert_allclose(f["geom_friction"][feet, 0], d["friction"])
    # the free joint's dofs keep their nominal values
    np.testing.assert_array_equal(f["dof_damping"][:6], m.dof_damping[:6].astype(np.float32))
    # and the mujoco backend's own model of each env holds exactly these values after a step
    env.step(s, jnp.zeros((2, 12)))
    for name in FIELDS:
        np.testing.assert_allclose(getattr(env.physics.models[0], name), f[name], rtol=1e-6, err_msg=name)
    assert not np.allclose(env.physics.models[0].body_mass, env.physics.models[1].body_mass)
    env.close()


def test_rolling_friction_reaches_the_foot_contacts():
    """--rolling-friction's draws: both backends step condim-6 feet, and the foot-floor contacts of
    each env carry its own torsional and rolling draw (MuJoCo's contact takes the larger value of
    the two geoms, both written with the draw). With the ranges at (0, 0), the default, the feet
    stay condim 3 and geom_friction stays as loaded."""
    import mujoco
    env = Go2Env(2, "mujoco", ROLL)
    feet = list(env.model.foot_geom_ids)
    s = env.reset(jax.random.PRNGKey(3))
    s = jax.device_put(s.replace(dr=dict(s.dr, drift_accel=jnp.zeros((2, 2)))), env.device)   # no drift here
    for _ in range(40):                                  # settle on the feet
        s = env.step(s, jnp.zeros((2, 12)))
    for i in range(2):
        m, d = env.physics.models[i], draws(s, i)
        assert m.geom_condim[feet].tolist() == [6] * 4
        assert env.model.mj_model.geom_condim[feet].tolist() == [3] * 4        # the loaded model is untouched
        data = mujoco.MjData(m)
        data.qpos[:], data.qvel[:] = np.asarray(s.qpos[i]), np.asarray(s.qvel[i])
        mujoco.mj_forward(m, data)
        foot = [c for c in data.contact[:data.ncon] if c.geom1 in feet or c.geom2 in feet]
        assert len(foot) == 4                                                    # standing on four feet
        for c in foot:
            assert c.dim == 6
            np.testing.assert_allclose(c.friction[2:], [d["foot_torsional_friction"]] + [d["foot_rolling_friction"]] * 2,
                                       rtol=1e-6)
    assert draws(s, 0)["foot_rolling_friction"] != draws(s, 1)["foot_rolling_friction"]
    env.close()
    mjx_env = Go2Env(2, "mjx", ROLL)                                  # put_model only: nothing compiles
    assert np.asarray(mjx_env.physics.mx.geom_condim)[feet].tolist() == [6] * 4
    off = Go2Env(4, "mujoco", CFG)                                    # test_reset_env_redraws' env
    s = off.reset(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(off.dr_fields(s.dr)["geom_friction"][0])[:, 1:],
                                  off.model.mj_model.geom_friction[:, 1:].astype(np.float32))
    off.step(s, jnp.zeros((4, 12)))
    assert off.physics.models[0].geom_condim[feet].tolist() == [3] * 4
    off.close()


@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_reset_env_redraws_and_the_others_keep_theirs(backend):
    env = Go2Env(4, backend, CFG)
    s = env.reset(jax.random.PRNGKey(2))
    before = draws(s)
    s = s.replace(episode_step=s.episode_step.at[1].set(env.max_episode_length - 1))   # env 1 times out
    s = env.step(s, jnp.zeros((4, 12)))
    assert np.asarray(s.done).tolist() == [False, True, False, False]
    after = draws(s)
    for k in before:
        for i in (0, 2, 3):
            np.testing.assert_array_equal(after[k][i], before[k][i])
        lo, hi = getattr(CFG.randomization, DRAW_RANGE[k])
        if lo < hi:                                   # not the (0, 0) draws: friction loss, rolling, drift
            assert not np.array_equal(after[k][1], before[k][1]), k
    if backend == "mujoco":    # the reset env's MjModel follows its new draw at the next step
        s = env.step(s, jnp.zeros((4, 12)))
        np.testing.assert_allclose(env.physics.models[1].body_mass, np.asarray(env.dr_fields(s.dr)["body_mass"][1]))
    env.close()


@pytest.mark.slow
def test_backends_draw_the_same_and_agree_under_randomization():
    """Same key, same draws; then 30 steps of random actions agree within the parity tolerance of
    tests/test_backends.py (1e-5 for the first steps, 1e-3 after)."""
    n = 8
    e1, e2 = Go2Env(n, "mjx", CFG), Go2Env(n, "mujoco", CFG)
    s1, s2 = e1.reset(jax.random.PRNGKey(1)), e2.reset(jax.random.PRNGKey(1))
    for k in s1.dr:
        np.testing.assert_array_equal(np.asarray(s1.dr[k]), np.asarray(s2.dr[k]))
    rng = np.random.default_rng(0)
    for t in range(30):
        a = jnp.asarray(rng.normal(0.0, 0.3, (n, 12)), jnp.float32)
        s1, s2 = e1.step(s1, a), e2.step(s2, a)
        tol = 1e-5 if t < 2 else 1e-3
        np.testing.assert_allclose(s1.critic_obs, s2.critic_obs, atol=tol, err_msg=f"step {t}")
    e2.close()


def test_friction_acts():
    """The same forward kick on two robots standing alike that differ only in friction from then on:
    on low friction it slides away (measured 0.24 m in 0.5 s), on high friction the feet hold (0.06 m)."""
    cfg = TaskConfig(command=CommandConfig(random_resample_prob=0.0), randomization=dataclasses.replace(
        DR, friction_range=(0.05, 1.25), added_base_mass_range=(0.0, 0.0), base_com_offset_range=(0.0, 0.0),
        link_mass_scale_range=(1.0, 1.0), kp_scale_range=(1.0, 1.0), kd_scale_range=(1.0, 1.0),
        joint_damping_scale_range=(1.0, 1.0), joint_armature_scale_range=(1.0, 1.0)))
    env = Go2Env(2, "mujoco", cfg)
    s = env.reset(jax.random.PRNGKey(0))
    # written at the next step; committed like the rest of the state (one program for the steps)
    s = jax.device_put(s.replace(dr=dict(s.dr, friction=jnp.float32([1.25, 1.25]))), env.device)
    zeros = jnp.zeros((2, 12))
    for _ in range(50):                                      # settle on the feet, both alike
        s = env.step(s, zeros)
        assert not bool(s.done.any())
    np.testing.assert_array_equal(np.asarray(s.qpos[0]), np.asarray(s.qpos[1]))
    x0 = np.asarray(s.qpos[:, 0])
    s = jax.device_put(s.replace(qvel=s.qvel.at[:, 0].add(0.6),      # a 0.6 m/s forward kick, env 0 on ice
                                 dr=dict(s.dr, friction=jnp.float32([0.05, 1.25]))), env.device)
    for _ in range(25):
        s = env.step(s, zeros)
        assert not bool(s.done.any())
    slides = np.abs(np.asarray(s.qpos[:, 0]) - x0)
    assert slides[0] > 2.5 * slides[1], slides
    env.close()


def test_push_adds_exactly_the_configured_kick():
    r = RandomizationConfig(push=True, push_velocity_range=(0.7, 0.7), push_interval_range_s=(5.0, 10.0))
    env = Go2Env(16, "mujoco", TaskConfig(randomization=r))
    s = env.reset(jax.random.PRNGKey(4))
    countdown = np.asarray(s.push_countdown)
    assert countdown.min() >= 250 and countdown.max() <= 500          # U[5, 10] s at 50 Hz
    s = s.replace(push_countdown=s.push_countdown.at[:8].set(1))      # envs 0-7 are pushed now
    pushed = jax.vmap(env.task.push)(s)
    dv = np.asarray(pushed.qvel - s.qvel)
    np.testing.assert_allclose(np.linalg.norm(dv[:8, :2], axis=1), 0.7, rtol=1e-6)
    assert np.ptp(np.arctan2(dv[:8, 1], dv[:8, 0])) > 0.5              # random directions
    np.testing.assert_array_equal(dv[:, 2:], 0.0)                      # horizontal, base only
    np.testing.assert_array_equal(dv[8:], 0.0)                         # the others are not pushed
    new = np.asarray(pushed.push_countdown)
    assert (new[:8] >= 250).all() and (new[:8] <= 500).all()           # next push drawn
    np.testing.assert_array_equal(new[8:], countdown[8:] - 1)
    env.close()


def test_observation_noise_bounded_and_policy_only():
    r = RandomizationConfig(obs_noise=True)
    noisy, clean = Go2Env(8, "mujoco", TaskConfig(randomization=r)), Go2Env(8, "mujoco")
    s1, s2 = noisy.reset(jax.random.PRNGKey(0)), clean.reset(jax.random.PRNGKey(0))
    for _ in range(3):
        s1, s2 = noisy.step(s1, jnp.zeros((8, 12))), clean.step(s2, jnp.zeros((8, 12)))
    # same physics (noise only touches what the policy sees)
    np.testing.assert_array_equal(np.asarray(s1.qpos), np.asarray(s2.qpos))
    np.testing.assert_array_equal(np.asarray(s1.critic_obs[:, 48:]), np.asarray(s2.critic_obs[:, 48:]))
    diff = np.abs(np.asarray(s1.obs - s2.obs))
    bound = np.asarray(noisy.task.noise_vec)
    assert (diff <= bound + 1e-6).all()
    assert diff[:, 3:6].max() > 0.5 * 0.05 and diff[:, 23:35].max() > 0.5 * 1.5 * 0.05   # gravity, joint vel
    np.testing.assert_array_equal(diff[:, 6:11], 0.0)                  # commands are not noisy
    noisy.close()
    clean.close()


# MJX's twin in the slow group (the default group's golden digest covers MJX's default env)
@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_off_is_bit_identical_to_before(default_digests, backend):
    """Golden (recorded on a known machine): with every option off (randomization, jumps, the actor
    inputs), the env reproduces bit for bit the rollout digest recorded with the code from before
    any of them existed. XLA's code, and so the low bits, depend on the CPU's vector instruction set:
    the digest is compared only on a machine whose fingerprint has one recorded (rollout_digest.GOLDEN),
    the in-process tests below hold everywhere."""
    from rollout_digest import GOLDEN, fingerprint
    here = fingerprint()
    if here not in GOLDEN:
        pytest.skip(f"no digest recorded for this machine ({here}); recorded: {', '.join(GOLDEN)}")
    assert default_digests[backend] == GOLDEN[here][backend]


# Every randomization setting moved, with the options off.
ELSEWHERE = RandomizationConfig(
    enabled=False, push=False, obs_noise=False, friction_range=(0.1, 0.2), added_base_mass_range=(2.0, 5.0),
    base_com_offset_range=(0.1, 0.2), link_mass_scale_range=(0.5, 0.6), kp_scale_range=(2.0, 3.0),
    kd_scale_range=(2.0, 3.0), joint_frictionloss_range=(1.0, 2.0), joint_damping_scale_range=(3.0, 4.0),
    joint_armature_scale_range=(3.0, 4.0), push_interval_range_s=(0.02, 0.04), push_velocity_range=(5.0, 6.0),
    noise_level=3.0, noise_ang_vel=1.0, noise_gravity=1.0, noise_dof_pos=1.0, noise_dof_vel=9.0)


# The MJX case compiles a second MJX program (the options' constants are part of it) for the same
# check; the golden test above and the C MuJoCo case here cover the option in the default run.
@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_off_leaves_no_trace(default_digests, backend):
    """In process (holds on any machine, tolerance-free: the same computation on the same CPU twice):
    with randomization, pushes and noise off, none of their settings reaches the env; the rollout is
    bit-identical to the default env's."""
    from rollout_digest import rollout_digest
    assert rollout_digest(backend, TaskConfig(randomization=ELSEWHERE))[0] == default_digests[backend]


@pytest.mark.parametrize("bad, words", [
    (dict(friction_range=(1.0, 0.5)), "low <= high"),
    (dict(friction_range=(-0.1, 0.5)), "below 0"),
    (dict(link_mass_scale_range=(-1.0, 1.0)), "below 0"),
    (dict(push_interval_range_s=(0.0, 1.0)), "> 0 s"),
    (dict(kp_scale_range=(0.9, math.nan)), "finite"),
])
def test_bad_ranges_refused_in_one_line(bad, words):
    with pytest.raises(ConfigError) as e:
        TaskConfig(randomization=RandomizationConfig(enabled=True, **bad)).validate()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_negative_base_mass_refused():
    with pytest.raises(UserError, match="base mass"):
        Go2Env(1, "mujoco", TaskConfig(randomization=RandomizationConfig(enabled=True,
                                                                          added_base_mass_range=(-20.0, 0.0))))


def test_drift_adds_its_acceleration_every_control_step():
    """The drift draws (opt-in) add a * dt to the base's horizontal velocity and alpha * dt to its turn
    about the vertical before each physics step, and leave every other draw as it was without them
    (new rows are the last PRNG splits). Task code only, run eagerly: nothing to compile."""
    import mujoco

    from mjx_env.model import load_go2
    from mjx_env.task import Go2Task

    model = load_go2(None, CFG.env)
    on = Go2Task(model, TaskConfig(randomization=RandomizationConfig(
        enabled=True, drift_accel_range=(-1.0, 1.0), drift_yaw_accel_range=(-2.0, 2.0))))
    off = Go2Task(model, TaskConfig(randomization=RandomizationConfig(enabled=True)))
    keys = jax.random.split(jax.random.PRNGKey(2), 16)
    d_on, d_off = jax.vmap(on.randomizer.sample)(keys), jax.vmap(off.randomizer.sample)(keys)
    a, alpha = np.asarray(d_on["drift_accel"]), np.asarray(d_on["drift_yaw_accel"])
    assert a.shape == (16, 2) and np.abs(a).max() <= 1.0 and np.ptp(a, axis=0).min() > 1.0
    assert alpha.shape == (16,) and np.abs(alpha).max() <= 2.0 and np.ptp(alpha) > 2.0
    for k, v in d_off.items():
        if k.startswith("drift"):
            np.testing.assert_array_equal(np.asarray(v), 0.0)
        else:
            np.testing.assert_array_equal(np.asarray(d_on[k]), np.asarray(v), err_msg=k)
    # tilted bases: the turn is about the world's vertical, given in the base's frame as MuJoCo's free
    # joint keeps its angular velocity
    quat = np.array(jax.random.normal(jax.random.PRNGKey(4), (16, 4)))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    qpos = jnp.tile(model.init_qpos, (16, 1)).at[:, 3:7].set(quat)
    qvel = jax.random.normal(jax.random.PRNGKey(3), (16, model.mj_model.nv))
    dv = np.asarray(jax.vmap(on.randomizer.drift)(d_on, qpos, qvel) - qvel)
    np.testing.assert_allclose(dv[:, :2], a * 0.02, rtol=1e-5, atol=1e-6)     # dt = 0.02 s
    np.testing.assert_array_equal(dv[:, 2], 0.0)
    for i in range(16):
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, quat[i].astype(np.float64))
        np.testing.assert_allclose(R.reshape(3, 3) @ dv[i, 3:6], [0.0, 0.0, alpha[i] * 0.02], atol=1e-6)
    np.testing.assert_array_equal(dv[:, 6:], 0.0)
    # the task applies them before the physics; with the ranges at (0, 0) there is no drift at all
    assert on.randomizer.drifts and not off.randomizer.drifts
    state = on.reset(keys[0])
    dv0 = np.asarray(on.push(state).qvel - state.qvel)
    np.testing.assert_allclose(dv0[:2], a[0] * 0.02, rtol=1e-5)
    np.testing.assert_allclose(dv0[3:6], [0.0, 0.0, alpha[0] * 0.02], rtol=1e-5, atol=1e-7)   # upright at reset
    state = off.reset(keys[0])
    np.testing.assert_array_equal(np.asarray(off.push(state).qvel), np.asarray(state.qvel))


def test_drift_moves_a_standing_robot_its_way():
    """Zero actions for 1 s, two envs with the same draws: env 1 under a drift of +1.5 m/s^2 on both
    axes stands but gives way along +x and +y, against env 0 without drift."""
    env = Go2Env(2, "mujoco", ROLL)
    s = env.reset(jax.random.PRNGKey(5))
    dr = {k: jnp.stack([v[0], v[0]]) for k, v in s.dr.items()}
    s = jax.device_put(s.replace(dr=dict(dr, drift_accel=jnp.float32([[0.0, 0.0], [1.5, 1.5]]))), env.device)
    xy0 = np.asarray(s.qpos[:, :2])
    for _ in range(50):
        s = env.step(s, jnp.zeros((2, 12)))
        assert not bool(s.done.any())
    moved = np.asarray(s.qpos[:, :2]) - xy0
    assert (moved[1] - moved[0] > 0.01).all(), moved
    env.close()
