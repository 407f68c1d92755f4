"""play.py and collect_trajectories.py on small runs; the dataset round trip and replay."""
import hashlib
import json
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from collect_trajectories import STEP_FIELDS, load_dataset
from mjx_env.config import CommandConfig, EnvConfig, TaskConfig
from mjx_env.env import Go2Env

from conftest import OWN_XML, REPO


def actor_file(path, scale: float, seed: int = 0):
    """An actor checkpoint with the trained network's shapes: random (scale > 0) or all-zero output."""
    g = torch.Generator().manual_seed(seed)
    dims = [48, 512, 256, 128, 12]
    sd = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        sd[f"mlp.{2 * i}.weight"] = torch.randn(b, a, generator=g) * scale / a ** 0.5
        sd[f"mlp.{2 * i}.bias"] = torch.zeros(b)
    torch.save({"actor_state_dict": sd}, path)
    return path


def run(script, *args, timeout=600):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_play_metrics_of_a_standing_policy(tmp_path):
    """A policy whose actions are all zero stands still: its forward error is the command itself."""
    ckpt = actor_file(tmp_path / "zero.pt", scale=0.0)
    out = tmp_path / "m.json"
    r = run("play.py", "--checkpoint", ckpt, "--num_envs", 4, "--episodes", 2, "--duration", 2, "--vx", 0.5,
            "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(out.read_text())
    assert m["episodes"] == 8 and m["fall_rate"] == 0.0
    assert m["mean_episode_length_s"] == pytest.approx(2.0)
    assert m["mean_abs_vx_error"] == pytest.approx(0.5, abs=0.03)
    assert m["mean_abs_vy_error"] < 0.03 and m["mean_abs_yaw_rate_error"] < 0.05
    assert 0.02 < m["mean_abs_height_error"] < 0.08     # drops from 0.42 m, settles near 0.27 m


def test_estimator_scores_are_mean_absolute_and_mean_signed_errors():
    """play.py's estimator figures, computed by hand: two envs, two steps. The signed error (estimate -
    true) says whether a speed bias is the estimate's; errors of both signs cancel in it, not in the
    absolute one."""
    from types import SimpleNamespace

    from mjx_env.config import ObsConfig
    from tools.rollout import PolicyLoop
    o = ObsConfig()
    loop = SimpleNamespace(env=SimpleNamespace(cfg=SimpleNamespace(obs=o)), n=2, estimator_steps=0,
                           estimator_error=np.zeros(3), estimator_signed=np.zeros(3))
    true = np.array([[1.0, 0.0, 0.0], [-0.5, 0.2, 0.0]])
    critic = np.zeros((2, o.num_obs + 3))
    critic[:, o.num_obs:] = true * o.lin_vel_scale
    for dx in (0.1, -0.1):         # the estimate x too fast, then too slow; y 0.1 low in env 1
        est = true + np.array([[dx, 0.0, 0.0], [dx, -0.1, 0.0]])
        PolicyLoop._score_estimate(loop, SimpleNamespace(critic_obs=critic), torch.tensor(est * o.lin_vel_scale))
    s = PolicyLoop.estimator_summary(loop)
    assert s["estimator_abs_error_m_s"] == pytest.approx({"x": 0.1, "y": 0.05, "z": 0.0})
    assert s["estimator_bias_m_s"] == pytest.approx({"x": 0.0, "y": -0.05, "z": 0.0})


def test_commands_outside_the_trained_ranges_get_a_note_each():
    from argparse import Namespace

    from tools.cli import untrained_commands
    inside = Namespace(vx=[-1.0, 2.0], vy=[0.0], yaw=[0.6], height=[0.3], jump=1.5)     # the ranges' ends
    assert untrained_commands(inside) == []
    assert untrained_commands(Namespace(vx=[0.5], vy=[0.0], yaw=[0.0], height=[0.3], jump=None)) == []
    notes = untrained_commands(Namespace(vx=[0.5, 2.5, 3.0], vy=[0.0], yaw=[-0.7, 0.0], height=[0.3], jump=5.0))
    assert notes == [
        "note: --vx 2.5 3 lies outside the -1 to 2 m/s the policies are trained on "
        "(CommandConfig.lin_vel_x_range): expect poorer tracking there",
        "note: --yaw -0.7 lies outside the -0.6 to 0.6 rad/s the policies are trained on "
        "(CommandConfig.ang_vel_range): expect poorer tracking there",
        "note: --jump 5 lies outside the 0.5 to 1.5 m the policies are trained on "
        "(CommandConfig.jump_range): expect poorer tracking there"]


def test_play_bad_checkpoint(tmp_path):
    r = run("play.py", "--checkpoint", tmp_path / "none.pt", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"play.py: error: policy checkpoint not found: {tmp_path / 'none.pt'}"]


@pytest.mark.parametrize("name, data", [("notes.txt", b"hello\n"), ("demos.npz", None)])
def test_a_file_that_is_no_checkpoint_is_named_with_what_to_give(tmp_path, name, data):
    from bridge.policy import load_actor
    from mjx_env.errors import UserError
    path = tmp_path / name
    if data is None:
        np.savez(path, states=np.zeros(3))     # a dataset passed by mistake: a zip, but not torch's
    else:
        path.write_bytes(data)
    with pytest.raises(UserError) as e:
        load_actor(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot read policy checkpoint {path}: not a file torch.save wrote (")
    assert msg.endswith("give a logs/NAME/model_K.pt of train.py or an actor exported by python -m bridge.policy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("demos")
    ckpt = actor_file(d / "random.pt", scale=1.0)
    out = d / "demos.h5"
    r = run("collect_trajectories.py", "--checkpoint", ckpt, "--out", out, "--episodes", 6, "--num_envs", 3,
            "--duration", 0.6, "--grid", "--vx", 0.2, 0.8, "--yaw", 0.0, 0.4, "--seed", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, ckpt


def test_loader_returns_what_is_in_the_file(dataset):
    path, ckpt = dataset
    ds = load_dataset(path)
    with h5py.File(path) as f:
        for k in STEP_FIELDS:
            np.testing.assert_array_equal(ds.steps[k], f["steps"][k][()])
        for k in f["episodes"]:
            np.testing.assert_array_equal(ds.episodes[k], f["episodes"][k][()])
    assert ds.meta["model_sha256"] == hashlib.sha256(OWN_XML.read_bytes()).hexdigest()
    assert ds.meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert ds.meta["dt"] == 0.02 and ds.meta["configs"]["env"]["action_scale"] == 0.3
    assert ds.meta["joint_names"][0] == "FR_hip_joint" and len(ds) == 6


def test_shapes_dtypes_and_documented_meaning(dataset):
    ds = load_dataset(dataset[0])
    s, T = ds.steps, len(ds.steps["done"])
    shapes = dict(qpos=(T, 19), qvel=(T, 18), base_pos=(T, 3), base_quat=(T, 4), base_lin_vel=(T, 3),
                  base_ang_vel=(T, 3), joint_pos=(T, 12), joint_vel=(T, 12), last_action=(T, 12), actions=(T, 12),
                  pd_targets=(T, 12), commands=(T, 5), obs=(T, 48), rewards=(T,), foot_contacts=(T, 4),
                  foot_pos=(T, 4, 3), done=(T,), time_out=(T,), terminated=(T,))
    for k, shape in shapes.items():
        assert s[k].shape == shape, k
        assert s[k].dtype == (bool if k in ("foot_contacts", "done", "time_out", "terminated") else np.float32), k
    default = np.array(EnvConfig().default_angles(), np.float32)
    np.testing.assert_allclose(s["pd_targets"], default + 0.3 * s["last_action"], atol=1e-6)
    np.testing.assert_allclose(s["obs"][:, 11:23], s["joint_pos"] - default, atol=1e-5)
    np.testing.assert_allclose(s["obs"][:, 35:47], s["last_action"], atol=1e-6)
    # grid commands (vx x yaw), cycled, held during each episode
    grid = {(0.2, 0.0), (0.2, 0.4), (0.8, 0.0), (0.8, 0.4)}
    got = {(round(float(c[0]), 3), round(float(c[2]), 3)) for c in ds.episodes["command"]}
    assert got == grid
    for i in range(len(ds)):
        ep = ds.episode(i)
        np.testing.assert_array_equal(ep["commands"], np.tile(ds.episodes["command"][i], (len(ep["done"]), 1)))
    # a robot standing at its initial pose is in the air: the first step of each episode has no contact
    assert not s["foot_contacts"][ds.episodes["start"]].any()
    assert s["foot_contacts"].any()                       # and later the feet touch down


def test_episode_boundaries_match_done_flags(dataset):
    ds = load_dataset(dataset[0])
    e, done = ds.episodes, ds.steps["done"]
    assert e["start"][0] == 0 and np.all(e["start"][1:] == e["start"][:-1] + e["length"][:-1])
    assert e["start"][-1] + e["length"][-1] == len(done)
    assert done.sum() == len(ds)
    np.testing.assert_array_equal(np.flatnonzero(done), e["start"] + e["length"] - 1)
    np.testing.assert_array_equal(e["fell"], ds.steps["terminated"][e["start"] + e["length"] - 1])
    assert np.all(ds.steps["time_out"] | ds.steps["terminated"] == done)
    # time-outs last exactly 0.6 s; falls are shorter
    assert np.all(e["length"][~e["fell"]] == 30) and np.all(e["length"][e["fell"]] <= 30)
    # each episode starts from the initial pose at rest with no previous action
    np.testing.assert_allclose(ds.steps["base_pos"][e["start"]], np.tile([0, 0, 0.42], (len(ds), 1)), atol=1e-6)
    assert np.all(ds.steps["qvel"][e["start"]] == 0) and np.all(ds.steps["last_action"][e["start"]] == 0)


def test_replaying_recorded_actions_reproduces_the_next_states(dataset):
    ds = load_dataset(dataset[0])
    cfg = TaskConfig(env=EnvConfig(episode_length_s=0.6), command=CommandConfig(random_resample_prob=0.0))
    ep = ds.episode(int(np.argmax(ds.episodes["length"])))
    T = len(ep["done"]) - 1
    env = Go2Env(T, "mujoco", cfg)
    s = env.reset(jax.random.PRNGKey(0))
    s = s.replace(qpos=jnp.asarray(ep["qpos"][:T]), qvel=jnp.asarray(ep["qvel"][:T]),
                  last_action=jnp.asarray(ep["last_action"][:T]), commands=jnp.asarray(ep["commands"][:T]),
                  episode_step=jnp.arange(T, dtype=jnp.int32))
    nxt = env.step(s, jnp.asarray(ep["actions"][:T]))
    np.testing.assert_array_equal(np.asarray(nxt.qpos), ep["qpos"][1:])
    np.testing.assert_array_equal(np.asarray(nxt.qvel), ep["qvel"][1:])
    np.testing.assert_allclose(np.asarray(nxt.reward), ep["rewards"][:T], rtol=1e-6, atol=1e-9)
    env.close()


def tipping_actor(path, gain=3.0):
    """Stands for a zero forward command, throws every hip sideways (and falls) for a large one.

    The forward command enters the observation at index 6 (x 2); ELU is the identity for x > 0."""
    dims = [48, 512, 256, 128, 12]
    sd = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        sd[f"mlp.{2 * i}.weight"] = torch.zeros(b, a)
        sd[f"mlp.{2 * i}.bias"] = torch.zeros(b)
    sd["mlp.0.weight"][0, 6] = 1.0
    sd["mlp.2.weight"][0, 0] = 1.0
    sd["mlp.4.weight"][0, 0] = 1.0
    sd["mlp.6.weight"][[0, 3, 6, 9], 0] = gain
    torch.save({"actor_state_dict": sd}, path)
    return path


@pytest.mark.parametrize("drop", [False, True])
def test_drop_falls(tmp_path, drop):
    ckpt = tipping_actor(tmp_path / "tipping.pt")
    out = tmp_path / "demos.h5"
    r = run("collect_trajectories.py", "--checkpoint", ckpt, "--out", out, "--episodes", 4, "--num_envs", 2,
            "--duration", 1.0, "--grid", "--vx", 0.0, 2.0, *(["--drop-falls"] if drop else []))
    assert r.returncode == 0, r.stderr[-2000:]
    ds = load_dataset(out)
    assert len(ds) == 4
    vx = ds.episodes["command"][:, 0]
    if drop:
        assert not ds.episodes["fell"].any() and not ds.steps["terminated"].any()
        assert np.all(vx == 0.0)
    else:
        np.testing.assert_array_equal(ds.episodes["fell"], vx == 2.0)      # kept, and flagged
