"""The torch bridge: zero-copy in both directions, episode counters, one compilation."""
import copy

import jax
import numpy as np
import pytest
import torch

from bridge.runner import Go2Runner, ppo_train_cfg
from bridge.vec_env import Go2VecEnv, to_jax
from conftest import MJX_BATCH
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.env import Go2Env

CFG = TaskConfig(command=CommandConfig(random_resample_prob=0.0))


@pytest.fixture(scope="module")
def mjx_vec():
    # conftest's shared MJX env: the default config at MJX_BATCH envs, one compile for the run
    v = Go2VecEnv(Go2Env(MJX_BATCH, "mjx", TaskConfig()), seed=0, log_every=4)
    yield v
    v.close()


@pytest.fixture(scope="module")
def mujoco_vec():
    v = Go2VecEnv(Go2Env(16, "mujoco", CFG), seed=0, log_every=4)
    yield v
    v.close()


@pytest.mark.parametrize("which", ["mjx_vec", "mujoco_vec"])
def test_outputs_share_memory_with_jax(which, request):
    vec = request.getfixturevalue(which)
    n = vec.num_envs
    obs, rew, dones, extras = vec.step(torch.zeros(n, 12))
    s = vec.state
    pairs = [(obs["policy"], s.obs), (obs["critic"], s.critic_obs), (rew, s.reward), (dones, s.done),
             (extras["time_outs"], s.time_out), (vec.episode_length_buf, s.episode_step)]
    for tensor, array in pairs:
        assert tensor.data_ptr() == array.unsafe_buffer_pointer()
    assert obs["policy"].dtype == torch.float32 and obs["policy"].shape == (n, 48)
    assert obs["critic"].shape == (n, 52) and rew.shape == (n,)


def test_actions_enter_jax_without_copy():
    actions = torch.randn(16, 12)
    as_jax = to_jax(actions)
    assert as_jax.unsafe_buffer_pointer() == actions.data_ptr()
    np.testing.assert_array_equal(np.asarray(as_jax), actions.numpy())


def test_actions_drive_the_env(mujoco_vec):
    """The action tensor given to step() is what the env applies (one step late)."""
    a = torch.zeros(16, 12)
    a[3, 1] = 2.0
    mujoco_vec.step(a)
    np.testing.assert_allclose(np.asarray(mujoco_vec.state.last_action), a.numpy())
    obs, *_ = mujoco_vec.step(torch.zeros(16, 12))
    assert obs["policy"][3, 12].item() - obs["policy"][2, 12].item() > 0.01    # FR thigh of env 3 moved


def test_episode_length_buf_is_the_env_counter(mujoco_vec):
    buf = torch.arange(16, dtype=torch.int32) * 60
    buf[5] = 999
    mujoco_vec.episode_length_buf = buf
    np.testing.assert_array_equal(np.asarray(mujoco_vec.state.episode_step), buf.numpy())
    _, _, dones, extras = mujoco_vec.step(torch.zeros(16, 12))
    assert bool(extras["time_outs"][5]) and bool(dones[5])
    assert not bool(extras["time_outs"][4])
    steps = mujoco_vec.episode_length_buf
    assert steps[5].item() == 0 and steps[4].item() == 241


def test_episode_reward_terms_reach_the_logger():
    vec = Go2VecEnv(Go2Env(4, "mujoco", CFG), seed=0, log_every=3)
    vec.episode_length_buf = torch.tensor([999, 999, 10, 10], dtype=torch.int32)
    _, _, _, e1 = vec.step(torch.zeros(4, 12))     # envs 0 and 1 time out here
    finals = {k: np.asarray(v) for k, v in vec.state.final_episode_sums.items()}
    _, _, _, e2 = vec.step(torch.zeros(4, 12))
    _, _, _, e3 = vec.step(torch.zeros(4, 12))
    assert "episode" not in e1 and "episode" not in e2
    for term, sums in finals.items():
        expected = sums[:2].mean() / CFG.env.episode_length_s
        np.testing.assert_allclose(e3["episode"][f"rew_{term}"].item(), expected, rtol=1e-5)
    assert e3["episode"]["diverged_envs"].item() == 0
    vec.close()


def test_three_iterations_compile_nothing_after_the_first_step(mjx_vec):
    compiles = []
    runner = Go2Runner(mjx_vec, copy.deepcopy(ppo_train_cfg(num_steps_per_env=4)), log_dir=None, device="cpu")
    mjx_vec.step(torch.zeros(MJX_BATCH, 12))     # first step: compiles the env step (or loads it)

    def listener(name, duration, **kw):
        if "backend_compile" in name:
            compiles.append(name)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        before, tally_before = mjx_vec.env.step_jit._cache_size(), mjx_vec._tally._cache_size()
        runner.learn(num_learning_iterations=3, init_at_random_ep_len=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert mjx_vec.env.step_jit._cache_size() == before == 1
    assert mjx_vec._tally._cache_size() == tally_before      # the episode tallies, beside the step
