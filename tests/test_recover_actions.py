"""examples/recover_actions.py: its Adam loop recovers the actions of a system whose answer is known.

Φ itself (its values and gradients) is tested in test_dynamics.py and test_dynaflow_data.py; the
loop is run here on a linear system with the env's one-step latency, where the states determine the
actions uniquely, so that the test is fast (no MJX compilation)."""
import importlib.util
import jax
import jax.numpy as jnp
import numpy as np

from conftest import REPO

spec = importlib.util.spec_from_file_location("recover_actions", REPO / "examples" / "recover_actions.py")
recover_actions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recover_actions)


class LatentIntegrator:
    """x[t+1] = x[t] + B a[t-1]: Φ's call signature and latency (step t applies u_prev, then U[t-1])."""
    nu, device = 12, jax.devices()[0]

    def __init__(self):
        self.B = jnp.asarray(np.random.default_rng(0).normal(size=(12, 37)) * 0.1, jnp.float32)
        self.traces = 0

    def rollout(self, x0, u_prev, U):
        self.traces += 1          # Python runs this only while JAX traces it
        applied = jnp.concatenate([u_prev[:, None], U[:, :-1]], axis=1)
        return jnp.concatenate([x0[:, None], x0[:, None] + jnp.cumsum(applied @ self.B, axis=1)], axis=1)


def test_adam_recovers_the_actions_from_states_alone():
    dyn = LatentIntegrator()
    H = 8
    actions = np.random.default_rng(1).normal(size=(H, 12)).astype(np.float32)   # u_prev, U[0..H-2]
    x0 = np.random.default_rng(2).normal(size=(1, 37)).astype(np.float32)
    U = np.concatenate([actions[1:], np.full((1, 12), 7.0, np.float32)])[None]   # U[H-1] reaches no state
    states = np.asarray(dyn.rollout(x0, actions[None, 0], U))[0]
    dyn.traces = 0
    lines = []
    got, errors = recover_actions.recover(dyn, states, np.ones(37), iters=200, lr=0.1, print_every=50,
                                          recorded=actions, log=lines.append)
    assert dyn.traces == 1                       # one compilation for all 200 steps
    assert len(errors) == 201 and errors[-1] < errors[0] / 50
    assert np.sqrt(np.mean((got - actions) ** 2)) < 0.1 * np.sqrt(np.mean(actions ** 2))
    assert len(lines) == 5 and lines[0].startswith("iter    0   state RMS error")


def test_bad_window_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", episode_lengths=np.array([50]))
    for args, msg in (([str(tmp_path / "d.h5")], "need an NPZ dataset"),
                      ([str(tmp_path / "d.npz"), "--episode", "3"], "--episode 3: the file has episodes 0..0"),
                      ([str(tmp_path / "d.npz"), "--start", "40", "-H", "16"], "does not fit episode 0 (50 steps)"),
                      ([str(tmp_path / "d.npz"), "--print-every", "0"], "--print-every >= 1, got 300, 0.1 and 0"),
                      ([str(tmp_path / "d.npz"), "--lr", "-1"], "--lr > 0 and --print-every >= 1, got 300, -1 and 10")):
        assert recover_actions.main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("recover_actions.py: error: ") and msg in lines[0], lines
