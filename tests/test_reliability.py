"""One bad env never spoils the batch; no run is lost to a crash or Ctrl-C; bad input is caught early."""
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridge.runner import Go2Runner, atomic_write, ppo_train_cfg
from bridge.vec_env import Go2VecEnv
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.env import Go2Env
from mjx_env.errors import ConfigError

from conftest import REPO

CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
N = 8


@pytest.fixture(scope="module", params=["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def env(request):
    e = Go2Env(N, request.param, CFG)
    yield e
    e.close()


def _standing(env):
    s = env.reset(jax.random.PRNGKey(0))
    for _ in range(5):
        s = env.step(s, jnp.zeros((N, 12)))
    return s


def _assert_others_untouched(clean, bad, victim):
    others = [i for i in range(N) if i != victim]
    for field in ("qpos", "qvel", "obs", "critic_obs", "reward", "last_action", "episode_step"):
        np.testing.assert_array_equal(np.asarray(getattr(bad, field))[others],
                                      np.asarray(getattr(clean, field))[others], err_msg=field)


def _assert_reset(env, s, victim):
    np.testing.assert_array_equal(np.asarray(s.qpos[victim]), np.asarray(env.task.init_qpos))
    assert int(s.episode_step[victim]) == 0 and bool(s.terminated[victim]) and not bool(s.time_out[victim])
    assert np.isfinite(np.asarray(s.obs)).all() and np.isfinite(np.asarray(s.reward)).all()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_action_resets_only_that_env(env, bad_value):
    s = _standing(env)
    actions = np.random.default_rng(0).normal(0, 0.3, (N, 12)).astype(np.float32)
    clean = env.step(s, jnp.asarray(actions))
    actions[3, 4] = bad_value
    bad = env.step(s, jnp.asarray(actions))
    assert list(np.flatnonzero(np.asarray(bad.bad_action))) == [3]
    _assert_reset(env, bad, 3)
    _assert_others_untouched(clean, bad, 3)


@pytest.mark.parametrize("corrupt", ["nan_qvel", "huge_qvel", "nan_quat"])
def test_diverged_physics_resets_only_that_env(env, corrupt):
    s = _standing(env)
    actions = jnp.zeros((N, 12))
    clean = env.step(s, actions)
    qpos, qvel = np.array(s.qpos), np.array(s.qvel)
    if corrupt == "nan_qvel":
        qvel[5, 7] = np.nan
    elif corrupt == "huge_qvel":
        qvel[5, 0] = 1e6
    else:
        qpos[5, 3:7] = np.nan
    bad = env.step(s.replace(qpos=jnp.asarray(qpos), qvel=jnp.asarray(qvel)), actions)
    assert list(np.flatnonzero(np.asarray(bad.diverged))) == [5]
    _assert_reset(env, bad, 5)
    _assert_others_untouched(clean, bad, 5)


def test_bad_envs_are_counted_for_tensorboard():
    vec = Go2VecEnv(Go2Env(4, "mujoco", CFG), seed=0, log_every=2)
    a = torch.zeros(4, 12)
    a[1, 0] = float("nan")
    _, rew, dones, _ = vec.step(a)
    assert torch.isfinite(rew).all() and bool(dones[1])
    qvel = np.array(vec.state.qvel)
    qvel[2, 0] = np.inf
    vec.state = vec.state.replace(qvel=jnp.asarray(qvel))
    _, _, _, extras = vec.step(torch.zeros(4, 12))
    assert extras["episode"]["bad_actions"].item() == 1 and extras["episode"]["diverged_envs"].item() == 1
    vec.close()


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model_100.pt"
    target.write_bytes(b"the good checkpoint")

    def dies_halfway(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a chec")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(target, dies_halfway)
    assert target.read_bytes() == b"the good checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_100.pt"]     # no temp file left


def test_runner_save_is_atomic(tmp_path, monkeypatch):
    vec = Go2VecEnv(Go2Env(4, "mujoco", CFG), seed=0)
    runner = Go2Runner(vec, ppo_train_cfg(), log_dir=None, device="cpu")
    path = tmp_path / "model_0.pt"
    runner.save(str(path))
    good = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        raise KeyboardInterrupt          # e.g. Ctrl-C right after the bytes hit the temp file
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.save(str(path))
    assert path.read_bytes() == good and len(list(tmp_path.iterdir())) == 1
    vec.close()


def _train(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), "--device", "cpu", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_saves_and_resume_continues(tmp_path, sig):
    import threading
    p = _train("-B", "16", "--max_iterations", "1000", "-e", "sig", "--log_root", str(tmp_path))
    # A thread reads the output, so that the deadline holds even when train.py prints nothing (a hang).
    lines, third_iteration = [], threading.Event()

    def read():
        for line in p.stdout:
            lines.append(line)
            if "Learning iteration 2/" in line:
                third_iteration.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not third_iteration.wait(300):
            p.kill()
            reader.join(30)
            pytest.fail("train.py did not reach its third iteration in 300 s:\n" + "".join(lines)[-3000:])
        p.send_signal(sig)
        p.wait(300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(30)
    out = "".join(lines)
    assert p.returncode == 0, out[-3000:]
    assert f"stopped by {sig.name}" in out and "Traceback" not in out
    saved = sorted(int(f.stem.split("_")[1]) for f in (tmp_path / "sig").glob("model_*.pt"))
    last = saved[-1]
    assert last >= 2 and f"saved {tmp_path / 'sig' / f'model_{last}.pt'}" in out
    if sig != signal.SIGINT:
        return                     # the saved checkpoint resumes the same way: shown once, for SIGINT
    r = _train("-B", "16", "--max_iterations", "1", "-e", "sig", "--log_root", str(tmp_path),
               "--resume", str(tmp_path / "sig" / f"model_{last}.pt"))
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out[-3000:]
    assert (tmp_path / "sig" / f"model_{last + 1}.pt").is_file()


def _preflight(tmp_path, *args):
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--device", "cpu", "-B", "4",
                        "--max_iterations", "1", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_preflight_log_dir_not_writable(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    msg = _preflight(tmp_path, "--log_root", str(blocker))
    assert msg.startswith("train.py: error: log directory") and "is not writable" in msg


def test_preflight_model_without_a_joint(tmp_path):
    xml = (REPO / "Unitree_go2" / "go2_mjx_gym.xml").read_text()
    xml = xml.replace('<joint name="RR_thigh_joint" class="rear_thigh"/>', "")
    xml = xml.replace('<position class="hip_motor" name="RR_thigh" joint="RR_thigh_joint"/>', "")
    path = tmp_path / "three_legged.xml"
    path.write_text(xml)
    msg = _preflight(tmp_path, "--xml-path", str(path), "--log_root", str(tmp_path))
    assert "lacks the Go2 joint(s) RR_thigh_joint" in msg


def test_preflight_resume_size_mismatch(tmp_path):
    ckpt = tmp_path / "wide.pt"
    torch.save({"actor_state_dict": {"mlp.0.weight": torch.zeros(512, 48), "mlp.6.weight": torch.zeros(16, 128)},
                "critic_state_dict": {"mlp.0.weight": torch.zeros(512, 52)}, "iter": 3}, ckpt)
    msg = _preflight(tmp_path, "--resume", str(ckpt), "--log_root", str(tmp_path))
    assert "outputs 16 actions, this environment needs 12" in msg


@pytest.mark.parametrize("section,field,value,needle", [
    ("command", "lin_vel_x_range", (2.0, -1.0), "command.lin_vel_x_range must be a finite (low, high)"),
    ("reward", "scales", (("base_height", float("nan")),), "reward scale base_height must be finite"),
    ("env", "sim_dt", 0.003, "must divide the control period"),
    ("env", "action_scale", float("inf"), "env.action_scale must be a positive finite number"),
])
def test_config_sanity(section, field, value, needle):
    import dataclasses
    cfg = TaskConfig()
    cfg = cfg.replace(**{section: dataclasses.replace(getattr(cfg, section), **{field: value})})
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert needle in str(e.value)
    with pytest.raises(ConfigError):
        Go2Env(2, "mujoco", cfg)


def test_same_seed_same_first_iteration(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    results = []
    for run in ("a", "b"):
        p = _train("-B", "32", "--max_iterations", "1", "-e", run, "--seed", "7", "--backend", "mujoco",
                   "--log_root", str(tmp_path))
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:]
        ckpt = torch.load(tmp_path / run / "model_0.pt", weights_only=False)
        events = next((tmp_path / run).glob("events.out.tfevents.*"))
        acc = EventAccumulator(str(events))
        acc.Reload()
        scalars = {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]
                   if t.startswith(("Episode/", "Train/mean_reward", "Loss/"))}
        results.append((ckpt["actor_state_dict"], scalars))
    (w1, s1), (w2, s2) = results
    assert s1 == s2 and any(k.startswith("Episode/rew_") for k in s1)
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
