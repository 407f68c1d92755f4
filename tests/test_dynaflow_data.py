"""The DynaFlow NPZ format: same data as the HDF5, one writer for collecting and converting, numpy-only loading."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import collect_trajectories
import dynaflow_data
from collect_trajectories import load_dataset
from mjx_env.config import JOINT_NAMES, EnvConfig

from conftest import OWN_XML, REPO

# The shipped walking policy, 2 episodes x 1 s: equal lengths, the case where a careless
# np.array(list, dtype=object) would silently build a 3-D array instead of one array per episode.
ARGS = ["--episodes", "2", "--num_envs", "2", "--duration", "1", "--vx", "0.3", "0.8", "--seed", "4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("npz")
    for name in ("demos.h5", "demos.npz"):
        assert collect_trajectories.main([*ARGS, "--out", str(d / name)]) == 0
    assert collect_trajectories.main(["convert", str(d / "demos.h5"), "--out", str(d / "converted.npz")]) == 0
    return d


def test_npz_holds_the_hdf5_collection(files):
    ds = load_dataset(files / "demos.h5")
    z = np.load(files / "demos.npz", allow_pickle=True)
    E = len(ds)
    np.testing.assert_array_equal(z["episode_lengths"], ds.episodes["length"])
    np.testing.assert_array_equal(z["fell"], ds.episodes["fell"])
    for k in dynaflow_data.PER_EPISODE:
        assert z[k].dtype == object and z[k].shape == (E,), k
    for e in range(E):
        ep = ds.episode(e)
        T = len(ep["done"])
        states = z["states"][e]
        assert states.dtype == np.float32 and states.shape == (T, 37)
        # every window cut from `states` is the recorded qpos/qvel of those rows
        for t, H in ((0, 16), (7, 32), (T - 9, 8)):
            w = states[t:t + H + 1]
            np.testing.assert_array_equal(w[:, :19], ep["qpos"][t:t + H + 1])
            np.testing.assert_array_equal(w[:, 19:], ep["qvel"][t:t + H + 1])
        np.testing.assert_array_equal(z["actions"][e], ep["actions"])
        np.testing.assert_array_equal(z["last_actions"][e], ep["last_action"])
        np.testing.assert_array_equal(z["commands"][e], ep["commands"])
        # the latency buffer: the previous row's action, zero at the episode's start
        np.testing.assert_array_equal(z["last_actions"][e][1:], z["actions"][e][:-1])
        assert not z["last_actions"][e][0].any()

        c = z["conditionings"][e]
        assert c.dtype == np.float32 and c.shape == (T, 36)
        default = np.array(EnvConfig().default_angles(), np.float32)
        obs = ep["obs"]    # the policy observation: ang vel x0.25, gravity, commands, dof pos - default, ...
        np.testing.assert_allclose(c[:, 0:3], obs[:, 3:6], atol=1e-6)           # projected gravity
        np.testing.assert_array_equal(c[:, 3:6], ep["base_lin_vel"])
        np.testing.assert_array_equal(c[:, 6:9], ep["base_ang_vel"])
        np.testing.assert_allclose(c[:, 6:9] * 0.25, obs[:, 0:3], atol=1e-6)
        np.testing.assert_array_equal(c[:, 9:21], ep["joint_pos"])               # absolute angles
        np.testing.assert_allclose(c[:, 9:21] - default, obs[:, 11:23], atol=1e-6)
        np.testing.assert_array_equal(c[:, 21:33], ep["joint_vel"])
        np.testing.assert_array_equal(c[:, 33:36], ep["commands"][:, :3])
        # standing upright at the episode's start: gravity straight down in the base frame
        np.testing.assert_allclose(c[0, :3], [0, 0, -1], atol=1e-6)


def test_metadata_is_what_phi_needs(files):
    z = np.load(files / "demos.npz", allow_pickle=True)
    assert str(z["format"]) == "go2-dynaflow-npz" and int(z["format_version"]) == 1
    assert float(z["dt"]) == 0.02 and float(z["sim_dt"]) == 0.005 and int(z["substeps"]) == 4
    assert float(z["action_scale"]) == 0.3 and float(z["kp"]) == 20.0 and float(z["kd"]) == 0.5
    assert bool(z["simulate_action_latency"]) and float(z["clip_actions"]) == 100.0
    np.testing.assert_array_equal(z["torque_limits"], [23.7, 23.7, 45.43] * 4)
    np.testing.assert_array_equal(z["default_joint_pos"], np.float32([0, .8, -1.5, 0, .8, -1.5, 0, 1, -1.5, 0, 1, -1.5]))
    assert list(z["joint_names"]) == list(JOINT_NAMES)
    assert str(z["model_sha256"]) == hashlib.sha256(OWN_XML.read_bytes()).hexdigest()
    assert str(z["backend"]) == "mujoco" and str(z["conditioning_joint_pos"]) == "absolute"
    # the shipped policy's task, in the NPZ, the HDF5 and its conversion alike
    assert str(z["task"]) == "Go2-Velocity-Walker"
    assert str(np.load(files / "converted.npz")["task"]) == "Go2-Velocity-Walker"
    names = list(z["state_names"])
    assert len(names) == 37 and names[2] == "qpos.root_z" and names[3] == "qpos.root_qw"
    assert names[7:19] == [f"qpos.{j}" for j in JOINT_NAMES] and names[25:] == [f"qvel.{j}" for j in JOINT_NAMES]
    assert list(z["conditioning_names"])[9] == "FR_hip_joint.pos" and len(z["conditioning_names"]) == 36
    assert json.loads(str(z["configs"]))["env"]["episode_length_s"] == 1.0
    # the EnvConfig to build Φ with is the one the data was collected with
    assert dynaflow_data.env_config(z) == EnvConfig(episode_length_s=1.0)


def test_conversion_equals_collecting_into_npz(files):
    """convert(h5) and --out *.npz share one writer: the same collection gives the same file content."""
    a = np.load(files / "demos.npz", allow_pickle=True)
    b = np.load(files / "converted.npz", allow_pickle=True)
    assert a.files == b.files
    for k in a.files:
        if a[k].dtype == object:
            assert len(a[k]) == len(b[k])
            for x, y in zip(a[k], b[k]):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        else:
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k])


LOADER = """
import json, sys
import numpy as np
before = set(sys.modules)
path = sys.argv[1]
with np.load(path, allow_pickle=True) as z:
    data = {k: z[k] for k in z.files}
per_file = []
with np.load(path) as z:                     # allow_pickle=False: every per-file key still loads
    for k in z.files:
        try:
            z[k]
            per_file.append(k)
        except ValueError:
            pass
new = sorted({m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))
print(json.dumps(dict(new=new, per_file=per_file, shape=list(data["states"][0].shape),
                      lengths=data["episode_lengths"].tolist())))
"""


def test_loads_with_nothing_but_numpy(files):
    r = subprocess.run([sys.executable, "-c", LOADER, str(files / "demos.npz")], capture_output=True, text=True,
                       timeout=120, cwd=files)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["new"] == [] or out["new"] == ["numpy"], out["new"]     # nothing beyond numpy and the stdlib
    assert out["shape"] == [50, 37] and out["lengths"] == [50, 50]
    z = np.load(files / "demos.npz", allow_pickle=True)
    assert set(out["per_file"]) == set(z.files) - set(dynaflow_data.PER_EPISODE)


def test_convert_errors_are_one_line(files, tmp_path):
    npz = files / "demos.npz"
    for argv, msg in (([str(npz), "--out", str(tmp_path / "x.npz")], f"{npz} is not an HDF5 file"),
                      ([str(files / "demos.h5"), "--out", str(tmp_path / "x.h5")], "--out must end in .npz"),
                      ([str(tmp_path / "none.h5"), "--out", str(tmp_path / "x.npz")], "dataset not found")):
        r = subprocess.run([sys.executable, str(REPO / "collect_trajectories.py"), "convert", *argv],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
        assert lines[0].startswith("collect_trajectories.py convert: error: ")
    assert not (tmp_path / "x.npz").exists()


# ---- Φ replays the NPZ files ------------------------------------------------------------------
# Two H = 32 windows per 50-step episode, one batch of the 2 episodes per start: the drop and the
# touch-down, then walking. Φ's programs are compiled per (B, H); test_dynamics.py's are (2, 32) too, and
# the suite's persistent cache makes them one compile.
H = 32
STARTS = (0, 17)


@pytest.fixture(scope="module")
def mjx_npz(tmp_path_factory):
    out = tmp_path_factory.mktemp("npz_mjx") / "demos.npz"
    assert collect_trajectories.main([*ARGS, "--backend", "mjx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def phi():
    from mjx_env.config import TaskConfig
    from mjx_env.dynamics import Go2Dynamics
    return Go2Dynamics(cfg=TaskConfig(env=EnvConfig(episode_length_s=1.0)))


def windows(z):
    """A loaded file's windows, one batch (its episodes) per start: (x0, u_prev, U, applied U, recorded X)."""
    for t in STARTS:
        X = np.stack([ep[t:t + H + 1] for ep in z["states"]])
        yield (X[:, 0], np.stack([ep[t] for ep in z["last_actions"]]),
               np.stack([ep[t:t + H] for ep in z["actions"]]),
               np.stack([ep[t:t + H] for ep in z["applied_actions"]]), X)


def replay(phi, path):
    """Abs error of Φ against the states recorded in the file, max over windows and steps: (37,)."""
    z = np.load(path, allow_pickle=True)
    assert dynaflow_data.env_config(z) == phi.cfg.env
    err = []
    for x0, u_prev, U, _, X in windows(z):
        got = np.asarray(phi.rollout(x0, u_prev, U))
        assert got.shape == (len(z["states"]), H + 1, 37)
        assert np.array_equal(got[:, 0], X[:, 0])
        err.append(np.abs(got - X).max(axis=(0, 1)))
    return np.max(err, axis=0)


@pytest.mark.slow
def test_phi_reproduces_an_mjx_collection(phi, mjx_npz):
    """Measured: exactly 0 on these windows (the collection's MJX env and Φ at the same batch, 2)."""
    err = replay(phi, mjx_npz)
    assert err.max() <= 1e-4, err


def test_phi_reproduces_a_mujoco_collection(phi, files):
    """The mujoco backend runs C MuJoCo in float64 and rounds the state to float32 each control step;
    Φ runs MJX in float32. Measured on these four H = 32 windows: qpos within 1.6e-5, qvel within
    9.1e-4 (at the step where the feet first touch down; up to 7.2e-4 in the steps after it, 1.2e-5
    before it). Asserted with a 5x margin."""
    err = replay(phi, files / "demos.npz")
    assert err[:19].max() <= 1e-4 and err[19:].max() <= 5e-3, (err[:19].max(), err[19:].max())


def test_randomization_draws_reach_the_npz():
    """--randomize stores each episode's physics draws; the NPZ keeps them (Φ's nominal model cannot
    replay such episodes, and the file says why). Built by hand: 2 episodes of 3 and 2 steps."""
    T, env = 5, dict(EnvConfig().__dict__)
    steps = dict(qpos=np.zeros((T, 19), np.float32), qvel=np.zeros((T, 18), np.float32),
                 base_quat=np.tile(np.float32([1, 0, 0, 0]), (T, 1)), base_lin_vel=np.zeros((T, 3), np.float32),
                 base_ang_vel=np.zeros((T, 3), np.float32), joint_pos=np.zeros((T, 12), np.float32),
                 joint_vel=np.zeros((T, 12), np.float32), actions=np.zeros((T, 12), np.float32),
                 last_action=np.zeros((T, 12), np.float32), commands=np.zeros((T, 5), np.float32))
    episodes = dict(start=np.array([0, 3]), length=np.array([3, 2]), fell=np.array([False, True]),
                    dr_friction=np.float32([0.6, 1.2]))
    meta = dict(configs=dict(env=env), joint_names=list(JOINT_NAMES), dt=0.02, sim_dt=0.005, model_path="m.xml",
                model_sha256="0" * 64)
    z = dynaflow_data.npz_arrays(steps, episodes, meta)
    np.testing.assert_array_equal(z["dr_friction"], np.float32([0.6, 1.2]))
    assert [len(s) for s in z["states"]] == [3, 2] and z["episode_lengths"].tolist() == [3, 2]
    assert "dr_friction" not in dynaflow_data.PER_EPISODE and "start" not in z


# ---- the applied actions: DynaFlow's U, their alias and their range ------------------------------------
def test_applied_action_statistics_by_hand(files):
    z = np.load(files / "demos.npz", allow_pickle=True)
    assert int(z["format_version"]) == 1                     # additive keys: v1 readers are unaffected
    for e in range(len(z["states"])):                         # the alias is the latency buffer, row for row
        np.testing.assert_array_equal(z["applied_actions"][e], z["last_actions"][e])
    rows = [r for ep in z["last_actions"] for r in ep.tolist()]   # every row of every episode, in Python
    assert len(rows) == 100
    for j in range(12):
        col = [r[j] for r in rows]
        mean = sum(col) / len(col)
        std = (sum((c - mean) ** 2 for c in col) / len(col)) ** 0.5
        assert z["applied_action_min"][j] == min(col) and z["applied_action_max"][j] == max(col)
        assert abs(z["applied_action_mean"][j] - mean) <= 1e-12 and abs(z["applied_action_std"][j] - std) <= 1e-12
    assert z["applied_action_min"].dtype == np.float64 and z["applied_action_std"].shape == (12,)
    # the walking policy's actions leave ±1 (the range a tanh output would need to be mapped onto)
    assert (z["applied_action_max"] - z["applied_action_min"]).max() > 1.0
    # a hand-made pair of episodes: joint 0 holds 1, 3 | -2 (the zero start row is an action too)
    a = dynaflow_data.applied_action_stats([np.float32([[1] * 12, [3] * 12]), np.float32([[-2] * 12])])
    assert a["applied_action_min"][0] == -2 and a["applied_action_max"][5] == 3
    np.testing.assert_allclose(a["applied_action_mean"], 2 / 3, rtol=1e-15)
    np.testing.assert_allclose(a["applied_action_std"], (((1 / 3) ** 2 + (7 / 3) ** 2 + (8 / 3) ** 2) / 3) ** 0.5,
                               rtol=1e-15)


def replay_phi(phi, path):
    """Φ in DynaFlow's form on the file's windows: x0 = states[t], U = applied_actions[t:t+H].
    Returns the abs error against the recorded states (max over windows and steps, (37,)) after checking
    that it is the env-form rollout's result, bit for bit."""
    err = []
    for x0, u_prev, acts, U, X in windows(np.load(path, allow_pickle=True)):
        got = np.asarray(phi.phi(x0, U))
        np.testing.assert_array_equal(got, phi.rollout(x0, u_prev, acts))
        err.append(np.abs(got - X).max(axis=(0, 1)))
    return np.max(err, axis=0)


@pytest.mark.slow
def test_phi_reproduces_the_collections_from_their_applied_actions(phi, mjx_npz, files):
    err = replay_phi(phi, mjx_npz)
    assert err.max() <= 1e-4, err
    err = replay_phi(phi, files / "demos.npz")
    assert err[:19].max() <= 1e-4 and err[19:].max() <= 5e-3, (err[:19].max(), err[19:].max())
