"""The reference's jump task as an option: commands, window, the four jump rewards, tools.

Expected values are computed here from the formulas of ../shared/docs/reference_env.md
("The reference's jump mechanics"), not by the task.
"""
import json
import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from mjx_env.config import CommandConfig, EnvConfig, RewardConfig, TaskConfig
from mjx_env.env import Go2Env
from mjx_env.model import load_go2
from mjx_env.rewards import active_scales
from mjx_env.task import Go2Task

from conftest import OWN_XML

JCFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0, jumps_enabled=True, jump_prob=0.0))
N = 50
DT = 0.02
DEFAULT = np.array(EnvConfig().default_angles())
PENALTIES = ("lin_vel_z", "base_height", "action_rate", "similar_to_default")
JUMP_TERMS = ("jump_height_tracking", "jump_height_achievement", "jump_speed", "jump_landing")


@pytest.fixture(scope="module")
def task():
    return Go2Task(load_go2(OWN_XML, JCFG.env), JCFG)


@pytest.fixture(scope="module")
def step(task):
    return jax.jit(task.after_physics)


def make_qpos(task, z, quat=(1, 0, 0, 0)):
    qpos = np.array(task.init_qpos)
    qpos[2], qpos[3:7] = z, quat
    qpos[np.array(task.qpos_idx)] = DEFAULT + 0.05          # similar_to_default is not zero
    return jnp.asarray(qpos)


def make_qvel(task, v_z):
    qvel = np.zeros(task.nv, np.float32)
    qvel[0:3] = [0.4, 0.0, v_z]                             # identity orientation: base frame = world
    return jnp.asarray(qvel)


def expected_jump_terms(counter, z, target, v_z):
    peak = 0.3 * N <= counter < 0.6 * N                     # 15 <= counter < 30
    landing = counter >= 0.6 * N                            # 30 .. 50
    return {
        "jump_height_tracking": 0.5 * DT * math.exp(-(z - target) ** 2) * peak,
        "jump_height_achievement": 10.0 * DT * float(abs(z - target) < 0.2) * peak,
        "jump_speed": 1.0 * DT * 0.2 * math.exp(v_z) * peak,
        "jump_landing": 0.08 * DT * -((z - 0.3) ** 2) * landing,
    }


@pytest.mark.parametrize("counter", [0, 1, 14, 15, 29, 30, 49, 50])
def test_jump_terms_and_penalties_by_hand(task, step, counter):
    z, target, v_z = 0.62, 0.75, 0.8
    state = task.reset(jax.random.PRNGKey(0)).replace(
        jump_steps=jnp.int32(counter), jump_target=jnp.float32(target), last_action=jnp.full(12, 0.1),
        commands=jnp.array([0.5, 0.0, 0.0, 0.3, 0.0]))
    new = step(state, jnp.full(12, 0.3), jnp.bool_(False), make_qpos(task, z), make_qvel(task, v_z))
    expected = expected_jump_terms(counter, z, target, v_z)
    expected |= {  # the penalties count only while the counter is 0
        "lin_vel_z": -1.0 * DT * v_z ** 2 * (counter == 0),
        "base_height": -50.0 * DT * (z - 0.3) ** 2 * (counter == 0),
        "action_rate": -0.005 * DT * 12 * 0.2 ** 2 * (counter == 0),
        "similar_to_default": -0.1 * DT * 12 * 0.05 * (counter == 0),
        "tracking_lin_vel": 1.0 * DT * math.exp(-0.1 ** 2 / 0.25),
        "tracking_ang_vel": 0.2 * DT,
    }
    assert set(new.reward_terms) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(float(new.reward_terms[k]), v, rtol=1e-5, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(float(new.reward), sum(expected.values()), rtol=1e-5)
    assert int(new.jump_steps) == max(counter - 1, 0)                           # counts down, never below 0
    np.testing.assert_allclose(float(new.obs[47]), max(counter - 1, 0) / N)     # the jump phase


@pytest.mark.parametrize("dz,near", [(0.19, True), (0.21, False), (-0.19, True), (-0.21, False)])
def test_achievement_tolerance_edges(task, step, dz, near):
    state = task.reset(jax.random.PRNGKey(0)).replace(jump_steps=jnp.int32(20), jump_target=jnp.float32(0.8))
    new = step(state, jnp.zeros(12), jnp.bool_(False), make_qpos(task, 0.8 + dz), make_qvel(task, 0.0))
    assert float(new.reward_terms["jump_height_achievement"]) == pytest.approx(10.0 * DT * near)


def test_at_reset_and_after_a_fall(task, step):
    s = task.reset(jax.random.PRNGKey(3))
    assert int(s.jump_steps) == 0 and float(s.jump_target) == 0.0 and float(s.obs[47]) == 0.0
    assert float(s.commands[4]) == 0.0
    # the fresh state: no jump term counts (target 0 would otherwise score the height), penalties on
    new = step(s, jnp.zeros(12), jnp.bool_(False), make_qpos(task, 0.1), make_qvel(task, 0.5))
    assert all(float(new.reward_terms[k]) == 0.0 for k in JUMP_TERMS)
    assert float(new.reward_terms["lin_vel_z"]) == pytest.approx(-1.0 * DT * 0.25)
    # a fall in the peak window: that step's reward is the jump's, then the window is gone
    s = s.replace(jump_steps=jnp.int32(20), jump_target=jnp.float32(0.6))
    roll = np.array([math.cos(0.2), math.sin(0.2), 0, 0])                       # 23 deg roll
    new = step(s, jnp.zeros(12), jnp.bool_(False), make_qpos(task, 0.5, roll), make_qvel(task, 0.0))
    assert bool(new.terminated)
    assert float(new.reward_terms["jump_height_tracking"]) == pytest.approx(0.5 * DT * math.exp(-0.01), rel=1e-5)
    assert int(new.jump_steps) == 0 and float(new.jump_target) == 0.0 and float(new.obs[47]) == 0.0


def test_window_timeline_from_a_command(task, step):
    """Command at step 0: landing terms for the 20 steps after it, then the 15 peak steps, then 14 quiet
    steps, then the penalties again: 50 steps without penalties in all."""
    s = jax.jit(task.with_jump)(task.reset(jax.random.PRNGKey(0)), jnp.bool_(True), jnp.float32(0.7))
    assert int(s.jump_steps) == N and float(s.jump_target) == pytest.approx(0.7)
    np.testing.assert_allclose(float(s.obs[10]), 0.7 * 2.0, rtol=1e-6)       # commands[4] x scale 2
    assert float(s.obs[47]) == 1.0
    qpos, qvel = make_qpos(task, 0.6), make_qvel(task, 0.3)
    kinds = []
    for k in range(1, 53):
        s = step(s, jnp.full(12, 0.1 * (k % 2)), jnp.bool_(False), qpos, qvel)
        t = {n: float(v) != 0.0 for n, v in s.reward_terms.items()}
        assert len({t[p] for p in PENALTIES}) == 1                              # all on or all off
        kinds.append("P" if t["lin_vel_z"] else "L" if t["jump_landing"] else
                     "K" if t["jump_height_tracking"] and t["jump_speed"] else "-")
        if k == 1:
            assert float(s.commands[4]) == 0.0 and float(s.obs[10]) == 0.0   # shown for one step only
    assert "".join(kinds) == "L" * 21 + "K" * 15 + "-" * 14 + "P" * 2


def test_toggle_once_and_the_target_follows_the_latest_command(task, step):
    s = jax.jit(task.with_jump)(task.reset(jax.random.PRNGKey(0)), jnp.bool_(True), jnp.float32(0.7))
    qpos, qvel = make_qpos(task, 0.3), make_qvel(task, 0.0)
    for _ in range(10):
        s = step(s, jnp.zeros(12), jnp.bool_(False), qpos, qvel)
    assert int(s.jump_steps) == 40
    s = task.with_jump(s, jnp.bool_(True), jnp.float32(1.2))                   # a second command inside
    assert int(s.jump_steps) == 40                                              # does not restart the window
    assert float(s.jump_target) == pytest.approx(1.2) and float(s.commands[4]) == pytest.approx(1.2)
    s = task.with_jump(s, jnp.bool_(False), jnp.float32(0.9))                  # no command: nothing changes
    assert int(s.jump_steps) == 40 and float(s.jump_target) == pytest.approx(1.2)
    # sampled commands every step (jump_prob 1): the window reopens only once it has closed
    cfg = JCFG.replace(command=CommandConfig(random_resample_prob=0.0, jumps_enabled=True, jump_prob=1.0))
    t1 = Go2Task(load_go2(OWN_XML, cfg.env), cfg)
    step1 = jax.jit(t1.after_physics)
    s = t1.reset(jax.random.PRNGKey(1))
    counters, targets, shown = [], [], []
    for _ in range(105):
        s = step1(s, jnp.zeros(12), jnp.bool_(False), qpos, qvel)
        counters.append(int(s.jump_steps))
        targets.append(float(s.jump_target))
        shown.append(float(s.commands[4]))
    assert counters == (list(range(50, 0, -1)) * 3)[:105]
    assert targets == shown and 0.5 <= min(shown) and max(shown) <= 1.5 and len(set(shown)) > 90


def test_five_percent_of_envs_get_a_jump_command_each_step(task):
    cfg = JCFG.replace(command=CommandConfig(jumps_enabled=True))             # the training defaults
    t = Go2Task(load_go2(OWN_XML, cfg.env), cfg)
    n = 4000
    states = jax.vmap(t.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    qpos = jnp.tile(make_qpos(t, 0.3), (n, 1))
    new = jax.vmap(t.after_physics)(states, jnp.zeros((n, 12)), jnp.zeros(n, bool), qpos, jnp.zeros((n, t.nv)))
    jumped = np.asarray(new.commands[:, 4]) > 0
    assert 0.04 < jumped.mean() < 0.06
    h = np.asarray(new.commands[jumped, 4])
    assert h.min() >= 0.5 and h.max() <= 1.5 and h.max() - h.min() > 0.8
    np.testing.assert_array_equal(np.asarray(new.jump_steps), np.where(jumped, N, 0))
    np.testing.assert_array_equal(np.asarray(new.jump_target)[jumped], h)


@pytest.mark.slow
def test_backends_agree_on_a_rollout_with_jumps():
    """Same float32 states and actions on MJX and C MuJoCo with jumps on; tolerances as in
    test_backends.py. Along the way: the penalties are off exactly while the counter is non-zero."""
    cfg = TaskConfig(command=CommandConfig(jumps_enabled=True, jump_prob=0.2))
    n = 16
    mjx_env, mj_env = Go2Env(n, "mjx", cfg), Go2Env(n, "mujoco", cfg)
    s1, s2 = mjx_env.reset(jax.random.PRNGKey(1)), mj_env.reset(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    seen = dict(peak=0, landing=0, paused=0)
    for t in range(40):
        a = jnp.asarray(rng.normal(0.0, 0.3, (n, 12)), jnp.float32)
        prev = np.asarray(s2.jump_steps)
        s1, s2 = mjx_env.step(s1, a), mj_env.step(s2, a)
        tol = 1e-5 if t < 2 else 1e-3
        np.testing.assert_allclose(s1.obs, s2.obs, atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(s1.critic_obs, s2.critic_obs, atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(s1.reward, s2.reward, atol=tol * 0.1, err_msg=f"step {t}")
        for k in JUMP_TERMS:
            np.testing.assert_allclose(s1.reward_terms[k], s2.reward_terms[k], atol=tol * 0.1, err_msg=k)
        np.testing.assert_array_equal(s1.jump_steps, s2.jump_steps)
        np.testing.assert_array_equal(s1.jump_target, s2.jump_target)
        np.testing.assert_array_equal(s1.terminated, s2.terminated)
        paused = np.stack([np.asarray(s2.reward_terms[k]) == 0.0 for k in PENALTIES])
        np.testing.assert_array_equal(paused.all(0), prev != 0, err_msg=f"step {t}")
        np.testing.assert_array_equal(paused.any(0), prev != 0, err_msg=f"step {t}")
        seen["peak"] += int(np.sum(np.asarray(s2.reward_terms["jump_speed"]) > 0))
        seen["landing"] += int(np.sum(np.asarray(s2.reward_terms["jump_landing"]) < 0))
        seen["paused"] += int(np.sum(prev != 0))
    assert min(seen.values()) > 10, seen                                      # the windows really happened
    mj_env.close()


@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_jumps_off_is_bit_identical_to_before(default_digests, backend):
    """In process (holds on any machine, tolerance-free: the same computation on the same CPU twice):
    with jumps off, the env equals one built from the reward registry without the jump terms, with
    every other jump setting moved too. (The golden digest of the code from before the jump option,
    tests/test_randomization.py, covers this option as well.)"""
    from rollout_digest import rollout_digest
    cfg = TaskConfig(reward=RewardConfig(jump_scales=(), jump_peak_window=(0.1, 0.2), jump_height_tolerance=1.0),
                     command=CommandConfig(jump_range=(2.0, 3.0), jump_prob=0.9, jump_reward_steps=7))
    assert not cfg.command.jumps_enabled and active_scales(cfg) == active_scales(TaskConfig())
    assert rollout_digest(backend, cfg)[0] == default_digests[backend]


def test_train_jumps_option(tmp_path):
    import train
    default = train.task_config(train.parse_args([]))
    assert default == TaskConfig() and not default.command.jumps_enabled
    cfg = train.task_config(train.parse_args(["--jumps"]))
    assert cfg.command.jumps_enabled and cfg.command.jump_prob == 0.05
    assert cfg.replace(command=default.command) == default                    # nothing else changes
    # the bridge logs the jump terms as rew_jump_* (rsl_rl prefixes Episode/)
    from bridge.vec_env import Go2VecEnv
    import torch
    vec = Go2VecEnv(Go2Env(4, "mujoco", cfg), seed=0, log_every=1)
    _, _, _, extras = vec.step(torch.zeros(4, 12))
    assert {f"rew_{k}" for k in JUMP_TERMS} <= set(extras["episode"])
    vec.close()
    assert train.main(["--jumps", "--resume", "a.pt", "--init-actor", "b.pt", "--log_root", str(tmp_path)]) == 2


def test_init_actor_loads_a_one_frame_walker():
    import torch

    import train
    from bridge.policy import ROBUST_V1_POLICY as WALKER      # the jump policy's one-frame origin
    from bridge.runner import Go2Runner, ppo_train_cfg
    from bridge.vec_env import Go2VecEnv
    from mjx_env.errors import UserError

    vec = Go2VecEnv(Go2Env(4, "mujoco", JCFG), seed=0)
    runner = Go2Runner(vec, ppo_train_cfg(), log_dir=None, device="cpu")
    critic_before = {k: v.clone() for k, v in runner.alg.critic.state_dict().items()}
    train.init_actor(runner, WALKER)
    shipped = torch.load(WALKER, weights_only=False)["actor_state_dict"]
    for k, v in shipped.items():
        torch.testing.assert_close(runner.alg.get_policy().state_dict()[k], v)
    for k, v in runner.alg.critic.state_dict().items():
        torch.testing.assert_close(v, critic_before[k])
    with pytest.raises(UserError, match="not found"):
        train.init_actor(runner, "no_such_actor.pt")
    vec.close()


def test_jump_log_by_hand():
    from tools.jumps import JumpLog
    log = JumpLog(2, window=3)
    log.command(np.array([True, True]), np.array([0.30, 0.28]), 0.6)
    heights = [(0.35, 0.30), (0.70, 0.38), (0.50, 0.37), (0.31, 0.2)]       # env 1 falls at the 4th step
    ends = [(False, False), (False, False), (False, False), (False, True)]
    for h, e in zip(heights, ends):
        log.step(np.array(h), np.array(e), np.array(e))
    log.command(np.array([True, False]), np.array([0.31, 0.3]), 0.6)
    log.step(np.array([0.5, 0.3]), np.array([True, False]), np.array([False, False]))   # time-out cuts it
    # env 0: apex 0.70, within 0.2 of 0.6; env 1: apex 0.38, not within; it fell after its window (step 4 > 3)
    s = log.summary(0.2, DT)
    assert s["jumps"] == 2 and s["falls_during_jump"] == 0 and s["falls_after_jump"] == 1
    assert s["apex_height_mean"] == pytest.approx((0.70 + 0.38) / 2)
    assert s["apex_height_std"] == pytest.approx(0.16)
    assert s["apex_rise_mean"] == pytest.approx((0.40 + 0.10) / 2)
    assert s["apex_within_tolerance"] == 0.5
    log = JumpLog(1, window=3)
    log.command(np.array([True]), np.array([0.3]), 1.0)
    log.step(np.array([0.45]), np.array([True]), np.array([True]))             # falls inside the window
    s = log.summary(0.2, DT)
    assert s["jumps"] == 1 and s["falls_during_jump"] == 1 and s["apex_height_mean"] == pytest.approx(0.45)


def test_jump_log_flight():
    from tools.jumps import JumpLog
    log = JumpLog(2, window=4)
    log.command(np.array([True, True]), np.array([0.3, 0.3]), 0.6)
    up, down = np.full(4, 0.02), np.array([0.02, 0.02, -0.001, 0.02])      # down: one foot still in contact
    nan = np.full(4, np.nan)                                                # not computed (a done env)
    gaps = [(down, up), (up, up), (up, down), (up, nan)]
    for g in gaps:
        log.step(np.array([0.35, 0.35]), np.array([False, False]), np.array([False, False]), np.array(g))
    # env 0: airborne at steps 2-4, a run of 3; env 1: runs of 2 then 0; the NaN step counts as not airborne
    s = log.summary(0.2, dt=0.02)
    assert s["jumps"] == 2 and s["with_flight"] == 1.0
    assert s["flight_time_mean"] == pytest.approx((3 + 2) / 2 * 0.02)
    assert s["flight_time_max"] == pytest.approx(0.06)
    assert s["lowest_foot_peak_mean"] == pytest.approx(0.02) and s["lowest_foot_peak_max"] == pytest.approx(0.02)
    log.command(np.array([True, False]), np.array([0.3, 0.3]), 0.6)           # a new jump starts from zero
    for _ in range(4):
        log.step(np.array([0.3, 0.3]), np.array([False, False]), np.array([False, False]), np.array([down, up]))
    s = log.summary(0.2, dt=0.02)
    assert s["jumps"] == 3 and s["with_flight"] == pytest.approx(2 / 3)
    assert s["lowest_foot_peak_mean"] == pytest.approx((0.02 + 0.02 - 0.001) / 3)
    log.command(np.array([True, False]), np.array([0.3, 0.3]), 0.6)           # falls at once: no gap measured
    log.step(np.array([0.2, 0.3]), np.array([True, False]), np.array([True, False]), np.array([nan, up]))
    s = log.summary(0.2, dt=0.02)
    assert s["jumps"] == 4 and s["falls_during_jump"] == 1 and s["with_flight"] == pytest.approx(2 / 4)
    assert s["lowest_foot_peak_mean"] == pytest.approx((0.02 + 0.02 - 0.001) / 3)      # the fall has none


@pytest.mark.parametrize("which", ["own", "menagerie"])
def test_foot_gap_is_mujocos_contact_distance(which, request):
    """FootProbe's gaps against MuJoCo's own collision detection: a foot with a negative gap has a floor
    contact at distance gap + margin, a foot with a positive gap has none."""
    from mjx_env.feet import FootProbe
    xml = OWN_XML if which == "own" else request.getfixturevalue("ref_xml")
    model = load_go2(xml, JCFG.env)
    probe = FootProbe(model)
    q = np.array(model.init_qpos, float)
    g0 = probe(q[None])[1][0]
    lifted = q.copy()
    lifted[2] += 0.1
    np.testing.assert_allclose(probe(lifted[None])[1][0], g0 + 0.1, atol=1e-12)     # a rigid lift
    lowered = q.copy()
    lowered[2] -= g0[:2].mean() + 0.005                  # front feet 5 mm into the floor
    _, (g,), (contact,) = probe(lowered[None])
    m = model.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = lowered
    mujoco.mj_forward(m, d)
    dist = {}
    for c in d.contact[:d.ncon]:
        for foot_index, foot in enumerate(model.foot_geom_ids):
            if foot in (c.geom1, c.geom2):
                dist[foot_index] = c.dist
    assert g[:2].max() < 0 and g[2:].min() > 0           # the front feet sink, the rear ones stay clear
    assert sorted(dist) == [0, 1]
    np.testing.assert_array_equal(contact, [True, True, False, False])
    for i in (0, 1):
        assert dist[i] == pytest.approx(g[i] + probe.margin[i], abs=1e-9)


def test_play_and_collect_with_jumps(tmp_path):
    import collect_trajectories
    import play

    out = tmp_path / "play.json"
    assert play.main(["-B", "3", "--duration", "3.5", "--jump", "0.6", "--jump-every", "1.2",
                      "--json", str(out)]) == 0
    j = json.loads(out.read_text())["jump"]
    assert j["jumps"] == 3 * 2                              # at 1.2 s and 2.4 s; 3.6 s is past the end
    assert j["jump_target"] == pytest.approx(0.6) and j["apex_rise_mean"] >= 0.0
    assert 0.0 <= j["with_flight"] <= 1.0 and -0.05 < j["lowest_foot_peak_mean"] < 0.5     # computed, finite
    assert play.main(["--jump", "0.6", "--jump-every", "0.5"]) == 2           # shorter than the 1 s window
    h5 = tmp_path / "jumps.h5"
    assert collect_trajectories.main(["--episodes", "2", "-B", "2", "--duration", "2.5", "--jump", "0.7",
                                      "--jump-every", "1", "--out", str(h5)]) == 0
    ds = collect_trajectories.load_dataset(h5)
    for i in range(len(ds)):
        ep = ds.episode(i)
        commanded = np.flatnonzero(ep["commands"][:, 4])
        np.testing.assert_array_equal(commanded, [50, 100])                  # the state at 1 s and 2 s
        np.testing.assert_allclose(ep["commands"][commanded, 4], 0.7)
        np.testing.assert_allclose(ep["obs"][commanded, 47], 1.0)            # jump phase: window opened
        np.testing.assert_allclose(ep["obs"][commanded[0] + 1, 47], 49 / 50)
    assert ds.meta["configs"]["command"]["jumps_enabled"]
