"""Φ (mjx_env/dynamics.py): the env's physics, its control law, its gradients, and its input checks.

States come from the robust walking policy (policies/go2_walk_robust_v1.pt; feet in contact, legs
moving), whose states tests/data/phi_fd_float64.npz holds. Every rollout here has
the same shape (B = 2, H = 32), so that each compiled program (forward, VJP; JVP in the slow tests)
is built once for the module; MJX programs take long to compile on a CPU.
"""
import copy
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridge.policy import ROBUST_V1_POLICY, load_actor
from mjx_env.config import CommandConfig, TaskConfig
from mjx_env.dynamics import Go2Dynamics
from mjx_env.env import Go2Env
from mjx_env.errors import UserError

B, H = 2, 32
CFG = TaskConfig(command=CommandConfig(fixed=(0.6, 0.0, 0.0, 0.3, 0.0)))


def settle(env, actions):
    s = env.reset(jax.random.PRNGKey(3))
    xs, lasts, acts = [], [], []
    for _ in range(80):
        a = actions(s)
        xs.append(np.concatenate([s.qpos, s.qvel], axis=1))
        lasts.append(np.asarray(s.last_action))
        acts.append(a)
        s = env.step(s, jnp.asarray(a))
        assert not bool(s.done.any())
    env.close()
    return np.stack(xs, 1), np.stack(lasts, 1), np.stack(acts, 1)    # (B, 80, 37), (B, 80, 12) x 2


@pytest.fixture(scope="module")
def walk():
    """80 control steps of the robust walker at 0.6 m/s (C MuJoCo backend, quick to build)."""
    env, actor = Go2Env(B, "mujoco", CFG), load_actor(ROBUST_V1_POLICY)

    def policy(s):
        with torch.no_grad():
            return actor(torch.from_numpy(np.array(s.obs))).numpy()
    return settle(env, policy)


@pytest.fixture(scope="module")
def dyn():
    return Go2Dynamics(cfg=CFG)


def window(data, start):
    x, last, acts = data
    return jnp.asarray(x[:, start]), jnp.asarray(last[:, start]), jnp.asarray(acts[:, start:start + H])


def test_rollout_is_the_env_mjx_step(walk, dyn):
    """Φ from a walking state equals the MJX env stepped with the same actions.

    The env runs MJX's own step; Φ runs mjx_patch's (the same solver, differentiated implicitly), so
    the states must be the same numbers.
    """
    from mujoco import mjx

    from mjx_env import mjx_patch

    x0, u_prev, U = window(walk, 40)
    # Φ's batch: XLA's code (and so the low bits) depends on the batch size, so the env steps as
    # many envs as Φ has windows
    env = Go2Env(B, "mjx", CFG)
    assert env.physics._step is mjx.step and dyn.physics._step is mjx_patch.step
    assert dyn.physics.mx.opt.iterations == 4 and dyn.physics.mx.opt.ls_iterations == 8
    s = env.reset(jax.random.PRNGKey(0))
    # committed to the env's device like the rest of the state, or the first step would be a
    # program of its own (a second compile of the same step)
    s = jax.device_put(s.replace(qpos=x0[:, :19], qvel=x0[:, 19:], last_action=u_prev), env.device)
    states = [x0]
    for t in range(H):
        s = env.step(s, U[:, t])
        assert not bool(s.done.any())
        states.append(jnp.concatenate([s.qpos, s.qvel], axis=1))
    X = dyn.rollout(x0, u_prev, U)
    assert X.shape == (B, H + 1, 37) and X.dtype == jnp.float32
    np.testing.assert_array_equal(X[:, 0], x0)
    np.testing.assert_array_equal(X, jnp.stack(states, 1))
    # it moved: the base travelled forward and the legs swung
    assert float(jnp.min(X[:, -1, 0] - X[:, 0, 0])) > 0.1
    assert float(jnp.max(jnp.abs(X[:, 1:, 25:37]))) > 1.0


def test_latency_step_t_applies_action_t_minus_1(walk, dyn):
    x0, u_prev, U = window(walk, 30)
    X = dyn.rollout(x0, u_prev, U)
    # the last action of the window never reaches the states (it would drive step H+1)
    X_last = dyn.rollout(x0, u_prev, U.at[:, -1].add(1.0))
    np.testing.assert_array_equal(X_last, X)
    # u_prev drives the first step; U[:, 0] only the second
    X_prev = dyn.rollout(x0, u_prev + 0.5, U)
    X_first = dyn.rollout(x0, u_prev, U.at[:, 0].add(0.5))
    assert float(jnp.max(jnp.abs(X_prev[:, 1] - X[:, 1]))) > 1e-2
    np.testing.assert_array_equal(X_first[:, 1], X[:, 1])
    assert float(jnp.max(jnp.abs(X_first[:, 2] - X[:, 2]))) > 1e-2


@pytest.mark.parametrize("which, bad, needle", [
    ("x0", np.zeros((B, 36), np.float32), r"x0 must have shape \(B, 37\)"),
    ("x0", np.zeros((37,), np.float32), r"x0 must have shape \(B, 37\)"),
    ("u_prev", np.zeros((B + 1, 12), np.float32), r"u_prev must have shape \(B, 12\) = \(2, 12\)"),
    ("U", np.zeros((B, H, 11), np.float32), r"U must have shape \(B, H, 12\)"),
    ("U", np.zeros((B, 0, 12), np.float32), r"U must have shape \(B, H, 12\)"),
    ("U", np.zeros((B, H, 12), np.int32), "U must be float32 or float64, got int32"),
    ("x0", np.zeros((B, 37), np.complex64), "x0 must be float32 or float64"),
    ("U", "actions", "U must be float32 or float64"),
    ("U", np.full((B, H, 12), np.nan, np.float32), "U holds NaN or inf"),
    ("x0", np.full((B, 37), np.inf, np.float32), "x0 holds NaN or inf"),
    ("u_prev", np.full((B, 12), -np.inf, np.float32), "u_prev holds NaN or inf"),
])
def test_bad_input_is_one_clear_error(walk, dyn, which, bad, needle):
    args = dict(zip(("x0", "u_prev", "U"), window(walk, 30)))
    args[which] = bad
    with pytest.raises(UserError, match=needle) as info:
        dyn.rollout(**args)
    assert len(str(info.value).splitlines()) == 1
    assert info.value.__cause__ is None and info.value.__context__ is None


# ---- gradients ---------------------------------------------------------------------------------
def directional(grads, v):
    return sum(float(jnp.vdot(g, t)) for g, t in zip(grads, v))


def random_like(rng, arrays, scale=1.0):
    return tuple(jnp.asarray(rng.normal(0.0, scale, a.shape), a.dtype) for a in arrays)


FD_FILE = Path(__file__).with_name("data") / "phi_fd_float64.npz"


def check_vjp_against_differences(dyn, z):
    """z: tests/fd_float64.py's output. The float64 differences converged and match the float64 VJP
    (measured: 7e-8); the float32 VJP of the same functional and direction is within 1e-2 of them
    (measured: 1.9e-3); and, exactly, the actions that reach no weighted state get a zero gradient."""
    fd, vjp = z["fd"], float(z["vjp"])
    assert str(z["dtype"]) == "float64" and z["U"].shape == (B, H, 12)
    assert abs(fd[1] - fd[0]) <= 1e-4 * abs(fd[1])                 # the differences have converged
    assert abs(vjp - fd[1]) <= 1e-6 * abs(fd[1]), (vjp, fd)
    assert abs(vjp) > 10.0
    _, pullback = dyn.rollout_vjp(z["x0"], z["u_prev"], z["U"])
    g = pullback(z["w"])
    last = max(k for k in range(H + 1) if np.any(z["w"][:, k]))   # the last weighted state
    assert float(jnp.abs(g[2][:, last - 1:]).max()) == 0.0         # U[:, k] first moves X[:, k + 2]
    assert float(jnp.abs(g[2][:, last - 2]).max()) > 0.0
    vjp32 = directional(g, [jnp.asarray(z[k], jnp.float32) for k in ("v_x0", "v_u_prev", "v_U")])
    assert abs(vjp32 - fd[1]) <= 1e-2 * abs(fd[1]), (vjp32, fd)
    assert abs(vjp32) > 10.0


def test_vjp_agrees_with_recorded_finite_differences(dyn):
    """Reverse mode (float32, this module's VJP program) against central differences of the float64
    physics, recorded by `python tests/fd_float64.py tests/data/phi_fd_float64.npz` (the slow test
    below recomputes them). A recorded file with a tolerance: the differences' low bits depend on the
    CPU that computed them, a 1e-2 bound does not."""
    check_vjp_against_differences(dyn, np.load(FD_FILE))


def test_bench_phi_report_on_this_modules_programs(tmp_path):
    """bench.py --phi --phi-cache warm at this module's (B, H): Φ's forward, VJP and pullback programs
    come from the run's compilation cache, where the tests above put them (pytest keeps a file's
    order), so the report costs no compile of its own. Every figure there and finite; the programs
    loaded again after jax.clear_caches() give the same values and gradients. (The cold compile is
    test_bench.py's, in the slow group.)"""
    from phi_report import check_phi_report, run_bench_phi
    report = run_bench_phi(tmp_path / "phi.json", B, H, "warm")
    check_phi_report(report, B, H, "warm")


# Forward mode compiles a program of its own (a minute and more on a 2-core CPU): the recorded
# differences above check the VJP in the default run.
@pytest.mark.slow
@pytest.mark.parametrize("h", [16, 32])
def test_vjp_agrees_with_jvp_while_walking(walk, dyn, h):
    """<w, J v> two ways: reverse mode (a random linear functional w of X) and forward mode (v).

    h = 16 weighs only X[:, :17], the states an H = 16 window reaches; both use the same programs.
    """
    rng = np.random.default_rng(h)
    args = window(walk, 20)
    X, pullback = dyn.rollout_vjp(*args)
    w = jnp.asarray(rng.normal(size=X.shape), jnp.float32).at[:, h + 1:].set(0.0)
    g = pullback(w)
    assert float(jnp.abs(g[2][:, h - 1:]).max()) == 0.0   # U[:, h-1] and later reach no weighted state
    for _ in range(3):
        v = random_like(rng, args, 0.1)
        X_jvp, X_dot = jax.jvp(dyn.rollout, args, v)
        forward, reverse = float(jnp.vdot(w, X_dot)), directional(g, v)
        assert abs(forward - reverse) <= 1e-3 * abs(forward), (forward, reverse)
        assert abs(forward) > 1.0          # the physics responds: not an agreement of zeros


@pytest.mark.slow
def test_vjp_agrees_with_finite_differences(dyn, tmp_path):
    """Reverse mode against central differences of the float64 physics, on a smooth segment.

    tests/fd_float64.py runs Φ in float64 (x64 is process-wide) and saves the inputs, its VJP and the
    differences; here the float32 VJP of the same functional and direction is checked against them
    too. (Differentiating through the solver's iterations instead gave -262 here in float32, where
    the physics' derivative is 147.6.)
    """
    out = tmp_path / "fd.npz"
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("fd_float64.py")), str(out)],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    check_vjp_against_differences(dyn, np.load(out))


@pytest.mark.slow
def test_gradients_over_walking_windows_are_finite(walk, dyn):
    """The DynaFlow loss, |X - X_demo|^2, over H = 32 windows of walking from zero actions."""
    x, _, _ = walk
    norms = []
    for start in (0, 20, 40):
        x0, u_prev, U = window(walk, start)
        target = jnp.asarray(x[:, start:start + H + 1])
        X, pullback = dyn.rollout_vjp(x0, u_prev, jnp.zeros_like(U))
        g = pullback(2.0 * (X - target))
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in g)
        norms.append(float(jnp.linalg.norm(g[2])))
    print("gradient norms of |X - X_demo|^2 w.r.t. U over H = 32 walking windows:", norms)
    assert all(0.0 < n < 1e6 for n in norms)


# ---- torch ----------------------------------------------------------------------------------------
def test_torch_dynamics_equals_jax_and_compiles_once(walk, dyn):
    from bridge.dynamics import TorchDynamics

    phi = TorchDynamics(dyn)
    gen = torch.Generator().manual_seed(0)

    def forward_backward(start):
        jax_args = window(walk, start)
        args = [torch.from_numpy(np.array(a)).requires_grad_() for a in jax_args]
        X = phi(*args)
        w = torch.randn(X.shape, generator=gen)
        (X * w).sum().backward()
        X_jax, pullback = dyn.rollout_vjp(*jax_args)
        np.testing.assert_allclose(X.detach().numpy(), dyn.rollout(*jax_args), rtol=1e-6, atol=0)
        for a, g in zip(args, pullback(jnp.asarray(w.numpy()))):
            assert a.grad is not None and a.grad.dtype == torch.float32
            np.testing.assert_allclose(a.grad.numpy(), g, rtol=1e-6, atol=1e-6 * float(jnp.abs(g).max()))
        return X

    # The JAX path alone compiles (or reuses) the forward, the VJP and the pullback, with an X_bar
    # from numpy; the torch path's arrays come through DLPack, and must reuse all three.
    X_jax, pullback = dyn.rollout_vjp(*window(walk, 20))
    pullback(np.ones(X_jax.shape, np.float32))
    dyn.rollout(*window(walk, 20))
    programs = (dyn._rollout_jit, dyn._vjp_jit, dyn._pullback_jit)
    sizes = [f._cache_size() for f in programs]
    forward_backward(20)
    assert [f._cache_size() for f in programs] == sizes
    compiles = []

    def listener(name, duration, **kw):
        if "backend_compile" in name:
            compiles.append(name)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        X = forward_backward(40)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert X.requires_grad and X.shape == (B, H + 1, 37)


def test_torch_dynamics_bad_input(walk, dyn):
    from bridge.dynamics import TorchDynamics

    phi = TorchDynamics(dyn)
    x0, u_prev, U = (torch.from_numpy(np.array(a)) for a in window(walk, 30))
    with pytest.raises(UserError, match="U must be a torch tensor"):
        phi(x0, u_prev, U.numpy())
    with pytest.raises(UserError, match="float32 or float64 tensors, got torch.int64"):
        phi(x0, u_prev, U.long())
    with pytest.raises(UserError, match=r"U must have shape \(B, H, 12\)"):
        phi(x0, u_prev, U[..., :6])
    with pytest.raises(UserError, match="x0 holds NaN or inf"):
        phi(x0 * float("nan"), u_prev, U)


# ---- DynaFlow's form: phi(x0, U), U[:, k] applied during step k ---------------------------------------
def applied(data, start):
    """x0 and the actions applied during steps start..start+H-1: the latency buffer of each step."""
    x, last, _ = data
    return jnp.asarray(x[:, start]), jnp.asarray(last[:, start:start + H])


def test_phi_equals_rollout(walk, dyn):
    """phi(x0, U) = rollout(x0, U[:, 0], U[:, 1:]) on the H states the latter returns, bit for bit, and
    the env's window (u_prev, actions) gives the same H+1 states as the applied actions (last_action).
    (rollout's H-1 actions are padded with one that reaches no state, so that one compiled program of
    (B, H) serves the whole module: test_latency_step_t_applies_action_t_minus_1 shows it reaches none.)"""
    x0, U = applied(walk, 30)
    X = dyn.phi(x0, U)
    assert X.shape == (B, H + 1, 37) and X.dtype == jnp.float32
    unused = jnp.full_like(U[:, -1:], 0.7)
    np.testing.assert_array_equal(X, dyn.rollout(x0, U[:, 0], jnp.concatenate([U[:, 1:], unused], 1)))
    np.testing.assert_array_equal(X, dyn.rollout(*window(walk, 30)))
    # U[:, k] drives step k: the last action reaches X[:, H], changing it changes nothing before
    X_last = dyn.phi(x0, U.at[:, -1].add(0.5))
    np.testing.assert_array_equal(X_last[:, :H], X[:, :H])
    assert float(jnp.max(jnp.abs(X_last[:, H] - X[:, H]))) > 1e-3
    # the walk was recorded with C MuJoCo: Φ (MJX, float32) reproduces it within the backends' parity
    # bounds (measured: qpos 6.0e-7, qvel 2.2e-5)
    x, _, _ = walk
    err = np.abs(np.asarray(X) - x[:, 30:30 + H + 1]).max(axis=(0, 1))
    assert err[:19].max() <= 1e-4 and err[19:].max() <= 5e-3, (err[:19].max(), err[19:].max())


@pytest.mark.slow
def test_phi_is_a_static_jit_argument(walk, dyn):
    """A DynaFlow train step takes Φ as a static (x0, U) callable: dyn.phi hashes and compares equal
    across attribute lookups, so the step compiles once."""
    assert dyn.phi == dyn.phi and hash(dyn.phi) == hash(dyn.phi) and dyn.phi is not dyn.phi
    step = jax.jit(lambda phi, x0, U: phi(x0, U)[:, -1], static_argnums=0)
    x0, U = applied(walk, 30)
    a = step(dyn.phi, x0, U)
    b = step(dyn.phi, x0, U + 0.0)
    assert step._cache_size() == 1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, dyn.phi(x0, U)[:, -1])


def test_phi_bad_input(walk, dyn):
    x0, U = applied(walk, 30)
    with pytest.raises(UserError, match=r"Go2Dynamics.phi: U must have shape \(B, H, 12\) = \(2, H >= 1, 12\)"):
        dyn.phi(x0, U[:1])
    with pytest.raises(UserError, match="Go2Dynamics.phi: x0 holds NaN or inf"):
        dyn.phi(x0 * np.nan, U)


def test_torch_phi_equals_jax(walk, dyn):
    """TorchDynamics.phi: the values of Go2Dynamics.phi, and gradients that are the rollout's pullback
    mapped by hand (U[:, 0] is rollout's u_prev, U[:, k] its U[:, k-1])."""
    from bridge.dynamics import TorchDynamics

    x0, U = applied(walk, 30)
    x0_t, U_t = (torch.from_numpy(np.array(a)).requires_grad_() for a in (x0, U))
    X = TorchDynamics(dyn).phi(x0_t, U_t)
    np.testing.assert_array_equal(X.detach().numpy(), dyn.phi(x0, U))
    w = torch.randn(X.shape, generator=torch.Generator().manual_seed(1))
    (X * w).sum().backward()
    _, pullback = dyn.rollout_vjp(*dyn.phi_as_rollout(x0, U))
    x0_bar, u_prev_bar, U_bar = (np.asarray(g) for g in pullback(jnp.asarray(w.numpy())))
    assert float(np.abs(U_bar[:, -1]).max()) == 0.0         # the padding action reaches no state
    expected = np.concatenate([u_prev_bar[:, None], U_bar[:, :-1]], axis=1)
    np.testing.assert_allclose(U_t.grad.numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(x0_t.grad.numpy(), x0_bar, rtol=1e-6, atol=1e-6 * np.abs(x0_bar).max())
    with pytest.raises(UserError, match=r"TorchDynamics.phi: x0 \(B, 37\) and U \(B, H >= 1, 12\) expected"):
        TorchDynamics(dyn).phi(x0_t, U_t[:, :, :6])


def test_remat_trades_the_backward_memory_for_recompute(dyn):
    """remat=False (the default) keeps every control step's intermediates for the backward pass
    (measured: 0.16 MiB per window and step); remat=True keeps one state per step and recomputes the
    rest. The residuals' sizes come from tracing alone (jax.eval_shape), nothing compiles; the
    default's is the trace of this module's VJP program (B, H), which jit has kept."""
    sd = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    shapes = sd(B, 37), sd(B, 12), sd(B, H, 12)
    nbytes = lambda tree: sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))

    remat = copy.copy(dyn)                 # the same model and physics; _rollout reads remat when traced
    remat.remat = True
    assert not dyn.remat
    kept = nbytes(jax.eval_shape(dyn._vjp_jit, *shapes)[1])
    recomputed = nbytes(jax.eval_shape(lambda *a: jax.vjp(remat._rollout, *a)[1], *shapes))
    assert 0.1 * 2**20 < kept / (B * H) < 0.25 * 2**20     # per window and step (measured: 0.16 MiB)
    assert recomputed * 100 < kept                         # measured: 34.7 kB, 1/304 of kept


@pytest.mark.slow
def test_remat_gives_the_same_gradients(dyn):
    """remat=True's VJP (its own programs) against the default's on the recorded window: the same
    physics, the same derivative (recomputing may round differently; measured difference below)."""
    z = np.load(FD_FILE)
    args = (z["x0"], z["u_prev"], z["U"])
    g = dyn.rollout_vjp(*args)[1](z["w"])
    g_remat = Go2Dynamics(cfg=CFG, remat=True).rollout_vjp(*args)[1](z["w"])
    for a, b in zip(g, g_remat):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.abs(a).max()))
