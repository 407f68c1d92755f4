"""Φ: the env's physics as a differentiable rollout, for DynaFlow.

    dyn = Go2Dynamics()                         # the env's model and TaskConfig (or xml_path=, cfg=)
    X = dyn.phi(x0, U)                          # DynaFlow's form: (B, nq+nv), (B, H, 12) -> (B, H+1, nq+nv)
    X = dyn.rollout(x0, u_prev, U)              # the env's form, with its latency buffer u_prev

x0 is MuJoCo qpos then qvel (37 values for the Go2). In `phi`, U[:, k] is the raw action (before the
action scale, policy joint order) APPLIED during control step k: the datasets' `last_actions[t+k]`
(alias `applied_actions`), so nothing hidden is needed. In `rollout`, U are the actions the policy
took, applied one step late as the env does: u_prev (the latency buffer, `last_action` in the
datasets) drives step 0 and U[:, k] step k+1. The two are one program: phi(x0, U) is
rollout(x0, U[:, 0], U[:, 1:] + one unused action). X[:, 0] = x0 and X[:, t+1] is the state one
control period (0.02 s) after X[:, t].

The control law is the env's, through the same functions: actions are cleaned as the env cleans
them (Go2Task.clean_action: clip to ±clip_actions), the PD targets of step t are
Go2Task.pd_targets(action t-1, action t) (with the env's one-step latency: default pose +
action_scale × action t-1, so step 0 applies u_prev and U[:, H-1] does not reach X), and the physics
is MjxPhysics.advance, the env's MJX step (substeps × sim_dt, the model's PD actuators and torque
limits, a cold solver warm-start each period). Gradients are exact: the forward pass is MJX's own
solver, untouched, and its derivative comes from the implicit function theorem at the solver's
solution (mjx_env/mjx_patch.py; a test checks Φ against the env's states, and its gradients against
finite differences in float64). The backward pass keeps every control step's intermediate values
(about 0.16 MiB per window and control step in float32: 160 MiB for B = 64, H = 16); remat=True
makes each control step a jax.checkpoint instead, which stores one state per step and recomputes the
rest, for batches and horizons whose intermediates do not fit, at the price of about a quarter fewer
windows per second forward+backward; both compile in about the same time (README, "Φ benchmark").

Compiling Φ's gradient takes minutes on a CPU, so Go2Dynamics turns on JAX's persistent compilation
cache (process-wide; every later jit of the process uses it too) unless one is configured already:
each program is compiled once per machine, later processes load it (compile_cache=None leaves JAX's
configuration alone; a path puts the cache there; JAX_COMPILATION_CACHE_DIR overrides the default).
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mjx_env.config import TaskConfig
from mjx_env.errors import UserError
from mjx_env.model import load_go2
from mjx_env.physics import MjxPhysics
from mjx_env.task import Go2Task


def default_compile_cache() -> Path:
    """~/.cache/go2_mjx/jax (or under $XDG_CACHE_HOME): where Φ's compiled programs are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "go2_mjx" / "jax"


def use_compile_cache(path=True) -> str | None:
    """Turn on JAX's persistent compilation cache at `path` (True: default_compile_cache()) unless the
    process has one already; returns the cache directory in use (None: none)."""
    current = jax.config.jax_compilation_cache_dir
    if current or path is None or path is False:
        return current
    path = default_compile_cache() if path is True else Path(path)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return str(path)


class Go2Dynamics:
    def __init__(self, xml_path=None, cfg: TaskConfig | None = None, device: jax.Device | None = None,
                 compile_cache=True, remat: bool = False):
        self.compile_cache = use_compile_cache(compile_cache)
        self.remat = bool(remat)
        self.cfg = cfg or TaskConfig()
        self.cfg.validate()
        self.model = load_go2(xml_path, self.cfg.env)
        self.task = Go2Task(self.model, self.cfg)
        self.physics = MjxPhysics(self.model, self.cfg.env.substeps, device=device, differentiable=True)
        self.nq, self.nv = self.model.nq, self.model.nv
        self.nx, self.nu = self.nq + self.nv, self.cfg.env.num_actions
        self.dtype = self.physics.d0.qpos.dtype     # float32 (float64 if JAX runs with x64)
        self.device = device or jax.devices()[0]
        self._rollout_jit = jax.jit(self._rollout)
        self._vjp_jit = jax.jit(lambda x0, u_prev, U: jax.vjp(self._rollout, x0, u_prev, U))
        self._pullback_jit = jax.jit(lambda pullback, X_bar: pullback(X_bar))

    # ---- the rollout ---------------------------------------------------------------------------
    def _rollout(self, x0, u_prev, U):
        task, nq = self.task, self.nq
        u_prev = jax.vmap(task.clean_action)(u_prev)[0]
        U = jax.vmap(jax.vmap(task.clean_action))(U)[0]

        def control_step(carry, action):
            x, last_action = carry
            ctrl = jax.vmap(task.pd_targets)(last_action, action)
            qpos, qvel = self.physics.advance(x[:, :nq], x[:, nq:], ctrl)
            x = jnp.concatenate([qpos, qvel], axis=1).astype(x0.dtype)
            return (x, action), x

        step = jax.checkpoint(control_step) if self.remat else control_step
        _, xs = jax.lax.scan(step, (x0, u_prev), jnp.swapaxes(U, 0, 1))
        return jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)

    def phi_as_rollout(self, x0, U):
        """(x0, u_prev, U') with rollout(x0, u_prev, U') = phi(x0, U): U[:, k] applied during step k."""
        if not self.cfg.env.simulate_action_latency:       # the env applies each action at once
            return x0, jnp.zeros_like(U[:, 0]), U
        # step 0 applies the latency buffer, step k the action before it; the last one reaches no state
        return x0, U[:, 0], jnp.concatenate([U[:, 1:], U[:, -1:]], axis=1)

    def phi(self, x0, U) -> jax.Array:
        """DynaFlow's Φ(x0, U): states X (B, H+1, nq+nv), X[:, 0] = x0, U[:, k] the action applied
        during step k (B, H, 12). The same physics as `rollout`, bit for bit.

        A bound method hashes and compares by its Go2Dynamics, so `dyn.phi` is a valid static
        argument of jax.jit (a train step compiled once per shape). Works under jit, vmap, grad,
        vjp and jvp.
        """
        # rollout's compiled program of the same (B, H): the two forms share one compile
        return self._rollout_jit(*self.phi_as_rollout(*self.check(x0, None, U, where="phi")))

    def rollout(self, x0, u_prev, U) -> jax.Array:
        """States X (B, H+1, nq+nv) from x0 (B, nq+nv), u_prev (B, 12) and actions U (B, H, 12).

        Works under jit, vmap (over extra leading axes), grad, vjp and jvp.
        """
        return self._rollout_jit(*self.check(x0, u_prev, U))

    def rollout_vjp(self, x0, u_prev, U):
        """(X, pullback): pullback(X_bar) -> (x0_bar, u_prev_bar, U_bar). Compiled once per (B, H)."""
        X, pullback = self._vjp_jit(*self.check(x0, u_prev, U))
        # X_bar committed to Φ's device, as check() commits the inputs: an uncommitted array (from
        # numpy) and a committed one (from torch through DLPack) would otherwise lower to two
        # programs, and the pullback's compile takes minutes on a CPU.
        return X, lambda X_bar: self._pullback_jit(pullback, jax.device_put(jnp.asarray(X_bar, X.dtype), self.device))

    # ---- ahead-of-time compiled programs, for benchmarks (compile time measured apart) -------------
    def compile_forward(self, x0, u_prev, U):
        """rollout's program compiled for these (checked) inputs' shapes: call it as f(x0, u_prev, U)."""
        return self._rollout_jit.lower(x0, u_prev, U).compile()

    def compile_vjp(self, x0, u_prev, U, X_bar):
        """(vjp, pull) compiled for these shapes: vjp(x0, u_prev, U) -> (X, pullback); pull(pullback, X_bar)."""
        vjp = self._vjp_jit.lower(x0, u_prev, U).compile()
        _, pullback = vjp(x0, u_prev, U)
        return vjp, self._pullback_jit.lower(pullback, X_bar).compile()

    # ---- input checks, before anything is traced ------------------------------------------------
    def check(self, x0, u_prev, U, where="rollout"):
        """The inputs as arrays of the model's dtype; UserError (one line) if they are not usable.
        `phi` passes u_prev=None (it has none) and gets (x0, U)."""
        named = [("x0", x0), ("U", U)] if u_prev is None else [("x0", x0), ("u_prev", u_prev), ("U", U)]
        arrays = {n: self._as_array(n, a, where) for n, a in named}
        x0, U = arrays["x0"], arrays["U"]
        nx, nu, w = self.nx, self.nu, f"Go2Dynamics.{where}"
        if x0.ndim != 2 or x0.shape[1] != nx:
            raise UserError(f"{w}: x0 must have shape (B, {nx}) (qpos {self.nq} then qvel "
                            f"{self.nv}), got {tuple(x0.shape)}")
        B = x0.shape[0]
        if B < 1:
            raise UserError(f"{w}: the batch is empty (B = 0)")
        if u_prev is not None and tuple(arrays["u_prev"].shape) != (B, nu):
            raise UserError(f"{w}: u_prev must have shape (B, {nu}) = ({B}, {nu}), "
                            f"got {tuple(arrays['u_prev'].shape)}")
        if U.ndim != 3 or U.shape[0] != B or U.shape[2] != nu or U.shape[1] < 1:
            raise UserError(f"{w}: U must have shape (B, H, {nu}) = ({B}, H >= 1, {nu}), "
                            f"got {tuple(U.shape)}")
        for name, a in arrays.items():
            if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
                raise UserError(f"{w}: {name} holds NaN or inf; pass finite states and actions")
        return tuple(arrays.values())

    def _as_array(self, name, a, where="rollout"):
        if not isinstance(a, (jax.Array, np.ndarray)):
            try:
                a = np.asarray(a)
            except Exception:
                raise UserError(f"Go2Dynamics.{where}: {name} must be an array, got {type(a).__name__}") from None
        if a.dtype not in (np.float32, np.float64):
            raise UserError(f"Go2Dynamics.{where}: {name} must be float32 or float64, got {a.dtype}")
        if isinstance(a, jax.core.Tracer):
            return a.astype(self.dtype)
        return jax.device_put(jnp.asarray(a, self.dtype), self.device)
