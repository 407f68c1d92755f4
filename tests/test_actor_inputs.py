"""The opt-in actor inputs (train.py --history, --estimator, --actor-lin-vel): the history buffer in
the env state on both backends, the velocity estimator's regression, and the checks on checkpoints."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridge.policy import Actor, ActorInputs, check_init_actor, load_actor, widen_actor, ROBUST_V1_POLICY
from bridge.runner import load_checkpoint_file, ppo_train_cfg, read_checkpoint
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.env import Go2Env
from mjx_env.errors import UserError

N = 3
CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
HIST = CFG.replace(obs=CFG.obs.with_actor_inputs(N))


def history_run(backend):
    """4 envs, 4 steps; env 2 gets a NaN action at step 3 (so it is reset there)."""
    env = Go2Env(4, backend, HIST)
    s = env.reset(jax.random.PRNGKey(0))
    states = [s]
    for t in range(4):
        a = np.random.default_rng(t).normal(0, 0.4, (4, 12)).astype(np.float32)
        if t == 2:
            a[2, 0] = np.nan
        s = env.step(s, jnp.asarray(a))
        states.append(s)
    env.close()
    return [jax.device_get(x) for x in states]


@pytest.fixture(scope="module")
def runs():
    """Each backend's run, made when a test first asks for it (the MJX one compiles its own step)."""
    class Runs(dict):
        def __missing__(self, backend):
            self[backend] = history_run(backend)
            return self[backend]
    return Runs()


@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_history_is_oldest_first_and_refilled_at_reset(runs, backend):
    st = runs[backend]
    obs = [np.asarray(s.obs) for s in st]
    h = [np.asarray(s.obs_history) for s in st]
    assert h[0].shape == (4, N, 48)
    # at the start every slot holds the first observation (exact: a copy of the same values)
    np.testing.assert_array_equal(h[0], np.repeat(obs[0][:, None], N, axis=1))
    for t in range(1, 5):
        np.testing.assert_array_equal(h[t][:, -1], obs[t])                  # newest last
    keep = [0, 1, 3]
    np.testing.assert_array_equal(h[2][keep], np.stack([obs[0], obs[1], obs[2]], 1)[keep])   # oldest first
    np.testing.assert_array_equal(h[4][keep], np.stack([obs[2], obs[3], obs[4]], 1)[keep])
    # env 2 was reset at step 3: its buffer holds its new first observation only; the others shifted on
    assert st[3].done[2] and not st[3].done[keep].any()
    np.testing.assert_array_equal(h[3][2], np.repeat(obs[3][2][None], N, axis=0))
    np.testing.assert_array_equal(h[4][2], np.stack([obs[3][2], obs[3][2], obs[4][2]]))


@pytest.mark.slow
def test_history_agrees_between_backends(runs):
    """Same buffer logic, physics within the backends' parity (float32 MJX vs float64 C MuJoCo)."""
    for a, b in zip(runs["mujoco"], runs["mjx"]):
        np.testing.assert_allclose(a.obs_history, b.obs_history, atol=2e-3)
        np.testing.assert_array_equal(a.done, b.done)


def test_history_of_one_is_the_observation():
    env = Go2Env(2, "mujoco", CFG)
    s = env.step(env.reset(jax.random.PRNGKey(1)), jnp.zeros((2, 12)))
    np.testing.assert_array_equal(np.asarray(s.obs_history)[:, 0], np.asarray(s.obs))
    env.close()


def test_measured_velocity_leads_the_frame_with_bounded_noise():
    cfg = CFG.replace(obs=CFG.obs.with_actor_inputs(1, actor_lin_vel=True))
    env = Go2Env(8, "mujoco", cfg)
    s = env.reset(jax.random.PRNGKey(0))
    for _ in range(5):
        s = env.step(s, jnp.asarray(np.random.default_rng(0).normal(0, 0.5, (8, 12)), jnp.float32))
    obs, critic = np.asarray(s.obs), np.asarray(s.critic_obs)
    assert obs.shape == (8, 51) and critic.shape == (8, 55)
    true = critic[:, 51:54]                        # lin_vel x 2.0, noise-free (the critic's)
    err = np.abs(obs[:, :3] - true)
    assert err.max() <= 0.1 * 2.0 + 1e-6 and err.max() > 0.05    # uniform noise of 0.1 m/s, scaled
    np.testing.assert_array_equal(obs[:, 3:], critic[:, 3:51])    # the rest is the seed's frame
    env.close()


# ---- the estimator -------------------------------------------------------------------------------
def estimator_alg(num_envs=64, steps=8):
    """An EstimatorPPO on a real rollout of the mujoco env (the storage filled as rsl_rl fills it)."""
    from bridge.runner import Go2Runner
    from bridge.vec_env import Go2VecEnv
    vec = Go2VecEnv(Go2Env(num_envs, "mujoco", HIST), seed=0, log_every=steps, lin_vel_group=True)
    cfg = ppo_train_cfg(num_steps_per_env=steps, estimator=True)
    cfg["algorithm"]["num_mini_batches"] = 1
    runner = Go2Runner(vec, cfg, log_dir=None, device="cpu", actor_inputs=ActorInputs(N, False, True))
    alg = runner.alg
    obs = vec.get_observations()
    with torch.inference_mode():
        for _ in range(steps):
            actions = alg.act(obs)
            obs, rew, dones, extras = vec.step(actions)
            alg.process_env_step(obs, rew, dones, extras)
        alg.compute_returns(obs)
    return vec, alg


def test_estimator_learns_the_velocity_on_a_fixed_batch():
    torch.manual_seed(0)
    vec, alg = estimator_alg()
    obs = alg.storage.observations.flatten(0, 1)
    true = obs["lin_vel"]
    assert true.abs().max() > 0.05                              # the robot moves: a real target
    before = alg.estimator_loss(obs).item()
    err_before = (alg.actor.estimate(obs) - true).abs().mean().item()
    losses = [alg.update_estimator() for _ in range(30)]
    after = alg.estimator_loss(obs).item()
    err_after = (alg.actor.estimate(obs) - true).abs().mean().item()
    assert after < 0.3 * before and losses[-1] < losses[0]
    assert err_after < 0.6 * err_before                          # the prediction moves to the true velocity
    vec.close()


def test_ppo_does_not_train_the_estimator_and_the_update_reports_it():
    """The estimate enters the policy detached: PPO's own update leaves the estimator unchanged;
    the estimator's regression then changes it, and the loss is in the update's report."""
    torch.manual_seed(0)
    vec, alg = estimator_alg()
    est0 = {k: v.clone() for k, v in alg.actor.estimator.state_dict().items()}
    mlp0 = alg.actor.mlp[0].weight.detach().clone()
    from rsl_rl.algorithms import PPO
    PPO.update(alg)                                             # PPO alone
    for k, v in alg.actor.estimator.state_dict().items():
        torch.testing.assert_close(v, est0[k], rtol=0, atol=0)
    assert not torch.equal(alg.actor.mlp[0].weight, mlp0)       # while the policy did learn
    alg.storage.clear()
    losses = alg.update()                                        # PPO, then the regression
    assert "estimator" in losses and np.isfinite(losses["estimator"])
    assert any(not torch.equal(v, est0[k]) for k, v in alg.actor.estimator.state_dict().items())
    vec.close()


def test_deployed_actor_matches_the_training_model():
    """bridge.policy.Actor rebuilds the estimator and the MLP: the training model's mean action."""
    torch.manual_seed(0)
    vec, alg = estimator_alg(num_envs=8, steps=2)
    actor = Actor(alg.actor.state_dict())
    obs = vec.get_observations()
    with torch.no_grad():
        torch.testing.assert_close(actor(obs["policy"]), alg.actor(obs), rtol=0, atol=1e-6)
        torch.testing.assert_close(actor.estimate(obs["policy"]), alg.actor.estimate(obs), rtol=0, atol=1e-6)
    assert actor.num_obs == N * 48
    vec.close()


# ---- checkpoints ---------------------------------------------------------------------------------
def test_widened_actor_acts_as_the_one_frame_actor():
    """--init-actor from a one-frame policy (the robust walker shipped before): the wider actor (history and estimator) gives
    the same actions whatever the older frames hold."""
    torch.manual_seed(0)
    vec, alg = estimator_alg(num_envs=8, steps=1)
    ckpt = load_checkpoint_file(ROBUST_V1_POLICY)
    inputs = ActorInputs(N, False, True)
    check_init_actor(ckpt, inputs, ROBUST_V1_POLICY)
    wide = Actor(widen_actor(ckpt, alg.actor.state_dict(), inputs))
    old = load_actor(ROBUST_V1_POLICY)
    hist = torch.randn(16, N, 48)
    torch.testing.assert_close(wide(hist.flatten(1)), old(hist[:, -1]), rtol=0, atol=1e-5)
    vec.close()


def test_checkpoint_with_other_inputs_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    vec, alg = estimator_alg(num_envs=8, steps=1)
    path = tmp_path / "model_0.pt"
    torch.save(dict(alg.save(), iter=0, actor_inputs=dataclasses.asdict(ActorInputs(N, False, True))), path)
    vec.close()
    read_checkpoint(path, ActorInputs(N, False, True), 52, 12)               # the same flags: fine
    for other in (ActorInputs(), ActorInputs(N, False, False), ActorInputs(6, False, True)):
        with pytest.raises(UserError) as e:
            read_checkpoint(path, other, 52, 12)
        msg = str(e.value)
        assert "\n" not in msg and "3 frames of 48, a velocity estimator" in msg and "--history" in msg
    with pytest.raises(UserError, match="only the seed's layout"):
        check_init_actor(load_checkpoint_file(path), ActorInputs(6, False, True), path)


def test_train_refuses_bad_option_sets(capsys):
    import train
    assert train.main(["--history", "0", "--device", "cpu"]) == 2
    assert "--history must be >= 1" in capsys.readouterr().err
    assert train.main(["--estimator", "--actor-lin-vel", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "exclude each other" in err and err.count("\n") == 1
    cfg = train.task_config(train.parse_args(["--history", "4", "--actor-lin-vel"]))
    assert (cfg.obs.history_length, cfg.obs.num_obs, cfg.obs.num_privileged_obs) == (4, 51, 55)
    assert train.task_config(train.parse_args([])) == TaskConfig()
    assert train.task_config(train.parse_args(["--tracking-sigma", "0.05"])).reward.tracking_sigma == 0.05
    assert train.main(["--tracking-sigma", "0", "--device", "cpu"]) == 2
    assert "--tracking-sigma must be > 0" in capsys.readouterr().err


def test_tracking_sigma_sets_the_reward_width():
    """exp(-err^2 / sigma): a 0.1 m/s error costs 4% of the term at the seed's 0.25, 18% at 0.05."""
    import jax.numpy as jnp
    from mjx_env import rewards
    cfg = CFG.replace(reward=dataclasses.replace(CFG.reward, tracking_sigma=0.05))
    q = dict(commands=jnp.array([0.5, 0.0, 0.2, 0.3, 0.0]), lin_vel=jnp.array([0.6, 0.0, 0.0]),
             ang_vel=jnp.array([0.0, 0.0, 0.1]))
    for c, want in ((CFG, np.exp(-0.01 / 0.25)), (cfg, np.exp(-0.01 / 0.05))):
        assert float(rewards.tracking_lin_vel(q, c)) == pytest.approx(want, rel=1e-6)
        assert float(rewards.tracking_ang_vel(q, c)) == pytest.approx(want, rel=1e-6)


def test_reward_scale_flag_sets_one_row(capsys):
    """--reward-scale TERM=S replaces that term's scale in place (the summing order stays the config's),
    and the task multiplies the new scale by dt like every other; bad items are refused in one line."""
    import train
    from mjx_env.rewards import active_scales
    cfg = train.task_config(train.parse_args(["--reward-scale", "tracking_lin_vel=2",
                                              "--reward-scale", "tracking_ang_vel=0.5"]))
    want = dict(TaskConfig().reward.scales, tracking_lin_vel=2.0, tracking_ang_vel=0.5)
    assert cfg.reward.scales == tuple(want.items())
    assert [k for k, _ in cfg.reward.scales] == [k for k, _ in TaskConfig().reward.scales]
    assert active_scales(cfg)["tracking_lin_vel"] == pytest.approx(2.0 * cfg.env.dt)
    assert active_scales(cfg)["lin_vel_z"] == active_scales(TaskConfig())["lin_vel_z"]
    for bad, words in ((["--reward-scale", "speed=1"], "unknown walking reward term 'speed'"),
                       (["--reward-scale", "jump_speed=1"], "unknown walking reward term 'jump_speed'"),
                       (["--reward-scale", "tracking_lin_vel"], "TERM=S with a finite number"),
                       (["--reward-scale", "tracking_lin_vel=nan"], "TERM=S with a finite number")):
        assert train.main(bad + ["--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_dr_range_flag_sets_one_range(capsys):
    """--dr-range FIELD=LO,HI replaces that RandomizationConfig range and nothing else; it needs
    --randomize, and an unknown field, a malformed value or an insane range is refused in one line."""
    import train
    from mjx_env.config import RandomizationConfig
    cfg = train.task_config(train.parse_args(["--randomize", "--dr-range", "kp_scale_range=0.75,1.25",
                                              "--dr-range", "joint_frictionloss_range=0,0.5"]))
    want = dataclasses.replace(RandomizationConfig(), enabled=True, push=True, kp_scale_range=(0.75, 1.25),
                               joint_frictionloss_range=(0.0, 0.5))
    assert cfg.randomization == want
    for bad, words in ((["--dr-range", "kp_scale_range=0.8,1.2"], "add --randomize"),
                       (["--randomize", "--dr-range", "kp_range=0.8,1.2"], "unknown randomization range 'kp_range'"),
                       (["--randomize", "--dr-range", "kp_scale_range=0.8"], "FIELD=LO,HI (two numbers)"),
                       (["--randomize", "--dr-range", "kp_scale_range=1.2,0.8"], "low <= high"),
                       (["--randomize", "--dr-range", "friction_range=-1,1"], "must not go below 0")):
        assert train.main(bad + ["--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_command_range_and_yaw_width_flags(capsys):
    """--command-range FIELD=LO,HI replaces one CommandConfig range and nothing else; --tracking-sigma-yaw
    gives the yaw term its own width and leaves the linear one. Bad values are refused in one line."""
    import train
    from mjx_env.config import CommandConfig, RewardConfig
    cfg = train.task_config(train.parse_args(["--command-range", "lin_vel_x_range=-1.5,1.5",
                                              "--tracking-sigma", "0.05", "--tracking-sigma-yaw", "0.1"]))
    assert cfg.command == dataclasses.replace(CommandConfig(), lin_vel_x_range=(-1.5, 1.5))
    assert cfg.reward == dataclasses.replace(RewardConfig(), tracking_sigma=0.05, tracking_sigma_yaw=0.1)
    assert (cfg.reward.tracking_sigma, cfg.reward.yaw_sigma) == (0.05, 0.1)
    # without the flag the yaw term keeps the shared width, as the seed's one width
    assert train.task_config(train.parse_args(["--tracking-sigma", "0.05"])).reward.yaw_sigma == 0.05
    for bad, words in ((["--command-range", "vx_range=-1,1"], "unknown command range 'vx_range'"),
                       (["--command-range", "lin_vel_x_range=1"], "FIELD=LO,HI (two numbers)"),
                       (["--command-range", "ang_vel_range=0.6,-0.6"], "low <= high"),
                       (["--tracking-sigma-yaw", "0"], "--tracking-sigma-yaw must be > 0")):
        assert train.main(bad + ["--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_command_range_note_gives_the_spans_at_the_nominal_height():
    """The height command scales the drawn velocity commands by 0.5 + 0.5 |h - 0.3| / 0.1: x0.5 at the
    nominal 0.3 m. train.py's note says where --command-range's ranges end up there: (-1.25, 1.25)
    reaches only +-0.625 m/s (the lever runs whose policies fell at the protocols' 0.7-1.0 m/s), and
    the sampler's draws near 0.3 m stay inside the note's spans."""
    import train
    from mjx_env.model import load_go2
    from mjx_env.task import Go2Task
    c = CommandConfig()
    assert c.velocity_scale(0.3) == 0.5
    assert c.velocity_scale(0.4) == pytest.approx(1.0) and c.velocity_scale(0.2) == pytest.approx(1.0)
    assert c.velocity_scale(0.35) == pytest.approx(0.75)
    args = train.parse_args(["--command-range", "lin_vel_x_range=-1.25,1.25"])
    cfg = train.task_config(args)
    assert train.command_notes(args, cfg) == [
        "[train] note: the height command scales the velocity commands by 0.5 at the nominal height 0.3 m; "
        "there they span lin_vel_x -0.625..0.625, lin_vel_y -0.25..0.25, ang_vel -0.3..0.3"]
    task = Go2Task(load_go2(None, cfg.env), cfg)
    cmds = np.asarray(jax.vmap(task.sample_commands)(jax.random.split(jax.random.PRNGKey(2), 20000)))
    near = np.abs(cmds[:, 3] - 0.3) < 0.002                      # scale within 0.01 of 0.5
    assert near.sum() > 100 and np.abs(cmds[near, 0]).max() <= 0.625 * 1.02
    assert np.abs(cmds[near, 0]).max() > 0.55                     # and they reach it
    # no note without the flag (the defaults are the reference's), nor with the scaling off
    plain = train.parse_args([])
    assert train.command_notes(plain, train.task_config(plain)) == []
    off = cfg.replace(command=dataclasses.replace(cfg.command, height_scales_velocity=False))
    assert train.command_notes(args, off) == []
