"""Domain randomization in JAX: per-env physical parameters, pushes and observation noise.

The draws live in the env state (`State.dr`, drawn at every episode reset) and become model fields
through one pure function, `Randomizer.fields`, used by both backends:
- MJX replaces those fields of its mjx.Model inside the vmapped step: the model enters the physics
  as an argument, so new draws compile nothing (MuJoCo Playground's batched `(model, in_axes)`);
- the mujoco backend writes the same values into its own MjModel of each env when the env resets.
Pushes and observation noise are task code, shared by both backends like every other term.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from mjx_env.errors import ConfigError
from mjx_env.math import rotate_inverse


@dataclasses.dataclass(frozen=True)
class Draw:
    name: str            # key in State.dr (and dr_<name> in the datasets)
    range: str           # its (low, high) field of RandomizationConfig
    shape: str           # "": one number; "xy", "xyz": 2, 3 numbers; "body": one per body; "dof": one per joint dof
    nominal: float | None  # the value that leaves the model as loaded (None: taken from the model)
    nonnegative: bool    # below 0 is not physics
    stat: str            # logged as: "value", "norm" (of the vector) or "mean" (over bodies / dofs)
    applies: str         # what Randomizer.fields does with it


# One row per draw; the order is the order of the PRNG splits (a new draw goes last, so the others
# keep their numbers). sample, stats, the config's range checks and nominal() all read this table.
DRAWS = (
    Draw("friction", "friction_range", "", None, True, "value", "sets the feet's and floor's sliding friction"),
    Draw("added_base_mass", "added_base_mass_range", "", 0.0, False, "value", "adds kg to the base body"),
    Draw("base_com_offset", "base_com_offset_range", "xyz", 0.0, False, "norm", "moves the base's centre of mass"),
    Draw("link_mass_scale", "link_mass_scale_range", "body", 1.0, True, "mean", "scales every body's mass, inertia"),
    Draw("kp_scale", "kp_scale_range", "dof", 1.0, True, "mean", "scales each actuator's kp"),
    Draw("kd_scale", "kd_scale_range", "dof", 1.0, True, "mean", "scales each actuator's kd"),
    Draw("joint_frictionloss", "joint_frictionloss_range", "dof", 0.0, True, "mean", "sets each joint's friction loss"),
    Draw("joint_damping_scale", "joint_damping_scale_range", "dof", 1.0, True, "mean", "scales each joint's damping"),
    Draw("joint_armature_scale", "joint_armature_scale_range", "dof", 1.0, True, "mean", "scales each joint's armature"),
    # Opt-in (ranges (0, 0) by default): the feet's spin and rolling resistance. A non-zero range
    # turns the foot contacts to condim 6, as Menagerie's feet (contact_model).
    Draw("foot_torsional_friction", "foot_torsional_friction_range", "", 0.0, True, "value",
         "sets the feet's and floor's torsional friction"),
    Draw("foot_rolling_friction", "foot_rolling_friction_range", "", 0.0, True, "value",
         "sets the feet's and floor's rolling friction"),
    # Opt-in ((0, 0) by default): a steady horizontal acceleration of the whole robot for the
    # episode, in the world frame (Randomizer.drift), as if gravity were tilted by atan(|a| / g).
    # Not a model field: an open-loop gait walks at another speed under it, so only a policy that
    # reads its own velocity keeps to the command.
    Draw("drift_accel", "drift_accel_range", "xy", 0.0, False, "norm",
         "adds its acceleration times dt to the base's velocity every control step"),
    # Its turning twin (opt-in too): a steady angular acceleration about the vertical (rad/s^2).
    Draw("drift_yaw_accel", "drift_yaw_accel_range", "", 0.0, False, "value",
         "adds its angular acceleration times dt to the base's yaw rate every control step"),
)


def nominal(r, mj_model):
    """r (a RandomizationConfig) with every draw at its nominal value and no pushes: the per-env model machinery alone
    (bench.py's dr_nominal). Friction, a single draw for feet and floor, is the model's largest
    geom friction."""
    own = {"friction": float(mj_model.geom_friction[:, 0].max())}
    return dataclasses.replace(r, push=False, **{d.range: (own[d.name] if d.nominal is None else d.nominal,) * 2
                                                 for d in DRAWS})


# The model fields a draw changes (all jax.Array fields of mjx.Model, so they can be batched).
FIELDS = ("geom_friction", "body_mass", "body_inertia", "body_ipos", "actuator_gainprm", "actuator_biasprm",
          "dof_frictionloss", "dof_damping", "dof_armature")
# Independent PRNG streams folded out of an env's key, so that the seed env's own stream of
# random numbers is untouched (bit-identical) whether or not randomization is on.
DRAW_STREAM, PUSH_STREAM, NOISE_STREAM = 101, 102, 103
LIN_VEL_NOISE_STREAM = 104      # the measured base velocity of --actor-lin-vel


class Randomizer:
    def __init__(self, model, cfg):
        """model: a mjx_env.model.Go2Model; cfg: a TaskConfig. (Not imported here: config.py reads
        DRAWS for its range checks.)"""
        self.cfg = r = cfg.randomization
        self.dt = cfg.env.dt
        m = model.mj_model
        self.base_body = model.base_body
        self.bv = model.base_qvel_adr
        self.dofs = np.asarray(model.qvel_idx)
        feet = [g for g in model.foot_geom_ids if g >= 0]
        planes = [g for g in range(m.ngeom) if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE]
        # Written on both sides of the foot-floor pair: with equal priorities MuJoCo takes the max of
        # the two, with a priority geom (Menagerie's feet) that geom's value; both give the draw.
        self.friction_geoms = np.array(sorted(set(feet + planes)), np.int32)
        self.nbody = m.nbody
        self.nominal = {k: jnp.asarray(getattr(m, k), jnp.float32) for k in FIELDS}
        base_mass = float(m.body_mass[self.base_body])
        lowest = base_mass * r.link_mass_scale_range[0] + r.added_base_mass_range[0]
        if r.enabled and lowest <= 0:
            raise ConfigError(f"randomization.added_base_mass_range {r.added_base_mass_range} can make the base "
                              f"mass ({base_mass:.2f} kg nominal) zero or negative")
        self.push_steps = tuple(max(1, int(round(s / self.dt))) for s in r.push_interval_range_s)
        self.foot_geoms = np.array(feet, np.int32)
        # Torsional and rolling friction act only in condim-6 contacts; with both ranges at 0 the
        # model and its fields stay exactly as loaded.
        self.rolling = r.enabled and max(r.foot_torsional_friction_range[1], r.foot_rolling_friction_range[1]) > 0
        # With a drift range at (0, 0) the step is exactly as without its row.
        self.drift_xy = r.enabled and tuple(r.drift_accel_range) != (0.0, 0.0)
        self.drift_yaw = r.enabled and tuple(r.drift_yaw_accel_range) != (0.0, 0.0)
        self.drifts = self.drift_xy or self.drift_yaw
        self.bq = model.base_qpos_adr

    # ---- per-env physical parameters ---------------------------------------------------------
    def sample(self, key: jax.Array) -> dict:
        """The draws of one env (uniform in each range), a dict of small arrays."""
        k = jax.random.split(jax.random.fold_in(key, DRAW_STREAM), len(DRAWS))
        shapes = {"": (), "xy": (2,), "xyz": (3,), "body": (self.nbody,), "dof": (len(self.dofs),)}
        out = {}
        for i, d in enumerate(DRAWS):
            lo, hi = getattr(self.cfg, d.range)
            out[d.name] = jax.random.uniform(k[i], shapes[d.shape], minval=lo, maxval=hi)
        return out

    def fields(self, d: dict) -> dict:
        """Model fields of one env from its draws. Pure JAX; the one definition both backends use."""
        nom, base, dofs = self.nominal, self.base_body, self.dofs
        scale = d["link_mass_scale"]
        # Actuator i drives action i (model.py rebuilds them): kp in gainprm[0] and -kp in
        # biasprm[1], -kd in biasprm[2].
        gain = nom["actuator_gainprm"].at[:, 0].multiply(d["kp_scale"])
        bias = nom["actuator_biasprm"].at[:, 1].multiply(d["kp_scale"]).at[:, 2].multiply(d["kd_scale"])
        friction = nom["geom_friction"].at[self.friction_geoms, 0].set(d["friction"])
        if self.rolling:
            friction = (friction.at[self.friction_geoms, 1].set(d["foot_torsional_friction"])
                        .at[self.friction_geoms, 2].set(d["foot_rolling_friction"]))
        return dict(
            geom_friction=friction,
            body_mass=(nom["body_mass"] * scale).at[base].add(d["added_base_mass"]),
            # Scaled links keep their shape (inertia scales with mass); the added base mass is a
            # point mass at the centre of mass, which adds no inertia about it.
            body_inertia=nom["body_inertia"] * scale[:, None],
            body_ipos=nom["body_ipos"].at[base].add(d["base_com_offset"]),
            actuator_gainprm=gain,
            actuator_biasprm=bias,
            dof_frictionloss=nom["dof_frictionloss"].at[dofs].set(d["joint_frictionloss"]),
            dof_damping=nom["dof_damping"].at[dofs].multiply(d["joint_damping_scale"]),
            dof_armature=nom["dof_armature"].at[dofs].multiply(d["joint_armature_scale"]),
        )

    def contact_model(self, m: mujoco.MjModel) -> mujoco.MjModel:
        """The MjModel both backends step when the feet's torsional or rolling friction is drawn: its
        foot geoms at condim 6 (the contact takes the larger condim of its two geoms), so that those
        coefficients act. Otherwise m itself."""
        if not self.rolling:
            return m
        m = copy.copy(m)
        m.geom_condim[self.foot_geoms] = 6
        return m

    def mjx_model(self, m: mujoco.MjModel) -> mujoco.MjModel:
        """The MjModel to hand to mjx.put_model. MJX decides at put_model which dofs get friction-loss
        constraint rows (dof_frictionloss > 0), so randomized joints need a non-zero placeholder;
        the value itself comes from the draws at every step."""
        m = self.contact_model(m)
        if not (self.cfg.enabled and self.cfg.joint_frictionloss_range[1] > 0):
            return m
        m = copy.copy(m)
        m.dof_frictionloss[self.dofs] = np.maximum(m.dof_frictionloss[self.dofs], 1e-3)
        return m

    @staticmethod
    def stats(d: dict) -> dict:
        """One number per env and draw, for logging."""
        how = {"value": lambda x: x, "norm": lambda x: jnp.linalg.norm(x, axis=-1),
               "mean": lambda x: jnp.mean(x, axis=-1)}
        return {(f"{s.name}_norm" if s.stat == "norm" else s.name): how[s.stat](d[s.name]) for s in DRAWS}

    # ---- pushes -------------------------------------------------------------------------------
    def push_interval(self, key: jax.Array) -> jax.Array:
        lo, hi = self.push_steps
        return jax.random.randint(key, (), lo, hi + 1, dtype=jnp.int32)

    def push(self, key: jax.Array, qvel: jax.Array, countdown: jax.Array):
        """Count down; at zero, add a horizontal kick of a drawn magnitude in a drawn direction to the
        base's world-frame linear velocity, and draw the next interval."""
        k_mag, k_dir, k_next = jax.random.split(jax.random.fold_in(key, PUSH_STREAM), 3)
        countdown = countdown - 1
        kick = countdown <= 0
        lo, hi = self.cfg.push_velocity_range
        mag = jax.random.uniform(k_mag, minval=lo, maxval=hi)
        angle = jax.random.uniform(k_dir, minval=0.0, maxval=2 * math.pi)
        dv = jnp.where(kick, mag, 0.0) * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        qvel = qvel.at[self.bv:self.bv + 2].add(dv)
        return qvel, jnp.where(kick, self.push_interval(k_next), countdown)

    # ---- drift ---------------------------------------------------------------------------------
    def drift(self, d: dict, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
        """The episode's drift acting for one control period: its acceleration times dt added to the
        base's world-frame horizontal velocity (the joints' velocities unchanged, so every body
        gains the same), as pushes add theirs, and its yaw acceleration times dt to the turn about
        the vertical. A force spread over the period, applied at its start."""
        if self.drift_xy:
            qvel = qvel.at[self.bv:self.bv + 2].add(d["drift_accel"] * self.dt)
        if self.drift_yaw:
            # a free joint's angular velocity is in the base's own frame: the vertical as seen from it
            up = rotate_inverse(qpos[self.bq + 3:self.bq + 7], jnp.array([0.0, 0.0, 1.0], jnp.float32))
            qvel = qvel.at[self.bv + 3:self.bv + 6].add(up * d["drift_yaw_accel"] * self.dt)
        return qvel


def write_fields(models: list, fields: dict, rows) -> None:
    """Write per-env field values (numpy, leading env axis) into the envs' own MjModels."""
    for i in rows:
        mi = models[i]
        for name, value in fields.items():
            getattr(mi, name)[...] = value[i]
