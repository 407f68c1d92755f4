"""The DynaFlow NPZ format: demonstrations as DynaFlow code reads them, plus what Φ needs to replay them.

    python collect_trajectories.py --out demos.npz ...             # collect straight into NPZ
    python collect_trajectories.py convert demos.h5 --out demos.npz # or convert an HDF5 dataset

Per episode (object arrays of E float32 arrays, one row per control step; row t is the state at
which action t was taken, as in the HDF5):
  states         (T, nq+nv)  MuJoCo qpos then qvel (37 for the Go2): base position, quaternion w x y z,
                             joints in model order, then base linear velocity (world frame), base
                             angular velocity (base frame), joint velocities. `state_names` names them.
  conditionings  (T, 36)     projected gravity 3, base-frame linear velocity 3, base-frame angular
                             velocity 3, joint positions 12 (absolute, rad, NOT relative to the default
                             pose), joint velocities 12, command vx, vy, yaw rate 3; joints in policy
                             order. `conditioning_names` names them.
  actions        (T, 12)     raw policy actions (clipped, before the action scale), policy order
  last_actions   (T, 12)     the action before row t: with the env's one-step latency it sets the PD
                             targets of step t (zero at an episode's start). These are the APPLIED
                             actions, DynaFlow's U: Go2Dynamics.phi(states[t], last_actions[t:t+H])
                             gives states[t:t+H+1]
  applied_actions (T, 12)    the same arrays as last_actions, under the name a DynaFlow client looks for
  commands       (T, 5)      vx, vy, yaw rate, height, jump
Per file: episode_lengths (E,) int64, fell (E,) bool, with --randomize dr_<draw> (E, ...) the episode's
physics draws (Φ, built on the nominal model, does not replay such episodes); dt, sim_dt, substeps, action_scale, clip_actions,
simulate_action_latency, kp, kd, torque_limits (12,), default_joint_pos (12,), joint_names (12,),
state_names, conditioning_names, conditioning_joint_pos ("absolute"), model_path, model_sha256,
checkpoint_sha256, backend, task (the policy's train.py --task, or ""), configs (JSON of every task config), format, format_version;
applied_action_min, _max, _mean, _std (12,) float64: per joint (policy order), over every row of every
episode's applied actions, the range a DynaFlow model must be able to produce (applied_action_stats).
The applied_* keys were added to format_version 1 without a bump: they are new keys only, every
earlier key is unchanged, so v1 readers read these files as before.

Loading needs nothing but numpy. The per-episode arrays are numpy object arrays (episodes differ in
length; this is the layout DynaFlow's loader expects), stored pickled, so they need
`np.load(path, allow_pickle=True)`; the pickles hold plain float32 ndarrays only. Every per-file key
loads with allow_pickle=False.

A window for Φ: x0 = states[e][t] and U = applied_actions[e][t:t+H] give states[e][t:t+H+1] through
Go2Dynamics.phi(x0, U); in the env's form, rollout(x0, last_actions[e][t], actions[e][t:t+H]).
"""
from __future__ import annotations

import json

import numpy as np

FORMAT = "go2-dynaflow-npz"
FORMAT_VERSION = 1
PER_EPISODE = ("states", "conditionings", "actions", "last_actions", "applied_actions", "commands")


def conditioning_names(joint_names) -> list:
    return ([f"gravity_{a}" for a in "xyz"] + [f"base_lin_vel_{a}" for a in "xyz"]
            + [f"base_ang_vel_{a}" for a in "xyz"] + [f"{j}.pos" for j in joint_names]
            + [f"{j}.vel" for j in joint_names] + ["command_vx", "command_vy", "command_yaw_rate"])


def state_names(mj_model) -> list:
    """Names of qpos then qvel entries, in MuJoCo's layout (free joint: position, quaternion w x y z)."""
    import mujoco
    m, q, v = mj_model, [], []
    for j in range(m.njnt):
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"
        if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            name = "base" if name == f"joint{j}" else name
            q += [f"qpos.{name}_{s}" for s in ("x", "y", "z", "qw", "qx", "qy", "qz")]
            v += [f"qvel.{name}_{s}" for s in ("vx", "vy", "vz", "wx", "wy", "wz")]
        elif m.jnt_type[j] == mujoco.mjtJoint.mjJNT_BALL:
            q += [f"qpos.{name}_{s}" for s in ("qw", "qx", "qy", "qz")]
            v += [f"qvel.{name}_{s}" for s in ("wx", "wy", "wz")]
        else:
            q.append(f"qpos.{name}")
            v.append(f"qvel.{name}")
    return q + v


def projected_gravity(quat: np.ndarray) -> np.ndarray:
    """World gravity direction (0, 0, -1) in the base frame, for quaternions (T, 4) w x y z.

    The task's formula (mjx_env.task.Go2Task.base), in numpy: R(q)^T g of the normalised quaternion."""
    q = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    w, u = q[:, :1], q[:, 1:]
    g = np.broadcast_to(np.array([0.0, 0.0, -1.0], q.dtype), u.shape)
    t = 2.0 * np.cross(u, g)
    return (g - w * t + np.cross(u, t)).astype(np.float32)


def conditionings(steps: dict) -> np.ndarray:
    """(T, 36) conditioning rows from the per-step fields of the HDF5 layout."""
    return np.concatenate([projected_gravity(steps["base_quat"]), steps["base_lin_vel"], steps["base_ang_vel"],
                           steps["joint_pos"], steps["joint_vel"], steps["commands"][:, :3]],
                          axis=1).astype(np.float32)


def applied_action_stats(applied) -> dict:
    """Per-joint min, max, mean and std (12,) of the applied actions over every row of every episode.

    `applied`: the episodes' applied actions (last_actions), (T_e, 12) each. A bounded model output
    y in [-1, 1] (tanh) reaches them as U = (max + min) / 2 + y (max - min) / 2 (README)."""
    a = np.concatenate([np.asarray(x, np.float64) for x in applied], axis=0)
    return dict(applied_action_min=a.min(0), applied_action_max=a.max(0),
                applied_action_mean=a.mean(0), applied_action_std=a.std(0))


def ragged(arrays) -> np.ndarray:
    """A 1-D object array of arrays. np.array(list, dtype=object) would make a 3-D array of scalars
    when every episode has the same length, which DynaFlow's loader would misread."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def npz_arrays(steps: dict, episodes: dict, meta: dict) -> dict:
    """Every array of the NPZ file, from a dataset in the HDF5 layout (demos.hdf5.Dataset's steps,
    episodes and meta, with configs as a dict and joint names as a list)."""
    env = meta["configs"]["env"]
    joints = list(meta["joint_names"])
    starts, lengths = episodes["start"], episodes["length"]
    cuts = [slice(int(s), int(s) + int(n)) for s, n in zip(starts, lengths)]
    per_step = dict(
        states=np.concatenate([steps["qpos"], steps["qvel"]], axis=1).astype(np.float32),
        conditionings=conditionings(steps),
        actions=steps["actions"].astype(np.float32),
        last_actions=steps["last_action"].astype(np.float32),
        commands=steps["commands"].astype(np.float32),
    )
    default = dict(env["default_joint_angles"])
    from mjx_env.model import torque_limit
    limits = [torque_limit(j, env["torque_limit_hip"], env["torque_limit_knee"]) for j in joints]
    names = meta.get("state_names") or [f"qpos[{i}]" for i in range(steps["qpos"].shape[1])] \
        + [f"qvel[{i}]" for i in range(steps["qvel"].shape[1])]
    out = {k: ragged([v[c] for c in cuts]) for k, v in per_step.items()}
    out["applied_actions"] = out["last_actions"]       # an alias: the same arrays under DynaFlow's name
    out.update(applied_action_stats(out["last_actions"]))
    # the physics each episode ran with under --randomize: Φ with the nominal model does not replay those
    out.update({k: np.asarray(v) for k, v in episodes.items() if k.startswith("dr_")})
    out.update(
        episode_lengths=np.asarray(lengths, np.int64),
        fell=np.asarray(episodes["fell"], bool),
        dt=np.float64(meta["dt"]), sim_dt=np.float64(meta["sim_dt"]),
        substeps=np.int64(round(meta["dt"] / meta["sim_dt"])),
        action_scale=np.float64(env["action_scale"]), clip_actions=np.float64(env["clip_actions"]),
        simulate_action_latency=np.bool_(env["simulate_action_latency"]),
        kp=np.float64(env["kp"]), kd=np.float64(env["kd"]), torque_limits=np.asarray(limits, np.float64),
        default_joint_pos=np.asarray([default[j] for j in joints], np.float32),
        joint_names=np.asarray(joints), state_names=np.asarray(names),
        conditioning_names=np.asarray(conditioning_names(joints)),
        conditioning_joint_pos=np.str_("absolute"),
        model_path=np.str_(meta["model_path"]), model_sha256=np.str_(meta["model_sha256"]),
        checkpoint_sha256=np.str_(meta.get("checkpoint_sha256", "")), backend=np.str_(meta.get("backend", "")),
        task=np.str_(meta.get("task", "")),                 # the train.py --task of the policy, or ""
        configs=np.str_(json.dumps(meta["configs"])),
        format=np.str_(FORMAT), format_version=np.int64(FORMAT_VERSION),
    )
    return out


def write_npz(path, steps: dict, episodes: dict, meta: dict) -> None:
    """Write the NPZ file (compressed). A file object, since np.savez appends .npz to other names."""
    arrays = npz_arrays(steps, episodes, meta)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def env_config(npz):
    """The EnvConfig a file was collected with (for Go2Dynamics(cfg=...)); npz: an np.load result."""
    import dataclasses

    from mjx_env.config import EnvConfig
    stored = json.loads(str(npz["configs"]))["env"]
    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    # JSON turned the config's tuples into lists; frozen dataclasses must stay hashable.
    tup = lambda v: tuple(tup(x) for x in v) if isinstance(v, list) else v  # noqa: E731
    return EnvConfig(**{k: tup(v) for k, v in stored.items() if k in fields})
