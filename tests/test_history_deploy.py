"""Deployment with an observation history (train.py --history N [--estimator]): the ONNX graph takes
one input, the last N observations oldest first, with any estimator inside; the torch-free deploy
example keeps that history as the env does."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bridge.deploy import read_metadata
from bridge.policy import ActorInputs, export_actor, load_actor, policy_inputs
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.env import Go2Env

from conftest import REPO

N = 6


def random_history_actor(path, seed=0):
    """A checkpoint of an estimator actor with the trained network's shapes (random weights)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, dims in (("mlp", [N * 48 + 3, 512, 256, 128, 12]), ("estimator", [N * 48, 256, 128, 3])):
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            sd[f"{prefix}.{2 * i}.weight"] = torch.randn(b, a, generator=g) / a ** 0.5
            sd[f"{prefix}.{2 * i}.bias"] = 0.1 * torch.randn(b, generator=g)
    torch.save({"actor_state_dict": sd, "iter": 3,
                "actor_inputs": {"history_length": N, "actor_lin_vel": False, "estimator": True}}, path)
    return path


def test_onnx_with_history_and_estimator(tmp_path):
    import onnx
    import onnxruntime as ort
    src = random_history_actor(tmp_path / "hist.pt")
    export_actor(src, tmp_path / "hist.onnx")
    export_actor(src, tmp_path / "hist_actor.pt")
    for p in (src, tmp_path / "hist.onnx", tmp_path / "hist_actor.pt"):
        assert policy_inputs(p) == ActorInputs(N, False, True)          # recorded, read back
    meta = read_metadata(tmp_path / "hist.onnx")
    assert (meta["history_length"], meta["velocity_estimator"], meta["num_obs"]) == (N, True, 48)
    (inp,), _ = onnx.load(str(tmp_path / "hist.onnx")).graph.input, None
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1] == N * 48     # one input: N x 48 values
    actor = load_actor(src, N * 48)
    obs = np.random.default_rng(0).normal(size=(64, N * 48)).astype(np.float32)
    with torch.no_grad():
        want = actor(torch.from_numpy(obs)).numpy()
    got = ort.InferenceSession(str(tmp_path / "hist.onnx"), providers=["CPUExecutionProvider"]).run(
        ["actions"], {"obs": obs})[0]
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() <= 1e-5, err.max()                                 # the bound of the one-frame export


def test_deploy_example_keeps_the_history_as_the_env_does(tmp_path):
    spec = importlib.util.spec_from_file_location("deploy_onnx", REPO / "examples" / "deploy_onnx.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    src = random_history_actor(tmp_path / "hist.pt")
    export_actor(src, tmp_path / "hist.onnx")
    meta = read_metadata(tmp_path / "hist.onnx")
    cfg = TaskConfig(command=CommandConfig(random_resample_prob=0.0))
    cfg = cfg.replace(obs=cfg.obs.with_actor_inputs(N))
    env = Go2Env(3, "mujoco", cfg)
    jm = example.JointMap(env.model.mj_model, meta["joint_names"])
    histories = [example.History(meta) for _ in range(3)]
    s = env.reset(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    for t in range(N + 3):                      # past the point where the first frame leaves the buffer
        for i, h in enumerate(histories):
            row = h.push(example.observation(meta, jm, np.asarray(s.qpos[i], np.float64),
                                             np.asarray(s.qvel[i], np.float64), np.asarray(s.last_action[i]),
                                             np.asarray(s.commands[i])))
            np.testing.assert_allclose(row, np.asarray(s.obs_history[i]).reshape(-1), rtol=1e-5, atol=1e-5)
        s = env.step(s, jnp.asarray(rng.normal(0, 0.3, (3, 12)), jnp.float32))
        assert not np.asarray(s.done).any()
    env.close()
