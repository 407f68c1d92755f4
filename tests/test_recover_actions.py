"""examples/recover_actions.py: its Adam loop recovers the actions of a system whose answer is known.

Φ itself (its values and gradients) is tested in test_dynamics.py and test_dynaflow_data.py. The loop
runs here on a linear system with the env's one-step latency, where the states determine the actions
uniquely (fast: no MJX compilation), then through the real Φ on a short window of C MuJoCo states."""
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


def test_adam_recovers_walking_actions_through_the_real_phi():
    """The same loop through Φ itself (mjx_env/dynamics.py) on a short window of C MuJoCo states: the
    robot stood for 25 steps, then H actions moved it. From zero actions, Adam brings the state error
    down and finds the actions that made the window (C MuJoCo and Φ agree to the backends' parity)."""
    from mjx_env.dynamics import Go2Dynamics
    from mjx_env.env import Go2Env
    H = 4
    env = Go2Env(1, "mujoco")
    s = env.reset(jax.random.PRNGKey(0))
    for _ in range(25):
        s = env.step(s, jnp.zeros((1, 12)))
    actions = np.random.default_rng(3).normal(0.0, 0.5, (H, 12)).astype(np.float32)   # a_0 .. a_{H-1}
    states = [np.concatenate([s.qpos, s.qvel], axis=1)[0]]
    for a in actions:
        s = env.step(s, jnp.asarray(a[None]))
        states.append(np.concatenate([s.qpos, s.qvel], axis=1)[0])
    env.close()
    states = np.asarray(states, np.float32)
    dyn = Go2Dynamics()
    nx = states.shape[1]
    # the window's H states are shaped by u_prev (zero: the robot stood) and a_0 .. a_{H-2} (latency)
    recorded = np.concatenate([np.zeros((1, 12), np.float32), actions[:-1]])
    lines = []
    got, errors = recover_actions.recover(dyn, states, np.full(nx, 0.1), iters=150, lr=0.05, print_every=50,
                                          recorded=recorded, log=lines.append)
    print(lines[0], lines[-1], sep="\n")
    # measured: state RMS error 0.270 -> 0.015 (18x), action RMS error 0.463 -> 0.245; the recorded
    # actions through Φ reproduce the C MuJoCo states to 1.7e-6 (the floor)
    assert np.isfinite(errors).all() and errors[-1] < errors[0] / 10, errors[[0, -1]]
    before, after = np.sqrt(np.mean(recorded ** 2)), np.sqrt(np.mean((got - recorded) ** 2))
    assert after < 0.7 * before, (before, after)
