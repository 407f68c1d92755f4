"""The meaning of the task: observations, actions, rewards, terminations, resets, commands.

Each test builds states by hand and checks against numbers computed here, not by the task.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from mjx_env.config import JOINT_NAMES, CommandConfig, EnvConfig, RewardConfig, TaskConfig
from mjx_env.env import Go2Env
from mjx_env.errors import UserError
from mjx_env.model import load_go2
from mjx_env.task import Go2Task

from conftest import OWN_XML

CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
DEFAULT = np.array(EnvConfig().default_angles())


@pytest.fixture(scope="module")
def task():
    return Go2Task(load_go2(OWN_XML, CFG.env), CFG)


def quat_axis_angle(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def make_qpos(task, z=0.3, quat=(1, 0, 0, 0), joints=None):
    qpos = np.array(task.init_qpos)
    qpos[2], qpos[3:7] = z, quat
    qpos[np.array(task.qpos_idx)] = DEFAULT if joints is None else joints
    return jnp.asarray(qpos, jnp.float32)


def test_default_action_order_and_default_pose():
    assert JOINT_NAMES[:3] == ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")
    assert JOINT_NAMES[9:] == ("RL_hip_joint", "RL_thigh_joint", "RL_calf_joint")
    np.testing.assert_allclose(DEFAULT, [0, .8, -1.5, 0, .8, -1.5, 0, 1., -1.5, 0, 1., -1.5])


def test_observation_layout_and_scales(task):
    yaw90 = quat_axis_angle([0, 0, 1], math.pi / 2)
    joints = DEFAULT + np.arange(12) * 0.01
    qpos = make_qpos(task, z=0.31, quat=yaw90, joints=joints)
    qvel = np.zeros(task.nv, np.float32)
    qvel[0:3] = [1.0, 0.0, 0.5]          # world-frame linear velocity
    qvel[3:6] = [0.4, -0.8, 1.2]         # body-frame angular velocity
    qvel[np.array(task.qvel_idx)] = np.arange(12) * 2.0
    commands = jnp.array([1.0, -0.5, 0.4, 0.35, 0.0])
    action = jnp.arange(12, dtype=jnp.float32) * -0.1
    b = task.base(qpos, jnp.asarray(qvel))
    obs, critic = task.observe(b, commands, action, jnp.int32(25))
    obs, critic = np.asarray(obs), np.asarray(critic)
    assert obs.shape == (48,) and critic.shape == (52,)
    np.testing.assert_allclose(obs[0:3], [0.1, -0.2, 0.3], atol=1e-6)             # ang vel x 0.25
    np.testing.assert_allclose(obs[3:6], [0, 0, -1], atol=1e-6)                    # yaw keeps gravity
    np.testing.assert_allclose(obs[6:11], [2.0, -1.0, 0.1, 0.7, 0.0], atol=1e-6)   # commands x scales
    np.testing.assert_allclose(obs[11:23], np.arange(12) * 0.01, atol=1e-6)        # q - default
    np.testing.assert_allclose(obs[23:35], np.arange(12) * 2.0 * 0.05, atol=1e-5)  # dq x 0.05
    np.testing.assert_allclose(obs[35:47], np.arange(12) * -0.1, atol=1e-6)        # last action
    np.testing.assert_allclose(obs[47], 0.5)                                       # jump phase 25/50
    # yawed 90 deg left: world +x is body -y; x 2.0 scale; then base height
    np.testing.assert_allclose(critic[:48], obs)
    np.testing.assert_allclose(critic[48:51], [0.0, -2.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(critic[51], 0.31, atol=1e-6)


def test_projected_gravity_under_roll(task):
    roll = 0.3
    b = task.base(make_qpos(task, quat=quat_axis_angle([1, 0, 0], roll)), jnp.zeros(task.nv))
    # rolled right-side down by +roll about x: gravity in base frame is (0, -sin, -cos)
    np.testing.assert_allclose(b["gravity"], [0, -math.sin(roll), -math.cos(roll)], atol=1e-6)


def _permuted_model(tmp_path):
    """The project's Go2 with legs declared RL, FL, RR, FR and actuators in reverse order."""
    path = tmp_path / "permuted.xml"
    # Cut each leg's <body> block out of the XML text and put the blocks back in another order.
    text = mujoco.MjSpec.from_file(str(OWN_XML)).to_xml()
    blocks = {}
    for leg in ("FR", "FL", "RR", "RL"):
        start = text.index(f'<body name="{leg}_hip"')
        depth, i = 0, start
        while True:
            if text.startswith("<body", i):
                depth += 1
            elif text.startswith("</body>", i):
                depth -= 1
                if depth == 0:
                    end = i + len("</body>")
                    break
            i += 1
        blocks[leg] = text[start:end]
    first = min(text.index(b) for b in blocks.values())
    last = max(text.index(b) + len(b) for b in blocks.values())
    reordered = "\n".join(blocks[leg] for leg in ("RL", "FL", "RR", "FR"))
    text = text[:first] + reordered + text[last:]
    act_start, act_end = text.index("<actuator>") + len("<actuator>"), text.index("</actuator>")
    acts = [line for line in text[act_start:act_end].splitlines() if line.strip()]
    text = text[:act_start] + "\n" + "\n".join(reversed(acts)) + "\n" + text[act_end:]
    path.write_text(text)
    return path


def test_actions_reach_the_named_joints_in_a_permuted_model(tmp_path):
    path = _permuted_model(tmp_path)
    go2 = load_go2(path, CFG.env)
    m = go2.mj_model
    assert [m.joint(j).name for j in range(1, 4)] == ["RL_hip_joint", "RL_thigh_joint", "RL_calf_joint"]
    env = Go2Env(1, "mujoco", CFG, xml_path=path)
    s = env.reset(jax.random.PRNGKey(0))
    base = env.reset(jax.random.PRNGKey(0))
    action = np.zeros((1, 12), np.float32)
    action[0, 1] = 1.0            # FR thigh: +0.3 rad target
    action[0, 11] = -1.0          # RL calf: -0.3 rad target
    for _ in range(15):
        s = env.step(s, jnp.asarray(action))
        base = env.step(base, jnp.zeros((1, 12)))
    moved = np.asarray(s.qpos[0, go2.qpos_idx] - base.qpos[0, go2.qpos_idx])
    order = np.argsort(-np.abs(moved))
    assert set(order[:2]) == {1, 11}, moved
    assert moved[1] > 0.1 and moved[11] < -0.1
    # and the observation reports joints in action order too
    np.testing.assert_allclose(np.asarray(s.obs[0, 11:23]), np.asarray(s.qpos[0, go2.qpos_idx]) - DEFAULT, atol=1e-5)


def test_one_step_action_latency(task):
    state = task.reset(jax.random.PRNGKey(0))
    a1 = jnp.full(12, 0.5)
    np.testing.assert_allclose(task.ctrl(state, a1), DEFAULT, atol=1e-7)   # first step: previous action 0
    state = state.replace(last_action=a1)
    np.testing.assert_allclose(task.ctrl(state, jnp.zeros(12)), DEFAULT + 0.3 * 0.5, atol=1e-6)
    no_latency = Go2Task(task_model(), TaskConfig(env=EnvConfig(simulate_action_latency=False)))
    np.testing.assert_allclose(no_latency.ctrl(state, jnp.zeros(12)), DEFAULT, atol=1e-7)


def task_model():
    return load_go2(OWN_XML, CFG.env)


def test_latency_through_the_env():
    env = Go2Env(2, "mujoco", CFG)
    s = env.reset(jax.random.PRNGKey(3))
    a = jnp.stack([jnp.zeros(12), jnp.full(12, 0.8)])
    s1 = env.step(s, a)
    np.testing.assert_array_equal(np.asarray(s1.qpos[0]), np.asarray(s1.qpos[1]))  # same PD target
    s2 = env.step(s1, jnp.zeros((2, 12)))
    assert np.abs(np.asarray(s2.qpos[0] - s2.qpos[1])).max() > 1e-3                 # now it acts


def test_clean_action(task):
    a, bad = task.clean_action(jnp.array([jnp.nan, jnp.inf, -jnp.inf, 150.0, -150.0, 0.5] + [0.0] * 6))
    np.testing.assert_allclose(a[:6], [0, 0, 0, 100, -100, 0.5])
    assert bool(bad)
    assert not bool(task.clean_action(jnp.ones(12))[1])


def test_reward_terms_by_hand(task):
    dt = CFG.env.dt
    joints = DEFAULT + np.array([0.1, -0.2, 0.05] + [0.0] * 9)
    qpos = make_qpos(task, z=0.25, joints=joints)
    qvel = np.zeros(task.nv, np.float32)
    qvel[0:3] = [0.7, 0.1, -0.2]
    qvel[3:6] = [0.0, 0.0, 0.3]
    state = task.reset(jax.random.PRNGKey(0)).replace(
        commands=jnp.array([1.0, 0.0, 0.5, 0.3, 0.0]), last_action=jnp.full(12, 0.1))
    action = jnp.full(12, 0.3)
    new = task.after_physics(state, action, jnp.bool_(False), qpos, jnp.asarray(qvel))
    expected = {
        "tracking_lin_vel": 1.0 * dt * math.exp(-(0.3 ** 2 + 0.1 ** 2) / 0.25),
        "tracking_ang_vel": 0.2 * dt * math.exp(-(0.2 ** 2) / 0.25),
        "lin_vel_z": -1.0 * dt * 0.04,
        "base_height": -50.0 * dt * 0.05 ** 2,
        "action_rate": -0.005 * dt * 12 * 0.04,
        "similar_to_default": -0.1 * dt * 0.35,
    }
    for k, v in expected.items():
        np.testing.assert_allclose(float(new.reward_terms[k]), v, rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(float(new.reward), sum(expected.values()), rtol=1e-4)
    np.testing.assert_allclose(float(new.episode_sums["base_height"]), expected["base_height"], rtol=1e-4)


def test_yaw_term_has_its_own_width_when_set():
    """RewardConfig.tracking_sigma_yaw: the yaw term exp(-0.2^2 / 0.1) by hand, the linear term still
    exp(-(0.3^2 + 0.1^2) / 0.25): the same state as test_reward_terms_by_hand."""
    cfg = TaskConfig().replace(reward=dataclasses.replace(RewardConfig(), tracking_sigma_yaw=0.1))
    task = Go2Task(load_go2(OWN_XML, cfg.env), cfg)
    qpos = make_qpos(task, z=0.25)
    qvel = np.zeros(task.nv, np.float32)
    qvel[0:3] = [0.7, 0.1, 0.0]
    qvel[3:6] = [0.0, 0.0, 0.3]
    state = task.reset(jax.random.PRNGKey(0)).replace(commands=jnp.array([1.0, 0.0, 0.5, 0.3, 0.0]))
    new = task.after_physics(state, jnp.zeros(12), jnp.bool_(False), qpos, jnp.asarray(qvel))
    dt = cfg.env.dt
    np.testing.assert_allclose(float(new.reward_terms["tracking_ang_vel"]), 0.2 * dt * math.exp(-0.04 / 0.1), rtol=1e-4)
    np.testing.assert_allclose(float(new.reward_terms["tracking_lin_vel"]), dt * math.exp(-0.1 / 0.25), rtol=1e-4)


def test_a_symmetric_forward_range_draws_backward_as_often():
    """--command-range lin_vel_x_range=-1.5,1.5: half the v_x commands are backward (the default
    (-1, 2) draws a third), every draw inside the range."""
    for lo_hi, share in (((-1.5, 1.5), 0.5), ((-1.0, 2.0), 1 / 3)):
        cfg = TaskConfig().replace(command=dataclasses.replace(CommandConfig(), lin_vel_x_range=lo_hi))
        task = Go2Task(load_go2(OWN_XML, cfg.env), cfg)
        vx = np.asarray(jax.vmap(task.sample_commands)(jax.random.split(jax.random.PRNGKey(1), 20000)))[:, 0]
        assert vx.min() >= lo_hi[0] - 1e-6 and vx.max() <= lo_hi[1] + 1e-6
        assert abs(np.mean(vx < 0) - share) < 0.015, (lo_hi, np.mean(vx < 0))


def test_penalties_pause_in_a_jump_window(task):
    qpos = make_qpos(task, z=0.25)
    state = task.reset(jax.random.PRNGKey(0)).replace(jump_steps=jnp.int32(10))
    new = task.after_physics(state, jnp.ones(12), jnp.bool_(False), qpos, jnp.zeros(task.nv))
    assert float(new.reward_terms["base_height"]) == 0 and float(new.reward_terms["action_rate"]) == 0
    assert float(new.reward_terms["tracking_lin_vel"]) > 0


@pytest.mark.parametrize("axis,deg,ends", [([1, 0, 0], 11, True), ([1, 0, 0], 9, False),
                                          ([0, 1, 0], -11, True), ([0, 1, 0], 9.5, False),
                                          ([0, 0, 1], 60, False)])
def test_roll_pitch_termination(task, axis, deg, ends):
    qpos = make_qpos(task, quat=quat_axis_angle(axis, math.radians(deg)))
    state = task.reset(jax.random.PRNGKey(0))
    new = task.after_physics(state, jnp.zeros(12), jnp.bool_(False), qpos, jnp.zeros(task.nv))
    assert bool(new.terminated) == ends and not bool(new.time_out)


def test_time_out_after_1000_steps(task):
    assert CFG.env.max_episode_length == 1000
    qpos = make_qpos(task)
    for start, expect in ((998, False), (999, True)):
        state = task.reset(jax.random.PRNGKey(0)).replace(episode_step=jnp.int32(start))
        new = task.after_physics(state, jnp.zeros(12), jnp.bool_(False), qpos, jnp.zeros(task.nv))
        assert bool(new.time_out) == expect and not bool(new.terminated)
        assert int(new.episode_step) == (0 if expect else start + 1)
        assert int(new.final_episode_length) == (1000 if expect else 0)


def test_auto_reset_touches_only_finished_envs(task):
    n = 4
    states = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    states = states.replace(episode_step=jnp.array([5, 6, 7, 8], jnp.int32))
    qpos = jnp.stack([make_qpos(task, z=0.28, quat=quat_axis_angle([1, 0, 0], math.radians(
        20 if i == 2 else 2))) for i in range(n)])
    qvel = jnp.ones((n, task.nv)) * 0.1
    new = jax.vmap(task.after_physics)(states, jnp.ones((n, 12)) * 0.2, jnp.zeros(n, bool), qpos, qvel)
    assert list(np.asarray(new.terminated)) == [False, False, True, False]
    np.testing.assert_allclose(new.qpos[2], task.init_qpos)                     # initial pose
    np.testing.assert_allclose(new.qvel[2], 0.0)
    np.testing.assert_allclose(new.last_action[2], 0.0)
    assert int(new.episode_step[2]) == 0 and float(new.commands[2, 3]) == pytest.approx(0.3)
    assert all(float(v[2]) == 0.0 for v in new.episode_sums.values())
    assert float(new.final_episode_sums["base_height"][2]) < 0                 # what was reported
    for i in (0, 1, 3):                                                          # untouched
        np.testing.assert_array_equal(new.qpos[i], qpos[i])
        np.testing.assert_array_equal(new.qvel[i], qvel[i])
        assert int(new.episode_step[i]) == int(states.episode_step[i]) + 1


def test_commands_resample_every_200_steps_within_ranges(task):
    c = CFG.command
    qpos = make_qpos(task)
    state = task.reset(jax.random.PRNGKey(0))
    changed = []
    for start in (0, 198, 199, 200, 399):
        s = state.replace(episode_step=jnp.int32(start))
        new = task.after_physics(s, jnp.zeros(12), jnp.bool_(False), qpos, jnp.zeros(task.nv))
        changed.append(not np.allclose(new.commands, s.commands))
    assert changed == [False, False, True, False, True]
    cmds = np.asarray(jax.vmap(task.sample_commands)(jax.random.split(jax.random.PRNGKey(1), 20000)))
    for i, (lo, hi) in enumerate((c.lin_vel_x_range, c.lin_vel_y_range, c.ang_vel_range, c.height_range)):
        assert cmds[:, i].min() >= lo - 1e-6 and cmds[:, i].max() <= hi + 1e-6
        assert cmds[:, i].max() - cmds[:, i].min() > 0.5 * (hi - lo)          # really spread
    assert np.all(cmds[:, 4] == 0)
    # velocity commands are scaled by 0.5 + 0.5 |h - 0.3| / 0.1
    near = np.abs(cmds[:, 3] - 0.3) < 0.005
    assert np.abs(cmds[near, 0]).max() <= 2.0 * 0.55
    assert float(task.reset(jax.random.PRNGKey(5)).commands[3]) == pytest.approx(0.3)


def test_random_resampling_share():
    cfg = TaskConfig()
    task = Go2Task(load_go2(OWN_XML, cfg.env), cfg)
    n = 4000
    states = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    states = states.replace(episode_step=jnp.full(n, 10, jnp.int32))
    qpos = jnp.tile(make_qpos(task), (n, 1))
    new = jax.vmap(task.after_physics)(states, jnp.zeros((n, 12)), jnp.zeros(n, bool), qpos, jnp.zeros((n, task.nv)))
    share = float(jnp.mean(jnp.any(new.commands != states.commands, axis=1)))
    assert 0.035 < share < 0.065


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_envs=0), "num_envs must be an integer >= 1"),
    (dict(num_envs=4, backend="bullet"), "unknown backend 'bullet'"),
])
def test_bad_env_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        Go2Env(**kwargs)
