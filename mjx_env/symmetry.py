"""The Go2 task's left-right mirror symmetry (issue 40), as index maps over the config's layouts.

The mirror is the reflection about the robot's sagittal (x-z) plane, M = diag(1, -1, 1) in the base
frame (and, for the world-frame parts of the physics state, about the world's x-z plane):
- a polar vector (position, linear velocity, gravity) v -> M v: its y component negates;
- an axial vector (angular velocity) w -> -M w (det M = -1): w_x and w_z negate, w_y keeps;
- an orientation R -> M R M, for a unit quaternion (w, x, y, z) the quaternion (w, -x, y, -z);
- a hinge of axis a goes onto its mirror joint (axis a'), its angle times s = -(M a) . a'. On the
  Go2 the hips (abduction, axis x) negate and the thighs and calves (axis y) keep their sign;
  tests/test_symmetry.py derives these signs from the models' joint anchors and axes;
- commands: a lateral velocity and a turn negate (vy, yaw rate); vx, the height and a jump keep.

Every map is a `Mirror`: mirrored[..., i] = sign[i] * x[..., perm[i]], an involution (perm is its
own inverse, sign[perm] * sign = 1). It applies to numpy and JAX arrays alike, over any leading
batch axes; bridge/symmetry.py turns the same maps into torch tensors for rsl_rl's augmentation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mjx_env.config import JOINT_NAMES, LEGS, CommandConfig, EnvConfig, ObsConfig, TaskConfig
from mjx_env.errors import ConfigError

# Sign of each joint kind's angle under the mirror (see the module docstring for why).
JOINT_KIND_SIGN = {"hip": -1.0, "thigh": 1.0, "calf": 1.0}
POLAR = (1.0, -1.0, 1.0)        # v -> M v
AXIAL = (-1.0, 1.0, -1.0)       # w -> -M w
QUAT = (1.0, -1.0, 1.0, -1.0)   # (w, x, y, z) of M R M
# Each command by its CommandConfig range field: lateral velocity and yaw rate change sign.
COMMAND_SIGN = {"lin_vel_x_range": 1.0, "lin_vel_y_range": -1.0, "ang_vel_range": -1.0,
                "height_range": 1.0, "jump_range": 1.0}
# The vector terms of the observations, by their name in ObsConfig.policy_layout (and critic_layout).
TERM_SIGN = {"base_lin_vel": POLAR, "base_ang_vel": AXIAL, "projected_gravity": POLAR,
             "jump_phase": (1.0,), "base_height": (1.0,)}
JOINT_TERMS = ("joint_pos", "joint_vel", "last_action")


@dataclasses.dataclass(frozen=True, eq=False)
class Mirror:
    perm: np.ndarray     # (n,) int: mirrored[i] comes from x[perm[i]]
    sign: np.ndarray     # (n,) float32: times this

    def __post_init__(self):
        perm, sign = np.asarray(self.perm, np.int64), np.asarray(self.sign, np.float32)
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "sign", sign)
        if perm.shape != sign.shape or sorted(perm.tolist()) != list(range(perm.size)):
            raise ConfigError(f"a mirror map needs a permutation and one sign per entry, got {perm} and {sign}")
        if not (np.array_equal(perm[perm], np.arange(perm.size)) and np.all(sign * sign[perm] == 1.0)):
            raise ConfigError("a mirror map must be its own inverse (mirroring twice gives the input back)")

    @property
    def size(self) -> int:
        return int(self.perm.size)

    def __call__(self, x):
        """The mirror of x (numpy or JAX) along its last axis."""
        if x.shape[-1] != self.size:
            raise ConfigError(f"cannot mirror a vector of {x.shape[-1]} values with a map of {self.size}")
        return x[..., self.perm] * self.sign.astype(x.dtype)

    @staticmethod
    def signs(signs) -> "Mirror":
        """Entry-wise signs, no permutation."""
        s = np.asarray(signs, dtype=np.float32)
        return Mirror(np.arange(s.size), s)

    @staticmethod
    def concat(*maps: "Mirror") -> "Mirror":
        """One map over the concatenation of the maps' vectors, in order."""
        perms, offset = [], 0
        for m in maps:
            perms.append(m.perm + offset)
            offset += m.size
        return Mirror(np.concatenate(perms), np.concatenate([m.sign for m in maps]).astype(np.float32))

    def tile(self, frames: int) -> "Mirror":
        """The map of `frames` such vectors laid end to end (a history of observations)."""
        return Mirror.concat(*([self] * frames))


def mirror_joint_name(name: str) -> str:
    """The joint on the other side: FR <-> FL, RR <-> RL (the leg's second letter is its side)."""
    leg, rest = name.split("_", 1)
    other = leg[0] + {"R": "L", "L": "R"}[leg[1]]
    if other not in LEGS:
        raise ConfigError(f"joint {name}: leg {leg} has no mirror leg among {LEGS}")
    return f"{other}_{rest}"


def joint_mirror(names: tuple = JOINT_NAMES) -> Mirror:
    """The 12 joints in action order: the other side's joint, with the sign of its kind."""
    index = {n: i for i, n in enumerate(names)}
    perm = [index[mirror_joint_name(n)] for n in names]
    sign = [JOINT_KIND_SIGN[n.split("_")[1]] for n in names]
    return Mirror(np.asarray(perm), np.asarray(sign, np.float32))


def command_mirror(command: CommandConfig | None = None) -> Mirror:
    """The command vector [vx, vy, yaw rate, height, jump], in CommandConfig.ranges()'s order."""
    return Mirror.signs([COMMAND_SIGN[name] for name, _ in (command or CommandConfig()).ranges()])


def check_default_pose(env: EnvConfig) -> None:
    """Joint observations and actions are offsets from the default pose, so the mirror maps them as
    it maps angles only if the default pose is its own mirror image (the Go2's: hips at 0, left and
    right thighs and calves alike)."""
    default = np.asarray(env.default_angles(), np.float32)
    if not np.allclose(joint_mirror()(default), default, atol=1e-7):
        raise ConfigError("env.default_joint_angles is not left-right symmetric (hips 0, left = right): "
                          "the mirror of a joint offset would not be an offset from the default pose")


def layout_mirror(layout, command: CommandConfig | None = None) -> Mirror:
    """The map of a vector laid out as (name, size, per-element scale) terms (ObsConfig.policy_layout).
    The scales must be the same on mirrored entries, so that mirroring commutes with scaling."""
    maps = []
    for name, size, scale in layout:
        if name in JOINT_TERMS:
            m = joint_mirror()
        elif name == "commands":
            m = command_mirror(command)
        elif name in TERM_SIGN:
            m = Mirror.signs(TERM_SIGN[name])
        else:
            raise ConfigError(f"observation term {name!r} has no mirror rule (mjx_env/symmetry.py TERM_SIGN)")
        if m.size != size:
            raise ConfigError(f"observation term {name!r} has {size} values, its mirror rule {m.size}")
        scale = np.asarray(scale)
        if not np.array_equal(scale[m.perm], scale):
            raise ConfigError(f"observation term {name!r}: mirrored entries have different scales {tuple(scale)}")
        maps.append(m)
    return Mirror.concat(*maps)


def critic_layout(obs: ObsConfig, num_actions: int = 12) -> tuple:
    """The critic's observation (Go2Task.observe): the policy frame, then the base linear velocity
    (x lin_vel_scale) and the base height."""
    return obs.policy_layout(num_actions) + (("base_lin_vel", 3, (obs.lin_vel_scale,) * 3),
                                             ("base_height", 1, (1.0,)))


@dataclasses.dataclass(frozen=True, eq=False)
class TaskMirror:
    """Every mirror map of one task config: build once with `TaskMirror.of(cfg)`."""
    actions: Mirror        # (num_actions,) policy actions = joint offsets / action_scale
    commands: Mirror       # (5,) commands
    policy_frame: Mirror   # (num_obs,) one policy observation
    policy: Mirror         # (history_length * num_obs,) the actor's input: the history, oldest first
    critic: Mirror         # (num_privileged_obs,) the critic's observation
    lin_vel: Mirror        # (3,) a body-frame linear velocity (the estimator's target group)
    ang_vel: Mirror        # (3,) a body-frame angular velocity

    @staticmethod
    def of(cfg: TaskConfig) -> "TaskMirror":
        o, n = cfg.obs, cfg.env.num_actions
        if n != len(JOINT_NAMES):
            raise ConfigError(f"the mirror maps know the Go2's {len(JOINT_NAMES)} joints, not {n} actions")
        check_default_pose(cfg.env)
        frame = layout_mirror(o.policy_layout(n), cfg.command)
        critic = layout_mirror(critic_layout(o, n), cfg.command)
        if frame.size != o.num_obs or critic.size != o.num_privileged_obs:
            raise ConfigError(f"the layouts give {frame.size} policy and {critic.size} critic values, the config "
                              f"{o.num_obs} and {o.num_privileged_obs}")
        return TaskMirror(actions=joint_mirror(), commands=command_mirror(cfg.command), policy_frame=frame,
                          policy=frame.tile(o.history_length), critic=critic,
                          lin_vel=Mirror.signs(POLAR), ang_vel=Mirror.signs(AXIAL))


def asymmetric_settings(cfg: TaskConfig) -> list:
    """The settings under which the mirror image of a training sample is not an equally likely sample
    of the same task (a range of a sign-changing quantity that is not centred on 0, or a fixed command
    with a lateral or turning part). Mirrored samples are still valid physics, but augmentation then
    trains on commands or drifts the env never draws. Empty for the shipped tasks."""
    found = [f"command.{name}={lo_hi}" for name, lo_hi in cfg.command.ranges()
             if COMMAND_SIGN[name] < 0 and lo_hi[0] != -lo_hi[1]]
    fixed = cfg.command.fixed
    if fixed is not None and any(fixed[i] != 0 for i, s in enumerate(command_mirror(cfg.command).sign) if s < 0):
        found.append(f"command.fixed={fixed}")
    r = cfg.randomization
    # drawn with randomization on: the drift's x and y share one range (y must be centred), the yaw
    # drift turns, the base's centre of mass offset shares one range over x, y, z
    if r.enabled:
        found += [f"randomization.{name}={getattr(r, name)}"
                  for name in ("drift_accel_range", "drift_yaw_accel_range", "base_com_offset_range")
                  if getattr(r, name)[0] != -getattr(r, name)[1]]
    return found


def _physics_mirror(size: int, base_adr: int, base_sign: list, joint_idx) -> Mirror:
    """A qpos or qvel mirror: the free joint's entries signed in place, the 12 joints swapped and
    signed at their addresses, any other entry (none on the Go2) kept."""
    perm, sign = np.arange(size), np.ones(size, np.float32)
    sign[base_adr:base_adr + len(base_sign)] = base_sign
    j = joint_mirror()
    perm[joint_idx] = joint_idx[j.perm]
    sign[joint_idx] = j.sign
    return Mirror(perm, sign)


def qpos_mirror(model) -> Mirror:
    """The physics position of a Go2Model: base position (world; y negates), base quaternion
    (w, -x, y, -z), the 12 joints swapped and signed."""
    return _physics_mirror(model.nq, model.base_qpos_adr, POLAR + QUAT, model.qpos_idx)


def qvel_mirror(model) -> Mirror:
    """The physics velocity: the free joint's world linear velocity (polar) and body angular
    velocity (axial; the body frame mirrors with the world's, as R -> M R M), the joints' rates."""
    return _physics_mirror(model.nv, model.base_qvel_adr, POLAR + AXIAL, model.qvel_idx)


def mirror_state(state, model, maps: TaskMirror):
    """The mirror image of an env State (batched or not): physics, actions, commands, observations,
    the history and the logged base velocities. Scalars (rewards, counters, flags, the jump window)
    are mirror-invariant and kept; so is the PRNG key, so the mirrored env draws the same random
    numbers (a command resampled in a step is then the same draw, not its mirror)."""
    if state.dr:
        raise ConfigError("mirror_state needs an env without randomization: the per-body and per-joint draws "
                          "would have to change sides too")
    qp, qv = qpos_mirror(model), qvel_mirror(model)
    m = state.metrics
    return state.replace(
        qpos=qp(state.qpos), qvel=qv(state.qvel), last_action=maps.actions(state.last_action),
        commands=maps.commands(state.commands), obs=maps.policy_frame(state.obs),
        obs_history=maps.policy_frame(state.obs_history), critic_obs=maps.critic(state.critic_obs),
        metrics=dict(m, lin_vel=maps.lin_vel(m["lin_vel"]), ang_vel=maps.ang_vel(m["ang_vel"])))
