"""An MJX step that JAX can reverse-differentiate (workaround for mujoco-mjx 3.17).

Why: MJX's constraint solver (`mujoco.mjx._src.solver.solve`) runs its outer iterations in a
`lax.while_loop` whenever `opt.iterations > 1` (this model uses 4), and JAX cannot
reverse-differentiate a while_loop: `jax.grad` through `mjx.step` fails. Upstream issue
google-deepmind/mujoco#2259; PRs #3264 and #3583 replace the loop by a fixed-length scan, neither is
in a release yet. Cutting the solver to one iteration is not an option: it is a different
simulator from the one that produced the demonstrations.

What: `step(m, d)` is `mjx.step` whose constraint solve is differentiated implicitly. The forward
pass is MJX's own solver, untouched (the same while_loop, the same numbers as the env). The solver
minimises a convex cost over the accelerations; at its solution the cost's gradient
r(qacc) = M qacc - qfrc_smooth - qfrc_constraint(qacc) is zero, so by the implicit function theorem
d qacc = -(dr/dqacc)^-1 (dr/dparams · d params), with dr/dqacc = M + J' D_active J the solver's own
Newton Hessian (18 x 18 here). `jax.lax.custom_root` provides exactly this for forward and reverse
mode; MJX's `Context.create` evaluates r. This is the derivative of the converged solution.
Differentiating through the iterations instead (an earlier version of this module ran them as a
fixed-length scan) is the derivative of the last few line searches: in float64 the two agree, in
float32 the unrolled one was dominated by rounding (the wrong sign against finite differences),
and it was 4-5x slower to compile.

When it can go: once mujoco ships a reverse-differentiable solver (#3264 or #3583), compare its
gradients with these and use `mjx.step`. `SUPPORTED` names the versions this was checked against;
another version warns at import, as the private solver API used here may have changed.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx
from mujoco.mjx._src import solver

SUPPORTED = ("3.17.",)
if not mujoco.__version__.startswith(SUPPORTED):
    warnings.warn(f"mjx_env.mjx_patch was written for mujoco {SUPPORTED}, found {mujoco.__version__}: "
                  "check whether the MJX solver is reverse-differentiable now (mujoco PR #3264/#3583)")

_mjx_solve = solver.solve


def _tangent_solve(linear_r, y):
    # linear_r is r linearised at the solution: its Jacobian is the Newton Hessian, nv x nv.
    return jnp.linalg.solve(jax.jacfwd(linear_r)(jnp.zeros_like(y)), y)


def solve(m, d):
    """MJX's constraint solve; its derivatives by the implicit function theorem at the solution."""
    def residual(qacc):  # gradient of the solver's cost, zero at its minimum
        ctx = solver.Context.create(m, d.replace(qacc=qacc), grad=False)
        return ctx.Ma - d.qfrc_smooth - ctx.qfrc_constraint

    def run_mjx(_, guess):  # custom_root never differentiates this
        out = _mjx_solve(m, d)
        return out.qacc, (out.qfrc_constraint, out._impl.efc_force)

    qacc, (qfrc, efc) = jax.lax.custom_root(residual, d.qacc_smooth, run_mjx, _tangent_solve, has_aux=True)
    # The constraint forces keep the solver's values and take the derivatives of their formula at qacc
    # (they do not reach the next state; the values stay bit-identical).
    ctx = solver.Context.create(m, d.replace(qacc=qacc), grad=False)
    qfrc = qfrc + (ctx.qfrc_constraint - jax.lax.stop_gradient(ctx.qfrc_constraint))
    efc = efc + (ctx.efc_force - jax.lax.stop_gradient(ctx.efc_force))
    return d.tree_replace({"qfrc_constraint": qfrc, "qacc": qacc, "_impl.efc_force": efc})


_lock = threading.Lock()


@contextlib.contextmanager
def _implicit_solver():
    # mjx.step looks the solver up as `solver.solve` when it is traced; swap it for the trace.
    with _lock:
        original, solver.solve = solver.solve, solve
        try:
            yield
        finally:
            solver.solve = original


def step(m, d):
    """mjx.step with the implicitly differentiated solver: same numbers, and jax.grad / vjp / jvp work."""
    with _implicit_solver():
        return mjx.step(m, d)
