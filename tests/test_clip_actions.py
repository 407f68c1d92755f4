"""train.py --clip-actions A: opt-in, bounds every action the env applies, recorded in cfgs.pkl."""
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from conftest import REPO
from mjx_env.config import TaskConfig
from mjx_env.env import Go2Env
from mjx_env.errors import ConfigError


def test_default_is_unchanged_and_the_flag_sets_env_clip_actions():
    assert train.task_config(train.parse_args([])) == TaskConfig()        # off: the default config exactly
    cfg = train.task_config(train.parse_args(["--clip-actions", "1"]))
    assert cfg.env.clip_actions == 1.0 and cfg.replace(env=TaskConfig().env) == TaskConfig()


def test_every_action_is_bounded():
    """Actions of ±4 (the walking demos reach 4.0) become ±1: the latency buffer the env keeps and the
    PD targets it applies one step later are those of the clipped action."""
    cfg = train.task_config(train.parse_args(["--clip-actions", "1"]))
    env = Go2Env(2, "mujoco", cfg)
    s = env.reset(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    a = rng.uniform(-4.0, 4.0, (2, 12)).astype(np.float32)
    a[0, 0], a[1, 1] = 4.0, -0.5
    s = env.step(s, jnp.asarray(a))
    np.testing.assert_array_equal(s.last_action, np.clip(a, -1.0, 1.0))
    assert float(jnp.abs(s.last_action).max()) == 1.0 and float(s.last_action[1, 1]) == -0.5
    ctrl = env.task.ctrl(s, jnp.asarray(a))      # step 2's PD targets (latency: from the action above)
    np.testing.assert_allclose(ctrl, np.asarray(env.task.default_angles) + 0.3 * np.clip(a, -1, 1), atol=1e-6)
    env.close()


def test_recorded_in_cfgs_pkl(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--device", "cpu", "--backend", "mujoco",
                        "--num_envs", "2", "--max_iterations", "1", "--exp_name", "clip", "--clip-actions", "1",
                        "--log_root", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    env_cfg = pickle.loads((tmp_path / "clip" / "cfgs.pkl").read_bytes())[0]
    assert env_cfg["clip_actions"] == 1.0


def test_a_bound_that_is_not_positive_is_one_user_error():
    with pytest.raises(ConfigError, match=r"env.clip_actions must be a positive finite number, got 0.0"):
        train.task_config(train.parse_args(["--clip-actions", "0"]))
