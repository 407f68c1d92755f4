"""GPU readiness (issue 15). What can run on the CPU runs here in the normal suite: host syncs in
the rollout, no host transfer on the MJX path, the logger's device-side buffers, play/collect's
actor placement. The `gpu`-marked tests need a CUDA device seen by torch and JAX: `pytest -m gpu`."""
import collections
import copy
import json
import statistics
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from rsl_rl.utils.logger import Logger
from torch.utils._python_dispatch import TorchDispatchMode

from bridge.runner import DeviceLogger, Go2Runner, ppo_train_cfg
from bridge.vec_env import Go2VecEnv, to_jax, to_torch
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.env import Go2Env

from conftest import MJX_BATCH, REPO

CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal"}   # each blocks the host on a GPU


class CountSyncs(TorchDispatchMode):
    """Counts the torch ops that wait for the device and copy a value to the host, per phase."""

    def __init__(self):
        super().__init__()
        self.phase = "rollout"
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.counts[self.phase] += 1
        return func(*args, **(kwargs or {}))

    def during(self, phase, fn):
        def wrapped(*a, **kw):
            self.phase = phase
            try:
                return fn(*a, **kw)
            finally:
                self.phase = "rollout"
        return wrapped


def quick_ppo_cfg(num_steps_per_env):
    cfg = copy.deepcopy(ppo_train_cfg(num_steps_per_env=num_steps_per_env))
    cfg["algorithm"]["num_learning_epochs"] = 1        # the update is not what these tests look at
    return cfg


@pytest.fixture(scope="module")
def mjx_vec():
    v = Go2VecEnv(Go2Env(MJX_BATCH, "mjx", TaskConfig()), seed=0, log_every=24)   # conftest's shared MJX env
    yield v
    v.close()


def test_rollout_makes_at_most_half_a_host_sync_per_env_step(mjx_vec, tmp_path):
    """One iteration of a real runner.learn as train.py runs it (24 steps, a log dir), MJX backend.
    rsl_rl 5.5.1's defaults made 5 per env step (4 in check_nan, 1 nonzero in
    Logger.process_env_step). The PPO update's own .item() calls are out of scope; the logging
    after the iteration is counted."""
    runner = Go2Runner(mjx_vec, quick_ppo_cfg(24), log_dir=str(tmp_path), device="cpu")
    mode = CountSyncs()
    runner.alg.update = mode.during("update", runner.alg.update)
    runner.logger.log = mode.during("log", runner.logger.log)
    mjx_vec.episode_length_buf = torch.full((MJX_BATCH,), mjx_vec.max_episode_length - 5, dtype=torch.int32)
    with mode:
        runner.learn(1)                                   # every episode ends (time-out) at step 5
    assert mode.counts["rollout"] == 0, dict(mode.counts)                # none in the collection loop
    assert (mode.counts["rollout"] + mode.counts["log"]) / 24 <= 0.5, dict(mode.counts)
    assert mode.counts["update"] > 0                                     # the counter does see syncs
    assert runner.logger.rewbuffer and runner.logger.lenbuffer           # episodes still reach the log


def test_device_logger_keeps_rsl_rls_episode_buffers():
    """Same rewards and dones into rsl_rl's Logger and ours: the same last-100 returns and lengths."""
    n, cfg = 7, ppo_train_cfg()
    kw = dict(log_dir=None, cfg=cfg, env_cfg={}, num_envs=n, is_distributed=False, gpu_world_size=1,
              gpu_global_rank=0, device="cpu")
    ours, theirs = DeviceLogger(**kw), Logger(**kw)
    ours.writer = theirs.writer = object()              # as if logging to a directory
    g = torch.Generator().manual_seed(0)
    for step in range(60):
        rewards = torch.randn(n, generator=g)
        dones = torch.rand(n, generator=g) < 0.2
        extras = {"episode": {"x": torch.tensor(float(step))}} if step % 8 == 7 else {}
        ours.process_env_step(rewards, dones, extras)
        theirs.process_env_step(rewards, dones, extras)
        if step % 24 == 23:
            ours.hand_over()
    ours.hand_over()
    assert len(theirs.rewbuffer) > 20
    assert list(ours.rewbuffer) == list(theirs.rewbuffer)
    assert list(ours.lenbuffer) == list(theirs.lenbuffer)
    torch.testing.assert_close(ours.cur_reward_sum, theirs.cur_reward_sum)
    assert [e["x"] for e in ours.ep_extras] == [e["x"] for e in theirs.ep_extras]


def test_mjx_training_and_bridge_make_no_host_transfer(mjx_vec):
    """Every array stays on the env's device: JAX refuses any implicit host transfer here."""
    runner = Go2Runner(mjx_vec, quick_ppo_cfg(4), log_dir=None, device="cpu")
    runner.learn(1)
    with jax.transfer_guard("disallow"):
        runner.learn(1, init_at_random_ep_len=True)
        obs, rew, dones, extras = mjx_vec.step(torch.zeros(MJX_BATCH, 12))
    # the guard is live on this machine: a device-to-host read is refused
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match="[Dd]isallowed"):
        np.asarray(mjx_vec.state.reward + 1)


def spy_actor(monkeypatch):
    """Wrap load_actor: record where the actor is moved and where its inputs come from."""
    import bridge.policy
    real = bridge.policy.load_actor
    seen = SimpleNamespace(moved_to=[], inputs=set(), params=set())

    def load(*a, **kw):
        actor = real(*a, **kw)
        to, forward = actor.to, actor.forward

        def moved(device, *rest, **k):
            seen.moved_to.append(torch.device(device))
            return to(device, *rest, **k)

        def fwd(obs):
            seen.inputs.add(obs.device)
            seen.params.add(next(actor.parameters()).device)
            return forward(obs)
        actor.to, actor.forward = moved, fwd
        return actor
    monkeypatch.setattr(bridge.policy, "load_actor", load)
    return seen


@pytest.mark.parametrize("backend", ["mujoco"])   # mjx: test_play_and_collect_with_the_mjx_backend (gpu)
def test_play_and_collect_put_the_actor_where_the_env_is(monkeypatch, tmp_path, backend):
    import collect_trajectories
    import play
    seen = spy_actor(monkeypatch)
    play.evaluate(play.parse_args(["--backend", backend, "-B", "2", "--duration", "0.1"]))
    out = tmp_path / "d.h5"
    collect_trajectories.collect(collect_trajectories.parse_args(
        ["--backend", backend, "-B", "2", "--episodes", "2", "--duration", "0.1", "--out", str(out)]))
    env_device = to_torch(Go2Env(1, backend, CFG).reset(jax.random.PRNGKey(0)).obs).device
    assert seen.moved_to == [env_device, env_device]        # play, then collect
    assert seen.inputs == seen.params == {env_device}


# ---- on a GPU: pytest -m gpu ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda0():
    from bridge.device import resolve
    return resolve("cuda:0")


def _run(script, *args, timeout=900):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.gpu
def test_dlpack_zero_copy_on_cuda_both_ways(cuda0):
    vec = Go2VecEnv(Go2Env(64, "mjx", CFG, device=cuda0.jax), seed=0)
    obs, rew, dones, extras = vec.step(torch.zeros(64, 12, device=cuda0.torch))
    s = vec.state
    for tensor, array in [(obs["policy"], s.obs), (obs["critic"], s.critic_obs), (rew, s.reward),
                          (dones, s.done), (extras["time_outs"], s.time_out)]:
        assert tensor.device == cuda0.torch and tensor.data_ptr() == array.unsafe_buffer_pointer()
    actions = torch.randn(64, 12, device=cuda0.torch)
    as_jax = to_jax(actions)
    assert as_jax.devices() == {cuda0.jax} and as_jax.unsafe_buffer_pointer() == actions.data_ptr()
    np.testing.assert_array_equal(np.asarray(as_jax), actions.cpu().numpy())


def compiles_during_three_iterations(env, cuda0) -> list:
    """The XLA compiles of three PPO iterations on cuda:0 after a warm-up step, with implicit
    host transfers disallowed (explicit reads, e.g. Warp's overflow check, stay allowed)."""
    vec = Go2VecEnv(env, seed=0, log_every=8)
    runner = Go2Runner(vec, copy.deepcopy(ppo_train_cfg(num_steps_per_env=8)), log_dir=None,
                       device=str(cuda0.torch))
    vec.step(torch.zeros(env.num_envs, 12, device=cuda0.torch))
    compiles = []
    listener = lambda name, duration, **kw: compiles.append(name) if "backend_compile" in name else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with jax.transfer_guard("disallow"):
            runner.learn(num_learning_iterations=3, init_at_random_ep_len=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return compiles


@pytest.mark.gpu
def test_cuda_training_compiles_once_and_makes_no_host_transfer(cuda0):
    env = Go2Env(256, "mjx", CFG, device=cuda0.jax)
    assert compiles_during_three_iterations(env, cuda0) == [] and env.step_jit._cache_size() == 1


@pytest.mark.gpu
def test_torch_can_allocate_after_jax_starts(cuda0):
    env = Go2Env(1024, "mjx", CFG, device=cuda0.jax)
    s = env.reset(jax.random.PRNGKey(0))
    jax.block_until_ready(env.step(s, jnp.zeros((1024, 12))))
    free, total = torch.cuda.mem_get_info(cuda0.torch)
    assert free > 0.5 * total                 # JAX did not preallocate most of the GPU
    big = torch.empty(int(0.25 * total) // 4, dtype=torch.float32, device=cuda0.torch)
    big.fill_(1.0)
    torch.cuda.synchronize()
    del big


@pytest.mark.gpu
def test_4096_envs_step_and_one_ppo_iteration_on_cuda0(cuda0):
    vec = Go2VecEnv(Go2Env(4096, "mjx", device=cuda0.jax), seed=0)
    runner = Go2Runner(vec, copy.deepcopy(ppo_train_cfg()), log_dir=None, device=str(cuda0.torch))
    runner.learn(1, init_at_random_ep_len=True)
    obs = vec.get_observations()
    assert obs["policy"].shape == (4096, 48) and obs["policy"].device == cuda0.torch
    assert torch.isfinite(obs["critic"]).all()


@pytest.mark.gpu
def test_train_py_smoke_at_4096_envs_reports_env_steps_per_s(tmp_path):
    """train.py as a user runs it on a GPU: 4096 envs on cuda:0 (its default device there), a few PPO
    iterations; prints the env-steps/s of the iterations after the first (compiles) for the log."""
    import re
    import time
    t0 = time.perf_counter()
    r = _run("train.py", "-B", "4096", "--max_iterations", "4", "-e", "gpu_smoke", "--log_root", tmp_path)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "device=cuda:0" in r.stdout, r.stdout[-3000:]
    assert (tmp_path / "gpu_smoke" / "model_3.pt").is_file()
    fps = [float(x) for x in re.findall(r"Steps per second:\s*([0-9.]+)", r.stdout)]      # rsl_rl's log
    assert len(fps) == 4 and all(x > 0 for x in fps), r.stdout[-3000:]
    print(f"train.py -B 4096 on cuda:0: {statistics.median(fps[1:]):,.0f} env-steps/s after the first iteration "
          f"(first: {fps[0]:,.0f}); 4 iterations in {wall:.0f} s")


@pytest.mark.gpu
def test_bench_runs_on_the_gpu_and_writes_its_report(tmp_path):
    out = tmp_path / "bench.json"
    r = _run("bench.py", "--num-envs", "64", "--seconds", "0.2", "--train-iterations", "1", "--json", out)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cuda:0" and report["matmul_precision"] == "highest"
    assert set(report["results"][0]["train"]) == {"mjx"}        # train.py's backend on a GPU


@pytest.mark.gpu
def test_play_and_collect_with_the_mjx_backend(tmp_path):
    r = _run("play.py", "--backend", "mjx", "-B", "16", "--duration", "2", "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "m.json").read_text())["fall_rate"] <= 0.25
    r = _run("collect_trajectories.py", "--backend", "mjx", "-B", "4", "--episodes", "4", "--duration", "1",
             "--out", tmp_path / "d.h5")
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.gpu
def test_mjx_on_the_gpu_matches_c_mujoco_under_highest_precision(cuda0):
    """tests/test_backends.py's parity bounds, unchanged, with MJX on the GPU ('highest' matmuls)."""
    assert jax.config.jax_default_matmul_precision == "highest"
    gpu_parity_with_c_mujoco(cuda0, "jax")


def gpu_parity_with_c_mujoco(cuda0, mjx_impl):
    """16 envs, 50 steps of the same random actions on MJX (on cuda:0) and C MuJoCo, within
    tests/test_backends.py's bounds; returns the GPU env and its last state. Warp is compared with C
    at its own solver cap (tests/test_warp.py: at the model's 4 iterations C departs at landings)."""
    from conftest import c_model_at_warp_cap
    n = 16
    c_model = c_model_at_warp_cap(CFG.env) if mjx_impl == "warp" else None
    gpu_env = Go2Env(n, "mjx", CFG, device=cuda0.jax, mjx_impl=mjx_impl)
    mj_env = Go2Env(n, "mujoco", CFG, model=c_model)
    s1, s2 = gpu_env.reset(jax.random.PRNGKey(1)), mj_env.reset(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    for t in range(50):
        a = rng.normal(0.0, 0.3, (n, 12)).astype(np.float32)
        s1, s2 = gpu_env.step(s1, jax.device_put(a, cuda0.jax)), mj_env.step(s2, jnp.asarray(a))
        tol = 1e-5 if t < 2 else 1e-3
        np.testing.assert_allclose(np.asarray(s1.obs), np.asarray(s2.obs), atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(np.asarray(s1.reward), np.asarray(s2.reward), atol=tol * 0.1)
        np.testing.assert_array_equal(np.asarray(s1.terminated), np.asarray(s2.terminated))
    mj_env.close()
    return gpu_env, s1


@pytest.mark.gpu
def test_cuda1_on_a_two_gpu_machine(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from bridge.device import jax_gpu_ids, resolve, torch_gpu_ids
    try:
        d = resolve("cuda:1")
        assert torch.cuda.current_device() == 1
        mine, theirs = torch_gpu_ids(1), jax_gpu_ids(d.jax)
        assert any(mine[k] is not None and mine[k] == theirs[k] for k in ("pci", "uuid", "ordinal"))
        vec = Go2VecEnv(Go2Env(64, "mjx", CFG, device=d.jax), seed=0)
        obs, rew, dones, _ = vec.step(torch.zeros(64, 12, device=d.torch))   # DLPack from cuda:1
        assert rew.device == d.torch and obs["policy"].device == d.torch
        r = _run("train.py", "--device", "cuda:1", "-B", "256", "--max_iterations", "1", "-e", "cuda1",
                 "--log_root", tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        resolve("cuda:0")


# ---- MJX's Warp implementation on a GPU (--mjx-impl warp; needs the extra: pip install -e ".[warp]")
def _needs_warp():
    from mjx_env.physics import _import_mjx
    _import_mjx()
    from mujoco.mjx import warp as mjxw
    if not mjxw.WARP_INSTALLED:
        pytest.skip('warp-lang is not installed (pip install -e ".[warp]")')


@pytest.mark.gpu
def test_warp_on_cuda_matches_c_mujoco(cuda0):
    """tests/test_warp.py's CPU parity, with MuJoCo Warp's kernels on the GPU: the same bounds as
    MJX-JAX's against C MuJoCo."""
    _needs_warp()
    gpu_env, s1 = gpu_parity_with_c_mujoco(cuda0, "warp")
    assert list(s1.obs.devices()) == [cuda0.jax]
    gpu_env.check_overflow()


@pytest.mark.gpu
def test_one_ppo_iteration_with_warp_on_cuda0(tmp_path):
    _needs_warp()
    import pickle
    r = _run("train.py", "--device", "cuda:0", "--mjx-impl", "warp", "-B", "1024", "--max_iterations", "1",
             "--randomize", "-e", "warp", "--log_root", tmp_path)       # per-env model fields on the GPU too
    assert r.returncode == 0, r.stderr[-3000:]
    assert "backend=mjx device=cuda:0 mjx_impl=warp" in r.stdout
    saved = pickle.loads((tmp_path / "warp" / "cfgs.pkl").read_bytes())[-1]
    assert saved["backend"] == "mjx" and saved["mjx_impl"] == "warp" and saved["warp"]["iterations"] == 20
    assert saved["warp"]["ls_iterations"] == 20
    assert (tmp_path / "warp" / "model_0.pt").is_file()


@pytest.mark.gpu
def test_warp_training_on_cuda_compiles_once_over_three_iterations(cuda0):
    _needs_warp()
    env = Go2Env(256, "mjx", CFG, device=cuda0.jax, mjx_impl="warp")
    assert compiles_during_three_iterations(env, cuda0) == [] and env.step_checked._cache_size() == 1
    env.check_overflow()
