"""An MJX step that JAX can reverse-differentiate (workaround for mujoco-mjx 3.17).

Why: MJX's constraint solver (`mujoco.mjx._src.solver.solve`) runs its outer iterations in a
`lax.while_loop` whenever `opt.iterations > 1` (this model uses 4), and JAX cannot
reverse-differentiate a while_loop: `jax.grad` through `mjx.step` fails. Upstream issue
google-deepmind/mujoco#2259; PRs #3264 and #3583 replace the loop by a fixed-length scan, neither is
in a release yet. Cutting the solver to one iteration is not an option: it is a different
simulator from the one that produced the demonstrations.

What: `step(m, d)` is `mjx.step` with the solver's outer loop as a `lax.scan` of exactly
`opt.iterations` rounds, each running one solver iteration unless the solver's own stop test already
holds, in which case the round passes the solver state through untouched. The iterations taken are
the while_loop's, one for one, so the forward pass is the same; the line search inside is already a
scan of this kind upstream (`_while_loop_scan`), which is reused here. Only the loop is new: the
iteration itself (line search, constraint and gradient update, search direction) calls MJX's own
functions.

When it can go: once mujoco ships #3264 or #3583 (the solver's outer loop is a scan), delete this
module and use `mjx.step`. `SUPPORTED` names the versions it was checked against; another version
warns at import, as the private solver functions used here may have changed.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src import solver
from mujoco.mjx._src.types import DisableBit, SolverType

SUPPORTED = ("3.17.",)
if not mujoco.__version__.startswith(SUPPORTED):
    warnings.warn(f"mjx_env.mjx_patch was written for mujoco {SUPPORTED}, found {mujoco.__version__}: "
                  "check whether the MJX solver is a scan now (mujoco PR #3264/#3583) and drop this patch")


def solve(m, d):
    """MJX's constraint solve, its outer while_loop replaced by a fixed-length scan."""
    opt = m.opt

    def keep_going(ctx):  # the stop test of MJX's solver loop
        improvement = solver._rescale(m, d, ctx.prev_cost - ctx.cost)
        gradient = solver._rescale(m, d, mjx_math.norm(ctx.grad))
        return ~((ctx.solver_niter >= opt.iterations) | (improvement < opt.tolerance)
                 | (gradient < opt.tolerance))

    def iteration(ctx):
        ctx = solver._linesearch(m, d, ctx)
        grad, mgrad = ctx.grad, ctx.Mgrad
        ctx = solver._update_gradient(m, d, solver._update_constraint(m, d, ctx))
        if opt.solver == SolverType.NEWTON:
            search = -ctx.Mgrad
        else:  # conjugate gradient, Polak-Ribiere with restart
            beta = jnp.dot(ctx.grad, ctx.Mgrad - mgrad) / jnp.maximum(mujoco.mjMINVAL, jnp.dot(grad, mgrad))
            search = -ctx.Mgrad + jnp.maximum(0.0, beta) * ctx.search
        return ctx.replace(search=search, solver_niter=ctx.solver_niter + 1)

    # Warm start: the cheaper of the previous step's and the unconstrained acceleration.
    qacc = d.qacc_smooth
    if not opt.disableflags & DisableBit.WARMSTART:
        warm = solver.Context.create(m, d.replace(qacc=d.qacc_warmstart), grad=False)
        smooth = solver.Context.create(m, d.replace(qacc=d.qacc_smooth), grad=False)
        qacc = jnp.where(warm.cost < smooth.cost, d.qacc_warmstart, d.qacc_smooth)
    ctx = solver.Context.create(m, d.replace(qacc=qacc))
    if opt.iterations == 1:  # MJX runs its single iteration unconditionally
        ctx = iteration(ctx)
    else:
        ctx = solver._while_loop_scan(keep_going, iteration, ctx, opt.iterations)
    return d.tree_replace({"qfrc_constraint": ctx.qfrc_constraint, "qacc": ctx.qacc,
                           "_impl.efc_force": ctx.efc_force})


_lock = threading.Lock()


@contextlib.contextmanager
def _scan_solver():
    # mjx.step looks the solver up as `solver.solve` when it is traced; swap it for the trace.
    with _lock:
        original, solver.solve = solver.solve, solve
        try:
            yield
        finally:
            solver.solve = original


def step(m, d):
    """mjx.step with the scan solver: same physics, and jax.grad / jax.vjp work through it."""
    with _scan_solver():
        return mjx.step(m, d)
