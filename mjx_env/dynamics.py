"""Φ: the env's physics as a differentiable rollout, for DynaFlow.

    dyn = Go2Dynamics()                         # the env's model and TaskConfig (or xml_path=, cfg=)
    X = dyn.rollout(x0, u_prev, U)              # (B, nq+nv), (B, 12), (B, H, 12) -> (B, H+1, nq+nv)

x0 is MuJoCo qpos then qvel (37 values for the Go2), u_prev the action taken before x0 (the
latency buffer, `last_action` in the datasets), U the raw policy actions (before the action scale,
policy joint order). X[:, 0] = x0 and X[:, t+1] is the state one control period (0.02 s) after X[:, t].

The control law is the env's, through the same functions: actions are cleaned as the env cleans
them (Go2Task.clean_action: clip to ±clip_actions), the PD targets of step t are
Go2Task.pd_targets(action t-1, action t) (with the env's one-step latency: default pose +
action_scale × action t-1, so step 0 applies u_prev and U[:, H-1] does not reach X), and the physics
is MjxPhysics.advance, the env's MJX step (substeps × sim_dt, the model's PD actuators and torque
limits, a cold solver warm-start each period). Gradients are exact: the forward pass is MJX's own
solver, untouched, and its derivative comes from the implicit function theorem at the solver's
solution (mjx_env/mjx_patch.py; a test checks Φ against the env's states, and its gradients against
finite differences in float64); each control step is a jax.checkpoint, so the backward pass stores
one state per step and recomputes the rest.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mjx_env.config import TaskConfig
from mjx_env.errors import UserError
from mjx_env.model import load_go2
from mjx_env.physics import MjxPhysics
from mjx_env.task import Go2Task


class Go2Dynamics:
    def __init__(self, xml_path=None, cfg: TaskConfig | None = None, device: jax.Device | None = None):
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

        @jax.checkpoint
        def control_step(carry, action):
            x, last_action = carry
            ctrl = jax.vmap(task.pd_targets)(last_action, action)
            qpos, qvel = self.physics.advance(x[:, :nq], x[:, nq:], ctrl)
            x = jnp.concatenate([qpos, qvel], axis=1).astype(x0.dtype)
            return (x, action), x

        _, xs = jax.lax.scan(control_step, (x0, u_prev), jnp.swapaxes(U, 0, 1))
        return jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)

    def rollout(self, x0, u_prev, U) -> jax.Array:
        """States X (B, H+1, nq+nv) from x0 (B, nq+nv), u_prev (B, 12) and actions U (B, H, 12).

        Works under jit, vmap (over extra leading axes), grad, vjp and jvp.
        """
        return self._rollout_jit(*self.check(x0, u_prev, U))

    def rollout_vjp(self, x0, u_prev, U):
        """(X, pullback): pullback(X_bar) -> (x0_bar, u_prev_bar, U_bar). Compiled once per (B, H)."""
        X, pullback = self._vjp_jit(*self.check(x0, u_prev, U))
        return X, lambda X_bar: self._pullback_jit(pullback, jnp.asarray(X_bar, X.dtype))

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
    def check(self, x0, u_prev, U):
        """The inputs as arrays of the model's dtype; UserError (one line) if they are not usable."""
        x0, u_prev, U = (self._as_array(n, a) for n, a in (("x0", x0), ("u_prev", u_prev), ("U", U)))
        nx, nu = self.nx, self.nu
        if x0.ndim != 2 or x0.shape[1] != nx:
            raise UserError(f"Go2Dynamics.rollout: x0 must have shape (B, {nx}) (qpos {self.nq} then qvel "
                            f"{self.nv}), got {tuple(x0.shape)}")
        B = x0.shape[0]
        if B < 1:
            raise UserError("Go2Dynamics.rollout: the batch is empty (B = 0)")
        if tuple(u_prev.shape) != (B, nu):
            raise UserError(f"Go2Dynamics.rollout: u_prev must have shape (B, {nu}) = ({B}, {nu}), "
                            f"got {tuple(u_prev.shape)}")
        if U.ndim != 3 or U.shape[0] != B or U.shape[2] != nu or U.shape[1] < 1:
            raise UserError(f"Go2Dynamics.rollout: U must have shape (B, H, {nu}) = ({B}, H >= 1, {nu}), "
                            f"got {tuple(U.shape)}")
        for name, a in (("x0", x0), ("u_prev", u_prev), ("U", U)):
            if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
                raise UserError(f"Go2Dynamics.rollout: {name} holds NaN or inf; pass finite states and actions")
        return x0, u_prev, U

    def _as_array(self, name, a):
        if not isinstance(a, (jax.Array, np.ndarray)):
            try:
                a = np.asarray(a)
            except Exception:
                raise UserError(f"Go2Dynamics.rollout: {name} must be an array, got {type(a).__name__}") from None
        if a.dtype not in (np.float32, np.float64):
            raise UserError(f"Go2Dynamics.rollout: {name} must be float32 or float64, got {a.dtype}")
        if isinstance(a, jax.core.Tracer):
            return a.astype(self.dtype)
        return jax.device_put(jnp.asarray(a, self.dtype), self.device)
