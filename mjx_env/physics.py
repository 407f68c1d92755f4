"""Physics backends. Each advances all envs by one control period: (qpos, qvel, ctrl) -> (qpos, qvel).

- MjxPhysics: MJX, jit + vmap, substeps in lax.scan. Pure JAX: it is traced into the env step,
  so on a GPU the whole step (task + physics) is one compiled program on the device. Two MJX
  implementations: impl="jax" (the default) and impl="warp", MuJoCo Warp's kernels called from
  the same jitted program (an XLA custom call; the arrays stay JAX arrays). Only the physics
  call differs between them: the task code around it is the same.
- MujocoPhysics: C MuJoCo through mujoco.rollout, one thread per core, GIL released. Float64
  inside, float32 state between steps (the JAX task's dtype).

Both start every control period from (qpos, qvel) with a cold solver warm-start and hold ctrl
for all substeps, so the same state and ctrl give the same physics up to float precision.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import sys

import jax
import mujoco
import numpy as np

from mjx_env.config import WarpConfig
from mjx_env.errors import ModelError, UserError
from mjx_env.model import Go2Model

BACKENDS = ("mjx", "mujoco")
IMPLS = ("jax", "warp")
WARP_INSTALL = 'pip install "mujoco-mjx[warp]" (or pip install -e ".[warp]")'


def _import_mjx():
    # mujoco.mjx (3.17, mujoco/mjx/warp/__init__.py) print()s "Failed to import warp: ..." when the
    # optional Warp implementation is absent; it is not used here. It is a print, not a log
    # record, so only those lines of the import's stdout are dropped: no logger is touched
    # (JAX_LOG_COMPILES and every other log keep working), anything else printed is passed on.
    if "mujoco.mjx" not in sys.modules:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            from mujoco import mjx  # noqa: F401
        kept = [l for l in out.getvalue().splitlines(True) if not re.match(r"Failed to import (mujoco_)?warp\b", l)]
        sys.stdout.write("".join(kept))
    from mujoco import mjx
    return mjx


def check_warp() -> None:
    """One line if MJX's Warp implementation cannot be used (warp-lang is an optional extra)."""
    _import_mjx()
    from mujoco.mjx import warp as mjxw
    if not mjxw.WARP_INSTALLED:
        raise UserError(f"--mjx-impl warp needs MJX's Warp implementation (warp-lang): {WARP_INSTALL}")


def check_impl(impl: str, backend: str = "mjx") -> None:
    """One line for an unknown implementation, a missing extra, or warp with a backend other than mjx."""
    if impl not in IMPLS:
        raise UserError(f"unknown --mjx-impl {impl!r}: choose jax or warp")
    if impl != "jax" and backend != "mjx":
        raise UserError(f"--mjx-impl {impl} chooses MJX's implementation: add --backend mjx "
                        f"(--backend {backend} steps C MuJoCo)")
    if impl == "warp":
        check_warp()


# MuJoCo Warp's overflow bits (mujoco_warp OverflowType) that mean lost contacts or constraint rows.
# Not ITERATIONS / LS_ITERATIONS: a solver that stops at its cap drops nothing.
WARP_ITERATION_BITS = (1 << 9) | (1 << 10)


def warp_overflow_names(bits: int) -> str:
    from mujoco.mjx.third_party.mujoco_warp._src.types import OverflowType
    return ", ".join(t.name for t in OverflowType if t.value and t.value & bits and t.name != "ALL"
                     and t.value & WARP_ITERATION_BITS == 0)


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class MjxPhysics:
    name = "mjx"

    # On the CPU, XLA runs the vmapped solver loops of a large batch with its intra-op thread
    # pool; on this 2-core machine (jax 0.10.2) batches of 256+ envs stalled with every thread
    # idle. lax.map over chunks of 64 envs (vmapped inside) avoids it and costs nothing on a
    # CPU. On a GPU the whole batch is one vmap, as it should be.
    cpu_chunk = 64

    def __init__(self, model: Go2Model, substeps: int, device=None, mj_model=None,
                 differentiable: bool = False, impl: str = "jax", num_envs: int | None = None,
                 warp: WarpConfig | None = None):
        """impl="warp" needs num_envs (its contact buffer is shared by the whole batch)."""
        if impl == "warp" and differentiable:
            raise UserError("the differentiable simulator (Φ) runs on MJX's JAX implementation only: "
                            "MuJoCo Warp's step is not reverse-differentiable (use --mjx-impl jax)")
        check_impl(impl)
        mjx = _import_mjx()
        self.impl = impl
        self.substeps = substeps
        self.on_cpu = (device or jax.devices()[0]).platform == "cpu"
        m = model.mj_model if mj_model is None else mj_model
        if impl == "warp":
            self._init_warp(mjx, m, device, num_envs, warp or WarpConfig())
        else:
            self.mx = mjx.put_model(m, device=device, impl="jax")
            self.d0 = mjx.make_data(self.mx, device=device, impl="jax")
        self._step = mjx.step
        if differentiable:
            # Φ's physics: MJX's step, the same numbers, with its constraint solve differentiated
            # implicitly (mjx_patch), as JAX cannot reverse-differentiate the solver's while_loop.
            from mjx_env import mjx_patch
            self._step = mjx_patch.step

    def _init_warp(self, mjx, m, device, num_envs, warp: WarpConfig):
        if num_envs is None:
            raise ValueError("MjxPhysics(impl='warp') needs num_envs to size its contact buffer")
        m = copy.copy(m)
        # MuJoCo Warp refuses mjDSBL_AUTORESET (load_go2 sets it for C MuJoCo; Warp never resets).
        m.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
        # Its solver needs its own cap to agree with C MuJoCo (WarpConfig explains the numbers).
        warp.set_caps(m)
        # Buffers: the JAX implementation allocates every contact its collision functions can make
        # and every constraint row they can need, so its sizes bound one world's; Warp's contact
        # buffer is one pool for the whole batch. The margin covers collision functions of Warp
        # that emit more points per pair than JAX's.
        dj = mjx.make_data(mjx.put_model(m, impl="jax", device=jax.devices("cpu")[0]), impl="jax",
                           device=jax.devices("cpu")[0])
        self.ncon_world = int(np.ceil(dj._impl.contact.dist.shape[0] * warp.buffer_margin))
        self.njmax = int(np.ceil(dj._impl.efc_J.shape[0] * warp.buffer_margin))
        self.naconmax = self.ncon_world * int(num_envs)
        self.num_envs = int(num_envs)
        self.mx = mjx.put_model(m, device=device, impl="warp")
        # Overflows are read from Data.overflow by the env (one integer, every few steps), not
        # printed from inside Warp's kernels once per world and step.
        self.mx = self.mx.tree_replace({"opt._impl.warn_overflow": 0})
        self.d0 = mjx.make_data(m, device=device, impl="warp", naconmax=self.naconmax, njmax=self.njmax)

    def advance_one(self, qpos, qvel, ctrl, fields=None):
        """One env; `fields` (per-env model fields, e.g. randomized masses) replace the model's."""
        d = self.advance_data(qpos, qvel, ctrl, fields)
        return d.qpos, d.qvel

    def advance_data(self, qpos, qvel, ctrl, fields=None):
        """advance_one's whole mjx.Data at the end of the control period."""
        mx = self.mx if fields is None else self.mx.tree_replace(fields)
        d = self.d0.replace(qpos=qpos, qvel=qvel, ctrl=ctrl)

        def body(d, _):
            return self._step(mx, d), None

        d, _ = jax.lax.scan(body, d, None, length=self.substeps)
        return d

    def advance_checked(self, qpos, qvel, ctrl, fields=None):
        """impl="warp": the batch's step and an int32 scalar, the OR of its worlds' buffer-overflow
        bits in this control period (each period starts from d0, whose bits are clear, and Warp
        keeps them sticky across substeps). One vmap over the whole batch: Warp runs its own
        kernels, so the CPU chunking of the JAX path does not apply, and naconmax is sized for it."""
        if qpos.shape[0] != self.num_envs:
            raise ValueError(f"MuJoCo Warp's buffers were sized for {self.num_envs} envs, got {qpos.shape[0]}")
        d = jax.vmap(self.advance_data)(qpos, qvel, ctrl, fields)
        bits = jax.lax.reduce(d._impl.overflow.astype(np.int32), np.int32(0), jax.lax.bitwise_or, (0,))
        return d.qpos, d.qvel, bits & ~np.int32(WARP_ITERATION_BITS)

    def advance(self, qpos, qvel, ctrl, fields=None):
        if self.impl == "warp":
            return self.advance_checked(qpos, qvel, ctrl, fields)[:2]
        if self.on_cpu and qpos.shape[0] > self.cpu_chunk:
            return jax.lax.map(lambda x: self.advance_one(*x), (qpos, qvel, ctrl, fields),
                               batch_size=self.cpu_chunk)
        return jax.vmap(self.advance_one)(qpos, qvel, ctrl, fields)


class MujocoPhysics:
    name = "mujoco"

    def __init__(self, model: Go2Model, substeps: int, num_envs: int, nthread: int | None = None,
                 per_env_models: bool = False, contact_model=None):
        """contact_model: maps the model each env copies to the one it steps (the randomizer's
        condim-6 feet); only with per_env_models."""
        import copy

        from mujoco import rollout

        m = model.mj_model
        self.m, self.substeps, self.num_envs = m, substeps, num_envs
        self.nthread = cpu_threads() if nthread is None else max(1, int(nthread))
        self.nq, self.nv, self.nu = m.nq, m.nv, m.nu
        self.nstate = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        if self.nstate != 1 + m.nq + m.nv:  # time, qpos, qvel: no actuator or plugin state
            raise ModelError(f"model {model.xml_path} has actuator activations or plugin state, which the "
                             "mujoco backend does not carry between steps; remove them or use --backend mjx")
        # One MjModel per env when its parameters are randomized (written on reset), else shared.
        lean = model.physics_mj_model or m
        lean = contact_model(lean) if (per_env_models and contact_model) else lean
        self.models = [copy.copy(lean) for _ in range(num_envs)] if per_env_models else [m] * num_envs
        self.datas = [mujoco.MjData(self.models[0]) for _ in range(self.nthread)]
        self.pool = rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        # Buffers reused every step (rollout writes into them).
        self.init_state = np.zeros((num_envs, self.nstate))
        self.control = np.zeros((num_envs, substeps, self.nu))
        self.out_state = np.zeros((num_envs, substeps, self.nstate))
        self.out_sensor = np.zeros((num_envs, substeps, m.nsensordata))
        # A few chunks per thread balance load without much scheduling overhead.
        self.chunk = max(1, num_envs // (self.nthread * 4))

    def rollout(self) -> None:
        """The raw physics: all envs, all substeps, from and into the preallocated buffers."""
        self.pool.rollout(self.models, self.datas, self.init_state, self.control,
                          skip_checks=True, nstep=self.substeps, state=self.out_state,
                          sensordata=self.out_sensor, chunk_size=self.chunk,
                          control_spec=mujoco.mjtState.mjSTATE_CTRL.value, initial_warmstart=None)

    def advance(self, qpos, qvel, ctrl):
        """Host arrays in, host arrays out (float64 inside, float32 out)."""
        nq = self.nq
        self.init_state[:, 1:1 + nq] = qpos
        self.init_state[:, 1 + nq:] = qvel
        self.control[:] = np.asarray(ctrl)[:, None, :]
        self.rollout()
        last = self.out_state[:, -1]
        return last[:, 1:1 + nq].astype(np.float32), last[:, 1 + nq:].astype(np.float32)

    def close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None
