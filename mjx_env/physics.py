"""Physics backends. Each advances all envs by one control period: (qpos, qvel, ctrl) -> (qpos, qvel).

- MjxPhysics: MJX, jit + vmap, substeps in lax.scan. Pure JAX: it is traced into the env step,
  so on a GPU the whole step (task + physics) is one compiled program on the device.
- MujocoPhysics: C MuJoCo through mujoco.rollout, one thread per core, GIL released. Float64
  inside, float32 state between steps (the JAX task's dtype).

Both start every control period from (qpos, qvel) with a cold solver warm-start and hold ctrl
for all substeps, so the same state and ctrl give the same physics up to float precision.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys

import jax
import mujoco
import numpy as np

from mjx_env.errors import ModelError
from mjx_env.model import Go2Model

BACKENDS = ("mjx", "mujoco")


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
                 differentiable: bool = False):
        mjx = _import_mjx()
        self.substeps = substeps
        self.on_cpu = (device or jax.devices()[0]).platform == "cpu"
        self.mx = mjx.put_model(model.mj_model if mj_model is None else mj_model, device=device, impl="jax")
        self.d0 = mjx.make_data(self.mx, device=device, impl="jax")
        self._step = mjx.step
        if differentiable:
            # Φ's physics: MJX's step, the same numbers, with its constraint solve differentiated
            # implicitly (mjx_patch), as JAX cannot reverse-differentiate the solver's while_loop.
            from mjx_env import mjx_patch
            self._step = mjx_patch.step

    def advance_one(self, qpos, qvel, ctrl, fields=None):
        """One env; `fields` (per-env model fields, e.g. randomized masses) replace the model's."""
        mx = self.mx if fields is None else self.mx.tree_replace(fields)
        d = self.d0.replace(qpos=qpos, qvel=qvel, ctrl=ctrl)

        def body(d, _):
            return self._step(mx, d), None

        d, _ = jax.lax.scan(body, d, None, length=self.substeps)
        return d.qpos, d.qvel

    def advance(self, qpos, qvel, ctrl, fields=None):
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
